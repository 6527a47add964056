/* test_mailbox.c: threads hand items to the event loop (common/mailbox.c):
 * every item is delivered once, on the loop's thread, each poster's items in
 * the order it posted them; an item posted from inside deliver() is
 * delivered too; take hands undelivered items back. */
#include <event2/event.h>
#include <event2/thread.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/mailbox.h"
#include "tests/unit/tap.h"

#define POSTERS 4
#define PER_POSTER 20000

struct item {
	struct item *next;
	int poster, seq;
};

MAILBOX_LINK(item, struct item, next)

struct sink {
	pthread_t loop_thread;
	int delivered, wrong_thread, out_of_order;
	int last_seq[POSTERS];
	struct mailbox *mb;
	struct item *again; /* reposted once from inside deliver */
	int again_seen;
};

static void item_deliver(void *arg, void *p)
{
	struct sink *s = arg;
	struct item *it = p;

	if (!pthread_equal(pthread_self(), s->loop_thread))
		s->wrong_thread++;
	if (it->poster < 0) {
		s->again_seen++;
		return;
	}
	if (it->seq != s->last_seq[it->poster] + 1)
		s->out_of_order++;
	s->last_seq[it->poster] = it->seq;
	s->delivered++;
	if (s->delivered == 1 && s->again)
		(void)mailbox_post(s->mb, s->again); /* from inside deliver */
}

static const struct mailbox_ops item_ops = {item_next, item_set_next, item_deliver};

struct poster {
	struct mailbox *mb;
	struct item *items;
};

static void *post_all(void *arg)
{
	struct poster *p = arg;

	for (int i = 0; i < PER_POSTER; i++)
		(void)mailbox_post(p->mb, &p->items[i]);
	return NULL;
}

static void every_item_comes_once_in_order_on_the_loop(void)
{
	struct event_base *base = event_base_new();
	struct sink s;
	struct poster p[POSTERS];
	pthread_t th[POSTERS];
	struct item again = {NULL, -1, 0};
	time_t t0 = time(NULL);

	memset(&s, 0, sizeof(s));
	s.loop_thread = pthread_self();
	s.again = &again;
	s.mb = mailbox_new(base, &item_ops, &s);
	OK(base && s.mb, "a mailbox on a new loop");
	for (int k = 0; k < POSTERS; k++) {
		p[k].mb = s.mb;
		p[k].items = calloc(PER_POSTER, sizeof(struct item));
		for (int i = 0; i < PER_POSTER; i++)
			p[k].items[i].poster = k, p[k].items[i].seq = i + 1;
		pthread_create(&th[k], NULL, post_all, &p[k]);
	}
	/* bounded: 60 s at most */
	while ((s.delivered < POSTERS * PER_POSTER || !s.again_seen) && time(NULL) - t0 < 60)
		event_base_loop(base, EVLOOP_ONCE);
	for (int k = 0; k < POSTERS; k++)
		pthread_join(th[k], NULL);
	IS_I64(s.delivered, POSTERS * PER_POSTER, "every posted item delivered once");
	IS_I64(s.wrong_thread, 0, "deliver runs on the loop's thread");
	IS_I64(s.out_of_order, 0, "each poster's items in posting order");
	IS_I64(s.again_seen, 1, "the item posted from inside deliver is delivered once");
	mailbox_drain(s.mb);
	IS_I64(s.delivered, POSTERS * PER_POSTER, "nothing left to drain");
	mailbox_free(s.mb);
	for (int k = 0; k < POSTERS; k++)
		free(p[k].items);
	event_base_free(base);
}

static void *post_one(void *arg)
{
	struct poster *p = arg;

	(void)mailbox_post(p->mb, &p->items[0]);
	return NULL;
}

/* One item into an empty mailbox: the loop is woken for it (5 s at most). */
static void a_lone_item_wakes_the_loop(void)
{
	struct event_base *base = event_base_new();
	struct sink s;
	struct item one = {NULL, 0, 1};
	struct poster p = {NULL, &one};
	pthread_t th;
	time_t t0 = time(NULL);

	memset(&s, 0, sizeof(s));
	s.loop_thread = pthread_self();
	s.mb = p.mb = mailbox_new(base, &item_ops, &s);
	pthread_create(&th, NULL, post_one, &p);
	pthread_join(th, NULL);
	while (s.delivered < 1 && time(NULL) - t0 < 5)
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	IS_I64(s.delivered, 1, "a lone item posted by another thread is delivered by the loop");
	mailbox_free(s.mb);
	event_base_free(base);
}

static void take_hands_back_what_waits(void)
{
	struct event_base *base = event_base_new();
	struct sink s;
	struct item items[3] = {{NULL, 0, 1}, {NULL, 0, 2}, {NULL, 0, 3}};
	struct item *got;
	int n = 0;
	size_t depth = 0;

	memset(&s, 0, sizeof(s));
	s.loop_thread = pthread_self();
	s.mb = mailbox_new(base, &item_ops, &s);
	for (int i = 0; i < 3; i++)
		depth = mailbox_post(s.mb, &items[i]);
	IS_I64(depth, 3, "post returns the number waiting");
	got = mailbox_take(s.mb);
	for (struct item *it = got; it; it = it->next)
		n = n * 10 + it->seq;
	IS_I64(n, 123, "take returns the waiting items, oldest first");
	event_base_loop(base, EVLOOP_NONBLOCK);
	IS_I64(s.delivered, 0, "taken items are not delivered");
	IS_I64(mailbox_post(s.mb, &items[0]), 1, "after take the mailbox is empty");
	mailbox_drain(s.mb);
	IS_I64(s.delivered, 1, "drain delivers on the calling thread");
	mailbox_free(s.mb);
	event_base_free(base);
}

struct chain_poster {
	struct mailbox *mb;
	struct item *items; /* 4: one posted alone, then a chain of three */
	size_t depth_alone, depth_chain, depth_empty;
};

static void *post_chain(void *arg)
{
	struct chain_poster *c = arg;

	c->depth_alone = mailbox_post(c->mb, &c->items[0]);
	c->items[1].next = &c->items[2];
	c->items[2].next = &c->items[3];
	c->items[3].next = &c->items[0]; /* stale: the chain's end is set by post_chain */
	c->depth_chain = mailbox_post_chain(c->mb, &c->items[1], &c->items[3], 3);
	c->depth_empty = mailbox_post_chain(c->mb, NULL, NULL, 0);
	return NULL;
}

/* A chain (a writer's commit batch) is appended at once, after what waits,
 * and the loop delivers it with the rest in one turn. */
static void a_chain_comes_in_one_turn(void)
{
	struct event_base *base = event_base_new();
	struct sink s;
	struct item items[4] = {{NULL, 0, 1}, {NULL, 0, 2}, {NULL, 0, 3}, {NULL, 0, 4}};
	struct chain_poster c = {NULL, items, 0, 0, 0};
	pthread_t th;

	memset(&s, 0, sizeof(s));
	s.loop_thread = pthread_self();
	s.mb = c.mb = mailbox_new(base, &item_ops, &s);
	pthread_create(&th, NULL, post_chain, &c);
	pthread_join(th, NULL);
	IS_I64(c.depth_alone, 1, "post returns the number waiting");
	IS_I64(c.depth_chain, 4, "post_chain returns the number waiting, the chain included");
	IS_I64(c.depth_empty, 0, "an empty chain posts nothing");
	event_base_loop(base, EVLOOP_ONCE);
	IS_I64(s.delivered, 4, "one loop turn delivers the item and the whole chain");
	IS_I64(s.out_of_order, 0, "in posting order, the chain's in its own");
	IS_I64(s.wrong_thread, 0, "on the loop's thread");
	IS_I64(mailbox_post(s.mb, &items[0]), 1, "the chain's end was closed: the mailbox is empty after it");
	mailbox_free(s.mb);
	event_base_free(base);
}

int main(void)
{
	if (evthread_use_pthreads() < 0)
		return 1;
	every_item_comes_once_in_order_on_the_loop();
	a_lone_item_wakes_the_loop();
	take_hands_back_what_waits();
	a_chain_comes_in_one_turn();
	return tap_done();
}
