/* quota.c: see quota.h. */
#include "billing/authz/quota.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "billing/authz/quota.lua.h"
#include "common/buf.h"
#include "common/log.h"
#include "common/rclient.h"
#include "common/rkeys.h"
#include "common/rslot.h"

static const char *const scripts[QUOTA_N_SCRIPTS] = {quota_lua_authorize,       quota_lua_settle,
						     quota_lua_invalidate,      quota_lua_held,
						     quota_lua_authorize_group, quota_lua_settle_group};
#define N_KEYS RKEY_N
#define N_KEYS_STR "4"
_Static_assert(N_KEYS == 4, "N_KEYS_STR spells the key count");

/* A decision waiting for the end of the loop turn (quota_authorize). */
struct qdec {
	int64_t account;
	const char *const *argv; /* borrowed until cb */
	quota_cb cb;
	void *arg;
	int slot; /* of the account's keys (set at the flush) */
};

struct quota {
	struct rconn *r;
	char sha[QUOTA_N_SCRIPTS][48];
	/* the decisions of this loop turn; flush sends them at its end */
	struct qdec *pending;
	size_t n_pending, cap_pending;
	struct event *flush;
	bool flush_armed;
	uint64_t n_calls, n_decisions;
	void (*on_up)(void *); /* quota_on_connect */
	void *on_up_arg;
};

/* One grouped call in flight: its decisions' callbacks, in order (as many
 * as were allocated for: at most QUOTA_GROUP_MAX). */
struct qgroup {
	int n;
	struct qdec d[];
};

/* One script call in flight: one allocation holding the request, its
 * argument vector and the bytes of its arguments (kept for a NOSCRIPT
 * resend; rconn copies what it sends). */
struct qreq {
	struct quota *q;
	enum quota_script s;
	int argc; /* total, including EVALSHA sha numkeys keys */
	const char **argv;
	size_t *len;
	quota_cb cb;
	void *arg;
	int resent;
};

static void load_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct quota *q = ((void **)priv)[0];
	intptr_t i = (intptr_t)((void **)priv)[1];
	redisReply *r = reply;

	(void)ac;
	if (r && r->type == REDIS_REPLY_STRING && r->len < (int)sizeof(q->sha[0]))
		memcpy(q->sha[i], r->str, (size_t)r->len + 1);
	free(priv);
}

static void on_connect(void *arg)
{
	struct quota *q = arg;

	for (intptr_t i = 0; i < QUOTA_N_SCRIPTS; i++) {
		const char *argv[3] = {"SCRIPT", "LOAD", scripts[i]};
		void **priv = malloc(2 * sizeof(void *));
		if (!priv)
			continue;
		priv[0] = q;
		priv[1] = (void *)i;
		if (rconn_commandv(q->r, load_cb, priv, 3, argv, NULL) < 0)
			free(priv);
	}
	if (q->on_up)
		q->on_up(q->on_up_arg);
}

static void flush_cb(evutil_socket_t fd, short what, void *arg);

struct quota *quota_new(struct rconn *r, struct event_base *base)
{
	struct quota *q = calloc(1, sizeof(*q));

	if (!q)
		return NULL;
	q->r = r;
	q->flush = event_new(base, -1, 0, flush_cb, q);
	if (!q->flush) {
		free(q);
		return NULL;
	}
	rconn_on_connect(r, on_connect, q);
	if (rconn_ready(r))
		on_connect(q);
	return q;
}

void quota_on_connect(struct quota *q, void (*fn)(void *arg), void *arg)
{
	q->on_up = fn;
	q->on_up_arg = arg;
}

void quota_free(struct quota *q)
{
	if (!q)
		return;
	for (size_t i = 0; i < q->n_pending; i++)
		q->pending[i].cb(q->pending[i].arg, NULL);
	free(q->pending);
	event_free(q->flush);
	free(q);
}

static int send_req(struct qreq *x);

static void reply_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct qreq *x = priv;
	redisReply *r = reply;

	(void)ac;
	if (r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0 && !x->resent) {
		/* the server lost its scripts (restart, SCRIPT FLUSH): send the body */
		x->resent = 1;
		x->argv[0] = "EVAL";
		x->argv[1] = scripts[x->s];
		x->len[0] = 4;
		x->len[1] = strlen(scripts[x->s]);
		x->q->sha[x->s][0] = '\0';
		on_connect(x->q);
		if (send_req(x) == 0)
			return;
		r = NULL;
	}
	if (r && r->type == REDIS_REPLY_ERROR)
		log_warn("redis script error", "script=%d error=\"%s\"", (int)x->s, r->str);
	x->cb(x->arg, r && r->type != REDIS_REPLY_ERROR ? r : NULL);
	free(x);
}

static int send_req(struct qreq *x)
{
	return rconn_commandv(x->q->r, reply_cb, x, x->argc, x->argv, x->len);
}

/* EVALSHA (EVAL until the server gave the sha) of script s with the four
 * keys of each of accounts[0..n_accts) and argv (copied), in one allocation. */
static int run_keys(struct quota *q, enum quota_script s, int n_accts, const int64_t *accounts, int argc,
		    const char *const *argv, quota_cb cb, void *arg)
{
	int n = 2 + 1 + n_accts * N_KEYS + argc, k = 0;
	size_t bytes = sizeof(struct qreq) + (size_t)n * (sizeof(char *) + sizeof(size_t)) + sizeof(q->sha[s]) + 16 +
		       (size_t)n_accts * N_KEYS * RKEY_BUF;
	struct qreq *x;
	char *p;

	for (int i = 0; i < argc; i++)
		bytes += strlen(argv[i]) + 1;
	x = malloc(bytes);
	if (!x)
		return -1;
	x->q = q;
	x->s = s;
	x->cb = cb;
	x->arg = arg;
	x->argc = n;
	x->resent = 0;
	x->argv = (const char **)(x + 1);
	x->len = (size_t *)(x->argv + n);
	p = (char *)(x->len + n);
	if (q->sha[s][0]) {
		memcpy(p, q->sha[s], sizeof(q->sha[s]));
		x->argv[k++] = "EVALSHA";
		x->argv[k++] = p;
	} else {
		x->argv[k++] = "EVAL";
		x->argv[k++] = scripts[s];
		x->resent = 1;
	}
	p += sizeof(q->sha[s]);
	x->len[k] = buf_fmt_i64(p, n_accts * N_KEYS);
	x->argv[k++] = p;
	p += 16;
	for (int a = 0; a < n_accts; a++)
		for (int i = 0; i < N_KEYS; i++, p += RKEY_BUF) {
			x->len[k] = rkey(p, RKEY_BUF, accounts[a], (enum rkey)i);
			x->argv[k++] = p;
		}
	for (int i = 0; i < argc; i++) {
		size_t l = strlen(argv[i]);
		memcpy(p, argv[i], l + 1);
		x->len[k] = l;
		x->argv[k++] = p;
		p += l + 1;
	}
	x->len[0] = strlen(x->argv[0]);
	x->len[1] = strlen(x->argv[1]);
	if (send_req(x) < 0) {
		free(x);
		return -1;
	}
	return 0;
}

int quota_run(struct quota *q, enum quota_script s, int64_t account_id, int argc, const char *const *argv, quota_cb cb,
	      void *arg)
{
	return run_keys(q, s, 1, &account_id, argc, argv, cb, arg);
}

/* ---- grouped authorize decisions ---- */

int quota_authorize(struct quota *q, int64_t account_id, const char *const *argv, quota_cb cb, void *arg)
{
	if (q->n_pending == q->cap_pending) {
		size_t cap = q->cap_pending ? 2 * q->cap_pending : 64;
		struct qdec *n = realloc(q->pending, cap * sizeof(*n));
		if (!n)
			return -1;
		q->pending = n;
		q->cap_pending = cap;
	}
	q->pending[q->n_pending++] = (struct qdec){account_id, argv, cb, arg, -1};
	if (!q->flush_armed) {
		/* runs after the callbacks already active in this turn: those of
		 * every socket epoll reported ready with this one */
		event_active(q->flush, EV_TIMEOUT, 1);
		q->flush_armed = true;
	}
	return 0;
}

void quota_group_stats(const struct quota *q, uint64_t *calls, uint64_t *decisions)
{
	*calls = q->n_calls;
	*decisions = q->n_decisions;
}

/* The answer of a grouped call: one element per decision, in order. */
static void group_cb(void *arg, redisReply *r)
{
	struct qgroup *g = arg;
	bool ok = r && r->type == REDIS_REPLY_ARRAY && r->elements == (size_t)g->n;

	if (r && !ok)
		log_warn("redis: a grouped authorize answered out of shape", "decisions=%d elements=%zu", g->n,
			 r->type == REDIS_REPLY_ARRAY ? r->elements : (size_t)0);
	for (int i = 0; i < g->n; i++) {
		redisReply *e = NULL;
		if (r && ok)
			e = r->element[i];
		g->d[i].cb(g->d[i].arg, e);
	}
	free(g);
}

/* Sends one call of g's decisions; on failure each gets NULL (now: the
 * flush is an event of its own, not inside a caller). */
static void group_send(struct quota *q, struct qgroup *g)
{
	int64_t accts[QUOTA_GROUP_MAX];
	const char *argv[QUOTA_GROUP_MAX * (1 + QUOTA_AUTHORIZE_ARGC)];
	char idx[QUOTA_GROUP_MAX][8];
	int n_accts = 0, k = 0;

	q->n_calls++;
	q->n_decisions += (uint64_t)g->n;
	if (g->n == 1) {
		struct qdec d = g->d[0];
		free(g);
		if (quota_run(q, QUOTA_AUTHORIZE, d.account, QUOTA_AUTHORIZE_ARGC, d.argv, d.cb, d.arg) < 0)
			d.cb(d.arg, NULL);
		return;
	}
	for (int i = 0; i < g->n; i++) {
		int j = 0;
		while (j < n_accts && accts[j] != g->d[i].account)
			j++;
		if (j == n_accts) {
			accts[n_accts++] = g->d[i].account;
			buf_fmt_i64(idx[j], j + 1);
		}
		argv[k++] = idx[j];
		for (int a = 0; a < QUOTA_AUTHORIZE_ARGC; a++)
			argv[k++] = g->d[i].argv[a];
	}
	if (run_keys(q, QUOTA_AUTHORIZE_GROUP, n_accts, accts, k, argv, group_cb, g) < 0)
		group_cb(g, NULL);
}

/* The end of the loop turn: the decisions queued in it, in calls of at most
 * QUOTA_GROUP_MAX; on a cluster each call holds one slot's decisions. */
static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
	struct quota *q = arg;
	struct qdec *d = q->pending;
	size_t n = q->n_pending, cap = q->cap_pending;
	bool cluster = rconn_cluster(q->r);

	(void)fd, (void)what;
	/* callbacks below may queue new decisions: those go into a new turn */
	q->pending = NULL;
	q->n_pending = q->cap_pending = 0;
	q->flush_armed = false;
	for (size_t i = 0; i < n; i++) {
		char key[RKEY_BUF];
		d[i].slot = cluster ? rslot_of(key, rkey(key, sizeof(key), d[i].account, RKEY_BAL)) : -1;
	}
	for (size_t i = 0; i < n; i++) {
		struct qgroup *g;
		size_t room = n - i < QUOTA_GROUP_MAX ? n - i : QUOTA_GROUP_MAX;
		if (!d[i].cb) /* taken by an earlier call */
			continue;
		g = malloc(sizeof(*g) + room * sizeof(g->d[0]));
		if (!g) {
			d[i].cb(d[i].arg, NULL);
			continue;
		}
		g->n = 0;
		for (size_t j = i; j < n && (size_t)g->n < room; j++)
			if (d[j].cb && d[j].slot == d[i].slot) {
				g->d[g->n++] = d[j];
				if (j > i)
					d[j].cb = NULL;
			}
		d[i].cb = NULL;
		group_send(q, g);
	}
	/* the array serves the next turn, unless a callback above queued into a new one */
	if (!q->pending) {
		q->pending = d;
		q->cap_pending = cap;
	} else {
		free(d);
	}
	/* an event of its own, not a Redis callback: the calls go out now */
	rconn_flush(q->r);
}

redisReply *quota_run_sync(struct rclient *c, enum quota_script s, int64_t account_id, int argc,
			   const char *const *argv, struct error *err)
{
	char keys[N_KEYS][64];
	const char **all = calloc((size_t)(3 + N_KEYS + argc), sizeof(*all));
	redisReply *r;
	int k = 0;

	if (!all) {
		error_set(err, 503, "unavailable", "out of memory");
		return NULL;
	}
	all[k++] = "EVAL"; /* loads are rare: the script cache of the server compiles it once */
	all[k++] = scripts[s];
	all[k++] = N_KEYS_STR;
	for (int i = 0; i < N_KEYS; i++) {
		rkey(keys[i], sizeof(keys[i]), account_id, (enum rkey)i);
		all[k++] = keys[i];
	}
	for (int i = 0; i < argc; i++)
		all[k++] = argv[i];
	r = rclient_commandv(c, k, all, NULL, err);
	free(all);
	return r;
}

struct inval {
	struct rclient *c;
	char cursor[32];
	long n;
	struct error *err;
};

/* One master: SCAN its mirrors, then bump each version and DEL each mirror
 * (pipelined, routed by key: a key moved meanwhile follows its slot). */
static int invalidate_node(redisContext *ctx, void *arg)
{
	struct inval *v = arg;

	snprintf(v->cursor, sizeof(v->cursor), "0");
	do {
		redisReply *r = redisCommand(ctx, "SCAN %s MATCH " RKEY_BAL_PATTERN " COUNT 1000", v->cursor);
		struct rclient_cmd *cmds = NULL;
		redisReply **replies = NULL;
		char(*st)[96] = NULL;
		const char **argv = NULL;
		size_t k = 0, m;
		int rc = 0;

		if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
		    r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_ARRAY) {
			freeReplyObject(r);
			return -1;
		}
		snprintf(v->cursor, sizeof(v->cursor), "%s", r->element[0]->str);
		m = r->element[1]->elements;
		cmds = calloc(2 * m + 1, sizeof(*cmds));
		replies = calloc(2 * m + 1, sizeof(*replies));
		st = calloc(m + 1, sizeof(*st));
		argv = calloc(6 * m + 1, sizeof(*argv));
		if (!cmds || !replies || !st || !argv)
			rc = -1;
		for (size_t i = 0; rc == 0 && i < m; i++) {
			const char *key = r->element[1]->element[i]->str;
			size_t kl = strlen(key);
			if (kl < 4 || kl > 80)
				continue;
			snprintf(st[i], sizeof(st[i]), "%.*s" RKEY_ST_SUFFIX, (int)(kl - 3), key);
			argv[6 * i] = "HINCRBY";
			argv[6 * i + 1] = st[i];
			argv[6 * i + 2] = RKEY_ST_VER;
			argv[6 * i + 3] = "1";
			argv[6 * i + 4] = "DEL";
			argv[6 * i + 5] = key;
			cmds[k++] = (struct rclient_cmd){4, &argv[6 * i], NULL};
			cmds[k++] = (struct rclient_cmd){2, &argv[6 * i + 4], NULL};
			v->n++;
		}
		if (rc == 0 && k && rclient_pipeline(v->c, k, cmds, replies, v->err) < 0)
			rc = -1;
		for (size_t i = 0; replies && i < k; i++)
			freeReplyObject(replies[i]);
		free(cmds);
		free(replies);
		free(st);
		free(argv);
		freeReplyObject(r);
		if (rc < 0)
			return -1;
	} while (strcmp(v->cursor, "0") != 0);
	return 0;
}

long quota_invalidate_all_sync(const char *addr, int timeout_ms)
{
	struct error err;
	struct inval v = {NULL, "0", 0, &err};
	long n = -1;

	v.c = rclient_new(addr, timeout_ms, &err);
	if (v.c && rclient_each_master(v.c, invalidate_node, &v, &err) == 0)
		n = v.n;
	rclient_free(v.c);
	return n;
}

int quota_held_sync(const char *addr, int64_t account_id, int timeout_ms, int64_t *held, struct error *err)
{
	struct rclient *c = rclient_new(addr, timeout_ms, err);
	char keys[N_KEYS][64], num[16];
	const char *argv[3 + N_KEYS];
	redisReply *r = NULL;
	int rc = -1;

	if (!c)
		return -1;
	argv[0] = "EVAL";
	argv[1] = quota_lua_held;
	snprintf(num, sizeof(num), "%d", N_KEYS);
	argv[2] = num;
	for (int i = 0; i < N_KEYS; i++) {
		rkey(keys[i], sizeof(keys[i]), account_id, (enum rkey)i);
		argv[3 + i] = keys[i];
	}
	r = rclient_commandv(c, 3 + N_KEYS, argv, NULL, err);
	if (r && r->type == REDIS_REPLY_INTEGER) {
		*held = r->integer;
		rc = 0;
	} else if (r) {
		error_set(err, 503, "unavailable", "redis answered the held amount with \"%s\"",
			  r->type == REDIS_REPLY_ERROR ? r->str : "no integer");
	}
	freeReplyObject(r);
	rclient_free(c);
	return rc;
}

/* ---- grouped settles and held reads (quota_settles) ---- */

/* An entry waiting for the end of the loop turn. */
struct qsentry {
	int64_t account;
	enum quota_settle_mode mode;
	char *args; /* QUOTA_SETTLE_ARGC strings one after another (owned); NULL: held only */
	quota_cb cb;
	void *arg;
	int slot; /* of the account's keys (set at the flush) */
};

struct quota_settles {
	struct quota *q;
	struct rconn *r;
	struct event *flush;
	bool flush_armed;
	struct qsentry *pending;
	size_t n_pending, cap_pending;
	uint64_t n_calls, n_entries;
};

/* One grouped call in flight: its entries' callbacks, in order. */
struct qscall {
	int n;
	struct qsentry e[QUOTA_SETTLE_GROUP_MAX];
};

static void settles_flush_cb(evutil_socket_t fd, short what, void *arg);

struct quota_settles *quota_settles_new(struct quota *q, struct rconn *r, struct event_base *base)
{
	struct quota_settles *qs = calloc(1, sizeof(*qs));

	if (!qs)
		return NULL;
	qs->q = q;
	qs->r = r;
	qs->flush = event_new(base, -1, 0, settles_flush_cb, qs);
	if (!qs->flush) {
		free(qs);
		return NULL;
	}
	return qs;
}

void quota_settles_free(struct quota_settles *qs)
{
	if (!qs)
		return;
	for (size_t i = 0; i < qs->n_pending; i++) {
		free(qs->pending[i].args);
		qs->pending[i].cb(qs->pending[i].arg, NULL);
	}
	free(qs->pending);
	event_free(qs->flush);
	free(qs);
}

int quota_settle(struct quota_settles *qs, int64_t account_id, enum quota_settle_mode mode, const char *const *argv,
		 quota_cb cb, void *arg)
{
	char *args = NULL;

	if (mode & QUOTA_SETTLE_ONLY) {
		size_t bytes = 0;
		char *p;
		for (int i = 0; i < QUOTA_SETTLE_ARGC; i++)
			bytes += strlen(argv[i]) + 1;
		if (!(args = malloc(bytes)))
			return -1;
		p = args;
		for (int i = 0; i < QUOTA_SETTLE_ARGC; i++) {
			size_t l = strlen(argv[i]) + 1;
			memcpy(p, argv[i], l);
			p += l;
		}
	}
	if (qs->n_pending == qs->cap_pending) {
		size_t cap = qs->cap_pending ? 2 * qs->cap_pending : 64;
		struct qsentry *n = realloc(qs->pending, cap * sizeof(*n));
		if (!n) {
			free(args);
			return -1;
		}
		qs->pending = n;
		qs->cap_pending = cap;
	}
	qs->pending[qs->n_pending++] = (struct qsentry){account_id, mode, args, cb, arg, -1};
	if (!qs->flush_armed) {
		/* after the callbacks already active in this turn: the usage
		 * answers of every commit batch the writers delivered with this one */
		event_active(qs->flush, EV_TIMEOUT, 1);
		qs->flush_armed = true;
	}
	return 0;
}

void quota_settles_stats(const struct quota_settles *qs, uint64_t *calls, uint64_t *entries)
{
	*calls = qs->n_calls;
	*entries = qs->n_entries;
}

/* The answer of a grouped call: one element per entry, in order. */
static void settles_call_cb(void *arg, redisReply *r)
{
	struct qscall *g = arg;
	bool ok = r && r->type == REDIS_REPLY_ARRAY && r->elements == (size_t)g->n;

	if (r && !ok)
		log_warn("redis: a grouped settle answered out of shape", "entries=%d elements=%zu", g->n,
			 r->type == REDIS_REPLY_ARRAY ? r->elements : (size_t)0);
	for (int i = 0; i < g->n; i++) {
		redisReply *e = r && ok ? r->element[i] : NULL;
		if (e && e->type == REDIS_REPLY_ERROR) {
			log_warn("redis script error", "script=%d error=\"%s\"", (int)QUOTA_SETTLE_GROUP, e->str);
			e = NULL;
		}
		g->e[i].cb(g->e[i].arg, e);
	}
	free(g);
}

/* Sends one call of g's entries; on failure each gets NULL (now: the flush
 * is an event of its own, not inside a caller). */
static void settles_send(struct quota_settles *qs, struct qscall *g)
{
	static const char *const modes[4] = {"", "s", "h", "sh"};
	int64_t accts[QUOTA_SETTLE_GROUP_MAX];
	const char *argv[QUOTA_SETTLE_GROUP_MAX * (2 + QUOTA_SETTLE_ARGC)];
	char idx[QUOTA_SETTLE_GROUP_MAX][8];
	char *owned[QUOTA_SETTLE_GROUP_MAX];
	int n_accts = 0, k = 0, n = g->n;

	if (n < 1 || n > QUOTA_SETTLE_GROUP_MAX) { /* never: the flush fills 1 to QUOTA_SETTLE_GROUP_MAX */
		free(g);
		return;
	}
	qs->n_calls++;
	qs->n_entries += (uint64_t)g->n;
	for (int i = 0; i < g->n; i++) {
		const char *p = owned[i] = g->e[i].args;
		int j = 0;
		while (j < n_accts && accts[j] != g->e[i].account)
			j++;
		if (j == n_accts) {
			accts[n_accts++] = g->e[i].account;
			snprintf(idx[j], sizeof(idx[j]), "%d", j + 1);
		}
		argv[k++] = idx[j];
		argv[k++] = modes[g->e[i].mode];
		for (int a = 0; a < QUOTA_SETTLE_ARGC; a++) {
			argv[k++] = p ? p : "";
			if (p)
				p += strlen(p) + 1;
		}
	}
	/* run_keys copies the arguments; g is gone once its callback ran */
	if (run_keys(qs->q, QUOTA_SETTLE_GROUP, n_accts, accts, k, argv, settles_call_cb, g) < 0)
		settles_call_cb(g, NULL);
	for (int i = 0; i < n; i++)
		free(owned[i]);
}

/* The end of the loop turn: the entries queued in it, in calls of at most
 * QUOTA_SETTLE_GROUP_MAX; on a cluster each call holds one slot's entries. */
static void settles_flush_cb(evutil_socket_t fd, short what, void *arg)
{
	struct quota_settles *qs = arg;
	struct qsentry *d = qs->pending;
	size_t n = qs->n_pending;
	bool cluster = rconn_cluster(qs->r);

	(void)fd, (void)what;
	/* callbacks below may queue new entries: those go into a new turn */
	qs->pending = NULL;
	qs->n_pending = qs->cap_pending = 0;
	qs->flush_armed = false;
	for (size_t i = 0; i < n; i++) {
		char key[RKEY_BUF];
		rkey(key, sizeof(key), d[i].account, RKEY_BAL);
		d[i].slot = cluster ? rslot_of(key, strlen(key)) : -1;
	}
	for (size_t i = 0; i < n; i++) {
		struct qscall *g;
		if (!d[i].cb) /* taken by an earlier call */
			continue;
		g = malloc(sizeof(*g));
		if (!g) {
			free(d[i].args);
			d[i].cb(d[i].arg, NULL);
			continue;
		}
		g->n = 0;
		for (size_t j = i; j < n && g->n < QUOTA_SETTLE_GROUP_MAX; j++)
			if (d[j].cb && d[j].slot == d[i].slot) {
				g->e[g->n++] = d[j];
				if (j > i)
					d[j].cb = NULL;
			}
		d[i].cb = NULL;
		settles_send(qs, g);
	}
	free(d);
}
