/* refund.c: see refund.h. */
#include "ledger/refund.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/timeutil.h"
#include "ledger/db.h"
#include "ledger/journal.h"

struct refund_job {
	struct ops_ctx *x;
	const char *request_id, *reason;
	struct refund_result *out;
};

static int refund_tx(void *arg, struct error *err)
{
	struct refund_job *j = arg;
	PGconn *c = j->x->conn;
	struct refund_result *out = j->out;
	char key[256], now[40], orig[32];
	uint8_t chash[32], stored[32];
	struct buf content, details;
	struct journal_posting *post = NULL;
	struct journal_txn t;
	PGresult *r = NULL;
	int64_t now_us = j->x->now_us ? j->x->now_us : time_now_us(), existing;
	size_t np = 0;
	int rc = -1, found;

	buf_init(&content);
	buf_init(&details);
	memset(out, 0, sizeof(*out));
	{
		const char *p[1] = {j->request_id};
		r = db_query(c, "SELECT account_id, txn_id, model, cost_nanos FROM usage_records WHERE request_id = $1",
			     1, p, err);
	}
	if (!r)
		goto done;
	if (PQntuples(r) != 1) {
		error_set(err, 404, "not_found", "no usage record with request_id '%s'", j->request_id);
		goto done;
	}
	out->account_id = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
	out->original_txn_id = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
	snprintf(out->model, sizeof(out->model), "%s", PQgetvalue(r, 0, 2));
	out->cost_nanos = strtoll(PQgetvalue(r, 0, 3), NULL, 10);
	PQclear(r);
	r = NULL;
	if (ops_lock_customer(c, out->account_id, NULL, err) < 0)
		goto done;
	snprintf(key, sizeof(key), "refund:%s", j->request_id);
	found = journal_find_key(c, key, &existing, stored, err);
	if (found < 0)
		goto done;
	if (found == 1) {
		error_set(err, 409, "already_refunded", "request '%s' was already refunded (transaction %" PRId64 ")",
			  j->request_id, existing);
		goto done;
	}
	snprintf(orig, sizeof(orig), "%" PRId64, out->original_txn_id);
	time_format_rfc3339(now_us, now, sizeof(now));
	{
		const char *p[2] = {orig, now};
		r = db_query(c,
			     "SELECT p.ledger_account_id, coalesce(p.account_id, 0), p.amount, la.type,"
			     " coalesce(g.expires_at <= $2::timestamptz, false)"
			     " FROM postings p JOIN ledger_accounts la ON la.ledger_account_id = p.ledger_account_id"
			     " LEFT JOIN grants g ON g.ledger_account_id = p.ledger_account_id"
			     " WHERE p.txn_id = $1::bigint ORDER BY p.line",
			     2, p, err);
	}
	if (!r)
		goto done;
	post = calloc((size_t)PQntuples(r) + 1, sizeof(*post));
	if (!post) {
		error_set(err, 500, "internal", "out of memory");
		goto done;
	}
	for (int i = 0; i < PQntuples(r); i++) {
		int64_t la = strtoll(PQgetvalue(r, i, 0), NULL, 10), acct = strtoll(PQgetvalue(r, i, 1), NULL, 10);
		int64_t amount = -strtoll(PQgetvalue(r, i, 2), NULL, 10);
		const char *type = PQgetvalue(r, i, 3);

		if (amount == 0)
			continue;
		if (PQgetvalue(r, i, 4)[0] == 't') {
			/* the bucket has expired: this credit goes to breakage, not back to the customer */
			post[np++] = (struct journal_posting){LA_BREAKAGE, 0, amount};
			out->breakage_nanos += amount;
			continue;
		}
		post[np++] = (struct journal_posting){la, acct, amount};
		if (strcmp(type, "customer_paid") == 0)
			out->paid_nanos += amount;
		else if (strcmp(type, "customer_promo") == 0)
			out->promo_nanos += amount;
	}
	PQclear(r);
	r = NULL;
	if (np < 2) {
		error_set(err, 422, "nothing_to_refund", "request '%s' cost nothing: there is nothing to refund",
			  j->request_id);
		goto done;
	}
	buf_printf(&content, "refund|%s|%s", j->request_id, j->reason);
	journal_content_hash(chash, content.data, content.len);
	buf_printf(&details,
		   "{\"breakage_nanos\":%" PRId64 ",\"cost_nanos\":%" PRId64 ",\"model\":", out->breakage_nanos,
		   out->cost_nanos);
	buf_json_str(&details, out->model);
	buf_printf(&details,
		   ",\"original_txn_id\":%" PRId64 ",\"paid_nanos\":%" PRId64 ",\"promo_nanos\":%" PRId64
		   ",\"request_id\":",
		   out->original_txn_id, out->paid_nanos, out->promo_nanos);
	buf_json_str(&details, j->request_id);
	buf_puts(&details, "}");
	memset(&t, 0, sizeof(t));
	t.kind = "refund";
	t.idempotency_key = key;
	memcpy(t.content_hash, chash, 32);
	t.account_id = out->account_id;
	t.actor = j->x->actor;
	t.reason = j->reason;
	t.details = details.data;
	t.created_at_us = now_us;
	t.n_postings = np;
	t.postings = post;
	if (journal_write(c, j->x->writer, &t, 1, err) < 0)
		goto done;
	out->txn_id = t.txn_id;
	{
		char id[32];
		const char *p[1] = {id};
		snprintf(id, sizeof(id), "%" PRId64, out->account_id);
		if (db_exec(c, "SELECT pg_notify('billing_change', 'balance:' || $1)", 1, p, err) < 0)
			goto done;
	}
	rc = 0;
done:
	PQclear(r);
	free(post);
	buf_release(&content);
	buf_release(&details);
	return rc;
}

int refund_request(struct ops_ctx *x, const char *request_id, const char *reason, struct refund_result *out,
		   struct error *err)
{
	struct refund_job j = {x, request_id, reason, out};

	if (!request_id || !*request_id || strlen(request_id) > 200) {
		return error_set(err, 400, "invalid_request", "request_id must be 1 to 200 characters");
	}
	if (!reason || !*reason) {
		return error_set(err, 400, "invalid_request", "a refund needs a reason");
	}
	return ops_in_tx(x->conn, refund_tx, &j, err);
}
