/* promo.c: see promo.h. */
#include "ledger/promo.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/timeutil.h"
#include "ledger/db.h"
#include "ledger/journal.h"

struct campaign {
	char name[101];
	int64_t signup, referral;
	int64_t expires_days, max_referrals;
	bool require_identity; /* no credit for an account without identity strings (0021) */
};

static int active_campaign(PGconn *c, int64_t now_us, struct campaign *out, struct error *err)
{
	char now[40];
	const char *p[1] = {now};
	PGresult *r;
	int found;

	time_format_rfc3339(now_us, now, sizeof(now));
	/* require_identity through the row's JSON: a database not yet migrated
	 * to 0021 (the CLIs may run against one: test_set_checks) reads as off,
	 * the behaviour before it */
	r = db_query(c,
		     "SELECT name, signup_nanos, referral_nanos, expires_days, max_referrals,"
		     " coalesce((to_jsonb(campaigns) ->> 'require_identity')::boolean, false) FROM campaigns"
		     " WHERE active AND (starts_at IS NULL OR starts_at <= $1) AND (ends_at IS NULL OR ends_at > $1)",
		     1, p, err);
	if (!r)
		return -1;
	found = PQntuples(r) == 1;
	if (found) {
		snprintf(out->name, sizeof(out->name), "%s", PQgetvalue(r, 0, 0));
		out->signup = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
		out->referral = strtoll(PQgetvalue(r, 0, 2), NULL, 10);
		out->expires_days = strtoll(PQgetvalue(r, 0, 3), NULL, 10);
		out->max_referrals = strtoll(PQgetvalue(r, 0, 4), NULL, 10);
		out->require_identity = PQgetvalue(r, 0, 5)[0] == 't';
	}
	PQclear(r);
	return found;
}

/* Takes amount from the campaign's budget: 1 taken, 0 exhausted, -1 error. */
static int take_budget(PGconn *c, const char *campaign, int64_t amount, struct error *err)
{
	char amt[32];
	const char *p[2] = {campaign, amt};
	PGresult *r;
	int ok;

	snprintf(amt, sizeof(amt), "%" PRId64, amount);
	r = db_query(c,
		     "UPDATE campaigns SET granted_nanos = granted_nanos + $2::bigint WHERE name = $1"
		     " AND (budget_nanos IS NULL OR granted_nanos + $2::bigint <= budget_nanos) RETURNING 1",
		     2, p, err);
	if (!r)
		return -1;
	ok = PQntuples(r) == 1;
	PQclear(r);
	return ok;
}

static int give(struct ops_ctx *x, const struct campaign *cp, int64_t account_id, int64_t amount, const char *kind,
		const char *key, int64_t *grant_id, int64_t *nanos, char *note, size_t notelen, struct error *err)
{
	struct ops_grant_req g;
	struct ops_grant_info info;
	int64_t now = x->now_us ? x->now_us : time_now_us();
	int64_t ceiling = x->max_grant_nanos ? x->max_grant_nanos : OPS_MAX_GRANT_DEFAULT;
	bool dup;
	int t;

	/* a grant like any other: never above the ceiling (CONTRACT.md §4a),
	 * whatever the campaign says (promo set refuses such an amount; one set
	 * before, or with a higher ceiling, gives nothing here) */
	if (amount > ceiling) {
		snprintf(note, notelen, "campaign '%s' %s credit is above the max_grant ceiling: no %s credit",
			 cp->name, kind, kind);
		return 0;
	}
	t = take_budget(x->conn, cp->name, amount, err);
	if (t < 0)
		return -1;
	if (t == 0) {
		snprintf(note, notelen, "campaign '%s' budget exhausted: no %s credit", cp->name, kind);
		return 0;
	}
	memset(&g, 0, sizeof(g));
	g.account_id = account_id;
	g.amount_nanos = amount;
	g.reason = strcmp(kind, "signup") == 0 ? "signup credit" : "referral reward";
	g.kind = kind;
	g.campaign = cp->name;
	g.expires_at_us = now + cp->expires_days * 86400LL * 1000000LL;
	g.priority = 100;
	g.idempotency_key = key;
	g.internal_key = true; /* callers' keys are "grant:..." and cannot reach these */
	if (ops_grant_in_tx(x, &g, &info, &dup, err) < 0)
		return -1;
	*grant_id = info.grant_id;
	*nanos = amount;
	snprintf(note, notelen, "%s credit from campaign '%s'", kind, cp->name);
	return 0;
}

/* Claims every identity string of account_id for kind ("signup" or
 * "referral"), all or none, inside the caller's transaction: 1 all claimed
 * (or the account has none) and savepoint promo_claim left open for the
 * caller to roll back to if the credit does not come after all; 0 one of
 * them was claimed before (nothing claimed); -1 error. */
static int claim_identities(PGconn *c, const char *kind, int64_t account_id, struct error *err)
{
	char id[32];
	const char *p[2] = {kind, id};
	PGresult *r;
	bool all;

	snprintf(id, sizeof(id), "%" PRId64, account_id);
	if (db_exec(c, "SAVEPOINT promo_claim", 0, NULL, err) < 0)
		return -1;
	/* sorted: two claimers of overlapping sets lock in the same order */
	r = db_query(
		c,
		"WITH ids AS (SELECT DISTINCT i FROM customers, unnest(identity) AS i WHERE account_id = $2::bigint),"
		" ins AS (INSERT INTO promo_identity_claims (kind, identity, account_id)"
		"         SELECT $1, i, $2::bigint FROM ids ORDER BY i ON CONFLICT DO NOTHING RETURNING 1)"
		" SELECT (SELECT count(*) FROM ids) = (SELECT count(*) FROM ins)",
		2, p, err);
	if (!r)
		return -1;
	all = PQgetvalue(r, 0, 0)[0] == 't';
	PQclear(r);
	if (!all && db_exec(c, "ROLLBACK TO SAVEPOINT promo_claim", 0, NULL, err) < 0)
		return -1;
	return all ? 1 : 0;
}

static int unclaim(PGconn *c, struct error *err)
{
	return db_exec(c, "ROLLBACK TO SAVEPOINT promo_claim", 0, NULL, err);
}

int promo_on_signup(struct ops_ctx *x, int64_t account_id, int64_t inviter_id, const char *const *identity,
		    size_t n_identity, int64_t *grant_id, int64_t *nanos, char *note, size_t notelen, struct error *err)
{
	struct campaign cp;
	char key[64];
	int found;

	(void)inviter_id;
	(void)identity;
	*grant_id = 0;
	*nanos = 0;
	found = active_campaign(x->conn, x->now_us ? x->now_us : time_now_us(), &cp, err);
	if (found < 0)
		return -1;
	if (!found || cp.signup == 0) {
		snprintf(note, notelen, "no active signup promotion");
		return 0;
	}
	/* the identity rule limits nothing without identity strings: a
	 * campaign may require one (promo set --require-identity on) */
	if (cp.require_identity && n_identity == 0) {
		snprintf(note, notelen,
			 "no signup credit: campaign '%s' requires an identity string and this signup has none",
			 cp.name);
		return 0;
	}
	/* CONTRACT.md §4: one signup credit per identity string, ever */
	found = claim_identities(x->conn, "signup", account_id, err);
	if (found < 0)
		return -1;
	if (found == 0) {
		snprintf(note, notelen, "no signup credit: an identity string of this account already received one");
		return 0;
	}
	snprintf(key, sizeof(key), "signup:%" PRId64, account_id);
	if (give(x, &cp, account_id, cp.signup, "signup", key, grant_id, nanos, note, notelen, err) < 0)
		return -1;
	/* no credit after all (budget): the identities stay unclaimed */
	return *grant_id ? 0 : unclaim(x->conn, err);
}

int promo_on_qualify(struct ops_ctx *x, int64_t invitee_id, int64_t *grant_id, int64_t *nanos, char *note,
		     size_t notelen, struct error *err)
{
	PGconn *c = x->conn;
	struct campaign cp;
	char inv[32], inviter[32], key[64], outcome[160] = "rewarded";
	const char *p[4];
	PGresult *r = NULL;
	int64_t inviter_id;
	int found, rc = -1;

	*grant_id = 0;
	*nanos = 0;
	snprintf(inv, sizeof(inv), "%" PRId64, invitee_id);
	p[0] = inv;
	r = db_query(c, "SELECT referred_by FROM customers WHERE account_id = $1 AND referred_by IS NOT NULL", 1, p,
		     err);
	if (!r)
		return -1;
	if (PQntuples(r) != 1) {
		PQclear(r);
		snprintf(note, notelen, "account was not referred");
		return 0;
	}
	inviter_id = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
	PQclear(r);
	snprintf(inviter, sizeof(inviter), "%" PRId64, inviter_id);
	/* the inviter's row lock serializes its rewards (the cap) */
	if (ops_lock_customer(c, inviter_id, NULL, err) < 0)
		return -1;
	r = db_query(c, "SELECT outcome FROM referrals WHERE invitee_id = $1", 1, p, err);
	if (!r)
		return -1;
	if (PQntuples(r) == 1) {
		snprintf(note, notelen, "referral already settled: %s", PQgetvalue(r, 0, 0));
		PQclear(r);
		return 0;
	}
	PQclear(r);
	/* never while either side is frozen; nothing is recorded, so the
	 * referral may still pay once both are active again */
	p[1] = inviter;
	r = db_query(c,
		     "SELECT (SELECT status FROM customers WHERE account_id = $1),"
		     " (SELECT status FROM customers WHERE account_id = $2)",
		     2, p, err);
	if (!r)
		return -1;
	if (strcmp(PQgetvalue(r, 0, 0), "frozen") == 0 || strcmp(PQgetvalue(r, 0, 1), "frozen") == 0) {
		snprintf(note, notelen, "no referral reward while the %s is frozen",
			 strcmp(PQgetvalue(r, 0, 1), "frozen") == 0 ? "inviter" : "invitee");
		PQclear(r);
		return 0;
	}
	PQclear(r);
	r = NULL;
	found = active_campaign(c, x->now_us ? x->now_us : time_now_us(), &cp, err);
	if (found < 0)
		return -1;
	if (!found || cp.referral == 0) {
		snprintf(cp.name, sizeof(cp.name), "none");
		snprintf(outcome, sizeof(outcome), "no active referral promotion");
		goto record;
	}
	p[1] = inviter;
	r = db_query(c,
		     "SELECT (SELECT identity FROM customers WHERE account_id = $1) &&"
		     " (SELECT identity FROM customers WHERE account_id = $2),"
		     " (SELECT count(*) FROM referrals WHERE inviter_id = $2 AND outcome = 'rewarded'),"
		     " (SELECT coalesce(cardinality(identity), 0) FROM customers WHERE account_id = $1),"
		     " (SELECT coalesce(cardinality(identity), 0) FROM customers WHERE account_id = $2)",
		     2, p, err);
	if (!r)
		return -1;
	if (cp.require_identity && (strcmp(PQgetvalue(r, 0, 2), "0") == 0 || strcmp(PQgetvalue(r, 0, 3), "0") == 0)) {
		/* the per-identity rules need both sides' strings */
		snprintf(
			outcome, sizeof(outcome),
			"no referral reward: campaign '%s' requires an identity string of invitee and inviter; the %s has none",
			cp.name, strcmp(PQgetvalue(r, 0, 2), "0") == 0 ? "invitee" : "inviter");
	} else if (PQgetvalue(r, 0, 0)[0] == 't') {
		snprintf(outcome, sizeof(outcome), "inviter and invitee share an identity");
	} else if (strtoll(PQgetvalue(r, 0, 1), NULL, 10) >= cp.max_referrals) {
		snprintf(outcome, sizeof(outcome), "inviter reached the cap of %" PRId64 " referral rewards",
			 cp.max_referrals);
	} else if ((found = claim_identities(c, "referral", invitee_id, err)) <= 0) {
		/* CONTRACT.md §4: one referral reward per invitee identity string, ever */
		if (found < 0)
			goto done;
		snprintf(outcome, sizeof(outcome),
			 "an identity string of the invitee already earned a referral reward");
	} else {
		snprintf(key, sizeof(key), "referral:%" PRId64, invitee_id);
		if (give(x, &cp, inviter_id, cp.referral, "referral", key, grant_id, nanos, note, notelen, err) < 0)
			goto done;
		if (*grant_id == 0) {
			snprintf(outcome, sizeof(outcome), "%s", note);
			if (unclaim(c, err) < 0)
				goto done;
		}
	}
	PQclear(r);
	r = NULL;
record : {
	char gid[32];
	snprintf(gid, sizeof(gid), "%" PRId64, *grant_id);
	const char *q[5] = {inv, inviter, cp.name, outcome, *grant_id ? gid : NULL};
	if (db_exec(c,
		    "INSERT INTO referrals (invitee_id, inviter_id, campaign, outcome, grant_id)"
		    " VALUES ($1,$2,$3,$4,$5)",
		    5, q, err) < 0)
		goto done;
}
	if (*grant_id == 0)
		snprintf(note, notelen, "%s", outcome);
	rc = 0;
done:
	PQclear(r);
	return rc;
}

struct expire_job {
	struct ops_ctx *x;
	int64_t grant_id, account_id, la;
	int64_t moved;
};

static int expire_tx(void *arg, struct error *err)
{
	struct expire_job *j = arg;
	char la[32], key[64], details[96];
	const char *p[1] = {la};
	struct journal_posting post[2];
	struct journal_txn t;
	uint8_t chash[32];
	int64_t bal, txn;
	PGresult *r;
	int found;

	j->moved = 0;
	if (ops_lock_customer(j->x->conn, j->account_id, NULL, err) < 0)
		return -1;
	snprintf(key, sizeof(key), "breakage:%" PRId64, j->grant_id);
	journal_content_hash(chash, key, strlen(key));
	found = journal_find_key(j->x->conn, key, &txn, chash, err);
	if (found != 0)
		return found < 0 ? -1 : 0; /* already broken down */
	snprintf(la, sizeof(la), "%" PRId64, j->la);
	r = db_query(j->x->conn, "SELECT balance FROM ledger_balances WHERE ledger_account_id = $1", 1, p, err);
	if (!r)
		return -1;
	bal = PQntuples(r) == 1 ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : 0;
	PQclear(r);
	if (bal <= 0)
		return 0;
	snprintf(details, sizeof(details), "{\"grant_id\":%" PRId64 ",\"amount_nanos\":%" PRId64 "}", j->grant_id, bal);
	post[0] = (struct journal_posting){j->la, j->account_id, -bal};
	post[1] = (struct journal_posting){LA_BREAKAGE, 0, bal};
	memset(&t, 0, sizeof(t));
	t.kind = "breakage";
	t.idempotency_key = key;
	journal_content_hash(t.content_hash, key, strlen(key));
	t.account_id = j->account_id;
	t.actor = j->x->actor;
	t.reason = "promotional credit expired";
	t.details = details;
	t.created_at_us = j->x->now_us ? j->x->now_us : time_now_us();
	t.n_postings = 2;
	t.postings = post;
	if (journal_write(j->x->conn, j->x->writer, &t, 1, err) < 0)
		return -1;
	j->moved = bal;
	return 0;
}

int promo_expire_due(struct ops_ctx *x, int64_t now_us, int limit, int *moved, int64_t *nanos, struct error *err)
{
	char now[40], lim[16];
	const char *p[2] = {now, lim};
	PGresult *r;

	*moved = 0;
	*nanos = 0;
	time_format_rfc3339(now_us, now, sizeof(now));
	snprintf(lim, sizeof(lim), "%d", limit);
	r = db_query(
		x->conn,
		"SELECT g.grant_id, g.account_id, g.ledger_account_id FROM grants g"
		" JOIN ledger_balances b USING (ledger_account_id)"
		" WHERE g.expires_at <= $1::timestamptz AND b.balance > 0"
		" AND NOT EXISTS (SELECT 1 FROM ledger_idempotency k WHERE k.idempotency_key = 'breakage:' || g.grant_id)"
		" ORDER BY g.expires_at, g.grant_id LIMIT $2",
		2, p, err);
	if (!r)
		return -1;
	for (int i = 0; i < PQntuples(r); i++) {
		struct expire_job j = {x, strtoll(PQgetvalue(r, i, 0), NULL, 10),
				       strtoll(PQgetvalue(r, i, 1), NULL, 10), strtoll(PQgetvalue(r, i, 2), NULL, 10),
				       0};
		if (ops_in_tx(x->conn, expire_tx, &j, err) < 0) {
			PQclear(r);
			return -1;
		}
		if (j.moved) {
			(*moved)++;
			*nanos += j.moved;
		}
	}
	PQclear(r);
	return 0;
}

struct qualify {
	struct ops_ctx *x;
	int64_t id;
	bool verify, reward;
	int64_t *grant_id, *nanos;
	char *note;
	size_t notelen;
};

static int qualify_tx(void *arg, struct error *err)
{
	struct qualify *q = arg;
	char id[32];
	const char *p[1] = {id};

	snprintf(id, sizeof(id), "%" PRId64, q->id);
	/* the invitee and its inviter, in id order like every other writer: no deadlock */
	if (ops_lock_customer_and_inviter(q->x->conn, q->id, err) < 0)
		return -1;
	if (q->verify &&
	    db_exec(q->x->conn, "UPDATE customers SET verified = true WHERE account_id = $1", 1, p, err) < 0)
		return -1;
	if (!q->reward) {
		snprintf(q->note, q->notelen, "referral rewards are triggered by the first top-up");
		return 0;
	}
	return promo_on_qualify(q->x, q->id, q->grant_id, q->nanos, q->note, q->notelen, err);
}

int promo_verify(struct ops_ctx *x, int64_t account_id, bool reward, int64_t *grant_id, int64_t *nanos, char *note,
		 size_t notelen, struct error *err)
{
	struct qualify q = {x, account_id, true, reward, grant_id, nanos, note, notelen};

	*grant_id = *nanos = 0;
	return ops_in_tx(x->conn, qualify_tx, &q, err);
}

int promo_after_topup(struct ops_ctx *x, int64_t account_id, int64_t *grant_id, int64_t *nanos, char *note,
		      size_t notelen, struct error *err)
{
	struct qualify q = {x, account_id, false, true, grant_id, nanos, note, notelen};

	*grant_id = *nanos = 0;
	return ops_in_tx(x->conn, qualify_tx, &q, err);
}
