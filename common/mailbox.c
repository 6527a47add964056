/* mailbox.c: see mailbox.h. */
#include "common/mailbox.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

struct mailbox {
	const struct mailbox_ops *ops;
	void *arg;
	pthread_mutex_t mu;
	void *head, *tail; /* waiting, oldest first */
	size_t depth;
	struct event *ev;
};

static void wake_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	mailbox_drain(arg);
}

struct mailbox *mailbox_new(struct event_base *base, const struct mailbox_ops *ops, void *arg)
{
	struct mailbox *mb = calloc(1, sizeof(*mb));

	if (!mb)
		return NULL;
	mb->ops = ops;
	mb->arg = arg;
	mb->ev = event_new(base, -1, 0, wake_cb, mb);
	if (!mb->ev) {
		free(mb);
		return NULL;
	}
	pthread_mutex_init(&mb->mu, NULL);
	return mb;
}

size_t mailbox_post(struct mailbox *mb, void *item)
{
	size_t depth;

	mb->ops->set_next(item, NULL);
	pthread_mutex_lock(&mb->mu);
	if (mb->tail)
		mb->ops->set_next(mb->tail, item);
	else
		mb->head = item;
	mb->tail = item;
	depth = ++mb->depth;
	pthread_mutex_unlock(&mb->mu);
	/* from empty to not empty: the loop takes everything once it runs, so
	 * later posts ride on this wake-up (an extra one finds an empty list) */
	if (depth == 1)
		event_active(mb->ev, EV_READ, 0);
	return depth;
}

size_t mailbox_post_chain(struct mailbox *mb, void *first, void *last, size_t n)
{
	size_t depth;
	bool was_empty;

	if (n == 0)
		return 0;
	mb->ops->set_next(last, NULL);
	pthread_mutex_lock(&mb->mu);
	was_empty = mb->depth == 0;
	if (mb->tail)
		mb->ops->set_next(mb->tail, first);
	else
		mb->head = first;
	mb->tail = last;
	mb->depth += n;
	depth = mb->depth;
	pthread_mutex_unlock(&mb->mu);
	if (was_empty) /* as mailbox_post: one wake-up from empty to not empty */
		event_active(mb->ev, EV_READ, 0);
	return depth;
}

void *mailbox_take(struct mailbox *mb)
{
	void *head;

	pthread_mutex_lock(&mb->mu);
	head = mb->head;
	mb->head = mb->tail = NULL;
	mb->depth = 0;
	pthread_mutex_unlock(&mb->mu);
	return head;
}

void mailbox_drain(struct mailbox *mb)
{
	void *item = mailbox_take(mb);

	while (item) {
		void *next = mb->ops->next(item); /* deliver may free item */
		mb->ops->deliver(mb->arg, item);
		item = next;
	}
}

void mailbox_free(struct mailbox *mb)
{
	if (!mb)
		return;
	event_free(mb->ev);
	pthread_mutex_destroy(&mb->mu);
	free(mb);
}
