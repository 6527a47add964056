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
	PGresult *r = db_query(c, "SELECT txn_id, content_hash FROM ledger_idempotency WHERE idempotency_key = $1", 1, p, err);
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
	buf_printf(b, "%" PRId64, v);
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
		buf_printf(b, "%" PRId64, v);
	else
		buf_puts(b, "NULL");
}

int journal_write(PGconn *c, const char *writer, struct journal_txn *txns, size_t n, struct error *err)
{
	enum { A_SEQ, A_KIND, A_KEY, A_CHASH, A_ACCT, A_ACTOR, A_REASON, A_DETAILS, A_AT, A_PREV, A_HASH, NA };
	struct buf a[NA], pa[6];
	uint8_t prev[JOURNAL_HASH_BYTES] = {0};
	int64_t seq = 0;
	const char *params[NA + 1];
	PGresult *r = NULL;
	int rc = -1;

	for (int i = 0; i < NA; i++)
		buf_init(&a[i]);
	for (int i = 0; i < 6; i++)
		buf_init(&pa[i]);
	params[0] = writer;
	r = db_query(c, "SELECT pg_advisory_xact_lock(hashtextextended('chain:' || $1, 0))", 1, params, err);
	if (!r)
		goto done;
	PQclear(r);
	/* the key table holds each link's hash: one index probe, whatever the
	 * number of journal partitions */
	r = db_query(c, "SELECT seq, hash FROM ledger_idempotency WHERE writer = $1 ORDER BY seq DESC LIMIT 1", 1, params,
		     err);
	if (!r)
		goto done;
	if (PQntuples(r) == 1) {
		seq = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
		if (hex_to_bin(PQgetvalue(r, 0, 1), prev, sizeof(prev)) < 0) {
			error_set(err, 500, "internal", "bad chain head of writer '%s'", writer);
			goto done;
		}
	}
	PQclear(r);
	r = NULL;
	for (int i = 0; i < NA; i++)
		arr_open(&a[i]);
	for (size_t i = 0; i < n; i++) {
		struct journal_txn *t = &txns[i];
		char ts[40];

		t->seq = ++seq;
		journal_hash(t->hash, prev, writer, t->seq, t);
		time_format_rfc3339(t->created_at_us, ts, sizeof(ts));
		arr_i64(&a[A_SEQ], t->seq);
		arr_text(&a[A_KIND], t->kind);
		arr_text(&a[A_KEY], t->idempotency_key);
		arr_bytea(&a[A_CHASH], t->content_hash, JOURNAL_HASH_BYTES);
		arr_nullable_i64(&a[A_ACCT], t->account_id);
		arr_text(&a[A_ACTOR], t->actor);
		arr_text(&a[A_REASON], t->reason);
		arr_text(&a[A_DETAILS], t->details);
		arr_text(&a[A_AT], ts);
		arr_bytea(&a[A_PREV], prev, JOURNAL_HASH_BYTES);
		arr_bytea(&a[A_HASH], t->hash, JOURNAL_HASH_BYTES);
		memcpy(prev, t->hash, JOURNAL_HASH_BYTES);
	}
	for (int i = 0; i < NA; i++) {
		buf_append(&a[i], "}", 1);
		params[i + 1] = a[i].data;
	}
	r = db_query(c,
		     "INSERT INTO journal (writer, seq, kind, idempotency_key, content_hash, account_id, actor, reason,"
		     " details, created_at, prev_hash, hash)"
		     " SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[], $5::bytea[], $6::bigint[],"
		     " $7::text[], $8::text[], $9::text[], $10::timestamptz[], $11::bytea[], $12::bytea[])"
		     " RETURNING seq, txn_id",
		     NA + 1, params, err);
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
	for (int i = 0; i < 6; i++)
		arr_open(&pa[i]);
	for (size_t i = 0; i < n; i++) {
		char ts[40];

		/* a posting carries its transaction's created_at: the partition key */
		time_format_rfc3339(txns[i].created_at_us, ts, sizeof(ts));
		for (size_t j = 0; j < txns[i].n_postings; j++) {
			arr_i64(&pa[0], txns[i].txn_id);
			arr_i64(&pa[1], (int64_t)j + 1);
			arr_i64(&pa[2], txns[i].postings[j].ledger_account_id);
			arr_nullable_i64(&pa[3], txns[i].postings[j].account_id);
			arr_i64(&pa[4], txns[i].postings[j].amount);
			arr_text(&pa[5], ts);
		}
	}
	for (int i = 0; i < 6; i++) {
		buf_append(&pa[i], "}", 1);
		params[i] = pa[i].data;
	}
	if (db_exec(c,
		    "INSERT INTO postings (txn_id, line, ledger_account_id, account_id, amount, created_at)"
		    " SELECT * FROM unnest($1::bigint[], $2::smallint[], $3::bigint[], $4::bigint[], $5::bigint[],"
		    " $6::timestamptz[])",
		    6, params, err) < 0)
		goto done;
	/* balance mirrors (Redis) learn of the change at commit: "ACCOUNT WRITER" */
	params[0] = pa[3].data;
	params[1] = writer;
	if (db_exec(c,
		    "SELECT pg_notify('billing_balance', a::text || ' ' || $2)"
		    " FROM (SELECT DISTINCT a FROM unnest($1::bigint[]) a WHERE a IS NOT NULL) s",
		    2, params, err) < 0)
		goto done;
	rc = 0;
done:
	PQclear(r);
	for (int i = 0; i < NA; i++)
		buf_release(&a[i]);
	for (int i = 0; i < 6; i++)
		buf_release(&pa[i]);
	return rc;
}
