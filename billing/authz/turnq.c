/* turnq.c: see turnq.h. */
#include "billing/authz/turnq.h"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/rkeys.h"
#include "common/rslot.h"

struct turnq {
	struct rconn *r;
	struct event *flush;
	bool flush_armed;
	/* the entries of this loop turn; flush sends them at its end */
	struct turnq_entry *pending;
	size_t n_pending, cap_pending;
	int max;
	turnq_send_fn send;
	void *owner;
	void (*release)(const char *const *argv);
	bool errors_null;
	const char *what;
	uint64_t n_calls, n_entries;
};

static void flush_cb(evutil_socket_t fd, short what, void *arg);

struct turnq *turnq_new(struct rconn *r, struct event_base *base, int max, turnq_send_fn send, void *owner,
			void (*release)(const char *const *argv), bool errors_null, const char *what)
{
	struct turnq *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	t->r = r;
	t->max = max;
	t->send = send;
	t->owner = owner;
	t->release = release;
	t->errors_null = errors_null;
	t->what = what;
	t->flush = event_new(base, -1, 0, flush_cb, t);
	if (!t->flush) {
		free(t);
		return NULL;
	}
	return t;
}

/* e's call is over before it was answered (or it will never have one). */
static void drop(struct turnq *t, struct turnq_entry *e)
{
	if (t->release)
		t->release(e->argv);
	e->cb(e->arg, NULL);
}

void turnq_free(struct turnq *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->n_pending; i++)
		drop(t, &t->pending[i]);
	free(t->pending);
	event_free(t->flush);
	free(t);
}

int turnq_push(struct turnq *t, int64_t account, const char *const *argv, turnq_cb cb, void *arg)
{
	if (t->n_pending == t->cap_pending) {
		size_t cap = t->cap_pending ? 2 * t->cap_pending : 64;
		struct turnq_entry *n = realloc(t->pending, cap * sizeof(*n));
		if (!n)
			return -1;
		t->pending = n;
		t->cap_pending = cap;
	}
	t->pending[t->n_pending++] = (struct turnq_entry){account, argv, cb, arg, -1};
	if (!t->flush_armed) {
		/* runs after the callbacks already active in this turn: those of
		 * every socket epoll reported ready with this one */
		event_active(t->flush, EV_TIMEOUT, 1);
		t->flush_armed = true;
	}
	return 0;
}

void turnq_stats(const struct turnq *t, uint64_t *calls, uint64_t *entries)
{
	*calls = t->n_calls;
	*entries = t->n_entries;
}

int turnq_split(char *s, size_t len, int n, void (*each)(void *arg, int i, redisReply *e), void *arg)
{
	char *end, *p = s;
	redisReply e;
	int k = 0;

	if (n < 1 || !s || memchr(s, '\0', len))
		return -1;
	end = s + len;
	/* first the shape: exactly n answers, none empty; nothing is handed out before */
	for (;;) {
		char *nl = memchr(p, '\n', (size_t)(end - p));
		char *stop = nl ? nl : end;
		if (stop == p || (*p == '-' && stop == p + 1) || ++k > n)
			return -1;
		if (!nl)
			break;
		p = nl + 1;
	}
	if (k != n)
		return -1;
	memset(&e, 0, sizeof(e));
	p = s;
	for (int i = 0; i < n; i++) {
		char *nl = memchr(p, '\n', (size_t)(end - p));
		char *stop = nl ? nl : end;
		*stop = '\0'; /* at end: the terminator hiredis keeps, or the caller's */
		e.type = *p == '-' ? REDIS_REPLY_ERROR : REDIS_REPLY_STRING;
		e.str = p + (*p == '-');
		e.len = (size_t)(stop - e.str);
		if (each)
			each(arg, i, &e);
		p = stop + 1;
	}
	return 0;
}

/* turnq_split's hand-out to the entries of call g (their errors as turnq_answer's) */
static void answer_entry(void *arg, int i, redisReply *e)
{
	struct turnq_call *g = arg;

	if (e->type == REDIS_REPLY_ERROR && g->t->errors_null) {
		log_warn("redis script error", "what=%s error=\"%s\"", g->t->what, e->str);
		e = NULL;
	}
	g->e[i].cb(g->e[i].arg, e);
}

void turnq_answer(void *arg, redisReply *r)
{
	struct turnq_call *g = arg;
	struct turnq *t = g->t;
	bool ok = r && r->type == REDIS_REPLY_ARRAY && r->elements == (size_t)g->n;

	/* the one-string answer of a group (quota.lua.h): split in place */
	if (r && r->type == REDIS_REPLY_STRING && turnq_split(r->str, r->len, g->n, answer_entry, g) == 0) {
		free(g);
		return;
	}

	if (r && !ok)
		log_warn("redis: a grouped call answered out of shape", "what=%s entries=%d elements=%zu", t->what,
			 g->n, r->type == REDIS_REPLY_ARRAY ? r->elements : (size_t)0);
	for (int i = 0; i < g->n; i++) {
		redisReply *e = NULL;
		if (r && ok)
			e = r->element[i];
		if (e && e->type == REDIS_REPLY_ERROR && t->errors_null) {
			log_warn("redis script error", "what=%s error=\"%s\"", t->what, e->str);
			e = NULL;
		}
		g->e[i].cb(g->e[i].arg, e);
	}
	free(g);
}

void turnq_answer_one(void *arg, redisReply *r)
{
	struct turnq_call *g = arg;
	struct turnq_entry e = g->e[0];

	free(g);
	e.cb(e.arg, r);
}

/* Hands g to the owner; on failure each entry gets NULL (now: the flush is
 * an event of its own, not inside a caller). */
static void send_call(struct turnq *t, struct turnq_call *g)
{
	int rc;

	t->n_calls++;
	t->n_entries += (uint64_t)g->n;
	rc = t->send(t->owner, g);
	/* the command holds a copy of the arguments; g is still here (a reply
	 * comes from the loop, never from inside rconn_commandv) */
	for (int i = 0; t->release && i < g->n; i++)
		t->release(g->e[i].argv);
	if (rc < 0)
		turnq_answer(g, NULL);
}

/* The end of the loop turn: the entries queued in it, in calls of at most
 * max; on a cluster each call holds one slot's entries. */
static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
	struct turnq *t = arg;
	struct turnq_entry *d = t->pending;
	size_t n = t->n_pending, cap = t->cap_pending, max = (size_t)t->max;
	bool cluster = rconn_cluster(t->r);

	(void)fd, (void)what;
	/* callbacks below may queue new entries: those go into a new turn */
	t->pending = NULL;
	t->n_pending = t->cap_pending = 0;
	t->flush_armed = false;
	for (size_t i = 0; i < n; i++) {
		char key[RKEY_BUF];
		d[i].slot = cluster ? rslot_of(key, rkey(key, sizeof(key), d[i].account, RKEY_BAL)) : -1;
	}
	for (size_t i = 0; i < n; i++) {
		struct turnq_call *g;
		size_t room = n - i < max ? n - i : max;
		if (!d[i].cb) /* taken by an earlier call */
			continue;
		g = malloc(sizeof(*g) + room * sizeof(g->e[0]));
		if (!g) {
			drop(t, &d[i]);
			continue;
		}
		g->t = t;
		g->n = 0;
		for (size_t j = i; j < n && (size_t)g->n < room; j++)
			if (d[j].cb && d[j].slot == d[i].slot) {
				g->e[g->n++] = d[j];
				if (j > i)
					d[j].cb = NULL;
			}
		d[i].cb = NULL;
		send_call(t, g);
	}
	/* the array serves the next turn, unless a callback above queued into a new one */
	if (!t->pending) {
		t->pending = d;
		t->cap_pending = cap;
	} else {
		free(d);
	}
	/* an event of its own, not a Redis callback: the calls go out now */
	rconn_flush(t->r);
}
