/* journal.c: see journal.h. */
#include "ledger/journal.h"

#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static void arr_open(struct buf *b)
{
	buf_reset(b);
	buf_append(b, "{", 1);
}

static void arr_sep(struct buf *b)
{
	if (b->len > 1)
		buf_append(b, ",", 1);
}

static void arr_i64(struct buf *b, int64_t v)
{
	arr_sep(b);
	buf_put_i64(b, v);
}

static void arr_text(struct buf *b, const char *s)
{
	arr_sep(b);
	buf_pg_array_text(b, s ? s : "");
}

static void arr_bytea(struct buf *b, const uint8_t *p, size_t n)
{
	arr_sep(b);
	buf_append(b, "\"\\\\x", 4);
	buf_hex(b, p, n);
	buf_append(b, "\"", 1);
}

static void arr_nullable_i64(struct buf *b, int64_t v)
{
	arr_sep(b);
	if (v)
		buf_put_i64(b, v);
	else
		buf_puts(b, "NULL");
}

void journal_arrays_init(struct journal_arrays *ja)
{
	for (int i = 0; i < JOURNAL_NA; i++)
		buf_init(&ja->txn[i]);
	for (int i = 0; i < JOURNAL_NP; i++)
		buf_init(&ja->post[i]);
}

void journal_arrays_release(struct journal_arrays *ja)
{
	for (int i = 0; i < JOURNAL_NA; i++)
		buf_release(&ja->txn[i]);
	for (int i = 0; i < JOURNAL_NP; i++)
		buf_release(&ja->post[i]);
}

void journal_link(const char *writer, int64_t head_seq, const uint8_t head[JOURNAL_HASH_BYTES],
		  struct journal_txn *txns, size_t n, struct journal_arrays *ja)
{
	uint8_t prev[JOURNAL_HASH_BYTES];
	int64_t seq = head_seq;

	memcpy(prev, head, JOURNAL_HASH_BYTES);
	for (int i = 0; i < JOURNAL_NA; i++)
		arr_open(&ja->txn[i]);
	for (size_t i = 0; i < n; i++) {
		struct journal_txn *t = &txns[i];
		char ts[40];

		t->seq = ++seq;
		journal_hash(t->hash, prev, writer, t->seq, t);
		time_format_rfc3339(t->created_at_us, ts, sizeof(ts));
		arr_i64(&ja->txn[JA_SEQ], t->seq);
		arr_text(&ja->txn[JA_KIND], t->kind);
		arr_text(&ja->txn[JA_KEY], t->idempotency_key);
		arr_bytea(&ja->txn[JA_CHASH], t->content_hash, JOURNAL_HASH_BYTES);
		arr_nullable_i64(&ja->txn[JA_ACCT], t->account_id);
		arr_text(&ja->txn[JA_ACTOR], t->actor);
		arr_text(&ja->txn[JA_REASON], t->reason);
		arr_text(&ja->txn[JA_DETAILS], t->details);
		arr_text(&ja->txn[JA_AT], ts);
		arr_bytea(&ja->txn[JA_PREV], prev, JOURNAL_HASH_BYTES);
		arr_bytea(&ja->txn[JA_HASH], t->hash, JOURNAL_HASH_BYTES);
		arr_i64(&ja->txn[JA_TXN], t->txn_id);
		memcpy(prev, t->hash, JOURNAL_HASH_BYTES);
	}
	for (int i = 0; i < JOURNAL_NA; i++)
		buf_append(&ja->txn[i], "}", 1);
}

void journal_postings(const struct journal_txn *txns, size_t n, struct journal_arrays *ja)
{
	for (int i = 0; i < JOURNAL_NP; i++)
		arr_open(&ja->post[i]);
	for (size_t i = 0; i < n; i++) {
		char ts[40];

		/* a posting carries its transaction's created_at: the partition key */
		time_format_rfc3339(txns[i].created_at_us, ts, sizeof(ts));
		for (size_t j = 0; j < txns[i].n_postings; j++) {
			arr_i64(&ja->post[0], txns[i].txn_id);
			arr_i64(&ja->post[1], (int64_t)j + 1);
			arr_i64(&ja->post[2], txns[i].postings[j].ledger_account_id);
			arr_nullable_i64(&ja->post[3], txns[i].postings[j].account_id);
			arr_i64(&ja->post[4], txns[i].postings[j].amount);
			arr_text(&ja->post[5], ts);
		}
	}
	for (int i = 0; i < JOURNAL_NP; i++)
		buf_append(&ja->post[i], "}", 1);
}

int journal_write(PGconn *c, const char *writer, struct journal_txn *txns, size_t n, struct error *err)
{
	struct journal_arrays ja;
	uint8_t prev[JOURNAL_HASH_BYTES] = {0};
	int64_t seq = 0;
	const char *params[JOURNAL_NA + 1];
	PGresult *r = NULL;
	int rc = -1;

	journal_arrays_init(&ja);
	params[0] = writer;
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
	for (int i = 0; i < JOURNAL_NA; i++)
		params[i + 1] = ja.txn[i].data;
	r = db_query(c,
		     "INSERT INTO journal (writer, seq, kind, idempotency_key, content_hash, account_id, actor, reason,"
		     " details, created_at, prev_hash, hash)"
		     " SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[], $5::bytea[], $6::bigint[],"
		     " $7::text[], $8::text[], $9::text[], $10::timestamptz[], $11::bytea[], $12::bytea[])"
		     " RETURNING seq, txn_id",
		     JOURNAL_NA, params, err);
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
	for (int i = 0; i < JOURNAL_NP; i++)
		params[i] = ja.post[i].data;
	if (db_exec(c, JOURNAL_SQL_POSTINGS, JOURNAL_NP, params, err) < 0)
		goto done;
	/* balance mirrors (Redis) learn of the change at commit: "ACCOUNT WRITER" */
	params[0] = ja.post[3].data;
	params[1] = writer;
	if (db_exec(c, JOURNAL_SQL_NOTIFY, 2, params, err) < 0)
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
