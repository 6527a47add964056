/* conns.c: see conns.h.
 *
 * Binding: evhttp calls the bevcb before it creates the evhttp_connection
 * and sets the bufferevent's callbacks (whose argument is that connection)
 * and its file descriptor.  So the record keeps a reference on the
 * bufferevent and is bound a moment later, from an event activated in the
 * bevcb, which runs after evhttp has finished accepting.  A bufferevent
 * without callbacks by then belongs to a connection evhttp gave up on.
 *
 * Request deadline: bytes added to the connection's input buffer start a
 * request's clock (IDLE -> READING); the request reaching its handler stops
 * it (HANDLING); the reply leaving restarts the cycle.  A sweep every second
 * drops connections READING for longer than the deadline, through the same
 * path as evhttp's own read timeout (an event BEV_EVENT_TIMEOUT on the
 * bufferevent), so evhttp frees the connection and its request itself. */
#include "billing/http/conns.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "billing/http/framing.h"
#include "billing/http/metrics.h"
#include "common/log.h"
#include "common/timeutil.h"

enum cstate { C_IDLE, C_READING, C_HANDLING };

struct conn {
	struct conns *cs;
	struct bufferevent *bev;
	struct evhttp_connection *evcon; /* NULL until bound */
	struct evbuffer_cb_entry *input_cb;
	evutil_socket_t fd;
	enum cstate state;
	int64_t started_us;
	struct framing_scan scan; /* the head of the request being read (NUL bytes) */
	void (*on_close)(void *); /* conns_on_close */
	void *on_close_arg;
	struct conn *prev, *next;
};

struct conns {
	struct metrics *m;
	int64_t max, timeout_us, open;
	struct conn *pending; /* created, not bound yet (singly linked) */
	struct conn *live;    /* bound, open */
	struct conn **by_fd;
	size_t nfd;
	struct event *bind_ev, *sweep_ev;
	int64_t log_us; /* last warning about rejections or timeouts */
	int64_t rejected_unlogged, timeouts_unlogged;
};

/* At most one line every 10 s however hard the service is pushed. */
static void maybe_log(struct conns *cs)
{
	int64_t now = time_mono_us();

	if (now - cs->log_us < 10000000 || (!cs->rejected_unlogged && !cs->timeouts_unlogged))
		return;
	cs->log_us = now;
	log_warn("HTTP connections dropped",
		 "over_max_connections=%" PRId64 " request_timeouts=%" PRId64 " open=%" PRId64
		 " max_connections=%" PRId64,
		 cs->rejected_unlogged, cs->timeouts_unlogged, cs->open, cs->max);
	cs->rejected_unlogged = 0;
	cs->timeouts_unlogged = 0;
}

/* Feeds the scanner the bytes of buf from off on, until the head ends. */
static void scan_from(struct conn *c, struct evbuffer *buf, size_t off)
{
	struct evbuffer_iovec v[16];
	struct evbuffer_ptr ptr;
	size_t len = evbuffer_get_length(buf);

	while (off < len && !c->scan.done) {
		int n;
		if (evbuffer_ptr_set(buf, &ptr, off, EVBUFFER_PTR_SET) < 0)
			return;
		n = evbuffer_peek(buf, (ev_ssize_t)(len - off), &ptr, v, 16);
		if (n <= 0)
			return;
		for (int i = 0; i < n && i < 16 && !c->scan.done && off < len; i++) {
			size_t take = v[i].iov_len < len - off ? v[i].iov_len : len - off;
			framing_scan_feed(&c->scan, v[i].iov_base, take);
			off += take;
		}
	}
}

static void input_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct conn *c = arg;
	size_t len = evbuffer_get_length(buf);

	/* runs before evhttp's read callback parses the new bytes */
	if (info->n_added > 0 && !c->scan.done)
		scan_from(c, buf, len >= info->n_added ? len - info->n_added : 0);
	if (info->n_added > 0 && c->state == C_IDLE) {
		c->state = C_READING;
		c->started_us = time_mono_us();
	}
	/* the head is scanned and the clock runs: nothing to do here until the
	 * reply leaves (complete_cb enables it again); evhttp drains the head
	 * line by line, about a dozen calls a request otherwise */
	if (c->scan.done && c->state != C_IDLE)
		evbuffer_cb_clear_flags(buf, c->input_cb, EVBUFFER_CB_ENABLED);
}

static void close_cb(struct evhttp_connection *evcon, void *arg)
{
	struct conn *c = arg;
	struct conns *cs = c->cs;
	void (*fn)(void *) = c->on_close;

	evhttp_connection_set_closecb(evcon, NULL, NULL);
	c->on_close = NULL;
	if (fn)
		fn(c->on_close_arg);
	if (c->input_cb)
		evbuffer_remove_cb_entry(bufferevent_get_input(c->bev), c->input_cb);
	if (c->prev)
		c->prev->next = c->next;
	else
		cs->live = c->next;
	if (c->next)
		c->next->prev = c->prev;
	if (c->fd >= 0 && (size_t)c->fd < cs->nfd && cs->by_fd[c->fd] == c)
		cs->by_fd[c->fd] = NULL;
	cs->open--;
	free(c);
}

static int index_fd(struct conns *cs, struct conn *c)
{
	if ((size_t)c->fd >= cs->nfd) {
		size_t n = cs->nfd ? cs->nfd : 1024;
		struct conn **p;

		while (n <= (size_t)c->fd)
			n *= 2;
		p = realloc(cs->by_fd, n * sizeof(*p));
		if (!p)
			return -1;
		memset(p + cs->nfd, 0, (n - cs->nfd) * sizeof(*p));
		cs->by_fd = p;
		cs->nfd = n;
	}
	cs->by_fd[c->fd] = c;
	return 0;
}

static void bind_one(struct conns *cs, struct conn *c)
{
	bufferevent_event_cb eventcb = NULL;
	void *arg = NULL;
	struct evbuffer *in = bufferevent_get_input(c->bev);

	bufferevent_getcb(c->bev, NULL, NULL, &eventcb, &arg);
	c->fd = bufferevent_getfd(c->bev);
	if (!eventcb || !arg || c->fd < 0 || index_fd(cs, c) < 0) {
		/* evhttp gave up on this connection (or we are out of memory:
		 * then it stays unaccounted, which only loosens the limits) */
		bufferevent_decref(c->bev);
		free(c);
		return;
	}
	c->evcon = arg;
	c->next = cs->live;
	if (cs->live)
		cs->live->prev = c;
	cs->live = c;
	cs->open++;
	evhttp_connection_set_closecb(c->evcon, close_cb, c);
	framing_scan_reset(&c->scan);
	scan_from(c, in, 0);
	c->input_cb = evbuffer_add_cb(in, input_cb, c);
	if (evbuffer_get_length(in) > 0) {
		c->state = C_READING;
		c->started_us = time_mono_us();
	}
	bufferevent_decref(c->bev);
	if (cs->open > cs->max) {
		metrics_count(cs->m, "billing_http_connections_rejected_total", 1);
		cs->rejected_unlogged++;
		maybe_log(cs);
		evhttp_connection_free(c->evcon); /* calls close_cb */
	}
}

static void bind_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conns *cs = arg;
	struct conn *c;

	(void)fd, (void)what;
	while ((c = cs->pending) != NULL) {
		cs->pending = c->next;
		c->next = NULL;
		bind_one(cs, c);
	}
}

static struct bufferevent *bev_cb(struct event_base *base, void *arg)
{
	struct conns *cs = arg;
	struct bufferevent *bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	struct conn *c;

	if (!bev)
		return NULL; /* evhttp tries its own */
	c = calloc(1, sizeof(*c));
	if (!c)
		return bev;
	c->cs = cs;
	c->bev = bev;
	c->fd = -1;
	bufferevent_incref(bev);
	c->next = cs->pending;
	cs->pending = c;
	event_active(cs->bind_ev, EV_TIMEOUT, 1);
	return bev;
}

static void sweep_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conns *cs = arg;
	struct conn *c, *next;
	int64_t now = time_mono_us();

	(void)fd, (void)what;
	for (c = cs->live; c; c = next) {
		next = c->next;
		if (c->state != C_READING || now - c->started_us <= cs->timeout_us)
			continue;
		metrics_count(cs->m, "billing_http_request_timeouts_total", 1);
		cs->timeouts_unlogged++;
		/* evhttp's own read-timeout path: it frees the connection (close_cb frees c) */
		bufferevent_trigger_event(c->bev, BEV_EVENT_READING | BEV_EVENT_TIMEOUT, 0);
	}
	maybe_log(cs);
}

struct conns *conns_new(struct event_base *base, struct evhttp *http, int64_t max, int64_t request_timeout_s,
			struct metrics *m)
{
	struct conns *cs = calloc(1, sizeof(*cs));
	struct timeval tv = {1, 0};

	if (!cs)
		return NULL;
	cs->m = m;
	cs->max = max;
	cs->timeout_us = request_timeout_s * 1000000;
	cs->log_us = time_mono_us() - 10000000;
	cs->bind_ev = event_new(base, -1, 0, bind_cb, cs);
	cs->sweep_ev = event_new(base, -1, EV_PERSIST, sweep_cb, cs);
	if (!cs->bind_ev || !cs->sweep_ev || event_add(cs->sweep_ev, &tv) < 0) {
		conns_free(cs);
		return NULL;
	}
	evhttp_set_bevcb(http, bev_cb, cs);
	return cs;
}

void conns_free(struct conns *cs)
{
	struct conn *c;

	if (!cs)
		return;
	while ((c = cs->pending) != NULL) {
		cs->pending = c->next;
		bufferevent_decref(c->bev);
		free(c);
	}
	/* evhttp_free has closed every connection (close_cb); anything left
	 * belongs to a connection evhttp no longer tells us about */
	while ((c = cs->live) != NULL) {
		cs->live = c->next;
		free(c);
	}
	if (cs->bind_ev)
		event_free(cs->bind_ev);
	if (cs->sweep_ev)
		event_free(cs->sweep_ev);
	free(cs->by_fd);
	free(cs);
}

static void complete_cb(struct evhttp_request *req, void *arg)
{
	struct conn *c = arg;

	(void)req;
	/* the next request's head starts at the front of what is left */
	framing_scan_reset(&c->scan);
	if (c->input_cb)
		evbuffer_cb_set_flags(bufferevent_get_input(c->bev), c->input_cb, EVBUFFER_CB_ENABLED);
	scan_from(c, bufferevent_get_input(c->bev), 0);
	/* a pipelined request may already be waiting */
	if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0) {
		c->state = C_READING;
		c->started_us = time_mono_us();
	} else {
		c->state = C_IDLE;
	}
}

static struct conn *find(struct conns *cs, struct evhttp_connection *evcon)
{
	struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
	evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
	struct conn *c;

	if (!cs || fd < 0 || (size_t)fd >= cs->nfd || !(c = cs->by_fd[fd]) || c->evcon != evcon)
		return NULL;
	return c;
}

void conns_on_close(struct conns *cs, struct evhttp_connection *evcon, void (*fn)(void *arg), void *arg)
{
	struct conn *c = find(cs, evcon);

	/* an untracked connection (out of memory at accept) tells nobody: a
	 * stream to a client that left then runs to its end, writing nowhere */
	if (c) {
		c->on_close = fn;
		c->on_close_arg = arg;
	}
}

void conns_request_read(struct conns *cs, struct evhttp_request *req)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	struct conn *c = find(cs, evcon);

	if (!c)
		return;
	/* on_complete runs only while the connection lives (evhttp_send_done),
	 * so c is valid there */
	c->state = C_HANDLING;
	evhttp_request_set_on_complete_cb(req, complete_cb, c);
}

bool conns_head_had_nul(struct conns *cs, struct evhttp_request *req)
{
	struct conn *c = find(cs, evhttp_request_get_connection(req));

	return c && c->scan.nul;
}

int64_t conns_open(const struct conns *cs)
{
	return cs ? cs->open : 0;
}

int64_t conns_unsent(const struct conns *cs)
{
	int64_t n = 0;

	for (const struct conn *c = cs ? cs->live : NULL; c; c = c->next)
		if (c->bev && evbuffer_get_length(bufferevent_get_output(c->bev)) > 0)
			n++;
	return n;
}
