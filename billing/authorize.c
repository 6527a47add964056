/* authorize.c: POST /v1/authorize and the Redis balance mirror.
 *
 * Flow of one authorize (event loop; each arrow one asynchronous step):
 *   parse -> principal (cache, else API pool lookup) -> price and limits
 *   (in memory) -> authorize script (one Redis round trip: status, balance
 *   minus holds, rate limits, concurrency, reserve) -> reply.
 * A missing mirror (first use, TTL, FLUSHALL, invalidation) makes the
 * script answer NOMIRROR: read the mirror version, load the balance from
 * PostgreSQL, store it with the load script (only if the version did not
 * move meanwhile), run the authorize script again.  No decision is taken
 * on a missing mirror. */
#include <inttypes.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "billing/listener.h"
#include "billing/pricedb.h"
#include "billing/pricing.h"
#include "billing/quota.h"
#include "billing/rconn.h"
#include "billing/server_int.h"
#include "billing/usage.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "ledger/db.h"
#include "ledger/ops.h"

#define CACHE_SLOTS 65536
/* Principal lookups: NOTIFY (api_keys, customers:ID) drops entries at once,
 * so the lifetime only bounds what a lost notification could cost; unknown
 * keys are remembered briefly (a key created a moment later must work). */
#define CACHE_TTL_US 30000000
#define CACHE_NEG_TTL_US 1000000
#define MIRROR_TTL_MS 300000

struct key_entry {
	uint8_t hash[32];
	int64_t account_id;
	bool revoked;
	int64_t at_us;
};

struct acct_entry {
	int64_t account_id;
	char tier[64];
	int64_t at_us;
};

struct limit_row {
	char tier[64];
	int64_t account_id;
	char model[201];
	int64_t v[5]; /* rpm tpm rpd tpd concurrency; -1 = not set */
};

#define DIRTY_MAX 10000

struct failopen_entry {
	int64_t account_id;
	int64_t used;
};

struct authz_state {
	struct quota *q;
	struct listener *lis;
	struct key_entry *keys;
	struct acct_entry *accts;
	struct pricing_price *prices;
	size_t n_prices;
	struct limit_row *limits;
	size_t n_limits;
	bool refreshing;
	struct event *refresh_timer;
	int64_t hold_ttl_ms;
	bool fail_open;
	int64_t fail_open_nanos;
	struct failopen_entry *fo;
	size_t n_fo;
	/* accounts whose mirror may have missed a change (a settle that did not
	 * reach Redis, a commit whose answer was lost): dropped as soon as Redis answers */
	int64_t dirty[DIRTY_MAX];
	size_t n_dirty;
	bool dirty_overflow;
};

/* ---- limits ---- */

struct limits {
	int64_t all[5], model[5]; /* 0 = none */
};

static void resolve_limits(const struct authz_state *az, int64_t account, const char *tier, const char *model,
			   struct limits *out)
{
	/* the newest row of a scope is in force (a limit it leaves unset is
	 * none, not an older row's); an account's unset limit falls back to
	 * its tier's (ledger/ops.h ops_limits_view shows the same) */
	for (int k = 0; k < 5; k++) {
		int64_t a = -1, am = -1, t = -1, tm = -1;
		for (size_t i = 0; i < az->n_limits; i++) {
			const struct limit_row *r = &az->limits[i];
			bool mine = r->account_id ? r->account_id == account : strcmp(r->tier, tier) == 0;
			if (!mine)
				continue;
			if (r->model[0] == '\0') {
				if (r->account_id)
					a = r->v[k];
				else
					t = r->v[k];
			} else if (strcmp(r->model, model) == 0) {
				if (r->account_id)
					am = r->v[k];
				else
					tm = r->v[k];
			}
		}
		out->all[k] = a >= 0 ? a : t >= 0 ? t : 0;
		out->model[k] = am >= 0 ? am : tm >= 0 ? tm : 0;
	}
}

/* ---- periodic refresh of prices and limits (API pool) ---- */

struct refresh_job {
	struct dbjob job;
	struct server *s;
	struct pricing_price *prices;
	size_t n_prices;
	struct limit_row *limits;
	size_t n_limits;
};

static void refresh_run(struct dbjob *job, PGconn *c, const char *writer)
{
	struct refresh_job *j = (struct refresh_job *)job;
	PGresult *r;

	(void)writer;
	if (!c) {
		error_set(&j->job.err, 503, "unavailable", "no database");
		return;
	}
	if (pricedb_load(c, &j->prices, &j->n_prices, &j->job.err) < 0)
		return;
	r = db_query(c,
		     "SELECT coalesce(tier, ''), coalesce(account_id, 0), model, coalesce(rpm, -1), coalesce(tpm, -1),"
		     " coalesce(rpd, -1), coalesce(tpd, -1), coalesce(concurrency, -1) FROM limits ORDER BY limit_id",
		     0, NULL, &j->job.err);
	if (!r)
		return;
	j->limits = calloc((size_t)PQntuples(r) + 1, sizeof(*j->limits));
	if (j->limits) {
		for (int i = 0; i < PQntuples(r); i++) {
			struct limit_row *l = &j->limits[i];
			snprintf(l->tier, sizeof(l->tier), "%s", PQgetvalue(r, i, 0));
			l->account_id = strtoll(PQgetvalue(r, i, 1), NULL, 10);
			snprintf(l->model, sizeof(l->model), "%s", PQgetvalue(r, i, 2));
			for (int k = 0; k < 5; k++)
				l->v[k] = strtoll(PQgetvalue(r, i, 3 + k), NULL, 10);
		}
		j->n_limits = (size_t)PQntuples(r);
	}
	PQclear(r);
}

static void refresh_done(struct dbjob *job)
{
	struct refresh_job *j = (struct refresh_job *)job;
	struct authz_state *az = j->s->az;

	az->refreshing = false;
	if (!j->job.err.status && j->limits) {
		free(az->prices);
		free(az->limits);
		az->prices = j->prices;
		az->n_prices = j->n_prices;
		az->limits = j->limits;
		az->n_limits = j->n_limits;
	} else {
		free(j->prices);
		free(j->limits);
	}
	free(j);
}

static void refresh_now(struct server *s)
{
	struct refresh_job *j;

	if (s->az->refreshing)
		return;
	j = calloc(1, sizeof(*j));
	if (!j)
		return;
	j->job.run = refresh_run;
	j->job.done = refresh_done;
	j->s = s;
	if (dbpool_submit(s->pool, &j->job) < 0) {
		free(j);
		return;
	}
	s->az->refreshing = true;
}

static void flush_dirty(struct server *s);

static void refresh_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	refresh_now(arg);
	flush_dirty(arg);
}

/* ---- mirror invalidation ---- */

static void ignore_cb(void *arg, redisReply *r)
{
	(void)arg, (void)r;
}

static void invalidate(struct server *s, int64_t account)
{
	if (quota_run(s->az->q, QUOTA_INVALIDATE, account, 0, NULL, ignore_cb, NULL) < 0)
		log_warn("cannot invalidate a balance mirror", "account=%" PRId64, account);
	s->az->accts[(uint64_t)account % CACHE_SLOTS].account_id = 0;
}

void authz_forget(struct server *s, int64_t account)
{
	struct authz_state *az = s->az;

	if (!az || account <= 0)
		return;
	for (size_t i = 0; i < az->n_dirty; i++)
		if (az->dirty[i] == account)
			return;
	if (az->n_dirty < DIRTY_MAX)
		az->dirty[az->n_dirty++] = account;
	else
		az->dirty_overflow = true;
}

struct forget_now {
	struct server *s;
	int64_t account;
	void (*done)(void *);
	void *arg;
};

static void forget_now_cb(void *arg, redisReply *r)
{
	struct forget_now *f = arg;

	if (!r) /* the mirror may still be stale: keep it for the next tick */
		authz_forget(f->s, f->account);
	f->done(f->arg);
	free(f);
}

void authz_forget_then(struct server *s, int64_t account, void (*done)(void *arg), void *arg)
{
	struct forget_now *f;

	if (!s->az || !s->redis || s->closing || !rconn_usable(s->redis) || !(f = calloc(1, sizeof(*f)))) {
		authz_forget(s, account);
		done(arg);
		return;
	}
	f->s = s;
	f->account = account;
	f->done = done;
	f->arg = arg;
	if (quota_run(s->az->q, QUOTA_INVALIDATE, account, 0, NULL, forget_now_cb, f) < 0) {
		free(f);
		authz_forget(s, account);
		done(arg);
	}
}

/* ---- the live held amount of an account (balance answers) ---- */

struct held_req {
	authz_held_fn done;
	void *arg;
};

static void held_cb(void *arg, redisReply *r)
{
	struct held_req *h = arg;
	bool known = r && r->type == REDIS_REPLY_INTEGER;

	h->done(h->arg, known, known ? (int64_t)r->integer : 0);
	free(h);
}

void authz_held(struct server *s, int64_t account, authz_held_fn done, void *arg)
{
	struct held_req *h;

	if (!s->az || !s->redis || s->closing || !rconn_usable(s->redis) || !(h = calloc(1, sizeof(*h)))) {
		done(arg, false, 0);
		return;
	}
	h->done = done;
	h->arg = arg;
	if (quota_run(s->az->q, QUOTA_HELD, account, 0, NULL, held_cb, h) < 0) {
		free(h);
		done(arg, false, 0);
	}
}

static void forget_cb(void *arg, redisReply *r)
{
	struct server *s = arg;

	(void)s;
	(void)r; /* a failure leaves the account for the next tick: see flush_dirty */
}

static void *resync_thread(void *arg);

static void flush_dirty(struct server *s)
{
	struct authz_state *az = s->az;
	size_t keep = 0;

	/* usable, not ready: in a cluster with one master down, the accounts of
	 * the other masters are still dropped (the others stay in the list) */
	if (!s->redis || !rconn_usable(s->redis) || (az->n_dirty == 0 && !az->dirty_overflow))
		return;
	if (az->dirty_overflow) {
		pthread_t th;
		char *addr = strdup(config_get(s->cfg, "redis"));
		if (addr && pthread_create(&th, NULL, resync_thread, addr) == 0) {
			pthread_detach(th);
			az->dirty_overflow = false;
			az->n_dirty = 0;
		} else {
			free(addr);
		}
		return;
	}
	for (size_t i = 0; i < az->n_dirty; i++)
		if (quota_run(az->q, QUOTA_INVALIDATE, az->dirty[i], 0, NULL, forget_cb, s) < 0)
			az->dirty[keep++] = az->dirty[i];
	az->n_dirty = keep;
}

static void *resync_thread(void *arg)
{
	char *addr = arg;
	long n = quota_invalidate_all_sync(addr, 2000);

	if (n >= 0)
		log_info("balance mirrors dropped after a resync", "count=%ld", n);
	free(addr);
	return NULL;
}

static void notify_cb(void *arg, const char *channel, const char *payload)
{
	struct server *s = arg;

	if (strcmp(channel, "billing_balance") == 0) {
		char *end;
		int64_t acct = strtoll(payload, &end, 10);
		/* our own usage writers (instance_id, instance_id.tN) update the
		 * mirror themselves (authz_settle) */
		const char *me = config_get(s->cfg, "instance_id");
		size_t ml = strlen(me);
		bool ours = *end == ' ' && strncmp(end + 1, me, ml) == 0 &&
			    (end[1 + ml] == '\0' || strncmp(end + 1 + ml, ".t", 2) == 0);
		if (acct > 0 && *end == ' ' && !ours)
			invalidate(s, acct);
	} else if (strcmp(channel, "billing_change") == 0) {
		if (strncmp(payload, "customers:", 10) == 0)
			invalidate(s, strtoll(payload + 10, NULL, 10));
		else if (strcmp(payload, "api_keys") == 0)
			memset(s->az->keys, 0, CACHE_SLOTS * sizeof(*s->az->keys));
		else
			refresh_now(s);
	} else if (strcmp(channel, "resync") == 0) {
		pthread_t th;
		char *addr = strdup(config_get(s->cfg, "redis"));
		memset(s->az->keys, 0, CACHE_SLOTS * sizeof(*s->az->keys));
		memset(s->az->accts, 0, CACHE_SLOTS * sizeof(*s->az->accts));
		refresh_now(s);
		if (addr && pthread_create(&th, NULL, resync_thread, addr) == 0)
			pthread_detach(th);
		else
			free(addr);
	}
}

/* ---- one authorize ---- */

enum az_step { AZ_PRINCIPAL, AZ_DECIDE, AZ_VERSION, AZ_LOAD, AZ_STORE };

struct az_req {
	struct dbjob job; /* for the API pool lookups */
	authz_done_fn done;
	void *done_arg;
	struct server *s;
	enum az_step step;
	char request_id[201];
	bool has_key;
	uint8_t key_hash[32];
	int64_t account_id;
	char tier[64];
	char model[201];
	int64_t input_tokens, max_output;
	int64_t amount;
	bool paid_only;
	struct limits lim;
	int tries;
	char ver[32];
	/* loaded balance */
	int64_t paid, promo;
	int64_t mirror_ttl_ms;
	char status[16];
	bool key_revoked, found;
	bool key_is_bearer;
};

static void az_step(struct az_req *a);

/* Ends an authorize: the body is stolen; retry_after (seconds) or NULL. */
static void az_finish(struct az_req *a, int status, json_t *body, const char *retry_after)
{
	a->done(a->done_arg, status, body, retry_after);
	free(a);
}

static void az_fail(struct az_req *a, int status, const char *code, const char *msg)
{
	struct error e;

	error_set(&e, status, code, "%s", msg);
	az_finish(a, status, error_json(&e), status == 503 ? "1" : NULL);
}

/* An api_key given as the bearer (chat) is a credential: 401.  One named in
 * a body (gateway traffic) is data: unknown 404, revoked 403. */
static void bad_key(struct az_req *a, const char *msg)
{
	if (a->key_is_bearer)
		return az_fail(a, 401, "unauthorized", msg);
	if (!a->has_key)
		return az_fail(a, 404, "not_found", msg);
	if (strstr(msg, "revoked"))
		return az_fail(a, 403, "forbidden", msg);
	az_fail(a, 404, "not_found", msg);
}

static void lookup_run(struct dbjob *job, PGconn *c, const char *writer)
{
	struct az_req *a = (struct az_req *)job;
	char hex[65], id[32];
	const char *p[1];
	PGresult *r;

	(void)writer;
	if (!c) {
		error_set(&a->job.err, 503, "unavailable", "the ledger database is unreachable");
		return;
	}
	if (a->step == AZ_PRINCIPAL) {
		if (a->has_key) {
			sodium_bin2hex(hex, sizeof(hex), a->key_hash, 32);
			p[0] = hex;
			r = db_query(c,
				     "SELECT k.account_id, k.revoked_at IS NOT NULL, c.tier FROM api_keys k"
				     " JOIN customers c USING (account_id) WHERE k.key_hash = decode($1, 'hex')",
				     1, p, &a->job.err);
		} else {
			snprintf(id, sizeof(id), "%" PRId64, a->account_id);
			p[0] = id;
			r = db_query(c, "SELECT account_id, false, tier FROM customers WHERE account_id = $1", 1, p,
				     &a->job.err);
		}
		if (!r)
			return;
		a->found = PQntuples(r) == 1;
		if (a->found) {
			a->account_id = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
			a->key_revoked = PQgetvalue(r, 0, 1)[0] == 't';
			snprintf(a->tier, sizeof(a->tier), "%s", PQgetvalue(r, 0, 2));
		}
		PQclear(r);
	} else { /* AZ_LOAD: the mirror's truth */
		struct ops_account acc;
		struct ops_balance b;
		if (ops_account_get(c, a->account_id, &acc, &a->job.err) < 0 ||
		    ops_balance_get(c, a->account_id, 0, &b, &a->job.err) < 0)
			return;
		a->paid = b.paid_nanos;
		a->promo = b.promo_nanos;
		snprintf(a->status, sizeof(a->status), "%s", acc.status);
		/* the mirror must not outlive the first grant that expires: after
		 * that instant its credit is no longer spendable */
		a->mirror_ttl_ms = MIRROR_TTL_MS;
		{
			int64_t now = time_now_us();
			for (size_t i = 0; i < b.n_grants; i++) {
				int64_t left = (b.grants[i].expires_at_us - now) / 1000;
				if (b.grants[i].expires_at_us && left < a->mirror_ttl_ms)
					a->mirror_ttl_ms = left > 1 ? left : 1;
			}
		}
	}
}

static void lookup_done(struct dbjob *job)
{
	struct az_req *a = (struct az_req *)job;
	struct authz_state *az = a->s->az;

	if (a->job.err.status) {
		struct error e = a->job.err;
		if (e.status == 404)
			return az_fail(a, 404, "not_found", "unknown account");
		if (e.status != 503)
			e.status = 503;
		return az_fail(a, 503, e.code, e.msg);
	}
	if (a->step == AZ_PRINCIPAL) {
		int64_t now = time_now_us();
		if (a->has_key) {
			struct key_entry *k = &az->keys[(a->key_hash[0] | a->key_hash[1] << 8) % CACHE_SLOTS];
			memcpy(k->hash, a->key_hash, 32);
			k->account_id = a->found ? a->account_id : 0;
			k->revoked = a->key_revoked;
			k->at_us = now;
		}
		if (!a->found)
			return bad_key(a, a->has_key ? "unknown api_key" : "unknown account");
		if (a->key_revoked)
			return bad_key(a, "the api_key was revoked");
		{
			struct acct_entry *e = &az->accts[(uint64_t)a->account_id % CACHE_SLOTS];
			e->account_id = a->account_id;
			snprintf(e->tier, sizeof(e->tier), "%s", a->tier);
			e->at_us = now;
		}
		a->step = AZ_DECIDE;
	} else {
		a->step = AZ_STORE;
	}
	az_step(a);
}

static void az_pool(struct az_req *a)
{
	memset(&a->job, 0, sizeof(a->job));
	a->job.run = lookup_run;
	a->job.done = lookup_done;
	if (dbpool_submit(a->s->pool, &a->job) < 0)
		az_fail(a, 503, "unavailable", "the request queue is full");
}

static int64_t elem_int(const redisReply *r, size_t i)
{
	if (i >= r->elements)
		return 0;
	if (r->element[i]->type == REDIS_REPLY_INTEGER)
		return r->element[i]->integer;
	if (r->element[i]->type == REDIS_REPLY_STRING)
		return strtoll(r->element[i]->str, NULL, 10);
	return 0;
}

static bool fail_open_admit(struct az_req *a)
{
	struct authz_state *az = a->s->az;
	struct failopen_entry *e = NULL;

	if (!az->fail_open)
		return false;
	for (size_t i = 0; i < az->n_fo; i++)
		if (az->fo[i].account_id == a->account_id)
			e = &az->fo[i];
	if (!e) {
		struct failopen_entry *n = realloc(az->fo, (az->n_fo + 1) * sizeof(*n));
		if (!n)
			return false;
		az->fo = n;
		e = &az->fo[az->n_fo++];
		e->account_id = a->account_id;
		e->used = 0;
	}
	if (e->used + a->amount > az->fail_open_nanos || az->n_fo > 100000)
		return false;
	e->used += a->amount;
	log_warn("fail-open admission while redis is unreachable",
		 "request_id=%s account=%" PRId64 " amount_nanos=%" PRId64 " used_nanos=%" PRId64, a->request_id,
		 a->account_id, a->amount, e->used);
	return true;
}

static void redis_down(struct az_req *a)
{
	char exp[40];

	if (fail_open_admit(a)) {
		time_format_rfc3339(time_now_us() + a->s->az->hold_ttl_ms * 1000, exp, sizeof(exp));
		return az_finish(a, 200,
				 json_pack("{s:s,s:I,s:I,s:I,s:s,s:b}", "hold_id", a->request_id, "account_id",
					   (json_int_t)a->account_id, "held_nanos", (json_int_t)a->amount,
					   "available_nanos", (json_int_t)0, "expires_at", exp, "fail_open", 1),
				 NULL);
	}
	az_fail(a, 503, "unavailable", "the quota store (redis) is unreachable");
}

static void decide_cb(void *arg, redisReply *r)
{
	struct az_req *a = arg;
	const char *tag;
	char exp[40];

	if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 1 || r->element[0]->type != REDIS_REPLY_STRING)
		return redis_down(a);
	tag = r->element[0]->str;
	if (strcmp(tag, "OK") == 0) {
		a->s->az->n_fo = 0; /* Redis answers: a later outage starts a fresh allowance */
		time_format_rfc3339(elem_int(r, 3) * 1000, exp, sizeof(exp));
		az_finish(a, 200,
			  json_pack("{s:s,s:I,s:I,s:I,s:s}", "hold_id", a->request_id, "account_id",
				    (json_int_t)a->account_id, "held_nanos", (json_int_t)elem_int(r, 1), "available_nanos",
				    (json_int_t)elem_int(r, 2), "expires_at", exp),
			  NULL);
	} else if (strcmp(tag, "NOMIRROR") == 0) {
		if (++a->tries > 5)
			return az_fail(a, 503, "unavailable", "the balance mirror could not be loaded");
		a->step = AZ_VERSION;
		az_step(a);
	} else if (strcmp(tag, "FROZEN") == 0) {
		az_fail(a, 403, "account_frozen", "the account is frozen");
	} else if (strcmp(tag, "BALANCE") == 0) {
		json_t *body = json_pack("{s:{s:s,s:s,s:I,s:I}}", "error", "code", "insufficient_balance", "message",
					 "the balance does not cover this call", "available_nanos",
					 (json_int_t)elem_int(r, 1), "required_nanos", (json_int_t)a->amount);
		az_finish(a, 402, body, NULL);
	} else if (strcmp(tag, "RATE") == 0 || strcmp(tag, "CONC") == 0) {
		bool rate = tag[0] == 'R';
		const char *what = r->elements > 1 && r->element[1]->type == REDIS_REPLY_STRING ? r->element[1]->str : "";
		int64_t retry_ms = rate ? elem_int(r, 2) : 1000, limit = elem_int(r, rate ? 3 : 2);
		char ra[32], msg[128];
		if (retry_ms < 1)
			retry_ms = 1;
		snprintf(ra, sizeof(ra), "%" PRId64, (retry_ms + 999) / 1000);
		snprintf(msg, sizeof(msg), "%s limit of %" PRId64 " reached", what, limit);
		az_finish(a, 429,
			  json_pack("{s:{s:s,s:s,s:s,s:I,s:I}}", "error", "code", "rate_limited", "message", msg,
				    "limit_type", what, "limit", (json_int_t)limit, "retry_after_ms", (json_int_t)retry_ms),
			  ra);
	} else {
		az_fail(a, 503, "unavailable", "unexpected answer from the quota store");
	}
}

static void version_cb(void *arg, redisReply *r)
{
	struct az_req *a = arg;

	if (!r)
		return redis_down(a);
	snprintf(a->ver, sizeof(a->ver), "%s", r->type == REDIS_REPLY_STRING ? r->str : "0");
	a->step = AZ_LOAD;
	az_pool(a);
}

static void store_cb(void *arg, redisReply *r)
{
	struct az_req *a = arg;

	if (!r)
		return redis_down(a);
	/* stored, or the version moved (a change landed meanwhile): decide again, which reloads if needed */
	a->step = AZ_DECIDE;
	az_step(a);
}

static void az_step(struct az_req *a)
{
	struct server *s = a->s;
	struct authz_state *az = s->az;

	if (s->closing)
		return az_fail(a, 503, "unavailable", "shutting down");

	switch (a->step) {
	case AZ_PRINCIPAL: {
		int64_t now = time_now_us();
		if (a->has_key) {
			struct key_entry *k = &az->keys[(a->key_hash[0] | a->key_hash[1] << 8) % CACHE_SLOTS];
			if (k->at_us && now - k->at_us < (k->account_id ? CACHE_TTL_US : CACHE_NEG_TTL_US) &&
			    sodium_memcmp(k->hash, a->key_hash, 32) == 0) {
				if (!k->account_id)
					return bad_key(a, "unknown api_key");
				if (k->revoked)
					return bad_key(a, "the api_key was revoked");
				a->account_id = k->account_id;
			} else {
				return az_pool(a);
			}
		}
		{
			struct acct_entry *e = &az->accts[(uint64_t)a->account_id % CACHE_SLOTS];
			if (e->account_id != a->account_id || now - e->at_us >= CACHE_TTL_US)
				return az_pool(a);
			snprintf(a->tier, sizeof(a->tier), "%s", e->tier);
		}
		a->step = AZ_DECIDE;
	}
		/* fall through */
	case AZ_DECIDE: {
		const struct pricing_price *p;
		struct pricing_tokens t = {a->input_tokens, 0, a->max_output};
		int64_t now = time_now_us();
		bool known;
		char args[16][32];
		const char *argv[16];

		if (!az->prices)
			return az_fail(a, 503, "unavailable", "prices not loaded yet");
		p = pricing_select(az->prices, az->n_prices, a->model, now, &known);
		if (!p)
			return az_fail(a, 422, "unknown_model", known ? "the model has no price in effect" : "unknown model");
		if (pricing_cost(p, &t, now, &a->amount) < 0)
			return az_fail(a, 422, "invalid_tokens", "token counts out of range");
		/* a call that can cost money holds money: 0/0 tokens hold the model's least cost */
		if (a->amount == 0)
			a->amount = pricing_min_billable(p, now);
		a->paid_only = p->paid_only;
		resolve_limits(az, a->account_id, a->tier, a->model, &a->lim);
		snprintf(args[0], sizeof(args[0]), "%" PRId64, a->amount);
		snprintf(args[1], sizeof(args[1]), "%d", a->paid_only ? 1 : 0);
		snprintf(args[2], sizeof(args[2]), "%" PRId64, az->hold_ttl_ms);
		snprintf(args[3], sizeof(args[3]), "%" PRId64, a->input_tokens + a->max_output);
		for (int k = 0; k < 5; k++) {
			snprintf(args[4 + k], sizeof(args[0]), "%" PRId64, a->lim.all[k]);
			snprintf(args[9 + k], sizeof(args[0]), "%" PRId64, a->lim.model[k]);
		}
		argv[0] = a->request_id;
		argv[1] = args[0];
		argv[2] = args[1];
		argv[3] = args[2];
		argv[4] = args[3];
		argv[5] = a->model;
		for (int k = 0; k < 10; k++)
			argv[6 + k] = args[4 + k];
		if (quota_run(az->q, QUOTA_AUTHORIZE, a->account_id, 16, argv, decide_cb, a) < 0)
			return redis_down(a);
		return;
	}
	case AZ_VERSION:
		if (quota_get_version(az->q, a->account_id, version_cb, a) < 0)
			return redis_down(a);
		return;
	case AZ_LOAD:
		return az_pool(a);
	case AZ_STORE: {
		char paid[32], promo[32], ttl[32];
		const char *argv[5] = {a->ver, paid, promo, a->status, ttl};
		snprintf(paid, sizeof(paid), "%" PRId64, a->paid);
		snprintf(promo, sizeof(promo), "%" PRId64, a->promo);
		snprintf(ttl, sizeof(ttl), "%" PRId64, a->mirror_ttl_ms);
		if (quota_run(az->q, QUOTA_LOAD, a->account_id, 5, argv, store_cb, a) < 0)
			return redis_down(a);
		return;
	}
	}
}

int authz_start(struct server *s, const struct authz_params *p, authz_done_fn done, void *arg)
{
	struct az_req *a = calloc(1, sizeof(*a));

	if (!a)
		return -1;
	a->s = s;
	a->done = done;
	a->done_arg = arg;
	snprintf(a->request_id, sizeof(a->request_id), "%s", p->request_id);
	snprintf(a->model, sizeof(a->model), "%s", p->model);
	a->input_tokens = p->input_tokens;
	a->max_output = p->max_output_tokens;
	a->has_key = p->has_key;
	memcpy(a->key_hash, p->key_hash, sizeof(a->key_hash));
	a->account_id = p->account_id;
	a->key_is_bearer = p->key_is_bearer;
	a->step = AZ_PRINCIPAL;
	az_step(a);
	return 0;
}

static void http_done(void *arg, int status, json_t *body, const char *retry_after)
{
	struct rctx *c = arg;

	if (retry_after)
		evhttp_add_header(evhttp_request_get_output_headers(c->req), "Retry-After", retry_after);
	reply(c, status, body);
}

void h_authorize(struct rctx *c)
{
	struct error err;
	json_t *b = read_body(c, &err);
	struct authz_body ab;
	struct authz_params p;

	if (!b)
		return reply_error(c, &err);
	if (authz_body_parse(b, &ab, &err) < 0) {
		json_decref(b);
		return reply_error(c, &err);
	}
	memset(&p, 0, sizeof(p));
	p.request_id = ab.request_id;
	p.model = ab.model;
	p.input_tokens = ab.input_tokens;
	p.max_output_tokens = ab.max_output_tokens;
	if (ab.api_key) {
		p.has_key = true;
		apikey_hash(c->s->pepper, ab.api_key, strlen(ab.api_key), p.key_hash);
	} else {
		p.account_id = ab.account_id;
	}
	if (authz_start(c->s, &p, http_done, c) < 0)
		reply_err(c, 503, "unavailable", "out of memory");
	json_decref(b);
}

/* ---- settle ---- */

struct settle_arg {
	struct server *s;
	int64_t account;
};

static void settle_cb(void *arg, redisReply *r)
{
	struct settle_arg *sa = arg;

	/* the charge did not reach the mirror: it must not be used as it is */
	if (!r && !sa->s->closing)
		authz_forget(sa->s, sa->account);
	free(sa);
}

void authz_settle(struct server *s, const struct usage_item *it)
{
	struct authz_state *az = s->az;
	struct acct_entry *e;
	struct limits lim = {{0}, {0}};
	char dp[32], dpr[32], tok[32], l[4][32], lg[32];
	const char *argv[11];

	if (!it->account_id || it->job.err.status || !s->redis)
		return;
	e = &az->accts[(uint64_t)it->account_id % CACHE_SLOTS];
	if (e->account_id == it->account_id)
		resolve_limits(az, it->account_id, e->tier, it->r.model, &lim);
	snprintf(dp, sizeof(dp), "%" PRId64, it->duplicate ? 0 : it->d_paid);
	snprintf(dpr, sizeof(dpr), "%" PRId64, it->duplicate ? 0 : it->d_promo);
	snprintf(tok, sizeof(tok), "%" PRId64, it->r.input_tokens + it->r.output_tokens);
	snprintf(l[0], sizeof(l[0]), "%" PRId64, lim.all[1]);
	snprintf(l[1], sizeof(l[1]), "%" PRId64, lim.all[3]);
	snprintf(l[2], sizeof(l[2]), "%" PRId64, lim.model[1]);
	snprintf(l[3], sizeof(l[3]), "%" PRId64, lim.model[3]);
	argv[0] = it->r.hold_id;
	argv[1] = dp;
	argv[2] = dpr;
	argv[3] = tok;
	argv[4] = it->duplicate ? "0" : "1";
	argv[5] = it->r.model;
	argv[6] = l[0];
	argv[7] = l[1];
	argv[8] = l[2];
	argv[9] = l[3];
	snprintf(lg, sizeof(lg), "%" PRId64, it->duplicate ? (int64_t)-1 : it->mirror_lgen);
	argv[10] = lg;
	if (!it->duplicate || it->r.hold_id[0]) {
		struct settle_arg *sa = malloc(sizeof(*sa));
		if (sa) {
			sa->s = s;
			sa->account = it->account_id;
		}
		if (!sa || quota_run(az->q, QUOTA_SETTLE, it->account_id, 11, argv, settle_cb, sa) < 0) {
			free(sa);
			authz_forget(s, it->account_id);
		}
	}
}

/* ---- life cycle ---- */

int authz_init(struct server *s, struct error *err)
{
	struct authz_state *az = calloc(1, sizeof(*az));
	struct config_error ce;
	struct timeval tv = {1, 0};
	int64_t ttl, fo;
	long n;

	if (!az)
		return -1;
	s->az = az;
	if (config_get_int(s->cfg, "hold_ttl_seconds", 1, 86400, &ttl, &ce) < 0 ||
	    config_get_int(s->cfg, "redis_fail_open_nanos", 0, INT64_MAX / 2, &fo, &ce) < 0) {
		error_set(err, 0, "config", "%s", ce.msg);
		return -1;
	}
	az->hold_ttl_ms = ttl * 1000;
	az->fail_open = config_get_bool(s->cfg, "redis_fail_open");
	az->fail_open_nanos = fo;
	az->keys = calloc(CACHE_SLOTS, sizeof(*az->keys));
	az->accts = calloc(CACHE_SLOTS, sizeof(*az->accts));
	az->q = quota_new(s->redis);
	az->refresh_timer = event_new(s->base, -1, EV_PERSIST, refresh_cb, s);
	if (!az->keys || !az->accts || !az->q || !az->refresh_timer) {
		error_set(err, 0, "oom", "out of memory");
		return -1;
	}
	/* mirrors this instance may have left half-updated (a crash between commit and settle) */
	n = quota_invalidate_all_sync(config_get(s->cfg, "redis"), 2000);
	if (n < 0)
		log_warn("redis unreachable at start: mirrors are rebuilt as they are used", "%s", "");
	event_add(az->refresh_timer, &tv);
	refresh_now(s);
	az->lis = listener_new(s->base, config_get(s->cfg, "pg"), notify_cb, s);
	if (!az->lis) {
		error_set(err, 0, "oom", "cannot start the listener");
		return -1;
	}
	return 0;
}

void authz_free(struct server *s)
{
	struct authz_state *az = s->az;

	if (!az)
		return;
	listener_free(az->lis);
	if (az->refresh_timer)
		event_free(az->refresh_timer);
	quota_free(az->q);
	free(az->keys);
	free(az->accts);
	free(az->prices);
	free(az->limits);
	free(az->fo);
	free(az);
	s->az = NULL;
}

bool authz_model_known(struct server *s, const char *model)
{
	bool known = false;

	if (s->az && s->az->prices)
		(void)pricing_select(s->az->prices, s->az->n_prices, model, time_now_us(), &known);
	return known;
}
