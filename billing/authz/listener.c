/* listener.c: see listener.h. */
#include "billing/authz/listener.h"

#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/mailbox.h"
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
	struct mailbox *inbox; /* notes for the loop */
	volatile int stop;
};

static void notes_free(struct note *n)
{
	while (n) {
		struct note *next = n->next;
		free(n->channel);
		free(n->payload);
		free(n);
		n = next;
	}
}

static void push(struct listener *l, const char *ch, const char *pl)
{
	struct note *n = calloc(1, sizeof(*n));

	if (!n)
		return;
	n->channel = strdup(ch);
	n->payload = strdup(pl);
	if (mailbox_post(l->inbox, n) > 100000) {
		/* the loop is far behind: collapse into one resync */
		notes_free(mailbox_take(l->inbox));
		push(l, "resync", "");
	}
}

MAILBOX_LINK(note, struct note, next)

static void deliver(void *arg, void *item)
{
	struct listener *l = arg;
	struct note *n = item;

	if (n->channel && n->payload)
		l->fn(l->arg, n->channel, n->payload);
	n->next = NULL;
	notes_free(n);
}

static const struct mailbox_ops note_ops = {note_next, note_set_next, deliver};

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
	l->inbox = mailbox_new(base, &note_ops, l);
	if (!l->conninfo || !l->inbox) {
		free(l->conninfo);
		mailbox_free(l->inbox);
		free(l);
		return NULL;
	}
	pthread_create(&l->th, NULL, run, l);
	return l;
}

void listener_free(struct listener *l)
{
	if (!l)
		return;
	l->stop = 1;
	pthread_join(l->th, NULL);
	notes_free(mailbox_take(l->inbox));
	mailbox_free(l->inbox);
	free(l->conninfo);
	free(l);
}
