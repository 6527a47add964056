/* verify.c: see verify.h. */
#include "ledger/verify.h"

#include <inttypes.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "common/timeutil.h"
#include "ledger/db.h"
#include "ledger/journal.h"

static int hex32(const char *hex, uint8_t out[32])
{
	size_t got = 0;

	if (strncmp(hex, "\\x", 2) == 0)
		hex += 2;
	return sodium_hex2bin(out, 32, hex, strlen(hex), NULL, &got, NULL) == 0 && got == 32 ? 0 : -1;
}

/* "la:amount,la:amount" -> postings; returns count or -1 */
static int parse_postings(const char *s, struct journal_posting **out, size_t *cap)
{
	size_t n = 0;
	char *end;

	while (s && *s) {
		if (n == *cap) {
			struct journal_posting *np = realloc(*out, (*cap = *cap ? *cap * 2 : 16) * sizeof(**out));
			if (!np)
				return -1;
			*out = np;
		}
		(*out)[n].ledger_account_id = strtoll(s, &end, 10);
		if (*end != ':')
			return -1;
		(*out)[n].amount = strtoll(end + 1, &end, 10);
		(*out)[n].account_id = 0;
		n++;
		s = *end == ',' ? end + 1 : end;
	}
	return (int)n;
}

static void bad(struct verify_report *rep, int64_t txn, const char *writer, int64_t seq, const char *what)
{
	rep->ok = 0;
	rep->bad_txn_id = txn;
	snprintf(rep->bad_writer, sizeof(rep->bad_writer), "%s", writer);
	rep->bad_seq = seq;
	if (txn)
		snprintf(rep->problem, sizeof(rep->problem), "transaction %" PRId64 " (writer %s, seq %" PRId64 "): %s",
			 txn, writer, seq, what);
	else
		snprintf(rep->problem, sizeof(rep->problem), "writer %s, seq %" PRId64 ": %s", writer, seq, what);
}

/* Where the walk over the journal, writer by writer in seq order, stands. */
struct chain_walk {
	char writer[256];
	uint8_t prev[32]; /* the hash of the writer's previous transaction */
	int64_t expect;   /* the seq that must come next */
	int64_t prev_txn; /* the transaction that had seq expect - 1 */
	struct journal_posting *posts;
	size_t cap;
};

/* Row i of the chain cursor: in sequence, linked to the previous one, and
 * its hash recomputed from its content and postings; else the problem in
 * rep. */
static void check_txn(struct chain_walk *cw, PGresult *r, int i, struct verify_report *rep)
{
	struct journal_txn t;
	uint8_t stored_prev[32], stored[32], h[32];
	int64_t txn = strtoll(PQgetvalue(r, i, 0), NULL, 10);
	const char *w = PQgetvalue(r, i, 1);
	int64_t seq = strtoll(PQgetvalue(r, i, 2), NULL, 10);
	int np;

	if (strcmp(w, cw->writer) != 0) {
		snprintf(cw->writer, sizeof(cw->writer), "%s", w);
		memset(cw->prev, 0, sizeof(cw->prev));
		cw->expect = 1;
		rep->writers++;
	}
	if (seq < cw->expect) {
		/* not a gap: a second row with a seq the chain already had */
		char what[200];
		snprintf(what, sizeof(what),
			 "seq %" PRId64 " comes a second time (transaction %" PRId64
			 " has it too): a duplicated or inserted journal row",
			 seq, cw->prev_txn);
		bad(rep, txn, cw->writer, seq, what);
		return;
	}
	if (seq != cw->expect) {
		char what[200];
		snprintf(what, sizeof(what),
			 "transaction seq %" PRId64 " is missing (deleted?) before transaction %" PRId64
			 " (seq %" PRId64 ")",
			 cw->expect, txn, seq);
		bad(rep, 0, cw->writer, cw->expect, what);
		return;
	}
	if (hex32(PQgetvalue(r, i, 10), stored_prev) < 0 || hex32(PQgetvalue(r, i, 11), stored) < 0) {
		bad(rep, txn, cw->writer, seq, "malformed hash");
		return;
	}
	if (sodium_memcmp(stored_prev, cw->prev, 32) != 0) {
		bad(rep, txn, cw->writer, seq, "prev_hash does not match the previous transaction's hash");
		return;
	}
	np = parse_postings(PQgetisnull(r, i, 12) ? "" : PQgetvalue(r, i, 12), &cw->posts, &cw->cap);
	if (np < 0) {
		bad(rep, txn, cw->writer, seq, "unreadable postings");
		return;
	}
	memset(&t, 0, sizeof(t));
	t.kind = PQgetvalue(r, i, 3);
	t.idempotency_key = PQgetvalue(r, i, 4);
	t.account_id = strtoll(PQgetvalue(r, i, 5), NULL, 10);
	t.actor = PQgetvalue(r, i, 6);
	t.reason = PQgetvalue(r, i, 7);
	t.details = PQgetvalue(r, i, 8);
	t.created_at_us = strtoll(PQgetvalue(r, i, 9), NULL, 10);
	t.n_postings = (size_t)np;
	t.postings = cw->posts;
	journal_hash(h, cw->prev, cw->writer, seq, &t);
	if (sodium_memcmp(h, stored, 32) != 0) {
		bad(rep, txn, cw->writer, seq, "hash does not match its content (transaction or postings altered)");
		return;
	}
	memcpy(cw->prev, stored, 32);
	cw->prev_txn = txn;
	cw->expect++;
	rep->txns++;
}

/* Every writer's hash chain, through a cursor in the caller's snapshot,
 * until the first problem.  0 (the verdict in rep), or -1 with err. */
static int walk_chains(PGconn *c, FILE *progress, struct verify_report *rep, struct error *err)
{
	struct chain_walk cw = {"", {0}, 1, 0, NULL, 0};
	int rc = -1;

	if (db_exec(c,
		    "DECLARE chain NO SCROLL CURSOR FOR"
		    " SELECT j.txn_id, j.writer, j.seq, j.kind, j.idempotency_key, coalesce(j.account_id, 0), j.actor,"
		    " j.reason, j.details, (extract(epoch from j.created_at) * 1000000)::bigint,"
		    " encode(j.prev_hash, 'hex'), encode(j.hash, 'hex'),"
		    " (SELECT string_agg(p.ledger_account_id || ':' || p.amount, ',' ORDER BY p.line)"
		    "    FROM postings p WHERE p.txn_id = j.txn_id AND p.created_at = j.created_at)"
		    " FROM journal j ORDER BY j.writer, j.seq",
		    0, NULL, err) < 0)
		return -1;
	while (rep->ok) {
		PGresult *r = db_query(c, "FETCH 5000 FROM chain", 0, NULL, err);
		int n;

		if (!r)
			goto done;
		n = PQntuples(r);
		for (int i = 0; i < n && rep->ok; i++)
			check_txn(&cw, r, i, rep);
		PQclear(r);
		if (n == 0)
			break;
		if (rep->ok && progress)
			fprintf(progress, "\rverified %" PRId64 " transactions", rep->txns);
	}
	if (progress && rep->txns)
		fprintf(progress, "\n");
	rc = 0;
done:
	free(cw.posts);
	return rc;
}

/* The first row sql finds (txn_id, writer, seq) is the problem what. */
static int first_offender(PGconn *c, const char *sql, const char *what, struct verify_report *rep, struct error *err)
{
	PGresult *r = db_query(c, sql, 0, NULL, err);

	if (!r)
		return -1;
	if (PQntuples(r) == 1)
		bad(rep, strtoll(PQgetvalue(r, 0, 0), NULL, 10), PQgetvalue(r, 0, 1),
		    strtoll(PQgetvalue(r, 0, 2), NULL, 10), what);
	PQclear(r);
	return 0;
}

/* What the hashes do not cover but every reader relies on: which customer
 * a ledger account belongs to and what type it is (statements, balances,
 * burn-down, the trial balance and exports read both from ledger_accounts).
 * Both follow from hashed facts: the system accounts 1..5 have fixed types,
 * a customer account is a grant's bucket (customer_promo) or else the paid
 * balance, every posting on a customer account is in a transaction whose
 * hashed account_id is that customer, and a grant's row names the customer
 * and bucket of the hashed transaction that funded it.  The first ledger
 * account or grant that disagrees is the problem. */
static int check_ledger_accounts(PGconn *c, struct verify_report *rep, struct error *err)
{
	static const char *const sql[] = {
		"SELECT la.ledger_account_id::text, la.type || ' with customer ' || coalesce(la.account_id::text, 'none'),"
		" CASE la.ledger_account_id WHEN 1 THEN 'revenue' WHEN 2 THEN 'promo_expense' WHEN 3 THEN 'breakage'"
		"  WHEN 4 THEN 'cash_clearing' WHEN 5 THEN 'adjustments'"
		"  ELSE CASE WHEN EXISTS (SELECT 1 FROM grants g WHERE g.ledger_account_id = la.ledger_account_id)"
		"  THEN 'customer_promo (a grant''s bucket)' ELSE 'customer_paid' END END"
		" FROM ledger_accounts la"
		" WHERE la.type IS DISTINCT FROM CASE la.ledger_account_id WHEN 1 THEN 'revenue' WHEN 2 THEN 'promo_expense'"
		"  WHEN 3 THEN 'breakage' WHEN 4 THEN 'cash_clearing' WHEN 5 THEN 'adjustments'"
		"  ELSE CASE WHEN EXISTS (SELECT 1 FROM grants g WHERE g.ledger_account_id = la.ledger_account_id)"
		"  THEN 'customer_promo' ELSE 'customer_paid' END END"
		" ORDER BY la.ledger_account_id LIMIT 1",
		"SELECT p.ledger_account_id::text, 'customer ' || coalesce(la.account_id::text, 'none'),"
		" 'customer ' || coalesce(j.account_id::text, 'none') || ', whose transaction ' || j.txn_id"
		" || ' (writer ' || j.writer || ', seq ' || j.seq || ') posts to it on line ' || p.line"
		" FROM postings p JOIN journal j ON j.txn_id = p.txn_id AND j.created_at = p.created_at"
		" JOIN ledger_accounts la ON la.ledger_account_id = p.ledger_account_id"
		" WHERE la.type IN ('customer_paid', 'customer_promo') AND la.account_id IS DISTINCT FROM j.account_id"
		" ORDER BY p.ledger_account_id, p.txn_id, p.line LIMIT 1",
		"SELECT g.ledger_account_id::text, 'grant ' || g.grant_id || ' of customer ' || g.account_id"
		" || ' funded by transaction ' || g.txn_id,"
		" 'customer ' || coalesce(k.account_id::text, 'none') || ' (the funding transaction''s),"
		" bucket of customer ' || coalesce(la.account_id::text, 'none') || ', funded on it: '"
		" || CASE WHEN EXISTS (SELECT 1 FROM postings p WHERE p.txn_id = g.txn_id AND p.created_at = k.created_at"
		"  AND p.ledger_account_id = g.ledger_account_id) THEN 'yes' ELSE 'no' END"
		" FROM grants g JOIN ledger_accounts la ON la.ledger_account_id = g.ledger_account_id"
		" LEFT JOIN ledger_idempotency k ON k.txn_id = g.txn_id"
		" WHERE la.account_id IS DISTINCT FROM g.account_id OR k.account_id IS DISTINCT FROM g.account_id"
		" OR NOT EXISTS (SELECT 1 FROM postings p WHERE p.txn_id = g.txn_id AND p.created_at = k.created_at"
		"  AND p.ledger_account_id = g.ledger_account_id)"
		" ORDER BY g.ledger_account_id LIMIT 1",
	};

	for (size_t i = 0; i < sizeof(sql) / sizeof(sql[0]) && rep->ok; i++) {
		PGresult *r = db_query(c, sql[i], 0, NULL, err);

		if (!r)
			return -1;
		if (PQntuples(r) == 1) {
			rep->ok = 0;
			snprintf(
				rep->problem, sizeof(rep->problem),
				"ledger account %s: %s, where the hashed transactions say %s (ledger_accounts or grants"
				" altered)",
				PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2));
		}
		PQclear(r);
	}
	return 0;
}

/* Every stored balance equals the sum of its postings. */
static int check_balances(PGconn *c, struct verify_report *rep, struct error *err)
{
	PGresult *r = db_query(c, "SELECT ledger_account_id, stored, computed FROM ledger_balance_mismatches() LIMIT 1",
			       0, NULL, err);

	if (!r)
		return -1;
	if (PQntuples(r) == 1) {
		rep->ok = 0;
		snprintf(rep->problem, sizeof(rep->problem),
			 "ledger account %s: stored balance %s differs from its postings' sum %s", PQgetvalue(r, 0, 0),
			 PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2));
	}
	PQclear(r);
	return 0;
}

int verify_chain(PGconn *c, FILE *progress, struct verify_report *rep, struct error *err)
{
	int rc = -1;

	memset(rep, 0, sizeof(*rep));
	rep->ok = 1;
	if (db_exec(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL, err) < 0)
		return -1;
	if (walk_chains(c, progress, rep, err) < 0)
		goto done;
	if (rep->ok &&
	    first_offender(c,
			   "SELECT p.txn_id, coalesce(j.writer, '?'), coalesce(j.seq, 0) FROM postings p"
			   " LEFT JOIN journal j USING (txn_id, created_at) GROUP BY p.txn_id, j.writer, j.seq"
			   " HAVING sum(p.amount) <> 0 OR j.writer IS NULL ORDER BY p.txn_id LIMIT 1",
			   "postings do not sum to zero or have no transaction", rep, err) < 0)
		goto done;
	/* the key table (migration 0006) mirrors each journal row's keys and
	 * hash, and writers take their chain head from it */
	if (rep->ok &&
	    first_offender(
		    c,
		    "SELECT coalesce(j.txn_id, k.txn_id), coalesce(j.writer, k.writer), coalesce(j.seq, k.seq)"
		    " FROM journal j FULL JOIN ledger_idempotency k"
		    " ON k.txn_id = j.txn_id AND k.created_at = j.created_at"
		    " WHERE j.txn_id IS NULL OR k.txn_id IS NULL OR k.hash <> j.hash OR k.writer <> j.writer"
		    " OR k.seq <> j.seq OR k.idempotency_key <> j.idempotency_key OR k.content_hash <> j.content_hash"
		    " OR k.account_id IS DISTINCT FROM j.account_id"
		    " ORDER BY 1 LIMIT 1",
		    "its ledger_idempotency row does not match it (or is missing)", rep, err) < 0)
		goto done;
	if (rep->ok && check_ledger_accounts(c, rep, err) < 0)
		goto done;
	if (rep->ok && check_balances(c, rep, err) < 0)
		goto done;
	rc = 0;
done:
	db_exec_quiet(c, "ROLLBACK");
	return rc;
}

int verify_trial_balance(PGconn *c, const int64_t *at_us, struct trial_row *rows, int max, struct error *err)
{
	char at[40];
	const char *p[1] = {at_us ? at : NULL};
	PGresult *r;
	int n;

	/* the instant as text, as every other range of the CLIs: exact to the
	 * microsecond in any year (a microsecond count times an interval is
	 * float8 arithmetic), and the epoch itself is an instant, not "all" */
	if (at_us)
		time_format_rfc3339(*at_us, at, sizeof(at));
	r = db_query(c,
		     "SELECT la.type, coalesce(sum(-p.amount) FILTER (WHERE p.amount < 0), 0),"
		     " coalesce(sum(p.amount) FILTER (WHERE p.amount > 0), 0)"
		     " FROM postings p JOIN ledger_accounts la USING (ledger_account_id)"
		     " JOIN journal j ON j.txn_id = p.txn_id AND j.created_at = p.created_at"
		     " WHERE $1::timestamptz IS NULL OR j.created_at <= $1::timestamptz"
		     " GROUP BY la.type ORDER BY la.type",
		     1, p, err);
	if (!r)
		return -1;
	n = PQntuples(r) < max ? PQntuples(r) : max;
	for (int i = 0; i < n; i++) {
		snprintf(rows[i].type, sizeof(rows[i].type), "%s", PQgetvalue(r, i, 0));
		if (money_total_parse(PQgetvalue(r, i, 1), &rows[i].debits) < 0 ||
		    money_total_parse(PQgetvalue(r, i, 2), &rows[i].credits) < 0) {
			error_set(err, 500, "internal", "trial balance of '%s' is not an integer below 10^38",
				  PQgetvalue(r, i, 0));
			PQclear(r);
			return -1;
		}
	}
	PQclear(r);
	return n;
}
