/* rconn.c: see rconn.h. */
#include "billing/authz/rconn.h"

#include <hiredis/adapters/libevent.h>
#include <hiredis/sds.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/log.h"
#include "common/rslot.h"
#include "common/timeutil.h"

#define MAX_NODES 64
#define MAX_REDIRECTS 5
#define TRYAGAIN_US 20000
#define REFRESH_EVERY_US 5000000

enum mode { MODE_UNKNOWN, MODE_SINGLE, MODE_CLUSTER };

/* One server: the single one, or a cluster node.  Never freed before the rconn. */
struct rnode {
	struct rconn *r;
	char host[256];
	int port;
	redisAsyncContext *ac;
	bool connected;
	bool serves; /* master of a slot in the current map (or the single server) */
	int64_t last_pong_us;
	int64_t pending;        /* PINGs sent, not answered */
	int64_t oldest_sent_us; /* of the oldest unanswered one (reset when none pending) */
	int64_t connect_started_us;
};

/* A command in flight, kept so that a redirection can resend it: the bytes
 * of the Redis protocol, formatted once here (hiredis takes them as they
 * are: redisAsyncFormattedCommand). */
struct creq {
	struct rconn *r;
	redisCallbackFn *cb;
	void *priv;
	char *cmd;
	size_t cmdlen;
	int slot;
	int redirects;
	int64_t started_us;
	struct event *retry;      /* TRYAGAIN: resent when it fires */
	struct creq *prev, *next; /* in r->waiting while retry is armed */
};

struct rconn {
	struct event_base *base;
	int timeout_ms;
	enum mode mode;
	struct rnode *nodes[MAX_NODES]; /* nodes[0..n_seeds) are the configured seeds */
	int n_nodes, n_seeds;
	int16_t slots[RSLOT_N]; /* index into nodes, -1 none */
	bool map_known, refresh_wanted, refresh_busy, closing;
	int64_t last_refresh_us;
	unsigned rr;           /* round robin over nodes (seeds, refreshes) */
	struct rnode *single;  /* MODE_SINGLE: the server */
	struct rnode *in_hook; /* the node whose on_connect callback runs */
	struct creq *waiting;
	struct event *timer;
	void (*on_connect)(void *);
	void *on_connect_arg;
};

static void connect_now(struct rnode *n);

static bool node_ok(const struct rnode *n, int64_t now)
{
	return n->connected && n->last_pong_us && now - n->last_pong_us < 2000000;
}

static int node_index(struct rconn *r, const char *host, int port, bool create)
{
	struct rnode *n;

	for (int i = 0; i < r->n_nodes; i++)
		if (r->nodes[i]->port == port && strcmp(r->nodes[i]->host, host) == 0)
			return i;
	if (!create || r->n_nodes == MAX_NODES)
		return -1;
	n = calloc(1, sizeof(*n));
	if (!n)
		return -1;
	n->r = r;
	snprintf(n->host, sizeof(n->host), "%s", host);
	n->port = port;
	r->nodes[r->n_nodes] = n;
	return r->n_nodes++;
}

static void run_hook(struct rnode *n)
{
	struct rconn *r = n->r;

	if (!r->on_connect)
		return;
	r->in_hook = n;
	r->on_connect(r->on_connect_arg);
	r->in_hook = NULL;
}

/* ---- the slot map ---- */

struct map_ctx {
	struct rconn *r;
	const struct rnode *from; /* substitutes an unknown ("") host */
};

static int map_node_cb(void *arg, const char *host, int port)
{
	struct map_ctx *m = arg;

	return node_index(m->r, host[0] ? host : m->from->host, port, true);
}

static void apply_map(struct rconn *r, struct rnode *from, const redisReply *rep)
{
	struct map_ctx m = {r, from};
	int covered = 0;

	if (rslot_parse_slots(rep, map_node_cb, &m, r->slots) < 0) {
		log_warn("redis cluster: unreadable CLUSTER SLOTS answer", "addr=%s:%d", from->host, from->port);
		r->refresh_wanted = true;
		return;
	}
	for (int i = 0; i < r->n_nodes; i++)
		r->nodes[i]->serves = false;
	for (int s = 0; s < RSLOT_N; s++)
		if (r->slots[s] >= 0) {
			r->nodes[r->slots[s]]->serves = true;
			covered++;
		}
	r->map_known = true;
	r->last_refresh_us = time_now_us();
	for (int i = 0; i < r->n_nodes; i++)
		if (r->nodes[i]->serves && !r->nodes[i]->ac)
			connect_now(r->nodes[i]);
	log_debug("redis cluster slot map", "from=%s:%d covered=%d nodes=%d", from->host, from->port, covered,
		  r->n_nodes);
}

/* The answer to CLUSTER SLOTS: the first one decides the mode. */
static void slots_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct rnode *n = priv;
	struct rconn *r = n->r;
	redisReply *rep = reply;

	(void)ac;
	if (r->closing)
		return;
	r->refresh_busy = false;
	if (!rep) {
		r->refresh_wanted = true;
		return;
	}
	if (r->mode == MODE_UNKNOWN) {
		if (rep->type == REDIS_REPLY_ERROR) {
			/* no cluster support: this server alone, as a plain connection */
			r->mode = MODE_SINGLE;
			r->single = n;
			n->serves = true;
			log_info("redis: a single server", "addr=%s:%d", n->host, n->port);
			run_hook(n);
			return;
		}
		r->mode = MODE_CLUSTER;
		log_info("redis: a cluster", "seed=%s:%d", n->host, n->port);
		apply_map(r, n, rep);
		run_hook(n);
		return;
	}
	if (rep->type == REDIS_REPLY_ERROR) {
		log_warn("redis cluster: CLUSTER SLOTS failed", "addr=%s:%d error=\"%s\"", n->host, n->port, rep->str);
		r->refresh_wanted = true;
		return;
	}
	apply_map(r, n, rep);
}

static int ask_slots(struct rnode *n)
{
	static const char *argv[] = {"CLUSTER", "SLOTS"};

	if (redisAsyncCommandArgv(n->ac, slots_cb, n, 2, argv, NULL) != REDIS_OK)
		return -1;
	n->r->refresh_busy = true;
	return 0;
}

/* Reads the map again from any connected node; with none, connects the next
 * seed or known node (its connection asks). */
static void maybe_refresh(struct rconn *r, int64_t now)
{
	if (r->refresh_busy || (!r->refresh_wanted && now - r->last_refresh_us < REFRESH_EVERY_US))
		return;
	for (int k = 0; k < r->n_nodes; k++) {
		struct rnode *n = r->nodes[(r->rr + (unsigned)k) % (unsigned)r->n_nodes];
		if (n->ac && n->connected && ask_slots(n) == 0) {
			r->rr++;
			r->refresh_wanted = false;
			return;
		}
	}
	for (int k = 0; k < r->n_nodes; k++) {
		struct rnode *n = r->nodes[(r->rr + (unsigned)k) % (unsigned)r->n_nodes];
		if (!n->ac) {
			r->rr += (unsigned)k + 1;
			connect_now(n);
			return;
		}
	}
}

/* ---- connections ---- */

static void connect_cb(const redisAsyncContext *ac, int status)
{
	struct rnode *n = ac->data;
	struct rconn *r = n->r;

	if (status != REDIS_OK) {
		log_warn("redis connect failed", "addr=%s:%d error=\"%s\"", n->host, n->port, ac->errstr);
		n->ac = NULL; /* hiredis frees the context */
		n->connected = false;
		r->refresh_wanted = true;
		return;
	}
	n->connected = true;
	n->pending = 0;
	log_info("redis connected", "addr=%s:%d", n->host, n->port);
	if (r->mode == MODE_UNKNOWN) {
		/* the hook runs once the mode is known (slots_cb) */
		if (ask_slots(n) < 0)
			log_warn("redis: cannot ask CLUSTER SLOTS", "addr=%s:%d", n->host, n->port);
		return;
	}
	if (r->mode == MODE_CLUSTER)
		r->refresh_wanted = true;
	run_hook(n);
}

static void disconnect_cb(const redisAsyncContext *ac, int status)
{
	struct rnode *n = ac->data;

	(void)status;
	if (n->ac == ac) {
		n->ac = NULL;
		if (n->connected)
			log_warn("redis disconnected", "addr=%s:%d", n->host, n->port);
		n->connected = false;
		n->r->refresh_wanted = true;
	}
}

static void connect_now(struct rnode *n)
{
	redisAsyncContext *ac = redisAsyncConnect(n->host, n->port);

	if (!ac)
		return;
	if (ac->err) {
		redisAsyncFree(ac);
		return;
	}
	ac->data = n;
	n->ac = ac;
	n->connected = false;
	n->pending = 0;
	n->connect_started_us = time_now_us();
	redisLibeventAttach(ac, n->r->base);
	redisAsyncSetConnectCallback(ac, connect_cb);
	redisAsyncSetDisconnectCallback(ac, disconnect_cb);
}

static void pong_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct rnode *n = priv;
	redisReply *rep = reply;

	(void)ac;
	if (n->pending > 0)
		n->pending--;
	if (rep && rep->type == REDIS_REPLY_STATUS)
		n->last_pong_us = time_now_us();
}

/* Not from inside a callback of n's context. */
static void drop(struct rnode *n, const char *why)
{
	redisAsyncContext *ac = n->ac;

	log_warn("redis connection dropped, reconnecting", "addr=%s:%d reason=\"%s\" pending=%lld", n->host, n->port,
		 why, (long long)n->pending);
	n->ac = NULL;
	n->connected = false;
	n->pending = 0;
	n->r->refresh_wanted = true;
	redisAsyncFree(ac);
}

static bool wanted(const struct rconn *r, const struct rnode *n)
{
	switch (r->mode) {
	case MODE_SINGLE:
		return n == r->single;
	case MODE_CLUSTER:
		return n->serves;
	default:
		return false;
	}
}

static void tick_node(struct rnode *n, int64_t now)
{
	struct rconn *r = n->r;
	static const char *ping[] = {"PING"};

	if (!n->ac) {
		if (wanted(r, n))
			connect_now(n);
		return;
	}
	if (!n->connected) {
		/* a connect that hangs (a black-holed address) is given up */
		if (now - n->connect_started_us > (int64_t)r->timeout_ms * 1000 * 2)
			drop(n, "connect timeout");
		return;
	}
	/* a PING outstanding too long: the server is stuck or gone.  Free the
	 * context at once (pending callbacks get NULL): redisAsyncDisconnect
	 * would wait for the replies that never come.  Safe here: not inside a
	 * hiredis callback. */
	if (n->pending > 0 && n->oldest_sent_us && now - n->oldest_sent_us > (int64_t)r->timeout_ms * 1000) {
		drop(n, "command timeout");
		return;
	}
	if (n->pending == 0)
		n->oldest_sent_us = 0;
	if (redisAsyncCommandArgv(n->ac, pong_cb, n, 1, ping, NULL) == REDIS_OK) {
		if (n->pending++ == 0)
			n->oldest_sent_us = now;
	}
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct rconn *r = arg;
	int64_t now = time_now_us();
	bool any = false;

	(void)fd, (void)what;
	for (int i = 0; i < r->n_nodes; i++) {
		tick_node(r->nodes[i], now);
		any = any || r->nodes[i]->ac;
	}
	if (r->mode == MODE_UNKNOWN) {
		/* one seed at a time until one answers */
		if (!any)
			connect_now(r->nodes[r->rr++ % (unsigned)r->n_seeds]);
	} else if (r->mode == MODE_CLUSTER) {
		maybe_refresh(r, now);
	}
}

/* ---- commands ---- */

/* Appends "<prefix><n>\r\n" at p. */
static char *put_count(char *p, char prefix, size_t n)
{
	*p++ = prefix;
	p += buf_fmt_i64(p, (int64_t)n);
	*p++ = '\r';
	*p++ = '\n';
	return p;
}

static struct creq *creq_new(struct rconn *r, redisCallbackFn *cb, void *priv, int argc, const char **argv,
			     const size_t *argvlen, int slot)
{
	/* "*argc\r\n", then "$len\r\n" arg "\r\n" each */
	size_t bytes = sizeof(struct creq) + 3 + BUF_I64_LEN + (size_t)argc * (5 + BUF_I64_LEN);
	struct creq *x;
	char *p;

	for (int i = 0; i < argc; i++)
		bytes += argvlen ? argvlen[i] : strlen(argv[i]);
	x = malloc(bytes);
	if (!x)
		return NULL;
	memset(x, 0, sizeof(*x));
	x->r = r;
	x->cb = cb;
	x->priv = priv;
	x->cmd = p = (char *)(x + 1);
	p = put_count(p, '*', (size_t)argc);
	for (int i = 0; i < argc; i++) {
		size_t l = argvlen ? argvlen[i] : strlen(argv[i]);
		p = put_count(p, '$', l);
		memcpy(p, argv[i], l);
		p += l;
		*p++ = '\r';
		*p++ = '\n';
	}
	x->cmdlen = (size_t)(p - x->cmd);
	x->slot = slot;
	x->started_us = time_now_us();
	return x;
}

static void creq_cb(redisAsyncContext *ac, void *reply, void *priv);

static int creq_send(struct creq *x, struct rnode *n, bool asking)
{
	static const char *ask[] = {"ASKING"};

	if (!n->ac)
		return -1;
	if (asking && redisAsyncCommandArgv(n->ac, NULL, NULL, 1, ask, NULL) != REDIS_OK)
		return -1;
	return redisAsyncFormattedCommand(n->ac, creq_cb, x, x->cmd, x->cmdlen) == REDIS_OK ? 0 : -1;
}

/* The node for a command now: NULL if not known or not connected. */
static struct rnode *route(struct rconn *r, int slot)
{
	struct rnode *n = NULL;

	if (r->closing)
		return NULL;
	if (r->mode == MODE_SINGLE) {
		n = r->single;
	} else if (r->mode == MODE_CLUSTER) {
		if (slot >= 0) {
			if (r->slots[slot] >= 0)
				n = r->nodes[r->slots[slot]];
		} else if (r->in_hook) {
			n = r->in_hook;
		} else {
			for (int k = 0; k < r->n_nodes && !n; k++) {
				struct rnode *c = r->nodes[(r->rr + (unsigned)k) % (unsigned)r->n_nodes];
				if (c->ac && c->connected)
					n = c;
			}
		}
	}
	return n && n->ac && n->connected ? n : NULL;
}

static void waiting_unlink(struct creq *x)
{
	struct rconn *r = x->r;

	if (x->prev)
		x->prev->next = x->next;
	else
		r->waiting = x->next;
	if (x->next)
		x->next->prev = x->prev;
	x->prev = x->next = NULL;
	event_free(x->retry);
	x->retry = NULL;
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
	struct creq *x = arg;
	struct rnode *n;

	(void)fd, (void)what;
	waiting_unlink(x);
	n = route(x->r, x->slot);
	if (n && creq_send(x, n, false) == 0)
		return;
	x->cb(NULL, NULL, x->priv);
	free(x);
}

static void creq_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct creq *x = priv;
	struct rconn *r = x->r;
	redisReply *rep = reply;

	if (rep && rep->type == REDIS_REPLY_ERROR && !r->closing && r->mode == MODE_CLUSTER) {
		struct rslot_addr to;
		int slot = -1, kind = rslot_parse_redirect(rep->str, &slot, &to);

		if (kind) {
			int i = x->redirects++ < MAX_REDIRECTS ? node_index(r, to.host, to.port, true) : -1;
			if (i >= 0) {
				struct rnode *n = r->nodes[i];
				if (kind == 1) {
					/* MOVED: the slot lives there now; read the whole map again soon */
					if (r->slots[slot] != i)
						log_info("redis cluster: slot moved", "slot=%d to=%s:%d", slot, n->host,
							 n->port);
					r->slots[slot] = (int16_t)i;
					n->serves = true;
					r->refresh_wanted = true;
				}
				if (kind == 2)
					log_debug("redis cluster: ASK", "slot=%d to=%s:%d", slot, n->host, n->port);
				if (!n->ac)
					connect_now(n); /* hiredis sends once connected */
				if (creq_send(x, n, kind == 2) == 0)
					return;
			}
			log_warn("redis cluster: redirection not followed", "error=\"%s\" redirects=%d", rep->str,
				 x->redirects);
			rep = NULL;
		} else if (strncmp(rep->str, "TRYAGAIN", 8) == 0 &&
			   time_now_us() - x->started_us < (int64_t)r->timeout_ms * 1000) {
			struct timeval tv = {0, TRYAGAIN_US};
			x->retry = event_new(r->base, -1, 0, retry_cb, x);
			if (x->retry && event_add(x->retry, &tv) == 0) {
				x->next = r->waiting;
				if (r->waiting)
					r->waiting->prev = x;
				r->waiting = x;
				return;
			}
			if (x->retry)
				event_free(x->retry);
			x->retry = NULL;
		} else if (strncmp(rep->str, "CLUSTERDOWN", 11) == 0) {
			r->refresh_wanted = true;
		}
	}
	x->cb(ac, rep, x->priv);
	free(x);
}

struct rconn *rconn_new(struct event_base *base, const char *addr, int timeout_ms)
{
	struct rconn *r = calloc(1, sizeof(*r));
	struct rslot_addr *seeds = calloc(RSLOT_MAX_SEEDS, sizeof(*seeds));
	struct timeval tv = {0, 250000};
	struct error err;
	int n;

	if (!r || !seeds)
		goto fail;
	n = rslot_parse_seeds(addr, seeds, RSLOT_MAX_SEEDS, &err);
	if (n < 0) {
		log_error("redis setting refused", "error=\"%s\"", err.msg);
		goto fail;
	}
	r->base = base;
	r->timeout_ms = timeout_ms;
	for (int i = 0; i < RSLOT_N; i++)
		r->slots[i] = -1;
	for (int i = 0; i < n; i++)
		if (node_index(r, seeds[i].host, seeds[i].port, true) < 0)
			goto fail;
	r->n_seeds = r->n_nodes;
	r->timer = event_new(base, -1, EV_PERSIST, tick_cb, r);
	if (!r->timer)
		goto fail;
	event_add(r->timer, &tv);
	free(seeds);
	connect_now(r->nodes[r->rr++ % (unsigned)r->n_seeds]);
	return r;
fail:
	free(seeds);
	if (r)
		for (int i = 0; i < r->n_nodes; i++)
			free(r->nodes[i]);
	free(r);
	return NULL;
}

void rconn_free(struct rconn *r)
{
	if (!r)
		return;
	r->closing = true;
	event_free(r->timer);
	while (r->waiting) {
		struct creq *x = r->waiting;
		waiting_unlink(x);
		x->cb(NULL, NULL, x->priv);
		free(x);
	}
	/* pending callbacks get NULL (creq_cb passes it on: closing) */
	for (int i = 0; i < r->n_nodes; i++) {
		struct rnode *n = r->nodes[i];
		if (n->ac) {
			redisAsyncContext *ac = n->ac;
			n->ac = NULL;
			redisAsyncFree(ac);
		}
	}
	for (int i = 0; i < r->n_nodes; i++)
		free(r->nodes[i]);
	free(r);
}

bool rconn_ready(const struct rconn *r)
{
	int64_t now = time_now_us();

	if (r->mode == MODE_SINGLE)
		return node_ok(r->single, now);
	if (r->mode != MODE_CLUSTER || !r->map_known)
		return false;
	for (int s = 0; s < RSLOT_N; s++)
		if (r->slots[s] < 0)
			return false;
	for (int i = 0; i < r->n_nodes; i++)
		if (r->nodes[i]->serves && !node_ok(r->nodes[i], now))
			return false;
	return true;
}

bool rconn_usable(const struct rconn *r)
{
	int64_t now = time_now_us();

	if (r->mode == MODE_UNKNOWN)
		return false;
	for (int i = 0; i < r->n_nodes; i++)
		if (wanted(r, r->nodes[i]) && node_ok(r->nodes[i], now))
			return true;
	return false;
}

bool rconn_cluster(const struct rconn *r)
{
	return r->mode == MODE_CLUSTER;
}

int rconn_commandv(struct rconn *r, redisCallbackFn *cb, void *privdata, int argc, const char **argv,
		   const size_t *argvlen)
{
	/* a single server serves every slot: no CRC16 of the key */
	int slot = r->mode == MODE_CLUSTER ? rslot_command(argc, argv, argvlen) : -1;
	struct rnode *n = route(r, slot);
	struct creq *x;

	if (!n)
		return -1;
	x = creq_new(r, cb, privdata, argc, argv, argvlen, slot);
	if (!x)
		return -1;
	if (creq_send(x, n, false) < 0) {
		free(x);
		return -1;
	}
	return 0;
}

void rconn_flush(struct rconn *r)
{
	for (int i = 0; i < r->n_nodes && !r->closing; i++) {
		struct rnode *n = r->nodes[i];
		/* what hiredis's own write event would do a loop turn later;
		 * a failed write frees the context (its callbacks get NULL,
		 * disconnect_cb clears n->ac), as it would there */
		if (n->ac && n->connected && n->ac->c.obuf && sdslen(n->ac->c.obuf) > 0)
			redisAsyncHandleWrite(n->ac);
	}
}

void rconn_on_connect(struct rconn *r, void (*fn)(void *arg), void *arg)
{
	r->on_connect = fn;
	r->on_connect_arg = arg;
}
