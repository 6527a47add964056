/* export_load: writes many two-posting journal transactions fast, through
 * journal_write() in batches (one hash chain, writer "bulk"), with
 * created_at spread evenly over [FROM, TO) and a few outside it.
 *
 * usage: export_load CONNINFO ACCOUNTS TXNS_IN_RANGE SEED FROM TO
 * ACCOUNTS 0: use every existing customer instead of creating new ones.
 * Writes TXNS_IN_RANGE transactions inside [FROM, TO), plus 1% before FROM
 * and 1% at or after TO.  Kinds: topup, usage (with request_id, model and
 * token counts in details), adjust.  Prints "posted N" and exits 0, 1 on
 * failure.  Writer (its own hash chain): "bulk-SEED". */
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/timeutil.h"
#include "ledger/db.h"
#include "ledger/journal.h"
#include "ledger/ops.h"
#include "ledger/signup.h"

#define BATCH 2000

static uint64_t next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

int main(int argc, char **argv)
{
	struct error err;
	struct ops_ctx x;
	PGconn *c;
	int64_t n_accounts, n_in, from_us, to_us, total, outside, *paid = NULL, *acct = NULL;
	uint64_t s;
	struct journal_txn *txns = NULL;
	struct journal_posting *posts = NULL;
	struct buf *details = NULL;
	char(*keys)[64] = NULL;
	char writer[48];
	bool existing;

	if (argc != 7 || sodium_init() < 0 || time_parse_rfc3339(argv[5], 1, &from_us) < 0 ||
	    time_parse_rfc3339(argv[6], 1, &to_us) < 0) {
		fprintf(stderr, "usage: export_load CONNINFO ACCOUNTS TXNS_IN_RANGE SEED FROM TO\n");
		return 2;
	}
	n_accounts = strtoll(argv[2], NULL, 10);
	n_in = strtoll(argv[3], NULL, 10);
	s = strtoull(argv[4], NULL, 10);
	outside = n_in / 100;
	total = n_in + 2 * outside;
	c = db_connect(argv[1], 600000, &err);
	if (!c) {
		fprintf(stderr, "export_load: %s\n", err.msg);
		return 1;
	}
	memset(&x, 0, sizeof(x));
	x.conn = c;
	snprintf(writer, sizeof(writer), "bulk-%" PRIu64, s);
	x.writer = writer;
	x.actor = "bulk";
	existing = n_accounts == 0;
	if (existing) {
		/* every existing customer */
		PGresult *r = db_query(
			c,
			"SELECT account_id, ledger_account_id FROM ledger_accounts WHERE type = 'customer_paid'"
			" ORDER BY account_id",
			0, NULL, &err);
		if (!r || PQntuples(r) == 0) {
			fprintf(stderr, "export_load: no accounts: %s\n", r ? "none" : err.msg);
			return 1;
		}
		n_accounts = PQntuples(r);
		paid = calloc((size_t)n_accounts, sizeof(*paid));
		acct = calloc((size_t)n_accounts, sizeof(*acct));
		if (!paid || !acct)
			return 1;
		for (int64_t i = 0; i < n_accounts; i++) {
			acct[i] = strtoll(PQgetvalue(r, (int)i, 0), NULL, 10);
			paid[i] = strtoll(PQgetvalue(r, (int)i, 1), NULL, 10);
		}
		PQclear(r);
	} else {
		paid = calloc((size_t)n_accounts, sizeof(*paid));
		acct = calloc((size_t)n_accounts, sizeof(*acct));
		if (!paid || !acct)
			return 1;
	}
	txns = calloc(BATCH, sizeof(*txns));
	posts = calloc(2 * BATCH, sizeof(*posts));
	details = calloc(BATCH, sizeof(*details));
	keys = calloc(BATCH, sizeof(*keys));
	if (!txns || !posts || !details || !keys)
		return 1;
	for (int64_t i = 0; i < n_accounts && !existing; i++) {
		char ext[64], id[32];
		const char *p[1] = {id};
		struct ops_signup req = {ext, NULL, NULL, 0, NULL};
		struct ops_signup_result res;
		PGresult *r;

		snprintf(ext, sizeof(ext), "bulk-%" PRIu64 "-%" PRId64, s, i);
		if (ops_account_create(&x, &req, &res, &err) < 0) {
			fprintf(stderr, "export_load: account: %s\n", err.msg);
			return 1;
		}
		acct[i] = res.account_id;
		snprintf(id, sizeof(id), "%" PRId64, res.account_id);
		r = db_query(
			c,
			"SELECT ledger_account_id FROM ledger_accounts WHERE account_id = $1 AND type = 'customer_paid'",
			1, p, &err);
		if (!r || PQntuples(r) != 1) {
			fprintf(stderr, "export_load: paid account: %s\n", err.msg);
			return 1;
		}
		paid[i] = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
		PQclear(r);
	}
	for (int i = 0; i < BATCH; i++)
		buf_init(&details[i]);
	for (int64_t done = 0; done < total;) {
		int n = total - done < BATCH ? (int)(total - done) : BATCH;

		for (int i = 0; i < n; i++) {
			int64_t k = done + i, t;
			int64_t a = (int64_t)(next(&s) % (uint64_t)n_accounts),
				amount = 1 + (int64_t)(next(&s) % 3000000000ULL);
			int kind = (int)(next(&s) % 3);
			struct journal_txn *tx = &txns[i];
			struct journal_posting *p = &posts[2 * i];

			/* 1% before the range, then the range, then 1% after it */
			if (k < outside)
				t = from_us - 86400000000LL + k;
			else if (k < outside + n_in)
				t = from_us + (int64_t)((__int128)(k - outside) * (to_us - from_us) / n_in);
			else
				t = to_us + (k - outside - n_in);
			memset(tx, 0, sizeof(*tx));
			buf_reset(&details[i]);
			snprintf(keys[i], sizeof(keys[i]), "bulk:%" PRIu64 ":%" PRId64, s, k);
			if (kind == 0) {
				tx->kind = "topup";
				tx->reason = "top-up";
				buf_printf(&details[i],
					   "{\"amount_nanos\":%" PRId64 ",\"payment_ref\":\"bulk-%" PRId64 "\"}",
					   amount, k);
				p[0] = (struct journal_posting){paid[a], acct[a], amount};
				p[1] = (struct journal_posting){LA_CASH_CLEARING, 0, -amount};
			} else if (kind == 1) {
				int64_t in = (int64_t)(next(&s) % 100000), cached = in / 3,
					out = (int64_t)(next(&s) % 8000);
				char ts[40];
				time_format_rfc3339(t, ts, sizeof(ts));
				tx->kind = "usage";
				tx->reason = "usage";
				buf_printf(&details[i],
					   "{\"request_id\":\"bulk-req-%" PRIu64 "-%" PRId64
					   "\",\"model\":\"model-%d\","
					   "\"input_tokens\":%" PRId64 ",\"cached_input_tokens\":%" PRId64
					   ",\"output_tokens\":%" PRId64 ",\"started_at\":\"%s\",\"price_version\":1,"
					   "\"cost_nanos\":%" PRId64 "}",
					   s, k, (int)(k % 3), in, cached, out, ts, amount);
				p[0] = (struct journal_posting){paid[a], acct[a], -amount};
				p[1] = (struct journal_posting){LA_REVENUE, 0, amount};
			} else {
				int64_t v = next(&s) % 2 ? amount : -amount;
				tx->kind = "adjust";
				tx->reason = "bulk adjustment, \"quoted\", with a comma";
				buf_printf(&details[i], "{\"amount_nanos\":%" PRId64 "}", v);
				p[0] = (struct journal_posting){paid[a], acct[a], v};
				p[1] = (struct journal_posting){LA_ADJUSTMENTS, 0, -v};
			}
			tx->idempotency_key = keys[i];
			tx->account_id = acct[a];
			tx->actor = "bulk";
			tx->details = details[i].data;
			tx->created_at_us = t;
			tx->n_postings = 2;
			tx->postings = p;
		}
		if (db_exec(c, "BEGIN", 0, NULL, &err) < 0 || journal_write(c, x.writer, txns, (size_t)n, &err) < 0 ||
		    db_exec(c, "COMMIT", 0, NULL, &err) < 0) {
			fprintf(stderr, "export_load: batch at %" PRId64 ": %s (%s)\n", done, err.msg, err.code);
			return 1;
		}
		done += n;
	}
	printf("posted %" PRId64 " transactions (%" PRId64 " in range) over %" PRId64 " accounts\n", total, n_in,
	       n_accounts);
	for (int i = 0; i < BATCH; i++)
		buf_release(&details[i]);
	free(paid);
	free(acct);
	free(txns);
	free(posts);
	free(details);
	free(keys);
	PQfinish(c);
	return 0;
}
