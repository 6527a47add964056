/* ledger_load: posts a randomized mix of transactions through the ledger
 * code (ops_* and journal_write) from two threads, each its own writer.
 *
 * usage: ledger_load CONNINFO ACCOUNTS TRANSACTIONS SEED
 *        ledger_load CONNINFO wide POSTINGS: one new account and one usage-like
 *        transaction of POSTINGS (even) postings, 1 nano each way in turn (a
 *        charge drawn from that many buckets)
 * Prints "posted N" and exits 0, or 1 on any failure. */
#include <inttypes.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/timeutil.h"
#include "ledger/db.h"
#include "ledger/journal.h"
#include "ledger/ops.h"
#include "ledger/signup.h"

static const char *conninfo;
static int64_t n_accounts, n_txns, first_account;
static uint64_t seed;

static uint64_t next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

struct usage_job {
	struct ops_ctx *x;
	int64_t account, amount;
	const char *key;
};

/* a usage-like transfer: paid balance down (into arrears if need be), revenue up */
static int usage_tx(void *arg, struct error *err)
{
	struct usage_job *j = arg;
	char id[32];
	const char *p[1] = {id};
	struct journal_posting post[2];
	struct journal_txn t;
	PGresult *r;
	int64_t la;

	if (ops_lock_customer(j->x->conn, j->account, NULL, err) < 0)
		return -1;
	snprintf(id, sizeof(id), "%" PRId64, j->account);
	r = db_query(j->x->conn,
		     "SELECT ledger_account_id FROM ledger_accounts WHERE account_id=$1 AND type='customer_paid'", 1, p,
		     err);
	if (!r)
		return -1;
	la = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
	PQclear(r);
	post[0] = (struct journal_posting){la, j->account, -j->amount};
	post[1] = (struct journal_posting){LA_REVENUE, 0, j->amount};
	memset(&t, 0, sizeof(t));
	t.kind = "usage";
	t.idempotency_key = j->key;
	t.account_id = j->account;
	t.actor = "load";
	t.reason = "usage-like transfer";
	t.details = "{}";
	t.created_at_us = time_now_us();
	t.n_postings = 2;
	t.postings = post;
	return journal_write(j->x->conn, j->x->writer, &t, 1, err);
}

struct wide_job {
	struct ops_ctx *x;
	int64_t account, n;
};

static int wide_tx(void *arg, struct error *err)
{
	struct wide_job *j = arg;
	struct journal_posting *post = calloc((size_t)j->n, sizeof(*post));
	struct journal_txn t;
	char id[32];
	const char *p[1] = {id};
	PGresult *r;
	int rc = -1;

	if (!post || ops_lock_customer(j->x->conn, j->account, NULL, err) < 0)
		goto done;
	snprintf(id, sizeof(id), "%" PRId64, j->account);
	r = db_query(j->x->conn,
		     "SELECT ledger_account_id FROM ledger_accounts WHERE account_id=$1 AND type='customer_paid'", 1, p,
		     err);
	if (!r)
		goto done;
	for (int64_t i = 0; i < j->n; i++)
		post[i] = i % 2 ? (struct journal_posting){LA_REVENUE, 0, 1}
				: (struct journal_posting){strtoll(PQgetvalue(r, 0, 0), NULL, 10), j->account, -1};
	PQclear(r);
	memset(&t, 0, sizeof(t));
	t.kind = "usage";
	t.idempotency_key = "wide";
	t.account_id = j->account;
	t.actor = "load";
	t.reason = "a charge drawn from many buckets";
	t.details = "{}";
	t.created_at_us = time_now_us();
	t.n_postings = (size_t)j->n;
	t.postings = post;
	rc = journal_write(j->x->conn, j->x->writer, &t, 1, err);
done:
	free(post);
	return rc;
}

static void *worker(void *arg)
{
	int id = (int)(intptr_t)arg;
	char writer[32], key[96];
	uint64_t s = seed * 7919 + (uint64_t)id;
	struct ops_ctx x;
	struct error err;
	PGconn *c = db_connect(conninfo, 30000, &err);
	int64_t i;

	if (!c) {
		fprintf(stderr, "ledger_load: %s\n", err.msg);
		return (void *)1;
	}
	snprintf(writer, sizeof(writer), "load-%d", id);
	memset(&x, 0, sizeof(x));
	x.conn = c;
	x.writer = writer;
	x.actor = "load";
	for (i = id; i < n_txns; i += 2) {
		int64_t acct = first_account + (int64_t)(next(&s) % (uint64_t)n_accounts);
		int64_t amount = 1 + (int64_t)(next(&s) % 5000000000ULL);
		int kind = (int)(next(&s) % 4);
		bool dup;
		int rc;

		snprintf(key, sizeof(key), "load:%" PRIu64 ":%d:%" PRId64, seed, id, i);
		if (kind == 0) {
			struct ops_grant_req g = {acct,
						  amount,
						  "load grant",
						  "admin",
						  NULL,
						  next(&s) % 2 ? time_now_us() + 86400000000LL : 0,
						  (int)(next(&s) % 3),
						  key,
						  false};
			struct ops_grant_info info;
			rc = ops_grant(&x, &g, &info, &dup, &err);
		} else if (kind == 1) {
			rc = ops_topup(&x, acct, amount, key, NULL, &dup, &err);
		} else if (kind == 2) {
			int64_t txn;
			rc = ops_adjust(&x, acct, next(&s) % 2 ? amount : -amount, "load adjustment", key, &txn, &dup,
					&err);
		} else {
			struct usage_job j = {&x, acct, amount, key};
			rc = ops_in_tx(c, usage_tx, &j, &err);
		}
		if (rc < 0) {
			fprintf(stderr, "ledger_load: transaction %" PRId64 " (kind %d): %s (%s)\n", i, kind, err.msg,
				err.code);
			PQfinish(c);
			return (void *)1;
		}
	}
	PQfinish(c);
	return NULL;
}

int main(int argc, char **argv)
{
	pthread_t th[2];
	void *rv[2];
	struct error err;
	struct ops_ctx x;
	PGconn *c;

	if (argc == 4 && strcmp(argv[2], "wide") == 0 && sodium_init() >= 0) {
		char ext[64];
		struct ops_signup req = {ext, NULL, NULL, 0, NULL};
		struct ops_signup_result res;
		struct wide_job j = {&x, 0, strtoll(argv[3], NULL, 10)};
		if (!(c = db_connect(argv[1], 30000, &err)))
			goto fail;
		memset(&x, 0, sizeof(x));
		x.conn = c;
		x.writer = "load-wide";
		x.actor = "load";
		snprintf(ext, sizeof(ext), "wide-%" PRId64, time_now_us());
		if (j.n < 2 || j.n % 2 || ops_account_create(&x, &req, &res, &err) < 0)
			goto fail;
		j.account = res.account_id;
		if (ops_in_tx(c, wide_tx, &j, &err) < 0)
			goto fail;
		PQfinish(c);
		printf("posted 1 transaction of %" PRId64 " postings\n", j.n);
		return 0;
	fail:
		fprintf(stderr, "ledger_load: wide: %s\n", j.n < 2 || j.n % 2 ? "an even count >= 2" : err.msg);
		PQfinish(c);
		return 1;
	}
	if (argc != 5 || sodium_init() < 0) {
		fprintf(stderr, "usage: ledger_load CONNINFO ACCOUNTS TRANSACTIONS SEED\n");
		return 2;
	}
	conninfo = argv[1];
	n_accounts = strtoll(argv[2], NULL, 10);
	n_txns = strtoll(argv[3], NULL, 10);
	seed = strtoull(argv[4], NULL, 10);
	c = db_connect(conninfo, 30000, &err);
	if (!c) {
		fprintf(stderr, "ledger_load: %s\n", err.msg);
		return 1;
	}
	memset(&x, 0, sizeof(x));
	x.conn = c;
	x.writer = "load-0";
	x.actor = "load";
	for (int64_t i = 0; i < n_accounts; i++) {
		char ext[64];
		struct ops_signup req = {ext, NULL, NULL, 0, NULL};
		struct ops_signup_result res;
		snprintf(ext, sizeof(ext), "load-%" PRIu64 "-%" PRId64, seed, i);
		if (ops_account_create(&x, &req, &res, &err) < 0) {
			fprintf(stderr, "ledger_load: account: %s\n", err.msg);
			return 1;
		}
		if (i == 0)
			first_account = res.account_id;
	}
	PQfinish(c);
	for (int i = 0; i < 2; i++)
		pthread_create(&th[i], NULL, worker, (void *)(intptr_t)i);
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], &rv[i]);
	if (rv[0] || rv[1])
		return 1;
	printf("posted %" PRId64 " transactions over %" PRId64 " accounts\n", n_txns + n_accounts, n_accounts);
	return 0;
}
