/* listener.c: see listener.h. */
#include "billing/authz/listener.h"

#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "ledger/db.h"

struct note {
	struct note *next;
	char *channel, *payload;
};

struct listener {
	char *conninfo;
	listener_fn fn;
	void *arg;
	pthread_t th;
	pthread_mutex_t mu;
	struct note *head, *tail;
	size_t depth;
	struct event *ev;
	volatile int stop;
};

static void push(struct listener *l, const char *ch, const char *pl)
{
	struct note *n = calloc(1, sizeof(*n));

	if (!n)
		return;
	n->channel = strdup(ch);
	n->payload = strdup(pl);
	pthread_mutex_lock(&l->mu);
	if (l->depth > 100000) {
		/* the loop is far behind: collapse into one resync */
		struct note *x = l->head;
		while (x) {
			struct note *nx = x->next;
			free(x->channel);
			free(x->payload);
			free(x);
			x = nx;
		}
		l->head = l->tail = NULL;
		l->depth = 0;
		free(n->channel);
		free(n->payload);
		n->channel = strdup("resync");
		n->payload = strdup("");
	}
	if (l->tail)
		l->tail->next = n;
	else
		l->head = n;
	l->tail = n;
	l->depth++;
	pthread_mutex_unlock(&l->mu);
	event_active(l->ev, EV_READ, 0);
}

static void deliver_cb(evutil_socket_t fd, short what, void *arg)
{
	struct listener *l = arg;
	struct note *n;

	(void)fd, (void)what;
	pthread_mutex_lock(&l->mu);
	n = l->head;
	l->head = l->tail = NULL;
	l->depth = 0;
	pthread_mutex_unlock(&l->mu);
	while (n) {
		struct note *next = n->next;
		if (n->channel && n->payload)
			l->fn(l->arg, n->channel, n->payload);
		free(n->channel);
		free(n->payload);
		free(n);
		n = next;
	}
}

static void *run(void *arg)
{
	struct listener *l = arg;
	PGconn *c = NULL;
	struct error err;

	while (!l->stop) {
		struct pollfd pfd;
		PGnotify *nt;

		if (!c || PQstatus(c) != CONNECTION_OK) {
			PQfinish(c);
			c = db_connect(l->conninfo, 5000, &err);
			if (!c || db_exec(c, "LISTEN billing_balance", 0, NULL, &err) < 0 ||
			    db_exec(c, "LISTEN billing_change", 0, NULL, &err) < 0) {
				PQfinish(c);
				c = NULL;
				for (int i = 0; i < 5 && !l->stop; i++)
					usleep(100000);
				continue;
			}
			push(l, "resync", "");
		}
		pfd.fd = PQsocket(c);
		pfd.events = POLLIN;
		if (poll(&pfd, 1, 200) < 0)
			continue;
		if (!PQconsumeInput(c)) {
			log_warn("listener lost its postgresql connection", "%s", "");
			PQfinish(c);
			c = NULL;
			continue;
		}
		while ((nt = PQnotifies(c))) {
			push(l, nt->relname, nt->extra);
			PQfreemem(nt);
		}
	}
	PQfinish(c);
	return NULL;
}

struct listener *listener_new(struct event_base *base, const char *conninfo, listener_fn fn, void *arg)
{
	struct listener *l = calloc(1, sizeof(*l));

	if (!l)
		return NULL;
	l->conninfo = strdup(conninfo);
	l->fn = fn;
	l->arg = arg;
	l->ev = event_new(base, -1, 0, deliver_cb, l);
	if (!l->conninfo || !l->ev) {
		free(l->conninfo);
		if (l->ev)
			event_free(l->ev);
		free(l);
		return NULL;
	}
	pthread_mutex_init(&l->mu, NULL);
	pthread_create(&l->th, NULL, run, l);
	return l;
}

void listener_free(struct listener *l)
{
	struct note *n;

	if (!l)
		return;
	l->stop = 1;
	pthread_join(l->th, NULL);
	n = l->head;
	while (n) {
		struct note *next = n->next;
		free(n->channel);
		free(n->payload);
		free(n);
		n = next;
	}
	event_free(l->ev);
	pthread_mutex_destroy(&l->mu);
	free(l->conninfo);
	free(l);
}
