/* journal.c: see journal.h. */
#include "ledger/journal.h"

#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/pgarr.h"
#include "common/timeutil.h"
#include "ledger/db.h"

static const char domain_tag[] = "billing-ledger-v1";

static void put_str(struct buf *b, const char *s)
{
	size_t n = s ? strlen(s) : 0;

	buf_put_u32be(b, (uint32_t)n);
	buf_append(b, s ? s : "", n);
}

void journal_encode(struct buf *out, const uint8_t prev[JOURNAL_HASH_BYTES], const char *writer, int64_t seq,
		    const struct journal_txn *t)
{
	buf_append(out, domain_tag, sizeof(domain_tag)); /* includes the NUL */
	buf_append(out, prev, JOURNAL_HASH_BYTES);
	put_str(out, writer);
	buf_put_i64be(out, seq);
	put_str(out, t->kind);
	put_str(out, t->idempotency_key);
	buf_put_i64be(out, t->account_id);
	put_str(out, t->actor);
	put_str(out, t->reason);
	put_str(out, t->details);
	buf_put_i64be(out, t->created_at_us);
	buf_put_u32be(out, (uint32_t)t->n_postings);
	for (size_t i = 0; i < t->n_postings; i++) {
		buf_put_i64be(out, t->postings[i].ledger_account_id);
		buf_put_i64be(out, t->postings[i].amount);
	}
}

void journal_hash(uint8_t out[JOURNAL_HASH_BYTES], const uint8_t prev[JOURNAL_HASH_BYTES], const char *writer,
		  int64_t seq, const struct journal_txn *t)
{
	struct buf b;

	buf_init(&b);
	buf_reserve(&b, 512); /* a usage record's transaction in one allocation */
	journal_encode(&b, prev, writer, seq, t);
	crypto_generichash(out, JOURNAL_HASH_BYTES, (const unsigned char *)b.data, b.len, NULL, 0);
	buf_release(&b);
}

void journal_content_hash(uint8_t out[JOURNAL_HASH_BYTES], const void *p, size_t n)
{
	crypto_generichash(out, JOURNAL_HASH_BYTES, p, n, NULL, 0);
}

static int hex_to_bin(const char *hex, uint8_t *out, size_t n)
{
	size_t got = 0;

	if (strncmp(hex, "\\x", 2) == 0)
		hex += 2;
	if (sodium_hex2bin(out, n, hex, strlen(hex), NULL, &got, NULL) != 0 || got != n)
		return -1;
	return 0;
}

int journal_find_key(PGconn *c, const char *key, int64_t *txn_id, uint8_t content_hash[JOURNAL_HASH_BYTES],
		     struct error *err)
{
	const char *p[1] = {key};
	PGresult *r = db_query(c, "SELECT txn_id, content_hash FROM ledger_idempotency WHERE idempotency_key = $1", 1,
			       p, err);
	int rc = 0;

	if (!r)
		return -1;
	if (PQntuples(r) == 1) {
		*txn_id = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
		if (hex_to_bin(PQgetvalue(r, 0, 1), content_hash, JOURNAL_HASH_BYTES) < 0) {
			error_set(err, 500, "internal", "bad content hash for key '%s'", key);
			rc = -1;
		} else {
			rc = 1;
		}
	}
	PQclear(r);
	return rc;
}

/* element types of the arrays, in enum order (journal.h) */
static const uint32_t txn_types[JOURNAL_NA] = {
	[JA_SEQ] = PGARR_INT8,       [JA_KIND] = PGARR_TEXT,  [JA_KEY] = PGARR_TEXT,    [JA_CHASH] = PGARR_BYTEA,
	[JA_ACCT] = PGARR_INT8,      [JA_ACTOR] = PGARR_TEXT, [JA_REASON] = PGARR_TEXT, [JA_DETAILS] = PGARR_TEXT,
	[JA_AT] = PGARR_TIMESTAMPTZ, [JA_PREV] = PGARR_BYTEA, [JA_HASH] = PGARR_BYTEA,  [JA_TXN] = PGARR_INT8,
};
static const uint32_t post_types[JOURNAL_NP] = {
	[JP_TXN] = PGARR_INT8,  [JP_LINE] = PGARR_INT4,   [JP_LA] = PGARR_INT8,
	[JP_ACCT] = PGARR_INT8, [JP_AMOUNT] = PGARR_INT8, [JP_AT] = PGARR_TIMESTAMPTZ,
};

static void arr_text(struct pgarr *a, const char *s)
{
	pgarr_text(a, s ? s : "");
}

/* 0: NULL (no customer) */
static void arr_nullable_i64(struct pgarr *a, int64_t v)
{
	if (v)
		pgarr_i64(a, v);
	else
		pgarr_null(a);
}

void journal_arrays_init(struct journal_arrays *ja)
{
	for (int i = 0; i < JOURNAL_NA; i++)
		pgarr_init(&ja->txn[i], txn_types[i]);
	for (int i = 0; i < JOURNAL_NP; i++)
		pgarr_init(&ja->post[i], post_types[i]);
}

void journal_arrays_release(struct journal_arrays *ja)
{
	for (int i = 0; i < JOURNAL_NA; i++)
		pgarr_release(&ja->txn[i]);
	for (int i = 0; i < JOURNAL_NP; i++)
		pgarr_release(&ja->post[i]);
}

void journal_link(const char *writer, int64_t head_seq, const uint8_t head[JOURNAL_HASH_BYTES],
		  struct journal_txn *txns, size_t n, struct journal_arrays *ja)
{
	uint8_t prev[JOURNAL_HASH_BYTES];
	int64_t seq = head_seq;

	memcpy(prev, head, JOURNAL_HASH_BYTES);
	for (int i = 0; i < JOURNAL_NA; i++)
		pgarr_reset(&ja->txn[i], txn_types[i]);
	for (size_t i = 0; i < n; i++) {
		struct journal_txn *t = &txns[i];

		t->seq = ++seq;
		journal_hash(t->hash, prev, writer, t->seq, t);
		pgarr_i64(&ja->txn[JA_SEQ], t->seq);
		arr_text(&ja->txn[JA_KIND], t->kind);
		arr_text(&ja->txn[JA_KEY], t->idempotency_key);
		pgarr_bytes(&ja->txn[JA_CHASH], t->content_hash, JOURNAL_HASH_BYTES);
		arr_nullable_i64(&ja->txn[JA_ACCT], t->account_id);
		arr_text(&ja->txn[JA_ACTOR], t->actor);
		arr_text(&ja->txn[JA_REASON], t->reason);
		arr_text(&ja->txn[JA_DETAILS], t->details);
		pgarr_ts(&ja->txn[JA_AT], t->created_at_us);
		pgarr_bytes(&ja->txn[JA_PREV], prev, JOURNAL_HASH_BYTES);
		pgarr_bytes(&ja->txn[JA_HASH], t->hash, JOURNAL_HASH_BYTES);
		pgarr_i64(&ja->txn[JA_TXN], t->txn_id);
		memcpy(prev, t->hash, JOURNAL_HASH_BYTES);
	}
}

void journal_postings(const struct journal_txn *txns, size_t n, struct journal_arrays *ja)
{
	for (int i = 0; i < JOURNAL_NP; i++)
		pgarr_reset(&ja->post[i], post_types[i]);
	for (size_t i = 0; i < n; i++) {
		for (size_t j = 0; j < txns[i].n_postings; j++) {
			pgarr_i64(&ja->post[JP_TXN], txns[i].txn_id);
			pgarr_i32(&ja->post[JP_LINE], (int32_t)(j + 1));
			pgarr_i64(&ja->post[JP_LA], txns[i].postings[j].ledger_account_id);
			arr_nullable_i64(&ja->post[JP_ACCT], txns[i].postings[j].account_id);
			pgarr_i64(&ja->post[JP_AMOUNT], txns[i].postings[j].amount);
			/* a posting carries its transaction's created_at: the partition key */
			pgarr_ts(&ja->post[JP_AT], txns[i].created_at_us);
		}
	}
}

static void param_text(struct db_params *p, const char *s)
{
	p->v[p->n] = s;
	p->len[p->n] = 0;
	p->fmt[p->n++] = 0;
}

static void param_arr(struct db_params *p, struct pgarr *a)
{
	p->v[p->n] = pgarr_finish(a, &p->len[p->n]);
	p->fmt[p->n++] = 1;
}

void journal_insert_params(struct journal_arrays *ja, const char *writer, struct db_params *p)
{
	p->n = 0;
	param_text(p, writer);
	for (int i = 0; i < JOURNAL_NA; i++)
		param_arr(p, &ja->txn[i]);
}

void journal_postings_params(struct journal_arrays *ja, struct db_params *p)
{
	p->n = 0;
	for (int i = 0; i < JOURNAL_NP; i++)
		param_arr(p, &ja->post[i]);
}

void journal_notify_params(struct journal_arrays *ja, const char *writer, struct db_params *p)
{
	p->n = 0;
	param_arr(p, &ja->post[JP_ACCT]);
	param_text(p, writer);
}

int journal_write(PGconn *c, const char *writer, struct journal_txn *txns, size_t n, struct error *err)
{
	struct journal_arrays ja;
	struct db_params p;
	uint8_t prev[JOURNAL_HASH_BYTES] = {0};
	int64_t seq = 0;
	const char *params[1] = {writer};
	PGresult *r = NULL;
	int rc = -1;

	journal_arrays_init(&ja);
	r = db_query(c, JOURNAL_SQL_CHAIN_LOCK, 1, params, err);
	if (!r)
		goto done;
	PQclear(r);
	/* the key table holds each link's hash: one index probe, whatever the
	 * number of journal partitions */
	r = db_query(c, JOURNAL_SQL_HEAD, 1, params, err);
	if (!r)
		goto done;
	if (journal_parse_head(r, &seq, prev, writer, err) < 0)
		goto done;
	PQclear(r);
	r = NULL;
	journal_link(writer, seq, prev, txns, n, &ja);
	journal_insert_params(&ja, writer, &p);
	/* txn_id from the column default: the arrays' last one ($13) is left out */
	p.n--;
	r = db_query_params(c,
			    "INSERT INTO journal (writer, seq, kind, idempotency_key, content_hash, account_id, actor,"
			    " reason, details, created_at, prev_hash, hash)"
			    " SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[], $5::bytea[], $6::bigint[],"
			    " $7::text[], $8::text[], $9::text[], $10::timestamptz[], $11::bytea[], $12::bytea[])"
			    " RETURNING seq, txn_id",
			    &p, err);
	if (!r)
		goto done;
	if ((size_t)PQntuples(r) != n) {
		error_set(err, 500, "internal", "journal insert returned %d rows for %zu", PQntuples(r), n);
		goto done;
	}
	for (int j = 0; j < PQntuples(r); j++) {
		int64_t s = strtoll(PQgetvalue(r, j, 0), NULL, 10);
		int64_t id = strtoll(PQgetvalue(r, j, 1), NULL, 10);
		/* seqs are consecutive from txns[0].seq */
		int64_t k = s - txns[0].seq;
		if (k < 0 || (size_t)k >= n) {
			error_set(err, 500, "internal", "journal insert returned unknown seq %" PRId64, s);
			goto done;
		}
		txns[k].txn_id = id;
	}
	PQclear(r);
	r = NULL;
	journal_postings(txns, n, &ja);
	journal_postings_params(&ja, &p);
	r = db_query_params(c, JOURNAL_SQL_POSTINGS, &p, err);
	if (!r)
		goto done;
	PQclear(r);
	/* balance mirrors (Redis) learn of the change at commit: "ACCOUNT WRITER" */
	journal_notify_params(&ja, writer, &p);
	r = db_query_params(c, JOURNAL_SQL_NOTIFY, &p, err);
	if (!r)
		goto done;
	rc = 0;
done:
	PQclear(r);
	journal_arrays_release(&ja);
	return rc;
}

int journal_parse_head(PGresult *r, int64_t *seq, uint8_t head[JOURNAL_HASH_BYTES], const char *writer,
		       struct error *err)
{
	*seq = 0;
	memset(head, 0, JOURNAL_HASH_BYTES);
	if (PQntuples(r) != 1)
		return 0;
	*seq = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
	if (hex_to_bin(PQgetvalue(r, 0, 1), head, JOURNAL_HASH_BYTES) < 0) {
		return error_set(err, 500, "internal", "bad chain head of writer '%s'", writer);
	}
	return 0;
}
