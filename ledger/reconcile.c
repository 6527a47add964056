/* reconcile.c: see reconcile.h. */
#include "ledger/reconcile.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/buf.h"
#include "common/rclient.h"
#include "common/timeutil.h"
#include "common/mirror_lua.h"
#include "common/rkeys.h"
#include "ledger/db.h"

#define CHUNK 1000
/* rechecks of a difference (the first after settle_ms, then RECHECK_PAUSE_MS apart) */
#define RECHECK_ROUNDS 3
#define RECHECK_PAUSE_MS 200
/* between the ledger and the second read of the mirror: longer than a settle takes after its commit */
#define RECHECK_SETTLE_GAP_MS 100

/* A repair is an unlocked mirror load: the same load as billingd's
 * (common/mirror_lua.h), stored only if the version did not move since the
 * mirror was read.  It takes a new load generation too, so a settle prepared
 * before it drops the mirror rather than applying its delta twice. */
static const char repair_lua[] = MIRROR_LUA_REPAIR;

static const char ledger_sql[] =
	"SELECT c.account_id, c.status,"
	" coalesce((SELECT b.balance FROM ledger_accounts la JOIN ledger_balances b USING (ledger_account_id)"
	"   WHERE la.account_id = c.account_id AND la.type = 'customer_paid'), 0),"
	" coalesce((SELECT sum(b.balance) FROM grants g JOIN ledger_balances b USING (ledger_account_id)"
	"   WHERE g.account_id = c.account_id AND (g.expires_at IS NULL OR g.expires_at > $1::timestamptz)), 0),"
	/* the first expiry of a grant with credit left bounds the mirror's lifetime */
	" coalesce((SELECT (extract(epoch FROM min(x.e)) * 1000000)::bigint FROM (SELECT g.expires_at e"
	"   FROM grants g JOIN ledger_balances b USING (ledger_account_id) WHERE g.account_id = c.account_id"
	"   AND g.expires_at > $1::timestamptz GROUP BY g.grant_id, g.expires_at HAVING sum(b.balance) > 0) x), 0)"
	" FROM customers c";

void reconcile_report_release(struct reconcile_report *rep)
{
	free(rep->diffs);
	free(rep->not_loaded_ids);
	memset(rep, 0, sizeof(*rep));
}

static struct rclient *redis_open(const struct reconcile_opts *o, struct error *err)
{
	/* one host:port[/db], or a list of cluster seeds (host:port,...) */
	struct rclient *rc = rclient_new(o->redis, o->timeout_ms, err);
	if (!rc)
		return NULL;
	if (rclient_connect(rc, err) < 0) {
		rclient_free(rc);
		return NULL;
	}
	return rc;
}

/* The Redis holds this database's mirrors, or nobody's (a repair, which
 * writes them, then claims it as billingd does at start): compared with
 * another database's mirrors, every account would differ, and a repair
 * would overwrite that database's balances (common/rclient.h
 * rclient_redis_owner). */
static int owner_check(PGconn *c, struct rclient *rc, const struct reconcile_opts *o, struct error *err)
{
	char mine[256], other[256];
	int n;

	if (db_identity(c, mine, sizeof(mine), err) < 0)
		return -1;
	n = rclient_redis_owner(rc, mine, o->repair, other, sizeof(other), err);
	if (n == 1)
		error_set(err, 409, "conflict",
			  "redis %s holds the mirrors of another billing database (%s; this one is %s):"
			  " reconcile compares a database with its own Redis",
			  o->redis, other, mine);
	return n == 0 ? 0 : -1;
}

int64_t reconcile_mirror_split(money_total v, money_total *excess)
{
	int64_t m = v > RECONCILE_MIRROR_CAP    ? RECONCILE_MIRROR_CAP
		    : v < -RECONCILE_MIRROR_CAP ? -RECONCILE_MIRROR_CAP
						: (int64_t)v;

	*excess = v - m;
	return m;
}

/* a mirror field and its offset field (absent: 0) as one exact value */
static bool parse_int(const redisReply *e, const redisReply *off, money_total *out)
{
	char *end;
	int64_t v;
	money_total o = 0;

	if (!e || e->type != REDIS_REPLY_STRING || e->len == 0)
		return false;
	errno = 0;
	v = strtoll(e->str, &end, 10);
	if (errno || *end != '\0')
		return false;
	if (off && off->type == REDIS_REPLY_STRING && money_total_parse(off->str, &o) < 0)
		return false;
	*out = (money_total)v + o;
	return true;
}

/* Reads the mirror of n accounts (pipelined HMGET + GET) and compares with
 * the ledger's values: out[i], differs[i], missing[i]. */
static int compare_chunk(struct rclient *rc, const int64_t *ids, const money_total (*ledger)[2], char (*status)[16],
			 const int64_t *first_exp, size_t n, struct reconcile_diff *out, bool *differs, bool *missing,
			 struct error *err)
{
	struct rclient_cmd *cmds = calloc(2 * n + 1, sizeof(*cmds));
	redisReply **replies = calloc(2 * n + 1, sizeof(*replies));
	char(*keys)[2][48] = calloc(n + 1, sizeof(*keys));
	const char **argv = calloc(10 * n + 1, sizeof(*argv));
	int ret = -1;

	if (!cmds || !replies || !keys || !argv) {
		error_set(err, 0, "oom", "out of memory");
		goto done;
	}
	for (size_t i = 0; i < n; i++) {
		const char **a = &argv[10 * i];
		rkey(keys[i][0], sizeof(keys[i][0]), ids[i], RKEY_BAL);
		rkey(keys[i][1], sizeof(keys[i][1]), ids[i], RKEY_ST);
		a[0] = "HMGET", a[1] = keys[i][0], a[2] = "paid", a[3] = "promo", a[4] = "status";
		a[5] = "poff", a[6] = "qoff";
		a[7] = "HGET", a[8] = keys[i][1], a[9] = RKEY_ST_VER;
		cmds[2 * i] = (struct rclient_cmd){7, a, NULL};
		cmds[2 * i + 1] = (struct rclient_cmd){3, a + 7, NULL};
	}
	/* pipelined per node (every key of an account is in its slot) */
	if (rclient_pipeline(rc, 2 * n, cmds, replies, err) < 0) {
		char msg[sizeof(err->msg)];
		snprintf(msg, sizeof(msg), "%s", err->msg);
		error_set(err, 503, "unavailable", "redis HMGET: %s", msg);
		goto done;
	}
	for (size_t i = 0; i < n; i++) {
		redisReply *r = replies[2 * i], *v = replies[2 * i + 1];
		struct reconcile_diff *d = &out[i];

		if (r->type != REDIS_REPLY_ARRAY || r->elements != 5 ||
		    (v->type != REDIS_REPLY_STRING && v->type != REDIS_REPLY_NIL)) {
			error_set(err, 503, "unavailable", "redis: unexpected reply for the mirror of account %" PRId64,
				  ids[i]);
			goto done;
		}
		memset(d, 0, sizeof(*d));
		d->account_id = ids[i];
		d->ledger_paid = ledger[i][0];
		d->ledger_promo = ledger[i][1];
		d->ledger_first_expiry_us = first_exp[i];
		snprintf(d->ledger_status, sizeof(d->ledger_status), "%s", status[i]);
		d->mirror_has_paid = parse_int(r->element[0], r->element[3], &d->mirror_paid);
		d->mirror_has_promo = parse_int(r->element[1], r->element[4], &d->mirror_promo);
		if (r->element[2]->type == REDIS_REPLY_STRING)
			snprintf(d->mirror_status, sizeof(d->mirror_status), "%.*s", (int)r->element[2]->len,
				 r->element[2]->str);
		if (v->type == REDIS_REPLY_STRING)
			snprintf(d->mirror_v, sizeof(d->mirror_v), "%.*s", (int)v->len, v->str);
		missing[i] = r->element[0]->type == REDIS_REPLY_NIL && r->element[1]->type == REDIS_REPLY_NIL &&
			     r->element[2]->type == REDIS_REPLY_NIL;
		differs[i] = !missing[i] &&
			     (!d->mirror_has_paid || !d->mirror_has_promo || d->mirror_paid != d->ledger_paid ||
			      d->mirror_promo != d->ledger_promo || strcmp(d->mirror_status, d->ledger_status) != 0);
	}
	ret = 0;
done:
	for (size_t i = 0; replies && i < 2 * n; i++)
		freeReplyObject(replies[i]);
	free(cmds);
	free(replies);
	free(keys);
	free(argv);
	return ret;
}

static int add_diff(struct reconcile_report *rep, const struct reconcile_diff *d)
{
	if (rep->n_diffs == rep->cap_diffs) {
		size_t cap = rep->cap_diffs ? rep->cap_diffs * 2 : 64;
		struct reconcile_diff *v = realloc(rep->diffs, cap * sizeof(*v));
		if (!v)
			return -1;
		rep->diffs = v;
		rep->cap_diffs = cap;
	}
	rep->diffs[rep->n_diffs++] = *d;
	return 0;
}

/* Ledger values of the rows of r into ids/vals/status/first_exp. */
static void take_rows(PGresult *r, int64_t *ids, money_total (*vals)[2], char (*status)[16], int64_t *first_exp)
{
	for (int i = 0; i < PQntuples(r); i++) {
		ids[i] = strtoll(PQgetvalue(r, i, 0), NULL, 10);
		snprintf(status[i], sizeof(status[i]), "%s", PQgetvalue(r, i, 1));
		/* numeric sums of balances: exact */
		if (money_total_parse(PQgetvalue(r, i, 2), &vals[i][0]) < 0)
			vals[i][0] = 0;
		if (money_total_parse(PQgetvalue(r, i, 3), &vals[i][1]) < 0)
			vals[i][1] = 0;
		first_exp[i] = strtoll(PQgetvalue(r, i, 4), NULL, 10);
	}
}

/* true when the ledger's value lies between two reads of the mirror (a
 * before the ledger's snapshot, b after it) */
static bool between(money_total l, money_total a, money_total b)
{
	return a <= b ? a <= l && l <= b : b <= l && l <= a;
}

/* A difference the mirror's moves explain: a settle follows its commit, so
 * what the mirror held before the ledger's snapshot was settled from commits
 * the snapshot sees, and what it holds after may include commits the snapshot
 * missed.  Under load the ledger's balance then lies between the two reads
 * (each of paid and promo), and its status is one of theirs. */
static bool moved_while_read(const struct reconcile_diff *before, const struct reconcile_diff *after)
{
	if (!before->mirror_has_paid || !before->mirror_has_promo || !after->mirror_has_paid ||
	    !after->mirror_has_promo)
		return false;
	if (strcmp(after->ledger_status, before->mirror_status) != 0 &&
	    strcmp(after->ledger_status, after->mirror_status) != 0)
		return false;
	return between(after->ledger_paid, before->mirror_paid, after->mirror_paid) &&
	       between(after->ledger_promo, before->mirror_promo, after->mirror_promo);
}

/* Reads the mirror of the accounts in d[0..n) (their ledger fields as they
 * were) into before[], chunk by chunk. */
static int read_mirrors(struct rclient *rc, const struct reconcile_diff *d, size_t n, struct reconcile_diff *before,
			struct error *err)
{
	int64_t ids[CHUNK], first_exp[CHUNK];
	money_total vals[CHUNK][2];
	char status[CHUNK][16];
	bool differs[CHUNK], missing[CHUNK];

	for (size_t off = 0; off < n; off += CHUNK) {
		size_t k = n - off < CHUNK ? n - off : CHUNK;
		for (size_t i = 0; i < k; i++) {
			ids[i] = d[off + i].account_id;
			vals[i][0] = d[off + i].ledger_paid;
			vals[i][1] = d[off + i].ledger_promo;
			first_exp[i] = d[off + i].ledger_first_expiry_us;
			snprintf(status[i], sizeof(status[i]), "%s", d[off + i].ledger_status);
		}
		if (compare_chunk(rc, ids, (const money_total(*)[2])vals, status, first_exp, k, before + off, differs,
				  missing, err) < 0)
			return -1;
	}
	return 0;
}

/* One more look at the differences still standing: the mirror, the ledger,
 * the mirror again.  A difference stands only if the mirror's moves during
 * the read do not explain it (moved_while_read). */
static int recheck_round(PGconn *c, struct rclient *rc, const char *now, struct reconcile_report *rep,
			 struct error *err)
{
	struct buf arr, q;
	int64_t *ids = NULL;
	money_total(*vals)[2] = NULL;
	char(*status)[16] = NULL;
	int64_t *first_exp = NULL;
	struct reconcile_diff *fresh = NULL, *before = NULL;
	bool *differs = NULL, *missing = NULL;
	PGresult *r = NULL;
	size_t kept = 0, n, j = 0;
	int rc_ = -1;

	buf_init(&arr);
	buf_init(&q);
	before = calloc(rep->n_diffs + 1, sizeof(*before));
	if (!before) {
		error_set(err, 0, "oom", "out of memory");
		goto done;
	}
	if (read_mirrors(rc, rep->diffs, rep->n_diffs, before, err) < 0)
		goto done;
	buf_append(&arr, "{", 1);
	for (size_t i = 0; i < rep->n_diffs; i++)
		buf_printf(&arr, "%s%" PRId64, i ? "," : "", rep->diffs[i].account_id);
	buf_append(&arr, "}", 1);
	buf_printf(&q, "%s WHERE c.account_id = ANY($2::bigint[]) ORDER BY c.account_id", ledger_sql);
	{
		const char *p[2] = {now, arr.data};
		r = db_query(c, q.data, 2, p, err);
	}
	if (!r)
		goto done;
	n = (size_t)PQntuples(r);
	ids = calloc(n + 1, sizeof(*ids));
	vals = calloc(n + 1, sizeof(*vals));
	status = calloc(n + 1, sizeof(*status));
	first_exp = calloc(n + 1, sizeof(*first_exp));
	fresh = calloc(n + 1, sizeof(*fresh));
	differs = calloc(n + 1, sizeof(*differs));
	missing = calloc(n + 1, sizeof(*missing));
	if (!ids || !vals || !status || !first_exp || !fresh || !differs || !missing) {
		error_set(err, 0, "oom", "out of memory");
		goto done;
	}
	take_rows(r, ids, vals, status, first_exp);
	/* every commit the snapshot saw has had time to be settled into the
	 * mirror before the second read */
	{
		struct timespec ts = {0, RECHECK_SETTLE_GAP_MS * 1000000L};
		nanosleep(&ts, NULL);
	}
	for (size_t off = 0; off < n; off += CHUNK) {
		size_t k = n - off < CHUNK ? n - off : CHUNK;
		if (compare_chunk(rc, ids + off, (const money_total(*)[2])(vals + off), status + off, first_exp + off,
				  k, fresh + off, differs + off, missing + off, err) < 0)
			goto done;
	}
	/* both lists are in account_id order (the first pass's cursor, the query) */
	for (size_t i = 0; i < n; i++) {
		while (j < rep->n_diffs && before[j].account_id < fresh[i].account_id)
			j++;
		bool seen = j < rep->n_diffs && before[j].account_id == fresh[i].account_id;

		if (differs[i] && !(seen && moved_while_read(&before[j], &fresh[i]))) {
			/* "-" never matches a ver: no repair without the first read */
			snprintf(fresh[i].repair_v, sizeof(fresh[i].repair_v), "%s", seen ? before[j].mirror_v : "-");
			rep->diffs[kept++] = fresh[i];
		} else if (missing[i])
			rep->not_loaded++;
		else
			rep->matching++;
	}
	rep->n_diffs = kept;
	rc_ = 0;
done:
	PQclear(r);
	free(ids);
	free(vals);
	free(status);
	free(first_exp);
	free(fresh);
	free(before);
	free(differs);
	free(missing);
	buf_release(&arr);
	buf_release(&q);
	return rc_;
}

/* Second look at the first pass's differences, after settle_ms, and again
 * while some stand, RECHECK_ROUNDS in all (one without settle_ms, for
 * --repair): one that every round confirms is reported.  A load that keeps an account's mirror moving can hide a real
 * difference in a round (it lies between the reads); a quiet account's
 * cannot. */
static int recheck(PGconn *c, struct rclient *rc, const struct reconcile_opts *o, struct reconcile_report *rep,
		   struct error *err)
{
	/* a repair is guarded by a version read before a ledger snapshot: one
	 * round at least, even without settle_ms */
	int rounds = o->settle_ms > 0 ? RECHECK_ROUNDS : o->repair ? 1 : 0;

	for (int round = 0; round < rounds && rep->n_diffs; round++) {
		char now[40];
		int ms = round ? RECHECK_PAUSE_MS : o->settle_ms;
		struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

		nanosleep(&ts, NULL);
		time_format_rfc3339(o->now_us ? o->now_us : time_now_us(), now, sizeof(now));
		if (recheck_round(c, rc, now, rep, err) < 0)
			return -1;
	}
	return 0;
}

static int repair(struct rclient *rc, struct reconcile_report *rep, int64_t now_us, struct error *err)
{
	for (size_t i = 0; i < rep->n_diffs; i++) {
		struct reconcile_diff *d = &rep->diffs[i];
		char keys[RKEY_N][RKEY_BUF], paid[32], promo[32], ttl[32], poff[MONEY_TOTAL_BUF], qoff[MONEY_TOTAL_BUF];
		const char *argv[3 + RKEY_N + 7] = {"EVAL", repair_lua, "4"};
		money_total ex;
		redisReply *r;

		_Static_assert(RKEY_N == 4, "the key count is spelled \"4\"");
		for (int k = 0; k < RKEY_N; k++) {
			rkey(keys[k], sizeof(keys[k]), d->account_id, (enum rkey)k);
			argv[3 + k] = keys[k];
		}
		snprintf(paid, sizeof(paid), "%" PRId64, reconcile_mirror_split(d->ledger_paid, &ex));
		money_total_str(ex, poff, sizeof(poff));
		snprintf(promo, sizeof(promo), "%" PRId64, reconcile_mirror_split(d->ledger_promo, &ex));
		money_total_str(ex, qoff, sizeof(qoff));
		snprintf(ttl, sizeof(ttl), "%" PRId64, mirror_ttl_ms(now_us, d->ledger_first_expiry_us));
		argv[3 + RKEY_N] = paid;
		argv[4 + RKEY_N] = promo;
		argv[5 + RKEY_N] = d->ledger_status;
		argv[6 + RKEY_N] = ttl;
		argv[7 + RKEY_N] = poff;
		argv[8 + RKEY_N] = qoff;
		argv[9 + RKEY_N] = d->repair_v;
		r = rclient_commandv(rc, 3 + RKEY_N + 7, argv, NULL, err);
		if (!r)
			return -1;
		if (r->type == REDIS_REPLY_ERROR) {
			error_set(err, 503, "unavailable", "redis repair of account %" PRId64 ": %s", d->account_id,
				  r->str);
			freeReplyObject(r);
			return -1;
		}
		d->repaired = r->type == REDIS_REPLY_INTEGER && r->integer == 1 ? 1 : -1;
		if (d->repaired == 1)
			rep->repaired++;
		else
			rep->repair_skipped++;
		freeReplyObject(r);
	}
	return 0;
}

int reconcile_run(PGconn *c, const struct reconcile_opts *o, struct reconcile_report *rep, struct error *err)
{
	char now[40];
	const char *p[1] = {now};
	struct rclient *rc = NULL;
	PGresult *r = NULL;
	int64_t ids[CHUNK];
	money_total vals[CHUNK][2];
	char status[CHUNK][16];
	int64_t first_exp[CHUNK];
	struct reconcile_diff *tmp = NULL;
	bool differs[CHUNK], missing[CHUNK];
	int in_tx = 0, ret = -1;

	memset(rep, 0, sizeof(*rep));
	time_format_rfc3339(o->now_us ? o->now_us : time_now_us(), now, sizeof(now));
	tmp = calloc(CHUNK, sizeof(*tmp));
	rep->not_loaded_ids = calloc(RECONCILE_SAMPLE, sizeof(*rep->not_loaded_ids));
	if (!tmp || !rep->not_loaded_ids) {
		error_set(err, 0, "oom", "out of memory");
		goto done;
	}
	rc = redis_open(o, err);
	if (!rc || owner_check(c, rc, o, err) < 0)
		goto done;
	if (db_exec(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL, err) < 0)
		goto done;
	in_tx = 1;
	{
		struct buf q;
		int e;
		buf_init(&q);
		buf_printf(&q, "DECLARE mirror_accounts NO SCROLL CURSOR FOR %s ORDER BY c.account_id", ledger_sql);
		e = db_exec(c, q.data, 1, p, err);
		buf_release(&q);
		if (e < 0)
			goto done;
	}
	for (;;) {
		size_t n;
		r = db_query(c, "FETCH 1000 FROM mirror_accounts", 0, NULL, err);
		if (!r)
			goto done;
		n = (size_t)PQntuples(r);
		if (n == 0)
			break;
		take_rows(r, ids, vals, status, first_exp);
		PQclear(r);
		r = NULL;
		if (compare_chunk(rc, ids, (const money_total(*)[2])vals, status, first_exp, n, tmp, differs, missing,
				  err) < 0)
			goto done;
		for (size_t i = 0; i < n; i++) {
			rep->accounts++;
			if (differs[i]) {
				if (add_diff(rep, &tmp[i]) < 0) {
					error_set(err, 0, "oom", "out of memory");
					goto done;
				}
			} else if (missing[i]) {
				rep->not_loaded++;
				if (rep->n_not_loaded_ids < RECONCILE_SAMPLE)
					rep->not_loaded_ids[rep->n_not_loaded_ids++] = ids[i];
			} else {
				rep->matching++;
			}
		}
	}
	db_exec_quiet(c, "ROLLBACK");
	in_tx = 0;
	if (recheck(c, rc, o, rep, err) < 0)
		goto done;
	if (o->repair && repair(rc, rep, o->now_us ? o->now_us : time_now_us(), err) < 0)
		goto done;
	ret = 0;
done:
	PQclear(r);
	if (in_tx)
		db_exec_quiet(c, "ROLLBACK");
	rclient_free(rc);
	free(tmp);
	if (ret < 0)
		reconcile_report_release(rep);
	return ret;
}
