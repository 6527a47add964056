/* quota.c: see quota.h. */
#include "billing/authz/quota.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "billing/authz/quota.lua.h"
#include "billing/authz/turnq.h"
#include "common/buf.h"
#include "common/log.h"
#include "common/rclient.h"
#include "common/rkeys.h"

static const char *const scripts[QUOTA_N_SCRIPTS] = {quota_lua_authorize,       quota_lua_settle,
						     quota_lua_invalidate,      quota_lua_held,
						     quota_lua_authorize_group, quota_lua_settle_group};
#define N_KEYS RKEY_N
#define N_KEYS_STR "4"
_Static_assert(N_KEYS == 4, "N_KEYS_STR spells the key count");

/* What a turn queue of quota sends (turnq.h): a grouped script, and for a
 * call of one entry the one-account script when there is one. */
struct qkind {
	struct quota *q;
	enum quota_script group;
	enum quota_script single; /* QUOTA_N_SCRIPTS: the grouped script also alone */
	int argc;                 /* each entry's arguments, after its account's number */
	bool packed;              /* the entries go packed in one argument (the grouped
				   * authorize script, quota.lua.h): pack_send */
};

struct quota {
	struct rconn *r;
	char sha[QUOTA_N_SCRIPTS][48];
	struct qkind dec_kind;
	struct turnq *dec;     /* the authorize decisions of this loop turn */
	void (*on_up)(void *); /* quota_on_connect */
	void *on_up_arg;
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

static int kind_send(void *owner, struct turnq_call *g);

struct quota *quota_new(struct rconn *r, struct event_base *base)
{
	struct quota *q = calloc(1, sizeof(*q));

	if (!q)
		return NULL;
	q->r = r;
	q->dec_kind = (struct qkind){q, QUOTA_AUTHORIZE_GROUP, QUOTA_AUTHORIZE, QUOTA_AUTHORIZE_ARGC, true};
	/* a decision's error answer is its own (quota.h) */
	q->dec = turnq_new(r, base, QUOTA_GROUP_MAX, kind_send, &q->dec_kind, NULL, false, "authorize");
	if (!q->dec) {
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
	turnq_free(q->dec);
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
		    const char *const *argv, const size_t *lens, quota_cb cb, void *arg)
{
	int n = 2 + 1 + n_accts * N_KEYS + argc, k = 0;
	size_t bytes = sizeof(struct qreq) + (size_t)n * (sizeof(char *) + sizeof(size_t)) + sizeof(q->sha[s]) + 16 +
		       (size_t)n_accts * N_KEYS * RKEY_BUF;
	struct qreq *x;
	char *p;

	for (int i = 0; i < argc; i++)
		bytes += (lens ? lens[i] : strlen(argv[i])) + 1;
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
		size_t l = lens ? lens[i] : strlen(argv[i]);
		memcpy(p, argv[i], l);
		p[l] = '\0';
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
	return run_keys(q, s, 1, &account_id, argc, argv, NULL, cb, arg);
}

/* ---- the turn queues' calls: grouped authorize decisions, grouped settles ---- */

/* An entry's arguments in the grouped settle script: what to run, then the
 * settle script's (quota.lua.h, quota_lua_settle_group). */
#define SETTLE_ENTRY_ARGC (1 + QUOTA_SETTLE_ARGC)

/* The most arguments one grouped settle call carries after its keys. */
#define GROUP_ARGV_MAX (QUOTA_SETTLE_GROUP_MAX * (1 + SETTLE_ENTRY_ARGC))
#define GROUP_MAX QUOTA_SETTLE_GROUP_MAX

/* Whether argv[from..to) are all "0" (no limit in force). */
static bool all_zero(const char *const *argv, int from, int to)
{
	for (int a = from; a < to; a++)
		if (argv[a][0] != '0' || argv[a][1] != '\0')
			return false;
	return true;
}

/* The decimal integer s ("0", "-12"; what buf_fmt_i64 writes) -> *v; false
 * for anything else. */
static bool dec_i64(const char *s, int64_t *v)
{
	bool neg = *s == '-';
	uint64_t u = 0;
	const char *p = s + neg;

	if (!*p || strlen(p) > 18)
		return false;
	for (; *p; p++) {
		if (*p < '0' || *p > '9')
			return false;
		u = u * 10 + (uint64_t)(*p - '0');
	}
	*v = neg ? -(int64_t)u : (int64_t)u;
	return true;
}

static void put_le(char *p, uint64_t v, int bytes)
{
	for (int i = 0; i < bytes; i++, v >>= 8)
		p[i] = (char)(v & 0xff);
}

/* The bytes of the grouped authorize script's packed argument (quota.lua.h,
 * QUOTA_AUTHORIZE_PACK) a call at most: per decision its account's number
 * and the six with their lengths, hold_id and model at most 200 bytes
 * (authorize.c; longer ones go in the full form), amount at most 20 digits. */
#define PACK_ENTRY_MAX (2 + 2 + 200 + 1 + 20 + 1 + 8 + 8 + 2 + 200)
#define PACK_MAX (QUOTA_GROUP_MAX * PACK_ENTRY_MAX)
_Static_assert(QUOTA_GROUP_MAX < 64, "an account's number plus 64 says it repeats (quota.lua.h)");

/* Appends authorize decision argv (QUOTA_AUTHORIZE_ARGC arguments) of the
 * account whose number in the call is j (plus 64 when it has more than
 * one there) to out, packed (quota.lua.h, QUOTA_AUTHORIZE_PACK) -> the bytes
 * written.  With a limit in force (its arguments 7-16, past hold_id ..
 * model, not all "0"), or arguments out of the packed form's range, j is
 * negated and the six left empty: *full is set, and the decision's
 * arguments go after the packed one. */
static size_t pack_decision(char *out, int j, const char *const *argv, bool *full)
{
	size_t lh = strlen(argv[0]), la = strlen(argv[1]), lm = strlen(argv[5]), n;
	int64_t ttl = 0, tokens = 0;

	*full = !all_zero(argv, 6, QUOTA_AUTHORIZE_ARGC) || lh > 200 || la > 20 || lm > 200 ||
		(strcmp(argv[2], "0") != 0 && strcmp(argv[2], "1") != 0) || !dec_i64(argv[3], &ttl) ||
		!dec_i64(argv[4], &tokens);
	if (*full)
		lh = la = lm = 0, ttl = tokens = 0;
	put_le(out, (uint64_t)(*full ? -j : j), 2);
	put_le(out + 2, lh, 2);
	memcpy(out + 4, argv[0], lh);
	n = 4 + lh;
	out[n++] = (char)la;
	memcpy(out + n, argv[1], la);
	n += la;
	out[n++] = *full ? '0' : argv[2][0];
	put_le(out + n, (uint64_t)ttl, 8);
	put_le(out + n + 8, (uint64_t)tokens, 8);
	n += 16;
	put_le(out + n, lm, 2);
	memcpy(out + n + 2, argv[5], lm);
	return n + 2 + lm;
}

/* A call of two or more authorize decisions: the grouped script with the
 * decisions packed in ARGV 1, those with a limit in force after it in the
 * full form (quota.lua.h). */
static int pack_send(const struct qkind *kd, struct turnq_call *g)
{
	int64_t accts[QUOTA_GROUP_MAX];
	int num[QUOTA_GROUP_MAX], seen[QUOTA_GROUP_MAX] = {0};
	const char *argv[1 + QUOTA_GROUP_MAX * QUOTA_AUTHORIZE_ARGC];
	size_t lens[1 + QUOTA_GROUP_MAX * QUOTA_AUTHORIZE_ARGC];
	char pack[PACK_MAX];
	size_t len = 0;
	int n_accts = 0, k = 1;

	if (g->n < 2 || g->n > QUOTA_GROUP_MAX)
		return -1; /* never: the queue's max */
	for (int i = 0; i < g->n; i++) {
		int j = 0;

		while (j < n_accts && accts[j] != g->e[i].account)
			j++;
		if (j == n_accts)
			accts[n_accts++] = g->e[i].account;
		num[i] = j;
		seen[j]++;
	}
	for (int i = 0; i < g->n; i++) {
		const char *const *a = g->e[i].argv;
		bool full;

		len += pack_decision(pack + len, num[i] + 1 + (seen[num[i]] > 1 ? 64 : 0), a, &full);
		if (!full)
			continue;
		for (int x = 0; x < QUOTA_AUTHORIZE_ARGC; x++) {
			lens[k] = strlen(a[x]);
			argv[k++] = a[x];
		}
	}
	argv[0] = pack;
	lens[0] = len;
	return run_keys(kd->q, kd->group, n_accts, accts, k, argv, lens, turnq_answer, g);
}

/* One call of a turn queue of quota: alone, the one-account script; else
 * the grouped script: authorize decisions packed (pack_send), settles with
 * each entry's account number (its keys' place in KEYS) and arguments, in
 * order (quota.lua.h). */
static int kind_send(void *owner, struct turnq_call *g)
{
	const struct qkind *kd = owner;
	int64_t accts[GROUP_MAX];
	const char *argv[GROUP_ARGV_MAX];
	char idx[GROUP_MAX][8];
	int n_accts = 0, k = 0;

	if (g->n == 1 && kd->single != QUOTA_N_SCRIPTS)
		return run_keys(kd->q, kd->single, 1, &g->e[0].account, kd->argc, g->e[0].argv, NULL, turnq_answer_one,
				g);
	if (kd->packed)
		return pack_send(kd, g);
	if (g->n < 1 || g->n > GROUP_MAX || g->n * (1 + kd->argc) > GROUP_ARGV_MAX)
		return -1; /* never: the queues' max and argc fit */
	for (int i = 0; i < g->n; i++) {
		int j = 0;
		while (j < n_accts && accts[j] != g->e[i].account)
			j++;
		if (j == n_accts) {
			accts[n_accts++] = g->e[i].account;
			buf_fmt_i64(idx[j], j + 1);
		}
		argv[k++] = idx[j];
		for (int a = 0; a < kd->argc; a++)
			argv[k++] = g->e[i].argv[a];
	}
	return run_keys(kd->q, kd->group, n_accts, accts, k, argv, NULL, turnq_answer, g);
}

int quota_authorize(struct quota *q, int64_t account_id, const char *const *argv, quota_cb cb, void *arg)
{
	return turnq_push(q->dec, account_id, argv, cb, arg);
}

void quota_group_stats(const struct quota *q, uint64_t *calls, uint64_t *decisions)
{
	turnq_stats(q->dec, calls, decisions);
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

/* One master: SCAN its mirrors, then bump each version, DEL each mirror
 * and give st its lifetime when it has none
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
		cmds = calloc(3 * m + 1, sizeof(*cmds));
		replies = calloc(3 * m + 1, sizeof(*replies));
		st = calloc(m + 1, sizeof(*st));
		argv = calloc(10 * m + 1, sizeof(*argv));
		if (!cmds || !replies || !st || !argv)
			rc = -1;
		for (size_t i = 0; rc == 0 && i < m; i++) {
			const char *key = r->element[1]->element[i]->str;
			size_t kl = strlen(key);
			if (kl < 4 || kl > 80)
				continue;
			snprintf(st[i], sizeof(st[i]), "%.*s" RKEY_ST_SUFFIX, (int)(kl - 3), key);
			argv[10 * i] = "HINCRBY";
			argv[10 * i + 1] = st[i];
			argv[10 * i + 2] = RKEY_ST_VER;
			argv[10 * i + 3] = "1";
			argv[10 * i + 4] = "DEL";
			argv[10 * i + 5] = key;
			/* st made by the HINCRBY (gone while the mirror was not) expires too */
			argv[10 * i + 6] = "PEXPIRE";
			argv[10 * i + 7] = st[i];
			argv[10 * i + 8] = MIRROR_ST_TTL_MS_STR;
			argv[10 * i + 9] = "NX";
			cmds[k++] = (struct rclient_cmd){4, &argv[10 * i], NULL};
			cmds[k++] = (struct rclient_cmd){2, &argv[10 * i + 4], NULL};
			cmds[k++] = (struct rclient_cmd){4, &argv[10 * i + 6], NULL};
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

struct quota_settles {
	struct qkind kind;
	struct turnq *t;
};

static void settle_release(const char *const *argv)
{
	free((void *)argv);
}

struct quota_settles *quota_settles_new(struct quota *q, struct rconn *r, struct event_base *base)
{
	struct quota_settles *qs = calloc(1, sizeof(*qs));

	if (!qs)
		return NULL;
	qs->kind = (struct qkind){q, QUOTA_SETTLE_GROUP, QUOTA_N_SCRIPTS, SETTLE_ENTRY_ARGC, false};
	/* an entry's error answer: held unknown, the mirror dropped (quota.h) */
	qs->t = turnq_new(r, base, QUOTA_SETTLE_GROUP_MAX, kind_send, &qs->kind, settle_release, true, "settle");
	if (!qs->t) {
		free(qs);
		return NULL;
	}
	return qs;
}

void quota_settles_free(struct quota_settles *qs)
{
	if (!qs)
		return;
	turnq_free(qs->t);
	free(qs);
}

int quota_settle(struct quota_settles *qs, int64_t account_id, enum quota_settle_mode mode, const char *const *argv,
		 quota_cb cb, void *arg)
{
	static const char *const modes[4] = {"", "s", "h", "sh"};
	size_t bytes = SETTLE_ENTRY_ARGC * sizeof(char *);
	const char **all;
	char *p;

	for (int i = 0; (mode & QUOTA_SETTLE_ONLY) && i < QUOTA_SETTLE_ARGC; i++)
		bytes += strlen(argv[i]) + 1;
	/* one allocation: the pointers, then the bytes they point at (copied) */
	if (!(all = malloc(bytes)))
		return -1;
	p = (char *)(all + SETTLE_ENTRY_ARGC);
	all[0] = modes[mode & 3];
	for (int i = 0; i < QUOTA_SETTLE_ARGC; i++) {
		size_t l;
		if (!(mode & QUOTA_SETTLE_ONLY)) {
			all[1 + i] = "";
			continue;
		}
		l = strlen(argv[i]) + 1;
		memcpy(p, argv[i], l);
		all[1 + i] = p;
		p += l;
	}
	if (turnq_push(qs->t, account_id, all, cb, arg) < 0) {
		free(all);
		return -1;
	}
	return 0;
}

void quota_settles_stats(const struct quota_settles *qs, uint64_t *calls, uint64_t *entries)
{
	turnq_stats(qs->t, calls, entries);
}
