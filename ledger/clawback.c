/* clawback.c: see clawback.h. */
#include "ledger/clawback.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/timeutil.h"
#include "ledger/db.h"
#include "ledger/journal.h"

/* base, or base:2, base:3 ... : the first key not in the journal */
static int free_key(PGconn *c, const char *base, char *out, size_t len, struct error *err)
{
	uint8_t h[32];
	int64_t txn;

	for (int n = 1; n < 1000; n++) {
		int found;
		if (n == 1)
			snprintf(out, len, "%s", base);
		else
			snprintf(out, len, "%s:%d", base, n);
		found = journal_find_key(c, out, &txn, h, err);
		if (found <= 0)
			return found;
	}
	return error_set(err, 500, "internal", "no free idempotency key for '%s'", base);
}

/* One clawback transaction: bucket la of customer acct loses amount to promotional expense. */
static int claw(struct ops_ctx *x, int64_t acct, int64_t grant_id, int64_t la, int64_t amount, int64_t frozen_id,
		const char *reason, struct error *err)
{
	PGconn *c = x->conn;
	char base[64], key[80];
	uint8_t chash[32];
	struct buf content, details, why;
	struct journal_posting post[2];
	struct journal_txn t;
	int rc = -1;

	buf_init(&content);
	buf_init(&details);
	buf_init(&why);
	snprintf(base, sizeof(base), "clawback:%" PRId64, grant_id);
	if (free_key(c, base, key, sizeof(key), err) < 0)
		goto done;
	buf_printf(&content, "clawback|%" PRId64 "|%" PRId64 "|%s", grant_id, amount, reason);
	journal_content_hash(chash, content.data, content.len);
	buf_printf(&details,
		   "{\"amount_nanos\":%" PRId64 ",\"frozen_account_id\":%" PRId64 ",\"grant_id\":%" PRId64 "}", amount,
		   frozen_id, grant_id);
	if (acct == frozen_id)
		buf_printf(&why, "clawback: %s", reason);
	else
		buf_printf(&why, "clawback of the referral reward for account %" PRId64 ": %s", frozen_id, reason);
	post[0] = (struct journal_posting){la, acct, -amount};
	post[1] = (struct journal_posting){LA_PROMO_EXPENSE, 0, amount};
	memset(&t, 0, sizeof(t));
	t.kind = "clawback";
	t.idempotency_key = key;
	memcpy(t.content_hash, chash, 32);
	t.account_id = acct;
	t.actor = x->actor;
	t.reason = why.data;
	t.details = details.data;
	t.created_at_us = x->now_us ? x->now_us : time_now_us();
	t.n_postings = 2;
	t.postings = post;
	if (journal_write(c, x->writer, &t, 1, err) < 0)
		goto done;
	{
		char id[32];
		const char *p[1] = {id};
		snprintf(id, sizeof(id), "%" PRId64, acct);
		if (db_exec(c, "SELECT pg_notify('billing_change', 'balance:' || $1)", 1, p, err) < 0)
			goto done;
	}
	rc = 0;
done:
	buf_release(&content);
	buf_release(&details);
	buf_release(&why);
	return rc;
}

int clawback_in_tx(struct ops_ctx *x, int64_t account_id, const char *reason, struct clawback_result *out,
		   struct error *err)
{
	PGconn *c = x->conn;
	char id[32];
	const char *p[1] = {id};
	PGresult *r = NULL;
	int rc = -1;

	memset(out, 0, sizeof(*out));
	snprintf(id, sizeof(id), "%" PRId64, account_id);
	/* the inviter's reward: lock the inviter before reading its bucket */
	r = db_query(
		c, "SELECT inviter_id, grant_id FROM referrals WHERE invitee_id = $1::bigint AND grant_id IS NOT NULL",
		1, p, err);
	if (!r)
		return -1;
	if (PQntuples(r) == 1) {
		out->inviter_id = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
		out->inviter_grant_id = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
	}
	PQclear(r);
	r = NULL;
	if (out->inviter_id && ops_lock_customer(c, out->inviter_id, NULL, err) < 0)
		return -1;
	r = db_query(c,
		     "SELECT g.grant_id, g.ledger_account_id, b.balance FROM grants g"
		     " JOIN ledger_balances b ON b.ledger_account_id = g.ledger_account_id"
		     " WHERE g.account_id = $1::bigint AND b.balance > 0 ORDER BY g.grant_id",
		     1, p, err);
	if (!r)
		return -1;
	for (int i = 0; i < PQntuples(r); i++) {
		int64_t g = strtoll(PQgetvalue(r, i, 0), NULL, 10), la = strtoll(PQgetvalue(r, i, 1), NULL, 10);
		int64_t bal = strtoll(PQgetvalue(r, i, 2), NULL, 10);
		if (claw(x, account_id, g, la, bal, account_id, reason, err) < 0)
			goto done;
		out->grants++;
		out->nanos += bal;
	}
	PQclear(r);
	r = NULL;
	if (out->inviter_grant_id) {
		char gid[32];
		const char *q[1] = {gid};
		snprintf(gid, sizeof(gid), "%" PRId64, out->inviter_grant_id);
		r = db_query(c,
			     "SELECT g.ledger_account_id, b.balance, g.account_id FROM grants g"
			     " JOIN ledger_balances b ON b.ledger_account_id = g.ledger_account_id"
			     " WHERE g.grant_id = $1::bigint",
			     1, q, err);
		if (!r)
			goto done;
		if (PQntuples(r) == 1 && strtoll(PQgetvalue(r, 0, 1), NULL, 10) > 0) {
			int64_t la = strtoll(PQgetvalue(r, 0, 0), NULL, 10),
				bal = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
			if (claw(x, strtoll(PQgetvalue(r, 0, 2), NULL, 10), out->inviter_grant_id, la, bal, account_id,
				 reason, err) < 0)
				goto done;
			out->inviter_nanos = bal;
		}
	}
	rc = 0;
done:
	PQclear(r);
	return rc;
}
