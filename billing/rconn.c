/* rconn.c: see rconn.h. */
#include "billing/rconn.h"

#include <hiredis/adapters/libevent.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/timeutil.h"

struct rconn {
	struct event_base *base;
	char host[256];
	int port;
	int timeout_ms;
	redisAsyncContext *ac;
	bool connected;
	int64_t last_pong_us;
	int64_t pending;          /* commands sent, not answered */
	int64_t oldest_sent_us;   /* of the oldest unanswered one (approximate: reset when none pending) */
	int64_t connect_started_us;
	struct event *timer;
	void (*on_connect)(void *);
	void *on_connect_arg;
};

static void connect_now(struct rconn *r);

static void connect_cb(const redisAsyncContext *ac, int status)
{
	struct rconn *r = ac->data;

	if (status != REDIS_OK) {
		log_warn("redis connect failed", "addr=%s:%d error=\"%s\"", r->host, r->port, ac->errstr);
		r->ac = NULL; /* hiredis frees the context */
		r->connected = false;
		return;
	}
	r->connected = true;
	r->pending = 0;
	log_info("redis connected", "addr=%s:%d", r->host, r->port);
	if (r->on_connect)
		r->on_connect(r->on_connect_arg);
}

static void disconnect_cb(const redisAsyncContext *ac, int status)
{
	struct rconn *r = ac->data;

	(void)status;
	if (r->ac == ac) {
		r->ac = NULL;
		if (r->connected)
			log_warn("redis disconnected", "addr=%s:%d", r->host, r->port);
		r->connected = false;
	}
}

static void connect_now(struct rconn *r)
{
	redisAsyncContext *ac = redisAsyncConnect(r->host, r->port);

	if (!ac)
		return;
	if (ac->err) {
		redisAsyncFree(ac);
		return;
	}
	ac->data = r;
	r->ac = ac;
	r->pending = 0;
	r->connect_started_us = time_now_us();
	redisLibeventAttach(ac, r->base);
	redisAsyncSetConnectCallback(ac, connect_cb);
	redisAsyncSetDisconnectCallback(ac, disconnect_cb);
}

static void pong_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct rconn *r = priv;
	redisReply *rep = reply;

	(void)ac;
	if (r->pending > 0)
		r->pending--;
	if (rep && rep->type == REDIS_REPLY_STATUS)
		r->last_pong_us = time_now_us();
}

static void drop(struct rconn *r, const char *why)
{
	redisAsyncContext *ac = r->ac;

	log_warn("redis connection dropped, reconnecting", "addr=%s:%d reason=\"%s\" pending=%lld", r->host, r->port,
		 why, (long long)r->pending);
	r->ac = NULL;
	r->connected = false;
	r->pending = 0;
	redisAsyncFree(ac);
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct rconn *r = arg;
	static const char *ping[] = {"PING"};

	(void)fd, (void)what;
	if (!r->ac) {
		connect_now(r);
		return;
	}
	if (!r->connected) {
		/* a connect that hangs (a black-holed address) is given up */
		if (time_now_us() - r->connect_started_us > (int64_t)r->timeout_ms * 1000 * 2)
			drop(r, "connect timeout");
		return;
	}
	/* a command outstanding too long: the server is stuck or gone.  Free the
	 * context at once (pending callbacks get NULL): redisAsyncDisconnect
	 * would wait for the replies that never come.  Safe here: not inside a
	 * hiredis callback. */
	if (r->pending > 0 && r->oldest_sent_us && time_now_us() - r->oldest_sent_us > (int64_t)r->timeout_ms * 1000) {
		drop(r, "command timeout");
		return;
	}
	if (r->pending == 0)
		r->oldest_sent_us = 0;
	if (redisAsyncCommandArgv(r->ac, pong_cb, r, 1, ping, NULL) == REDIS_OK) {
		if (r->pending++ == 0)
			r->oldest_sent_us = time_now_us();
	}
}

struct rconn *rconn_new(struct event_base *base, const char *addr, int timeout_ms)
{
	struct rconn *r = calloc(1, sizeof(*r));
	const char *colon = strrchr(addr, ':');
	struct timeval tv = {0, 250000};

	if (!r)
		return NULL;
	r->base = base;
	r->timeout_ms = timeout_ms;
	if (colon) {
		snprintf(r->host, sizeof(r->host), "%.*s", (int)(colon - addr), addr);
		r->port = atoi(colon + 1);
	} else {
		snprintf(r->host, sizeof(r->host), "%s", addr);
		r->port = 6379;
	}
	r->timer = event_new(base, -1, EV_PERSIST, tick_cb, r);
	if (!r->timer) {
		free(r);
		return NULL;
	}
	event_add(r->timer, &tv);
	connect_now(r);
	return r;
}

void rconn_free(struct rconn *r)
{
	if (!r)
		return;
	event_free(r->timer);
	if (r->ac) {
		r->ac->data = r;
		redisAsyncContext *ac = r->ac;
		r->ac = NULL;
		redisAsyncFree(ac);
	}
	free(r);
}

bool rconn_ready(const struct rconn *r)
{
	return r->connected && r->last_pong_us && time_now_us() - r->last_pong_us < 2000000;
}

int rconn_commandv(struct rconn *r, redisCallbackFn *cb, void *privdata, int argc, const char **argv,
		   const size_t *argvlen)
{
	if (!r->ac || !r->connected)
		return -1;
	if (redisAsyncCommandArgv(r->ac, cb, privdata, argc, argv, argvlen) != REDIS_OK)
		return -1;
	return 0;
}

void rconn_on_connect(struct rconn *r, void (*fn)(void *arg), void *arg)
{
	r->on_connect = fn;
	r->on_connect_arg = arg;
}
