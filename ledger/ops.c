/* ops.c: see ops.h. */
#include "ledger/ops.h"

#include <inttypes.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/money.h"
#include "common/timeutil.h"
#include "ledger/db.h"
#include "ledger/journal.h"

static int64_t now_of(const struct ops_ctx *x)
{
	return x->now_us ? x->now_us : time_now_us();
}

/* false with 422 invalid_amount when amount, in size (a negative
 * adjustment too), is above the ceiling (0: def) */
static bool amount_within(int64_t amount, int64_t ceiling, int64_t def, const char *what, const char *key,
			  struct error *err)
{
	char a[32], m[32];

	if (!ceiling)
		ceiling = def;
	if (amount <= ceiling && amount >= -ceiling)
		return true;
	money_format(amount, a, sizeof(a));
	money_format(ceiling, m, sizeof(m));
	error_set(err, 422, "invalid_amount", "%s of %s is above the ceiling %s%s (%s)", what, a, m,
		  amount < 0 ? " in size" : "", key);
	return false;
}

int ops_in_tx(PGconn *c, int (*fn)(void *arg, struct error *err), void *arg, struct error *err)
{
	for (int attempt = 0;; attempt++) {
		if (db_exec(c, "BEGIN", 0, NULL, err) < 0)
			return -1;
		if (fn(arg, err) == 0 && db_exec(c, "COMMIT", 0, NULL, err) == 0) {
			/* a retried attempt's error must not outlive the success */
			if (err)
				memset(err, 0, sizeof(*err));
			return 0;
		}
		db_exec_quiet(c, "ROLLBACK");
		if (attempt >= 5 || !db_error_retryable(err))
			return -1;
	}
}

int ops_audit(PGconn *c, const char *actor, const char *action, const char *target, const char *reason,
	      const char *details_json, struct error *err)
{
	const char *p[5] = {actor, action, target ? target : "", reason ? reason : "",
			    details_json ? details_json : "{}"};

	return db_exec(c, "INSERT INTO audit_log (actor, action, target, reason, details) VALUES ($1,$2,$3,$4,$5)", 5,
		       p, err);
}

static const char account_cols[] =
	"account_id, external_id, status, verified, tier, referral_code, coalesce(referred_by, 0),"
	" (extract(epoch from created_at) * 1000000)::bigint";

static int fill_account(PGresult *r, struct ops_account *out, struct error *err, const char *what)
{
	if (PQntuples(r) != 1) {
		return error_set(err, 404, "not_found", "account %s not found", what);
	}
	memset(out, 0, sizeof(*out));
	out->account_id = db_int64(r, 0, 0);
	snprintf(out->external_id, sizeof(out->external_id), "%s", PQgetvalue(r, 0, 1));
	snprintf(out->status, sizeof(out->status), "%s", PQgetvalue(r, 0, 2));
	out->verified = PQgetvalue(r, 0, 3)[0] == 't';
	snprintf(out->tier, sizeof(out->tier), "%s", PQgetvalue(r, 0, 4));
	snprintf(out->referral_code, sizeof(out->referral_code), "%s", PQgetvalue(r, 0, 5));
	out->referred_by = db_int64(r, 0, 6);
	out->created_at_us = db_int64(r, 0, 7);
	return 0;
}

static int account_query(PGconn *c, const char *where, const char *arg, const char *suffix, struct ops_account *out,
			 struct error *err)
{
	struct buf q;
	PGresult *r;
	int rc;

	buf_init(&q);
	buf_printf(&q, "SELECT %s FROM customers WHERE %s%s", account_cols, where, suffix);
	r = db_query(c, q.data, 1, &arg, err);
	buf_release(&q);
	if (!r)
		return -1;
	rc = fill_account(r, out, err, arg);
	PQclear(r);
	return rc;
}

int ops_account_get(PGconn *c, int64_t account_id, struct ops_account *out, struct error *err)
{
	char id[32];

	snprintf(id, sizeof(id), "%" PRId64, account_id);
	return account_query(c, "account_id = $1", id, "", out, err);
}

int ops_account_by_external(PGconn *c, const char *external_id, struct ops_account *out, struct error *err)
{
	return account_query(c, "external_id = $1", external_id, "", out, err);
}

int ops_lock_customer(PGconn *c, int64_t account_id, struct ops_account *out, struct error *err)
{
	char id[32];
	struct ops_account tmp;

	snprintf(id, sizeof(id), "%" PRId64, account_id);
	return account_query(c, "account_id = $1", id, " FOR UPDATE", out ? out : &tmp, err);
}

int ops_lock_customer_and_inviter(PGconn *c, int64_t account_id, struct error *err)
{
	char id[32];
	const char *p[1] = {id};
	PGresult *r;
	bool found = false;

	snprintf(id, sizeof(id), "%" PRId64, account_id);
	r = db_query(c,
		     "SELECT account_id FROM customers WHERE account_id = $1"
		     " OR account_id = (SELECT referred_by FROM customers WHERE account_id = $1)"
		     " ORDER BY account_id FOR UPDATE",
		     1, p, err);
	if (!r)
		return -1;
	for (int i = 0; i < PQntuples(r); i++)
		found |= db_int64(r, i, 0) == account_id;
	PQclear(r);
	if (!found) {
		return error_set(err, 404, "not_found", "account %" PRId64 " not found", account_id);
	}
	return 0;
}

int ops_balance_get(PGconn *c, int64_t account_id, int64_t now_us, struct ops_balance *out, struct error *err)
{
	char id[32], now[40];
	const char *p[2] = {id, now};
	PGresult *r;

	if (!now_us)
		now_us = time_now_us();
	snprintf(id, sizeof(id), "%" PRId64, account_id);
	time_format_rfc3339(now_us, now, sizeof(now));
	/* burn-down order: priority, then earliest expiry (never-expiring last), then oldest */
	r = db_query(c,
		     "SELECT la.type, b.balance, g.grant_id, g.kind, g.amount_nanos,"
		     " coalesce((extract(epoch from g.expires_at) * 1000000)::bigint, 0), g.priority,"
		     " (extract(epoch from g.created_at) * 1000000)::bigint, coalesce(g.campaign, ''),"
		     " (g.expires_at IS NOT NULL AND g.expires_at <= $2::timestamptz), la.ledger_account_id"
		     " FROM ledger_accounts la JOIN ledger_balances b USING (ledger_account_id)"
		     " LEFT JOIN grants g USING (ledger_account_id)"
		     " WHERE la.account_id = $1"
		     " ORDER BY la.type, g.priority, g.expires_at NULLS LAST, g.grant_id",
		     2, p, err);
	if (!r)
		return -1;
	memset(out, 0, sizeof(*out));
	for (int i = 0; i < PQntuples(r); i++) {
		money_total bal = db_total(r, i, 1);
		if (strcmp(PQgetvalue(r, i, 0), "customer_paid") == 0) {
			out->paid_nanos = bal;
			continue;
		}
		if (PQgetvalue(r, i, 9)[0] == 't') {
			out->expired_unbroken_nanos += bal;
			continue;
		}
		out->promo_nanos += bal;
		if (bal > 0 && db_int64(r, i, 5) && (!out->first_expiry_us || db_int64(r, i, 5) < out->first_expiry_us))
			out->first_expiry_us = db_int64(r, i, 5);
		if (bal > 0 && out->n_grants < sizeof(out->grants) / sizeof(out->grants[0])) {
			struct ops_grant_info *g = &out->grants[out->n_grants++];
			g->grant_id = db_int64(r, i, 2);
			snprintf(g->kind, sizeof(g->kind), "%s", PQgetvalue(r, i, 3));
			g->amount_nanos = db_int64(r, i, 4);
			g->remaining_nanos = money_total_clamp(bal); /* one grant's bucket: at most its amount */
			g->expires_at_us = db_int64(r, i, 5);
			g->priority = (int)db_int64(r, i, 6);
			g->created_at_us = db_int64(r, i, 7);
			snprintf(g->campaign, sizeof(g->campaign), "%s", PQgetvalue(r, i, 8));
			g->ledger_account_id = db_int64(r, i, 10);
		}
	}
	PQclear(r);
	return 0;
}

static int paid_account(PGconn *c, int64_t account_id, int64_t *la, struct error *err)
{
	char id[32];
	const char *p[1] = {id};
	PGresult *r;

	snprintf(id, sizeof(id), "%" PRId64, account_id);
	r = db_query(c,
		     "SELECT ledger_account_id FROM ledger_accounts WHERE account_id = $1 AND type = 'customer_paid'",
		     1, p, err);
	if (!r)
		return -1;
	if (PQntuples(r) != 1) {
		PQclear(r);
		return error_set(err, 404, "not_found", "account %" PRId64 " has no paid balance", account_id);
	}
	*la = db_int64(r, 0, 0);
	PQclear(r);
	return 0;
}

/* Checks an idempotency key inside the transaction: 1 duplicate (same
 * content and, when actor is given, the same actor), 0 new, -1 conflict or
 * error.  The operator of an admin grant or adjustment is part of its body
 * (a field of POST /v1/admin/grants, --operator of the CLI): another
 * operator's reuse of the key is a different body, 409.  It is compared
 * with the journal row's actor rather than hashed into the content, so
 * that keys recorded before keep their hashes. */
static int check_key(PGconn *c, const char *key, const uint8_t chash[32], int64_t *txn_id, const char *actor,
		     struct error *err)
{
	uint8_t stored[32];
	int rc = journal_find_key(c, key, txn_id, stored, err);
	const char *p[1] = {key};
	PGresult *r;
	bool same;

	if (rc == 1 && sodium_memcmp(stored, chash, 32) != 0) {
		return error_set(err, 409, "idempotency_conflict",
				 "idempotency key '%s' was used with different content", key);
	}
	if (rc != 1 || !actor)
		return rc;
	r = db_query(c,
		     "SELECT j.actor FROM ledger_idempotency k JOIN journal j USING (txn_id, created_at)"
		     " WHERE k.idempotency_key = $1",
		     1, p, err);
	if (!r)
		return -1;
	same = PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), actor) == 0;
	PQclear(r);
	if (!same)
		return error_set(err, 409, "idempotency_conflict", "idempotency key '%s' was used by another operator",
				 key);
	return 1;
}

/* ---- grant ---- */

struct grant_job {
	struct ops_ctx *x;
	const struct ops_grant_req *req;
	struct ops_grant_info *out;
	bool *duplicate;
};

static int grant_by_txn(PGconn *c, int64_t txn_id, struct ops_grant_info *out, struct error *err)
{
	char id[32];
	const char *p[1] = {id};
	PGresult *r;

	snprintf(id, sizeof(id), "%" PRId64, txn_id);
	r = db_query(c,
		     "SELECT g.grant_id, g.ledger_account_id, g.kind, g.amount_nanos, b.balance,"
		     " coalesce((extract(epoch from g.expires_at) * 1000000)::bigint, 0), g.priority,"
		     " (extract(epoch from g.created_at) * 1000000)::bigint, coalesce(g.campaign, '')"
		     " FROM grants g JOIN ledger_balances b USING (ledger_account_id) WHERE g.txn_id = $1",
		     1, p, err);
	if (!r)
		return -1;
	if (PQntuples(r) != 1) {
		PQclear(r);
		return error_set(err, 409, "idempotency_conflict",
				 "idempotency key belongs to another kind of transaction");
	}
	memset(out, 0, sizeof(*out));
	out->grant_id = db_int64(r, 0, 0);
	out->ledger_account_id = db_int64(r, 0, 1);
	snprintf(out->kind, sizeof(out->kind), "%s", PQgetvalue(r, 0, 2));
	out->amount_nanos = db_int64(r, 0, 3);
	out->remaining_nanos = db_int64(r, 0, 4);
	out->expires_at_us = db_int64(r, 0, 5);
	out->priority = (int)db_int64(r, 0, 6);
	out->created_at_us = db_int64(r, 0, 7);
	snprintf(out->campaign, sizeof(out->campaign), "%s", PQgetvalue(r, 0, 8));
	PQclear(r);
	return 0;
}

int ops_grant_in_tx(struct ops_ctx *x, const struct ops_grant_req *req, struct ops_grant_info *out, bool *duplicate,
		    struct error *err)
{
	PGconn *c = x->conn;
	char keybuf[224], acct[32], amt[32], prio[32], exp[40], txn[32], la_s[32];
	const char *key = req->idempotency_key;
	uint8_t chash[32], rnd[16];
	struct buf content, details;
	struct journal_posting post[2];
	struct journal_txn t;
	PGresult *r = NULL;
	int64_t txn_id = 0, la = 0;
	int rc = -1, found;

	buf_init(&content);
	buf_init(&details);
	*duplicate = false;
	if (req->amount_nanos <= 0) {
		error_set(err, 422, "invalid_amount", "a grant must be positive");
		goto done;
	}
	if (strcmp(req->kind, "admin") == 0 &&
	    !amount_within(req->amount_nanos, x->max_grant_nanos, OPS_MAX_GRANT_DEFAULT, "a grant", "max_grant", err))
		goto done;
	/* every grant key carries its kind, so a caller's key can never take
	 * the key of another kind of transaction (usage:..., topup:...) */
	if (key && req->internal_key) {
		snprintf(keybuf, sizeof(keybuf), "%s", key);
	} else if (key) {
		if (strlen(key) > 200) {
			error_set(err, 400, "invalid_request", "idempotency key longer than 200 characters");
			goto done;
		}
		snprintf(keybuf, sizeof(keybuf), "grant:%s", key);
	} else {
		randombytes_buf(rnd, sizeof(rnd));
		strcpy(keybuf, "grant:");
		sodium_bin2hex(keybuf + 6, sizeof(keybuf) - 6, rnd, sizeof(rnd));
	}
	key = keybuf;
	buf_printf(&content, "grant|%" PRId64 "|%" PRId64 "|%s|%s|%s|%" PRId64 "|%d", req->account_id,
		   req->amount_nanos, req->reason ? req->reason : "", req->kind, req->campaign ? req->campaign : "",
		   req->expires_at_us, req->priority);
	journal_content_hash(chash, content.data, content.len);
	/* a caller's key: the operator is part of the body (not for the
	 * promotions' own keys, signup:ID and referral:ID) */
	found = check_key(c, key, chash, &txn_id, req->internal_key ? NULL : (x->actor ? x->actor : ""), err);
	if (found < 0)
		goto done;
	if (found == 1) {
		*duplicate = true;
		rc = grant_by_txn(c, txn_id, out, err);
		goto done;
	}
	snprintf(acct, sizeof(acct), "%" PRId64, req->account_id);
	{
		const char *p[1] = {acct};
		r = db_query(c,
			     "INSERT INTO ledger_accounts (type, account_id) VALUES ('customer_promo', $1)"
			     " RETURNING ledger_account_id",
			     1, p, err);
	}
	if (!r)
		goto done;
	la = db_int64(r, 0, 0);
	PQclear(r);
	r = NULL;
	buf_puts(&details, "{\"amount_nanos\":");
	buf_printf(&details, "%" PRId64, req->amount_nanos);
	if (req->campaign) {
		buf_puts(&details, ",\"campaign\":");
		buf_json_str(&details, req->campaign);
	}
	if (req->expires_at_us) {
		time_format_rfc3339(req->expires_at_us, exp, sizeof(exp));
		buf_printf(&details, ",\"expires_at\":\"%s\"", exp);
	}
	buf_puts(&details, ",\"grant_kind\":");
	buf_json_str(&details, req->kind);
	buf_printf(&details, ",\"priority\":%d}", req->priority);
	post[0] = (struct journal_posting){la, req->account_id, req->amount_nanos};
	post[1] = (struct journal_posting){LA_PROMO_EXPENSE, 0, -req->amount_nanos};
	memset(&t, 0, sizeof(t));
	t.kind = "grant";
	t.idempotency_key = key;
	memcpy(t.content_hash, chash, 32);
	t.account_id = req->account_id;
	t.actor = x->actor;
	t.reason = req->reason ? req->reason : "";
	t.details = details.data;
	t.created_at_us = now_of(x);
	t.n_postings = 2;
	t.postings = post;
	if (journal_write(c, x->writer, &t, 1, err) < 0)
		goto done;
	snprintf(amt, sizeof(amt), "%" PRId64, req->amount_nanos);
	snprintf(prio, sizeof(prio), "%d", req->priority);
	snprintf(txn, sizeof(txn), "%" PRId64, t.txn_id);
	snprintf(la_s, sizeof(la_s), "%" PRId64, la);
	if (req->expires_at_us)
		time_format_rfc3339(req->expires_at_us, exp, sizeof(exp));
	{
		const char *p[8] = {acct,          la_s, req->kind, amt, prio, req->expires_at_us ? exp : NULL,
				    req->campaign, txn};
		if (db_exec(c,
			    "INSERT INTO grants (account_id, ledger_account_id, kind, amount_nanos, priority, expires_at,"
			    " campaign, txn_id) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)",
			    8, p, err) < 0)
			goto done;
	}
	rc = grant_by_txn(c, t.txn_id, out, err);
done:
	PQclear(r);
	buf_release(&content);
	buf_release(&details);
	return rc;
}

static int grant_tx(void *arg, struct error *err)
{
	struct grant_job *j = arg;

	if (ops_lock_customer(j->x->conn, j->req->account_id, NULL, err) < 0)
		return -1;
	return ops_grant_in_tx(j->x, j->req, j->out, j->duplicate, err);
}

int ops_grant(struct ops_ctx *x, const struct ops_grant_req *req, struct ops_grant_info *out, bool *duplicate,
	      struct error *err)
{
	struct grant_job j = {x, req, out, duplicate};

	return ops_in_tx(x->conn, grant_tx, &j, err);
}

/* ---- top-up and adjustment: paid balance against a system account ---- */

struct paid_job {
	struct ops_ctx *x;
	const char *kind;
	int64_t account_id, amount, contra;
	const char *key, *reason, *extra_json;
	int64_t txn_id;
	bool duplicate;
};

static int paid_tx(void *arg, struct error *err)
{
	struct paid_job *j = arg;
	PGconn *c = j->x->conn;
	uint8_t chash[32];
	struct buf content, details;
	struct journal_posting post[2];
	struct journal_txn t;
	int64_t la = 0;
	int found, rc = -1;

	buf_init(&content);
	buf_init(&details);
	j->duplicate = false;
	if (ops_lock_customer(c, j->account_id, NULL, err) < 0)
		goto done;
	buf_printf(&content, "%s|%" PRId64 "|%" PRId64 "|%s", j->kind, j->account_id, j->amount,
		   strcmp(j->kind, "topup") == 0 ? "" : j->reason);
	journal_content_hash(chash, content.data, content.len);
	/* an adjustment's operator is part of its body; a top-up is the payment
	 * its reference names, whoever records it */
	found = check_key(c, j->key, chash, &j->txn_id,
			  strcmp(j->kind, "adjust") == 0 ? (j->x->actor ? j->x->actor : "") : NULL, err);
	if (found < 0)
		goto done;
	if (found == 1) {
		j->duplicate = true;
		rc = 0;
		goto done;
	}
	if (paid_account(c, j->account_id, &la, err) < 0)
		goto done;
	{
		struct ops_balance before;
		char paid[MONEY_TOTAL_BUF], promo[MONEY_TOTAL_BUF];
		if (ops_balance_get(c, j->account_id, j->x->now_us, &before, err) < 0)
			goto done;
		/* the answer a replay gets: the balance right after this
		 * transaction, exact (JSON integers of any size in jsonb) */
		money_total_str(before.paid_nanos + j->amount, paid, sizeof(paid));
		money_total_str(before.promo_nanos, promo, sizeof(promo));
		buf_printf(&details,
			   "{\"amount_nanos\":%" PRId64 ",\"balance_after\":{\"paid_nanos\":%s"
			   ",\"promo_nanos\":%s}%s%s}",
			   j->amount, paid, promo, j->extra_json ? "," : "", j->extra_json ? j->extra_json : "");
	}
	post[0] = (struct journal_posting){la, j->account_id, j->amount};
	post[1] = (struct journal_posting){j->contra, 0, -j->amount};
	memset(&t, 0, sizeof(t));
	t.kind = j->kind;
	t.idempotency_key = j->key;
	memcpy(t.content_hash, chash, 32);
	t.account_id = j->account_id;
	t.actor = j->x->actor;
	t.reason = j->reason;
	t.details = details.data;
	t.created_at_us = now_of(j->x);
	t.n_postings = 2;
	t.postings = post;
	if (journal_write(c, j->x->writer, &t, 1, err) < 0)
		goto done;
	j->txn_id = t.txn_id;
	rc = 0;
done:
	buf_release(&content);
	buf_release(&details);
	return rc;
}

int ops_topup(struct ops_ctx *x, int64_t account_id, int64_t amount_nanos, const char *payment_ref,
	      struct ops_balance *after, bool *duplicate, struct error *err)
{
	char key[300];
	json_t *ref = NULL;
	char *extra = NULL;
	int rc = -1;

	if (amount_nanos <= 0) {
		return error_set(err, 422, "invalid_amount", "a top-up must be positive");
	}
	if (!amount_within(amount_nanos, x->max_topup_nanos, OPS_MAX_TOPUP_DEFAULT, "a top-up", "max_topup", err))
		return -1;
	if (!payment_ref || !*payment_ref || strlen(payment_ref) > 200) {
		return error_set(err, 400, "invalid_request", "payment_ref must be 1 to 200 characters");
	}
	snprintf(key, sizeof(key), "topup:%s", payment_ref);
	ref = json_pack("{s:s}", "payment_ref", payment_ref);
	extra = ref ? json_dumps(ref, JSON_COMPACT) : NULL;
	if (extra) {
		/* strip the braces: the fields go into the details object */
		size_t l = strlen(extra);
		memmove(extra, extra + 1, l - 2);
		extra[l - 2] = '\0';
	}
	{
		struct paid_job j = {x,        "topup", account_id, amount_nanos, LA_CASH_CLEARING, key,
				     "top-up", extra,   0,          false};
		if (ops_in_tx(x->conn, paid_tx, &j, err) < 0)
			goto done;
		*duplicate = j.duplicate;
	}
	if (after) {
		/* the balance right after the top-up, as recorded with it (the same answer on a replay) */
		const char *p[1] = {key};
		PGresult *r = db_query(x->conn,
				       "SELECT (details::json->'balance_after'->>'paid_nanos')::numeric,"
				       " (details::json->'balance_after'->>'promo_nanos')::numeric"
				       " FROM ledger_idempotency k JOIN journal j USING (txn_id, created_at)"
				       " WHERE k.idempotency_key = $1",
				       1, p, err);
		if (!r)
			goto done;
		memset(after, 0, sizeof(*after));
		if (PQntuples(r) == 1) {
			after->paid_nanos = db_total(r, 0, 0);
			after->promo_nanos = db_total(r, 0, 1);
		}
		PQclear(r);
	}
	rc = 0;
done:
	json_decref(ref);
	free(extra);
	return rc;
}

int ops_adjust(struct ops_ctx *x, int64_t account_id, int64_t amount_nanos, const char *reason,
	       const char *idempotency_key, int64_t *txn_id, bool *duplicate, struct error *err)
{
	char key[300];
	uint8_t rnd[16];
	struct paid_job j;

	if (amount_nanos == 0) {
		return error_set(err, 422, "invalid_amount", "an adjustment must not be zero");
	}
	if (!reason || !*reason) {
		return error_set(err, 400, "invalid_request", "an adjustment needs a reason");
	}
	/* CONTRACT.md §4a holds a single top-up or grant to a ceiling and says
	 * nothing of adjustments; one moves the paid balance as a top-up does,
	 * so its size, either way, is held to the top-up's (a slip of -1e10 would
	 * put an account that deep in arrears) */
	if (!amount_within(amount_nanos, x->max_topup_nanos, OPS_MAX_TOPUP_DEFAULT, "an adjustment", "max_topup", err))
		return -1;
	if (idempotency_key) {
		snprintf(key, sizeof(key), "adjust:%s", idempotency_key);
	} else {
		randombytes_buf(rnd, sizeof(rnd));
		strcpy(key, "adjust:");
		sodium_bin2hex(key + 7, sizeof(key) - 7, rnd, sizeof(rnd));
	}
	j = (struct paid_job){x, "adjust", account_id, amount_nanos, LA_ADJUSTMENTS, key, reason, NULL, 0, false};
	if (ops_in_tx(x->conn, paid_tx, &j, err) < 0)
		return -1;
	*txn_id = j.txn_id;
	*duplicate = j.duplicate;
	return 0;
}

static const char *const limit_kinds[5] = {"rpm", "tpm", "rpd", "tpd", "concurrency"};

int ops_limits_view(PGconn *c, int64_t account_id, const char *tier, json_t **out, struct error *err)
{
	char id[32];
	const char *p[2] = {id, tier};
	json_t *all = json_object(), *models = json_object();
	PGresult *r;

	snprintf(id, sizeof(id), "%" PRId64, account_id);
	/* the newest row of each scope; tier rows first, so account rows overwrite */
	r = db_query(c,
		     "SELECT model, account_id IS NOT NULL, limit_id, rpm, tpm, rpd, tpd, concurrency FROM"
		     " (SELECT DISTINCT ON (account_id IS NOT NULL, model) * FROM limits"
		     "  WHERE account_id = $1::bigint OR (account_id IS NULL AND tier = $2)"
		     "  ORDER BY account_id IS NOT NULL, model, limit_id DESC) x"
		     " ORDER BY account_id IS NOT NULL, model",
		     2, p, err);
	if (!r) {
		json_decref(all);
		json_decref(models);
		return -1;
	}
	for (int k = 0; k < 5; k++)
		json_object_set_new(all, limit_kinds[k], json_null());
	for (int i = 0; i < PQntuples(r); i++) {
		const char *model = PQgetvalue(r, i, 0);
		bool acct = PQgetvalue(r, i, 1)[0] == 't';
		json_t *scope = all;
		if (*model) {
			scope = json_object_get(models, model);
			if (!scope) {
				scope = json_object();
				for (int k = 0; k < 5; k++)
					json_object_set_new(scope, limit_kinds[k], json_null());
				json_object_set_new(models, model, scope);
			}
		}
		for (int k = 0; k < 5; k++) {
			if (PQgetisnull(r, i, 3 + k))
				continue;
			json_object_set_new(scope, limit_kinds[k],
					    json_pack("{s:I,s:s,s:I}", "value",
						      (json_int_t)strtoll(PQgetvalue(r, i, 3 + k), NULL, 10), "source",
						      acct ? "account" : "tier", "limit_id",
						      (json_int_t)strtoll(PQgetvalue(r, i, 2), NULL, 10)));
		}
	}
	PQclear(r);
	*out = json_pack("{s:s,s:o,s:o}", "tier", tier, "all_models", all, "models", models);
	return *out ? 0 : -1;
}
