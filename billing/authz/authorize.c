/* authorize.c: POST /v1/authorize and the Redis balance mirror.
 *
 * Flow of one authorize (event loop; each arrow one asynchronous step):
 *   parse -> principal (cache, else API pool lookup) -> price and limits
 *   (in memory) -> authorize script (one Redis round trip: status, balance
 *   minus holds, rate limits, concurrency, reserve) -> reply.
 * A missing mirror (first use, TTL, FLUSHALL, invalidation) makes the
 * script answer NOMIRROR.  Then one request per account and instance loads
 * it (the others of that account wait for it, then decide again): on an API
 * pool thread, in one transaction, it locks the account's customers row FOR
 * SHARE, reads the balance and runs the authorize script with the balance to
 * store (a locked load: see quota.lua.h), so the load cannot be invalidated
 * half-way and the loader always gets a decision.  A waiter that finds no
 * mirror again loads itself.  No decision is taken on a missing mirror. */
#include <event2/buffer.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stddef.h>
#include <pthread.h>
#include <time.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "billing/authz/authorize.h"
#include "billing/http/bodies.h"
#include "billing/http/fastbody.h"
#include "billing/http/metrics.h"
#include "billing/authz/listener.h"
#include "billing/usage/pricedb.h"
#include "billing/usage/pricing.h"
#include "billing/authz/quota.h"
#include "billing/authz/rconn.h"
#include "billing/server_int.h"
#include "billing/usage/usage.h"
#include "common/buf.h"
#include "common/config.h"
#include "common/jsonnum.h"
#include "common/log.h"
#include "common/timeutil.h"
#include "common/mirror_lua.h"
#include "common/rkeys.h"
#include "ledger/db.h"
#include "ledger/ops.h"
#include "ledger/reconcile.h"

#define CACHE_SLOTS 65536
/* Principal lookups: NOTIFY (api_keys, customers:ID) drops entries at once,
 * so the lifetime only bounds what a lost notification could cost; unknown
 * keys are remembered briefly (a key created a moment later must work). */
#define CACHE_TTL_US 30000000
#define CACHE_NEG_TTL_US 1000000
/* A locked load's script must run within redis_timeout_ms + LOAD_FENCE_MS
 * (Redis TIME) of the loader's TIME, while it still holds the row lock; a
 * loader without an answer keeps the lock until that much has passed, so a
 * late script cannot land after a charge committed behind it (it answers
 * LATE). */
#define LOAD_FENCE_MS 500
#define LOAD_CLIENTS_MAX 16

struct key_entry {
	uint8_t hash[32];
	int64_t account_id;
	bool revoked;
	int64_t at_us;
};

struct acct_entry {
	int64_t account_id;
	char tier[64];
	bool frozen; /* its status, as read with the tier (NOTIFY drops the entry) */
	int64_t at_us;
};

struct limit_row {
	char tier[64];
	int64_t account_id;
	char model[201];
	int64_t v[5]; /* rpm tpm rpd tpd concurrency; -1 = not set */
};

#define DIRTY_MAX 10000
/* accounts in one announcement (authz_forget_announce) */
#define ANNOUNCE_MAX 4096
/* request contexts kept for reuse: a loop turn's worth */
#define AZ_SPARE_MAX 256

struct failopen_entry {
	int64_t account_id;
	int64_t used;
};

struct az_req;

struct authz_state {
	struct quota *q;
	struct quota_settles *qs; /* the usage answers' settles and held reads */
	/* synchronous Redis clients of the API pool threads (mirror loads) */
	pthread_mutex_t rc_mu;
	struct rclient *rc_free[LOAD_CLIENTS_MAX];
	int n_rc_free;
	/* requests loading a mirror, one per account; each holds its waiters */
	struct az_req *loading;
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
	int64_t redis_timeout_ms; /* of a load's synchronous Redis calls */
	bool fail_open;
	int64_t fail_open_nanos;
	struct failopen_entry *fo;
	size_t n_fo;
	/* accounts whose mirror may have missed a change (a settle that did not
	 * reach Redis, a commit whose answer was lost): dropped as soon as Redis answers */
	int64_t dirty[DIRTY_MAX];
	size_t n_dirty;
	bool dirty_overflow;
	/* accounts whose charge we committed but may not have settled: to be
	 * announced on billing_balance naming no Redis (authz_forget_announce) */
	int64_t announce[ANNOUNCE_MAX];
	size_t n_announce;
	bool announcing; /* a job of announce_run in the API pool */
	/* quota_group_stats already added to /metrics */
	uint64_t calls_counted, decisions_counted;
	/* quota_settles_stats already added to /metrics */
	uint64_t settle_calls_counted, settle_entries_counted;
	/* request contexts kept for the next requests (az_alloc) */
	struct az_req *spare;
	size_t n_spare;
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

static void flush_dirty(struct server *s, bool up);
static void announce_flush(struct server *s);
static void redis_id_check(struct server *s);

/* The grouping of authorize decisions (quota_authorize) into /metrics. */
static void count_groups(struct server *s)
{
	struct authz_state *az = s->az;
	uint64_t calls, decisions;

	quota_group_stats(az->q, &calls, &decisions);
	metrics_count(s->metrics, "billing_authorize_redis_calls_total", (int64_t)(calls - az->calls_counted));
	metrics_count(s->metrics, "billing_authorize_decisions_total", (int64_t)(decisions - az->decisions_counted));
	az->calls_counted = calls;
	az->decisions_counted = decisions;
	/* the same for the usage answers' settles and held reads (quota_settles) */
	quota_settles_stats(az->qs, &calls, &decisions);
	metrics_count(s->metrics, "billing_settle_redis_calls_total", (int64_t)(calls - az->settle_calls_counted));
	metrics_count(s->metrics, "billing_settle_entries_total", (int64_t)(decisions - az->settle_entries_counted));
	az->settle_calls_counted = calls;
	az->settle_entries_counted = decisions;
}

static void refresh_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	refresh_now(arg);
	flush_dirty(arg, false);
	announce_flush(arg);
	redis_id_check(arg);
	count_groups(arg);
}

/* ---- mirror invalidation ---- */

static void forget_now_cb(void *arg, redisReply *r);

/* A change announced on billing_balance (or billing_change): the mirror
 * goes now, or, when the drop cannot be sent or its reply is lost (Redis
 * away), as soon as Redis answers (the dirty list): a drop merely logged
 * left the mirror of before the change in use once Redis was back
 * (test_notify_drop_lost.py). */
static void invalidate(struct server *s, int64_t account);

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

/* A charge we committed may not have reached the mirror (its settle
 * failed, or its commit's answer was lost): authz_forget drops the mirror
 * once *our* Redis answers.  Another instance on the same Redis may have
 * kept that mirror because the batch's NOTIFY named the Redis (usage.c
 * send_notify: its writer had just read the load generations there), and
 * our path to Redis may be down for longer than theirs: it would decide on
 * a mirror the whole charge above the ledger until we are back
 * (test_settle_lost.py).  So the account is also announced through
 * PostgreSQL ("ACCOUNT INSTANCE_ID", naming no Redis): every other instance
 * drops its mirror now; ours ignores it (our own writer).  Announcements
 * are grouped: one statement per API pool job, the next one when it is done
 * (or at the next tick after a failure). */
struct announce_job {
	struct dbjob job;
	struct server *s;
	char *instance;
	size_t n;
	int64_t accts[];
};

static void announce_run(struct dbjob *job, PGconn *c, const char *writer)
{
	struct announce_job *j = (struct announce_job *)job;
	struct buf arr;
	const char *p[2];
	PGresult *r;

	(void)writer;
	if (!c) {
		error_set(&j->job.err, 503, "unavailable", "no database");
		return;
	}
	buf_init(&arr);
	buf_append(&arr, "{", 1);
	for (size_t i = 0; i < j->n; i++)
		buf_printf(&arr, "%s%" PRId64, i ? "," : "", j->accts[i]);
	buf_append(&arr, "}", 2); /* with the NUL */
	p[0] = arr.data;
	p[1] = j->instance;
	r = db_query(c, "SELECT pg_notify('billing_balance', a::text || ' ' || $2) FROM unnest($1::bigint[]) a", 2, p,
		     &j->job.err);
	PQclear(r);
	buf_release(&arr);
}

static void announce_queue(struct authz_state *az, int64_t account)
{
	for (size_t i = 0; i < az->n_announce; i++)
		if (az->announce[i] == account)
			return;
	if (az->n_announce < ANNOUNCE_MAX)
		az->announce[az->n_announce++] = account;
	else
		log_warn("balance mirror not announced: too many", "account=%" PRId64, account);
}

static void announce_done(struct dbjob *job)
{
	struct announce_job *j = (struct announce_job *)job;
	struct server *s = j->s;
	struct authz_state *az = s->az;

	if (az) {
		az->announcing = false;
		if (j->job.err.status) {
			/* kept for the next tick */
			log_warn("balance mirrors not announced", "accounts=%zu error=\"%s\"", j->n, j->job.err.msg);
			for (size_t i = 0; i < j->n; i++)
				announce_queue(az, j->accts[i]);
		} else {
			announce_flush(s);
		}
	}
	free(j);
}

static void announce_flush(struct server *s)
{
	struct authz_state *az = s->az;
	struct announce_job *j;

	if (!az || az->announcing || az->n_announce == 0 || !s->pool)
		return;
	j = calloc(1, sizeof(*j) + az->n_announce * sizeof(j->accts[0]));
	if (!j)
		return;
	j->job.run = announce_run;
	j->job.done = announce_done;
	j->s = s;
	j->instance = (char *)config_get(s->cfg, "instance_id");
	j->n = az->n_announce;
	memcpy(j->accts, az->announce, j->n * sizeof(j->accts[0]));
	if (dbpool_submit(s->pool, &j->job) < 0) {
		free(j); /* the queue is full: at the next tick */
		return;
	}
	az->n_announce = 0;
	az->announcing = true;
}

void authz_forget_announce(struct server *s, int64_t account)
{
	if (!s->az || account <= 0)
		return;
	authz_forget(s, account);
	announce_queue(s->az, account);
	announce_flush(s);
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
	if (f->done)
		f->done(f->arg);
	free(f);
}

static void invalidate(struct server *s, int64_t account)
{
	struct forget_now *f = calloc(1, sizeof(*f));

	if (f) {
		f->s = s;
		f->account = account;
	}
	if (!f || quota_run(s->az->q, QUOTA_INVALIDATE, account, 0, NULL, forget_now_cb, f) < 0) {
		free(f);
		authz_forget(s, account);
	}
	s->az->accts[(uint64_t)account % CACHE_SLOTS].account_id = 0;
}

/* Sent whenever the connection is up, not only once rconn_usable (a PONG
 * within 2 s): right after a reconnect, before the first PONG, the same
 * connection already carries the caller's next authorize, and a drop left
 * for the next tick would come after it (test_mirror_drop.py).  A failed
 * send or a lost reply leaves the account for the next tick. */
void authz_forget_then(struct server *s, int64_t account, void (*done)(void *arg), void *arg)
{
	struct forget_now *f;

	if (!s->az || !s->redis || s->closing || !(f = calloc(1, sizeof(*f)))) {
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

void balance_set_held(json_t *bal, bool known, int64_t held)
{
	/* exact: either may be beyond int64 (common/jsonnum.h) */
	money_total paid = jsonnum_value(json_object_get(bal, "paid_nanos"));
	money_total promo = jsonnum_value(json_object_get(bal, "promo_nanos"));

	if (!json_is_object(bal))
		return;
	json_object_set_new(bal, "held_nanos", known ? json_integer(held) : json_null());
	json_object_set_new(bal, "available_nanos", known ? jsonnum_total(paid + promo - held) : json_null());
	json_object_set_new(bal, "held_known", json_boolean(known));
	if (known)
		json_object_del(bal, "note");
	else
		json_object_set_new(bal, "note", json_string(USAGE_HELD_UNKNOWN_NOTE));
}

void authz_held(struct server *s, int64_t account, authz_held_fn done, void *arg)
{
	struct held_req *h;

	/* asked whenever the connection is up, not only once rconn_usable (a
	 * PONG within 2 s): right after a reconnect Redis answers before the
	 * first PONG, and an answer is the truth; a failed send or a lost reply
	 * still says "unknown" */
	if (!s->az || !s->redis || s->closing || authz_redis_foreign() || !(h = calloc(1, sizeof(*h)))) {
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

static void *resync_thread(void *arg);

/* Sends the drops of the dirty list.  From the tick when the connection is
 * usable; from a connection's coming up (up) at once, before any decision
 * goes on it: a drop whose reply the old connection lost must not come after
 * the next decision of that account (test_mirror_drop.py). */
static void flush_dirty(struct server *s, bool up)
{
	struct authz_state *az = s->az;
	size_t keep = 0;

	/* usable, not ready: in a cluster with one master down, the accounts of
	 * the other masters are still dropped (the others stay in the list) */
	if (!s->redis || (!up && !rconn_usable(s->redis)) || (az->n_dirty == 0 && !az->dirty_overflow) ||
	    authz_redis_foreign())
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
	/* a drop whose reply is lost (the connection went) comes back to the
	 * list (forget_now_cb): it may not have run */
	for (size_t i = 0; i < az->n_dirty; i++) {
		struct forget_now *f = calloc(1, sizeof(*f));
		if (f) {
			f->s = s;
			f->account = az->dirty[i];
		}
		if (!f || quota_run(az->q, QUOTA_INVALIDATE, az->dirty[i], 0, NULL, forget_now_cb, f) < 0) {
			free(f);
			az->dirty[keep++] = az->dirty[i];
		}
	}
	az->n_dirty = keep;
}

/* The identity of the Redis this process's mirrors live in (common/rclient.h
 * rclient_redis_id), read at start, after every resync and after every new
 * connection of the event loop's (redis_up: the server at the address may be
 * another one now), on threads of their own; "" until read.  One per
 * process: one `redis` setting.  redis_id_epoch counts the new connections:
 * a read that began before the last one does not store what it read. */
static pthread_mutex_t redis_id_mu = PTHREAD_MUTEX_INITIALIZER;
static char redis_id[RCLIENT_ID_LEN + 1];
static uint64_t redis_id_epoch;
static bool redis_id_reading; /* a redis_id_thread runs */

static char db_ident[256];
static atomic_bool redis_foreign;

void authz_set_db_identity(const char *ident)
{
	snprintf(db_ident, sizeof(db_ident), "%s", ident);
}

bool authz_redis_foreign(void)
{
	return atomic_load(&redis_foreign);
}

/* Whether the Redis c reaches holds this database's mirrors (claimed for
 * it when nobody's): a Redis emptied and claimed by another database while
 * this process ran, or another server behind the address now.  Once it is
 * another's, this process writes nothing more to it and decides nothing
 * with it, for good: what it held of ours may since have been overwritten,
 * and a start checks the owner again and drops every mirror
 * (authz_init). */
static void check_owner(struct rclient *c)
{
	struct error err;
	char other[256];

	if (db_ident[0] && !atomic_load(&redis_foreign) &&
	    rclient_redis_owner(c, db_ident, true, other, sizeof(other), &err) == 1) {
		atomic_store(&redis_foreign, true);
		log_error("redis holds the mirrors of another billing database: no decision, settle or mirror write"
			  " goes to it; give this database its own Redis (or empty this one) and restart",
			  "other=\"%s\" this=\"%s\"", other, db_ident);
	}
}

static void read_redis_id(const char *addr)
{
	struct error err;
	char id[RCLIENT_ID_LEN + 1] = "";
	struct rclient *c;
	uint64_t epoch;

	pthread_mutex_lock(&redis_id_mu);
	epoch = redis_id_epoch;
	pthread_mutex_unlock(&redis_id_mu);
	c = rclient_new(addr, 2000, &err);
	if (c && rclient_redis_id(c, id, &err) < 0)
		log_debug("redis id not read", "error=\"%s\"", err.msg);
	if (c)
		check_owner(c);
	rclient_free(c);
	if (!id[0]) /* keep the last one: a writer naming another id still gets its drops */
		return;
	pthread_mutex_lock(&redis_id_mu);
	if (epoch == redis_id_epoch)
		memcpy(redis_id, id, sizeof(id));
	pthread_mutex_unlock(&redis_id_mu);
}

static bool same_redis(const char *id)
{
	bool same;

	pthread_mutex_lock(&redis_id_mu);
	same = redis_id[0] && strcmp(redis_id, id) == 0;
	pthread_mutex_unlock(&redis_id_mu);
	return same;
}

static void *resync_thread(void *arg)
{
	char *addr = arg;
	long n = quota_invalidate_all_sync(addr, 2000);

	if (n >= 0)
		log_info("balance mirrors dropped after a resync", "count=%ld", n);
	read_redis_id(addr);
	free(addr);
	return NULL;
}

/* billing_balance "ACCOUNT WRITER [REDIS_ID]": drop the account's mirror,
 * unless the writer settles into it itself.  Our own usage writers
 * (instance_id, instance_id.tN) do (authz_settle); so do another instance's
 * when they name the Redis we use (usage.c, send_notify): their settle
 * updates this very mirror after the COMMIT, and a drop would only make the
 * next decision of the account, on any instance, load it again from
 * PostgreSQL.  Should that instance die between its COMMIT and its settle,
 * the charge's hold still counts as held, and the mirror lives no longer
 * than the first hold's expiry (mirror_ttl_ms), so it is reloaded before
 * that hold lets go; a charge without a hold is missed for at most the
 * mirror's lifetime (MIRROR_TTL_MS), as on a single instance that dies there
 * (it drops every mirror when it starts).  The CLI, the API pool and
 * writers on another Redis name no id, or another: their changes drop it. */
static void notify_cb(void *arg, const char *channel, const char *payload)
{
	struct server *s = arg;

	if (strcmp(channel, "billing_balance") == 0) {
		char *end;
		int64_t acct = strtoll(payload, &end, 10);
		const char *me = config_get(s->cfg, "instance_id"), *w = end + 1, *sp;
		size_t ml = strlen(me), wl;
		bool ours;

		if (acct <= 0 || *end != ' ')
			return;
		sp = strchr(w, ' ');
		wl = sp ? (size_t)(sp - w) : strlen(w);
		/* instance_id itself or instance_id.tN (N digits): not another
		 * instance whose id only starts so (sm-o.tokyo next to sm-o) */
		ours = wl >= ml && strncmp(w, me, ml) == 0 &&
		       (wl == ml || (wl > ml + 2 && strncmp(w + ml, ".t", 2) == 0 &&
				     strspn(w + ml + 2, "0123456789") == wl - ml - 2));
		if (ours || (sp && same_redis(sp + 1)))
			return;
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

enum az_step { AZ_PRINCIPAL, AZ_DECIDE, AZ_LOAD };

struct az_req {
	struct dbjob job; /* for the API pool lookups */
	authz_done_fn done;
	void *done_arg;
	struct server *s;
	enum az_step step;
	bool has_key;
	int64_t account_id;
	int64_t input_tokens, max_output;
	int64_t amount;
	bool paid_only;
	/* mirror load: the leader's waiters, the next leader, the answer */
	struct az_req *waiters, *next;
	bool waited;       /* waited for another request's load once: loads itself next */
	bool redis_failed; /* the load got no answer from Redis */
	bool load_retried; /* ...and its request went back to the decision once */
	redisReply *load_reply;
	bool key_revoked, found;
	bool key_is_bearer;
	/* the account's status as PostgreSQL last gave it (principal lookup or
	 * its cache, a mirror load): what refuses a frozen account when Redis
	 * cannot decide (redis_down) */
	bool frozen;
	struct rctx *http; /* started by h_authorize: a 200 is written without jansson */
	/* From here on each field is written before it is read (az_start,
	 * the principal step, the decision step): az_alloc does not zero them. */
	char request_id[201];
	uint8_t key_hash[32];
	char tier[64];
	char model[201];
	struct limits lim;
	/* the authorize script's arguments (argv[0] is the request id) */
	char args[14][32];
	const char *argv[QUOTA_AUTHORIZE_ARGC];
};

/* A request context from the spares (or malloc), its head zeroed. */
static struct az_req *az_alloc(struct authz_state *az)
{
	struct az_req *a = az->spare;

	if (a) {
		az->spare = a->next;
		az->n_spare--;
	} else if (!(a = malloc(sizeof(*a)))) {
		return NULL;
	}
	memset(a, 0, offsetof(struct az_req, request_id));
	return a;
}

/* Back to the spares (at most AZ_SPARE_MAX kept: the requests of a busy turn). */
static void az_release(struct authz_state *az, struct az_req *a)
{
	if (az->n_spare >= AZ_SPARE_MAX) {
		free(a);
		return;
	}
	a->next = az->spare;
	az->spare = a;
	az->n_spare++;
}

/* dst (n bytes) = src, cut short as snprintf's "%s" would. */
static void copy_str(char *dst, size_t n, const char *src)
{
	size_t l = strnlen(src, n - 1);

	memcpy(dst, src, l);
	dst[l] = '\0';
}

static void az_step(struct az_req *a);

/* Ends an authorize: the body is stolen; retry_after (seconds) or NULL. */
static void az_finish(struct az_req *a, int status, json_t *body, const char *retry_after)
{
	struct authz_state *az = a->s->az;

	a->done(a->done_arg, status, body, retry_after);
	az_release(az, a);
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

/* ---- locked mirror loads (API pool threads) ---- */

static struct rclient *rc_take(struct server *s, struct error *err)
{
	struct authz_state *az = s->az;
	struct rclient *c = NULL;

	pthread_mutex_lock(&az->rc_mu);
	if (az->n_rc_free > 0)
		c = az->rc_free[--az->n_rc_free];
	pthread_mutex_unlock(&az->rc_mu);
	return c ? c : rclient_new(config_get(s->cfg, "redis"), (int)az->redis_timeout_ms, err);
}

static void rc_give(struct server *s, struct rclient *c)
{
	struct authz_state *az = s->az;

	pthread_mutex_lock(&az->rc_mu);
	if (az->n_rc_free < LOAD_CLIENTS_MAX) {
		az->rc_free[az->n_rc_free++] = c;
		c = NULL;
	}
	pthread_mutex_unlock(&az->rc_mu);
	rclient_free(c);
}

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* TIME in ms of the Redis that holds the account's keys (in a cluster,
 * the master of its slot: the one whose clock the load script reads), or -1. */
static int64_t redis_time_ms(struct rclient *c, int64_t account, struct error *err)
{
	char key[64];
	const char *argv[4] = {"EVAL", "return redis.call('TIME')", "1", key};
	redisReply *r;
	int64_t ms = -1;

	rkey(key, sizeof(key), account, RKEY_BAL);
	r = rclient_commandv(c, 4, argv, NULL, err);

	if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 && r->element[0]->type == REDIS_REPLY_STRING &&
	    r->element[1]->type == REDIS_REPLY_STRING)
		ms = strtoll(r->element[0]->str, NULL, 10) * 1000 + strtoll(r->element[1]->str, NULL, 10) / 1000;
	freeReplyObject(r);
	return ms;
}

/* The mirror's truth and the decision, under the account's row lock (see
 * quota.lua.h): BEGIN, customers row FOR SHARE, balance, Redis TIME, the
 * authorize script with the balance to store, ROLLBACK (nothing written). */
static void load_run(struct az_req *a, PGconn *c)
{
	struct ops_balance b;
	struct rclient *rc = NULL;
	char id[32], paid[32], promo[32], status[16], deadline[32], ttl_s[32];
	char poff[MONEY_TOTAL_BUF], qoff[MONEY_TOTAL_BUF];
	money_total ex;
	const char *p[1] = {id};
	const char *argv[23];
	PGresult *r = NULL;
	int64_t t_ms, fence_end, ttl, now = time_now_us();
	int64_t fence_ms = a->s->az->redis_timeout_ms + LOAD_FENCE_MS;
	struct error rerr = {0};

	snprintf(id, sizeof(id), "%" PRId64, a->account_id);
	if (db_exec(c, "BEGIN", 0, NULL, &a->job.err) < 0)
		return;
	r = db_query(c, "SELECT status FROM customers WHERE account_id = $1 FOR SHARE", 1, p, &a->job.err);
	if (!r)
		goto done;
	if (PQntuples(r) != 1) {
		error_set(&a->job.err, 404, "not_found", "unknown account");
		goto done;
	}
	snprintf(status, sizeof(status), "%s", PQgetvalue(r, 0, 0));
	a->frozen = strcmp(status, "frozen") == 0;
	if (ops_balance_get(c, a->account_id, 0, &b, &a->job.err) < 0)
		goto done;
	if (!(rc = rc_take(a->s, &rerr)) || (t_ms = redis_time_ms(rc, a->account_id, &rerr)) < 0) {
		/* the answer says only "unreachable": the reason goes to the log */
		log_warn("mirror load: redis failed", "account=%" PRId64 " step=time error=\"%s\"", a->account_id,
			 rerr.msg);
		a->redis_failed = true;
		goto done;
	}
	fence_end = mono_ms() + fence_ms + 20;
	/* the mirror must not outlive the first grant that expires with
	 * credit left, of all of them (b.grants lists only the first 64) */
	ttl = mirror_ttl_ms(now, b.first_expiry_us);
	snprintf(deadline, sizeof(deadline), "%" PRId64, t_ms + fence_ms);
	/* saturated, the excess beside it (ledger/reconcile.h) */
	snprintf(paid, sizeof(paid), "%" PRId64, reconcile_mirror_split(b.paid_nanos, &ex));
	money_total_str(ex, poff, sizeof(poff));
	snprintf(promo, sizeof(promo), "%" PRId64, reconcile_mirror_split(b.promo_nanos, &ex));
	money_total_str(ex, qoff, sizeof(qoff));
	snprintf(ttl_s, sizeof(ttl_s), "%" PRId64, ttl);
	memcpy(argv, a->argv, sizeof(a->argv));
	argv[16] = deadline;
	argv[17] = paid;
	argv[18] = promo;
	argv[19] = status;
	argv[20] = ttl_s;
	argv[21] = poff;
	argv[22] = qoff;
	a->load_reply = quota_run_sync(rc, QUOTA_AUTHORIZE, a->account_id, 23, argv, &rerr);
	if (!a->load_reply) {
		/* it may still run: keep the lock until it can only answer LATE */
		int64_t left = fence_end - mono_ms();

		log_warn("mirror load: redis failed", "account=%" PRId64 " step=script error=\"%s\"", a->account_id,
			 rerr.msg);
		if (left > 0) {
			struct timespec ts = {left / 1000, (left % 1000) * 1000000};
			nanosleep(&ts, NULL);
		}
		a->redis_failed = true;
	} else if (a->load_reply->type == REDIS_REPLY_ERROR) {
		log_warn("redis script error", "script=load error=\"%s\"", a->load_reply->str);
		freeReplyObject(a->load_reply);
		a->load_reply = NULL;
		a->redis_failed = true;
	}
done:
	if (rc)
		rc_give(a->s, rc);
	PQclear(r);
	db_exec_quiet(c, "ROLLBACK");
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
			r = db_query(
				c,
				"SELECT k.account_id, k.revoked_at IS NOT NULL, c.tier, c.status = 'frozen' FROM api_keys k"
				" JOIN customers c USING (account_id) WHERE k.key_hash = decode($1, 'hex')",
				1, p, &a->job.err);
		} else {
			snprintf(id, sizeof(id), "%" PRId64, a->account_id);
			p[0] = id;
			r = db_query(
				c,
				"SELECT account_id, false, tier, status = 'frozen' FROM customers WHERE account_id = $1",
				1, p, &a->job.err);
		}
		if (!r)
			return;
		a->found = PQntuples(r) == 1;
		if (a->found) {
			a->account_id = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
			a->key_revoked = PQgetvalue(r, 0, 1)[0] == 't';
			snprintf(a->tier, sizeof(a->tier), "%s", PQgetvalue(r, 0, 2));
			a->frozen = PQgetvalue(r, 0, 3)[0] == 't';
		}
		PQclear(r);
	} else {
		load_run(a, c);
	}
}

static void load_done(struct az_req *a);

static void lookup_done(struct dbjob *job)
{
	struct az_req *a = (struct az_req *)job;
	struct authz_state *az = a->s->az;

	if (a->step == AZ_LOAD)
		return load_done(a);
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
			e->frozen = a->frozen;
			e->at_us = now;
		}
		a->step = AZ_DECIDE;
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

/* The authorize script's answer (quota.lua.h): one string, a tag and up to
 * four fields separated by one space ("OK 5 9 1700000000000 0").  One reply
 * object a decision instead of one per field.  false when it is no such
 * string. */
#define ANSWER_FIELDS 5
struct answer {
	char buf[128];
	const char *f[ANSWER_FIELDS]; /* f[0] the tag; NUL-terminated in buf */
	int n;
};

static bool answer_read(const redisReply *r, struct answer *ans)
{
	char *p = ans->buf;

	if (!r || r->type != REDIS_REPLY_STRING || r->len < 1 || (size_t)r->len >= sizeof(ans->buf))
		return false;
	memcpy(ans->buf, r->str, (size_t)r->len);
	ans->buf[r->len] = '\0';
	ans->n = 0;
	while (ans->n < ANSWER_FIELDS) {
		ans->f[ans->n++] = p;
		p = strchr(p, ' ');
		if (!p)
			break;
		*p++ = '\0';
	}
	return true;
}

/* Field i as an integer (0 when absent): the script writes them with
 * string.format('%d'), an optional '-' and at most 19 digits. */
static int64_t answer_int(const struct answer *ans, int i)
{
	const char *p;
	uint64_t v = 0;
	bool neg;

	if (i >= ans->n)
		return 0;
	p = ans->f[i];
	neg = *p == '-';
	p += neg;
	for (int d = 0; d < 19 && *p >= '0' && *p <= '9'; d++)
		v = v * 10 + (uint64_t)(*p++ - '0');
	if (v > (uint64_t)INT64_MAX)
		return 0;
	return neg ? -(int64_t)v : (int64_t)v;
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

	/* failing open admits what Redis cannot decide, never a frozen account
	 * (CONTRACT.md §3: freezing stops new authorizations) */
	if (a->s->az->fail_open && a->frozen)
		return az_fail(a, 403, "account_frozen", "the account is frozen");
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

/* The leader of the account's load in this instance, or NULL. */
static struct az_req **loader_of(struct authz_state *az, int64_t account)
{
	struct az_req **l = &az->loading;

	while (*l && (*l)->account_id != account)
		l = &(*l)->next;
	return l;
}

static void lookup_run(struct dbjob *job, PGconn *c, const char *writer);

/* NOMIRROR: wait for the account's load in flight, or load (see the top). */
static void mirror_missing(struct az_req *a)
{
	struct authz_state *az = a->s->az;
	struct az_req **l = loader_of(az, a->account_id);

	if (*l && !a->waited) {
		a->waited = true;
		a->next = (*l)->waiters;
		(*l)->waiters = a;
		return;
	}
	if (!*l) { /* lead: the others of this account wait for this load */
		a->next = NULL;
		*l = a;
	}
	a->step = AZ_LOAD;
	a->redis_failed = false;
	memset(&a->job, 0, sizeof(a->job));
	a->job.run = lookup_run;
	a->job.done = lookup_done;
	if (dbpool_submit(a->s->pool, &a->job) < 0) {
		error_set(&a->job.err, 503, "unavailable", "the request queue is full");
		load_done(a);
	}
}

static void decide_cb(void *arg, redisReply *r);

static bool is_late(const redisReply *r)
{
	return r->type == REDIS_REPLY_STRING && r->len == 4 && memcmp(r->str, "LATE", 4) == 0;
}

/* A load ended (or could not start): wake its waiters, answer its request. */
static void load_done(struct az_req *a)
{
	struct authz_state *az = a->s->az;
	struct az_req **l = loader_of(az, a->account_id);
	struct az_req *w = a->waiters;
	redisReply *r = a->load_reply;

	if (*l == a)
		*l = a->next;
	a->waiters = a->next = NULL;
	a->load_reply = NULL;
	a->step = AZ_DECIDE;
	if (a->job.err.status == 404)
		az_fail(a, 404, "not_found", "unknown account");
	else if (a->job.err.status)
		az_fail(a, 503, "unavailable", a->job.err.msg);
	else if (a->redis_failed || !r || is_late(r)) {
		/* the script may have run (a reply that timed out): the decision
		 * on the event loop finds the hold, or no mirror and loads again */
		if (r && is_late(r))
			log_warn("mirror load: its script ran past the load's deadline (LATE)",
				 "account=%" PRId64 " retried=%d", a->account_id, (int)a->load_retried);
		if (a->load_retried)
			redis_down(a);
		else {
			a->load_retried = true;
			az_step(a);
		}
	} else
		decide_cb(a, r);
	freeReplyObject(r);
	while (w) {
		struct az_req *n = w->next;
		w->next = NULL;
		az_step(w);
		w = n;
	}
}

static void decide_cb(void *arg, redisReply *r)
{
	struct az_req *a = arg;
	struct answer ans;
	const char *tag;
	char exp[40];

	if (!answer_read(r, &ans))
		return redis_down(a);
	tag = ans.f[0];
	if (strcmp(tag, "OK") == 0) {
		time_format_rfc3339(answer_int(&ans, 3) * 1000, exp, sizeof(exp));
		if (a->http) {
			char buf[512];
			size_t n = fastbody_hold_answer(buf, sizeof(buf), a->request_id, a->account_id,
							answer_int(&ans, 1), answer_int(&ans, 2), exp);
			if (n) {
				struct rctx *c = a->http;
				az_release(a->s->az, a);
				return reply_typed(c, 200, "application/json", buf, n);
			}
		}
		az_finish(a, 200,
			  json_pack("{s:s,s:I,s:I,s:I,s:s}", "hold_id", a->request_id, "account_id",
				    (json_int_t)a->account_id, "held_nanos", (json_int_t)answer_int(&ans, 1),
				    "available_nanos", (json_int_t)answer_int(&ans, 2), "expires_at", exp),
			  NULL);
	} else if (strcmp(tag, "NOMIRROR") == 0) {
		mirror_missing(a);
	} else if (strcmp(tag, "FROZEN") == 0) {
		az_fail(a, 403, "account_frozen", "the account is frozen");
	} else if (strcmp(tag, "CONFLICT") == 0) {
		/* a replay answers the first hold; another call under the same
		 * request id must not pass as covered by it */
		az_fail(a, 409, "idempotency_conflict",
			"request_id already holds a live hold for another model or token count");
	} else if (strcmp(tag, "BALANCE") == 0) {
		json_t *body = json_pack("{s:{s:s,s:s,s:I,s:I}}", "error", "code", "insufficient_balance", "message",
					 "the balance does not cover this call", "available_nanos",
					 (json_int_t)answer_int(&ans, 1), "required_nanos", (json_int_t)a->amount);
		az_finish(a, 402, body, NULL);
	} else if (strcmp(tag, "RATE") == 0 || strcmp(tag, "CONC") == 0) {
		bool rate = tag[0] == 'R';
		const char *what = ans.n > 1 ? ans.f[1] : "";
		int64_t retry_ms = rate ? answer_int(&ans, 2) : 1000, limit = answer_int(&ans, rate ? 3 : 2);
		char ra[32], msg[128];
		if (retry_ms < 1)
			retry_ms = 1;
		snprintf(ra, sizeof(ra), "%" PRId64, (retry_ms + 999) / 1000);
		snprintf(msg, sizeof(msg), "%s limit of %" PRId64 " reached", what, limit);
		az_finish(a, 429,
			  json_pack("{s:{s:s,s:s,s:s,s:I,s:I}}", "error", "code", "rate_limited", "message", msg,
				    "limit_type", what, "limit", (json_int_t)limit, "retry_after_ms",
				    (json_int_t)retry_ms),
			  ra);
	} else {
		az_fail(a, 503, "unavailable", "unexpected answer from the quota store");
	}
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
			copy_str(a->tier, sizeof(a->tier), e->tier);
			a->frozen = e->frozen;
		}
		a->step = AZ_DECIDE;
	}
		/* fall through */
	case AZ_DECIDE: {
		const struct pricing_price *p;
		struct pricing_tokens t = {a->input_tokens, 0, a->max_output};
		int64_t now = time_now_us();
		bool known;
		char(*args)[32] = a->args;
		const char **argv = a->argv;

		if (!az->prices)
			return az_fail(a, 503, "unavailable", "prices not loaded yet");
		if (authz_redis_foreign())
			return az_fail(a, 503, "unavailable",
				       "the quota store (redis) holds another billing database's mirrors");
		p = pricing_select(az->prices, az->n_prices, a->model, now, &known);
		if (!p)
			return az_fail(a, 422, "unknown_model",
				       known ? "the model has no price in effect" : "unknown model");
		if (pricing_cost(p, &t, now, &a->amount) < 0)
			return az_fail(a, 422, "invalid_tokens", "token counts out of range");
		/* a call that can cost money holds money: 0/0 tokens hold the model's least cost */
		if (a->amount == 0)
			a->amount = pricing_min_billable(p, now);
		a->paid_only = p->paid_only;
		resolve_limits(az, a->account_id, a->tier, a->model, &a->lim);
		/* 14 numbers a request: without printf */
		buf_fmt_i64(args[0], a->amount);
		buf_fmt_i64(args[1], a->paid_only ? 1 : 0);
		buf_fmt_i64(args[2], az->hold_ttl_ms);
		buf_fmt_i64(args[3], a->input_tokens + a->max_output);
		for (int k = 0; k < 5; k++) {
			buf_fmt_i64(args[4 + k], a->lim.all[k]);
			buf_fmt_i64(args[9 + k], a->lim.model[k]);
		}
		argv[0] = a->request_id;
		argv[1] = args[0];
		argv[2] = args[1];
		argv[3] = args[2];
		argv[4] = args[3];
		argv[5] = a->model;
		for (int k = 0; k < 10; k++)
			argv[6 + k] = args[4 + k];
		/* sent at the end of this loop turn with the other decisions for
		 * the same Redis connection (quota.h); argv lives in a until decide_cb */
		if (quota_authorize(az->q, a->account_id, argv, decide_cb, a) < 0)
			return redis_down(a);
		return;
	}
	case AZ_LOAD: /* not reached: a load is a pool job (mirror_missing) */
		return az_fail(a, 500, "internal", "unexpected step");
	}
}

static int az_start(struct server *s, const struct authz_params *p, authz_done_fn done, void *arg, struct rctx *http)
{
	struct az_req *a = az_alloc(s->az);

	if (!a)
		return -1;
	a->s = s;
	a->done = done;
	a->done_arg = arg;
	a->http = http;
	copy_str(a->request_id, sizeof(a->request_id), p->request_id);
	copy_str(a->model, sizeof(a->model), p->model);
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

int authz_start(struct server *s, const struct authz_params *p, authz_done_fn done, void *arg)
{
	return az_start(s, p, done, arg, NULL);
}

static void http_done(void *arg, int status, json_t *body, const char *retry_after)
{
	struct rctx *c = arg;

	if (retry_after)
		evhttp_add_header(evhttp_request_get_output_headers(c->req), "Retry-After", retry_after);
	reply(c, status, body);
}

static void http_start(struct rctx *c, const char *request_id, const char *model, const char *api_key,
		       int64_t account_id, int64_t input_tokens, int64_t max_output_tokens)
{
	struct authz_params p;

	memset(&p, 0, sizeof(p));
	p.request_id = request_id;
	p.model = model;
	p.input_tokens = input_tokens;
	p.max_output_tokens = max_output_tokens;
	if (api_key) {
		p.has_key = true;
		apikey_hash(c->s->pepper, api_key, strlen(api_key), p.key_hash);
	} else {
		p.account_id = account_id;
	}
	if (az_start(c->s, &p, http_done, c, c) < 0)
		reply_err(c, 503, "unavailable", "out of memory");
}

void h_authorize(struct rctx *c)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(c->req);
	size_t len = evbuffer_get_length(in);
	struct fastbody_authz fb;
	struct error err;
	struct authz_body ab;
	json_t *b;

	/* the plain body of gateway traffic: no jansson tree (fastbody.h) */
	if (len > 0 && len <= HTTP_MAX_BODY && fastbody_authz_parse((const char *)evbuffer_pullup(in, -1), len, &fb))
		return http_start(c, fb.request_id, fb.model, fb.api_key[0] ? fb.api_key : NULL, fb.account_id,
				  fb.input_tokens, fb.max_output_tokens);
	b = read_body(c, &err);
	if (!b)
		return reply_error(c, &err);
	if (authz_body_parse(b, &ab, &err) < 0) {
		json_decref(b);
		return reply_error(c, &err);
	}
	http_start(c, ab.request_id, ab.model, ab.api_key, ab.account_id, ab.input_tokens, ab.max_output_tokens);
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
		authz_forget_announce(sa->s, sa->account);
	free(sa);
}

/* The settle script's arguments of it (bufs: their text) -> whether it
 * needs a settle at all: a replay without a hold changes nothing. */
static bool settle_args(struct server *s, const struct usage_item *it, char (*bufs)[32],
			const char *argv[QUOTA_SETTLE_ARGC])
{
	struct authz_state *az = s->az;
	struct acct_entry *e = &az->accts[(uint64_t)it->account_id % CACHE_SLOTS];
	struct limits lim = {{0}, {0}};

	if (e->account_id == it->account_id)
		resolve_limits(az, it->account_id, e->tier, it->r.model, &lim);
	_Static_assert(BUF_I64_LEN <= 32, "settle_args' buffers hold an int64");
	/* the digits printf's %" PRId64 " gives, without printf (a settle a record) */
	buf_fmt_i64(bufs[0], it->duplicate ? 0 : it->d_paid);
	buf_fmt_i64(bufs[1], it->duplicate ? 0 : it->d_promo);
	buf_fmt_i64(bufs[2], it->r.input_tokens + it->r.output_tokens);
	buf_fmt_i64(bufs[3], lim.all[1]);
	buf_fmt_i64(bufs[4], lim.all[3]);
	buf_fmt_i64(bufs[5], lim.model[1]);
	buf_fmt_i64(bufs[6], lim.model[3]);
	buf_fmt_i64(bufs[7], it->duplicate ? (int64_t)-1 : it->mirror_lgen);
	argv[0] = it->r.hold_id;
	argv[1] = bufs[0];
	argv[2] = bufs[1];
	argv[3] = bufs[2];
	argv[4] = it->duplicate ? "0" : "1";
	argv[5] = it->r.model;
	argv[6] = bufs[3];
	argv[7] = bufs[4];
	argv[8] = bufs[5];
	argv[9] = bufs[6];
	argv[10] = bufs[7];
	return !it->duplicate || it->r.hold_id[0];
}

/* A committed charge whose batch NOTIFY failed (usage.c notify_lost): the
 * other instances learn of it from us, as for a settle that failed. */
static void announce_lost_notify(struct server *s, const struct usage_item *it)
{
	if (it->notify_lost && !it->job.err.status && s->az && it->account_id > 0) {
		announce_queue(s->az, it->account_id);
		announce_flush(s);
	}
}

void authz_settle(struct server *s, const struct usage_item *it)
{
	char bufs[8][32];
	const char *argv[QUOTA_SETTLE_ARGC];

	announce_lost_notify(s, it);
	if (!it->account_id || it->job.err.status || !s->redis || authz_redis_foreign())
		return;
	if (settle_args(s, it, bufs, argv)) {
		struct settle_arg *sa = malloc(sizeof(*sa));
		if (sa) {
			sa->s = s;
			sa->account = it->account_id;
		}
		if (!sa ||
		    quota_run(s->az->q, QUOTA_SETTLE, it->account_id, QUOTA_SETTLE_ARGC, argv, settle_cb, sa) < 0) {
			free(sa);
			authz_forget_announce(s, it->account_id);
		}
	}
}

/* ---- life cycle ---- */

static void *redis_id_thread(void *arg)
{
	read_redis_id(arg);
	free(arg);
	pthread_mutex_lock(&redis_id_mu);
	redis_id_reading = false;
	pthread_mutex_unlock(&redis_id_mu);
	return NULL;
}

/* Reads the Redis's id off the loop, unless a read runs already. */
static void redis_id_read_async(struct server *s)
{
	pthread_t th;
	char *addr;
	bool busy;

	pthread_mutex_lock(&redis_id_mu);
	busy = redis_id_reading;
	redis_id_reading = true;
	pthread_mutex_unlock(&redis_id_mu);
	if (busy)
		return;
	addr = strdup(config_get(s->cfg, "redis"));
	if (addr && pthread_create(&th, NULL, redis_id_thread, addr) == 0) {
		pthread_detach(th);
		return;
	}
	free(addr);
	pthread_mutex_lock(&redis_id_mu);
	redis_id_reading = false;
	pthread_mutex_unlock(&redis_id_mu);
}

/* Each tick: the id again while it is not known (a read that failed). */
static void redis_id_check(struct server *s)
{
	bool known;

	if (!s->redis || !rconn_usable(s->redis))
		return;
	pthread_mutex_lock(&redis_id_mu);
	known = redis_id[0] != '\0';
	pthread_mutex_unlock(&redis_id_mu);
	if (!known)
		redis_id_read_async(s);
}

/* A Redis connection came up: the dirty list first, and a fresh fail-open
 * allowance for the next outage.  Not on an answer for some account: while
 * one master is down, or Redis cannot run one account's decision, the
 * others' answers would refill the failing account's allowance without end
 * (test_fail_open_bound.py).  And the Redis's id, read again: the new
 * connection may reach another server than the one the id was read from (a
 * Redis replaced behind its address), whose mirrors a writer naming the old
 * id never settles (test_redis_replaced.py).  Until it is read, no writer's
 * word keeps a mirror (notify_cb drops it). */
static void redis_up(void *arg)
{
	struct server *s = arg;

	if (s->az) {
		s->az->n_fo = 0;
		flush_dirty(s, true);
	}
	pthread_mutex_lock(&redis_id_mu);
	redis_id_epoch++;
	redis_id[0] = '\0';
	pthread_mutex_unlock(&redis_id_mu);
	/* a read already running may have begun before: its result is not
	 * stored (epoch), and the next tick starts one (redis_id_check) */
	redis_id_read_async(s);
}

int authz_init(struct server *s, struct error *err)
{
	struct authz_state *az = calloc(1, sizeof(*az));
	struct error ce;
	struct timeval tv = {1, 0};
	int64_t ttl, fo;
	long n;

	if (!az)
		return error_set(err, 0, "oom", "out of memory");
	pthread_mutex_init(&az->rc_mu, NULL);
	s->az = az;
	if (config_get_int(s->cfg, "hold_ttl_seconds", 1, 86400, &ttl, &ce) < 0 ||
	    config_get_int(s->cfg, "redis_fail_open_nanos", 0, INT64_MAX / 2, &fo, &ce) < 0 ||
	    config_get_int(s->cfg, "redis_timeout_ms", 10, 60000, &az->redis_timeout_ms, &ce) < 0)
		return error_set(err, 0, "config", "%s", ce.msg);
	az->hold_ttl_ms = ttl * 1000;
	az->fail_open = config_get_bool(s->cfg, "redis_fail_open");
	az->fail_open_nanos = fo;
	az->keys = calloc(CACHE_SLOTS, sizeof(*az->keys));
	az->accts = calloc(CACHE_SLOTS, sizeof(*az->accts));
	az->q = quota_new(s->redis, s->base);
	if (az->q) {
		quota_on_connect(az->q, redis_up, s);
		az->qs = quota_settles_new(az->q, s->redis, s->base);
	}
	az->refresh_timer = event_new(s->base, -1, EV_PERSIST, refresh_cb, s);
	if (!az->keys || !az->accts || !az->q || !az->qs || !az->refresh_timer)
		return error_set(err, 0, "oom", "out of memory");
	/* mirrors this instance may have left half-updated (a crash between commit and settle) */
	n = quota_invalidate_all_sync(config_get(s->cfg, "redis"), 2000);
	if (n < 0)
		log_warn("redis unreachable at start: mirrors are rebuilt as they are used", "%s", "");
	else
		read_redis_id(config_get(s->cfg, "redis"));
	event_add(az->refresh_timer, &tv);
	refresh_now(s);
	az->lis = listener_new(s->base, config_get(s->cfg, "pg"), notify_cb, s);
	if (!az->lis)
		return error_set(err, 0, "oom", "cannot start the listener");
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
	quota_settles_free(az->qs);
	quota_free(az->q);
	for (int i = 0; i < az->n_rc_free; i++)
		rclient_free(az->rc_free[i]);
	pthread_mutex_destroy(&az->rc_mu);
	free(az->keys);
	free(az->accts);
	free(az->prices);
	free(az->limits);
	free(az->fo);
	while (az->spare) {
		struct az_req *a = az->spare;
		az->spare = a->next;
		free(a);
	}
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

/* ---- a usage answer's settle and held read, grouped ---- */

struct settle_held {
	struct server *s;
	int64_t account;
	bool settled; /* the entry carried a settle */
	authz_held_fn done;
	void *arg;
};

static void settle_held_cb(void *arg, redisReply *r)
{
	struct settle_held *sh = arg;
	bool known = r && r->type == REDIS_REPLY_INTEGER;

	/* the charge may not have reached the mirror: it must not be used as it is */
	if (!r && sh->settled && !sh->s->closing)
		authz_forget_announce(sh->s, sh->account);
	sh->done(sh->arg, known, known ? (int64_t)r->integer : 0);
	free(sh);
}

void authz_settle_held(struct server *s, const struct usage_item *it, authz_held_fn done, void *arg)
{
	char bufs[8][32];
	const char *argv[QUOTA_SETTLE_ARGC];
	struct settle_held *sh = NULL;
	bool settle;

	/* closing (the writers' last answers at shutdown: no loop turn is left
	 * to send a group), or no Redis: each on its own as before */
	if (!s->az || !s->redis || s->closing || authz_redis_foreign() || !it->account_id || it->job.err.status ||
	    !(sh = malloc(sizeof(*sh)))) {
		authz_settle(s, it);
		authz_held(s, it->account_id, done, arg);
		return;
	}
	announce_lost_notify(s, it);
	settle = settle_args(s, it, bufs, argv);
	*sh = (struct settle_held){s, it->account_id, settle, done, arg};
	if (quota_settle(s->az->qs, it->account_id, settle ? QUOTA_SETTLE_HELD : QUOTA_HELD_ONLY, argv, settle_held_cb,
			 sh) < 0) {
		free(sh);
		authz_settle(s, it);
		authz_held(s, it->account_id, done, arg);
	}
}
