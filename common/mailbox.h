/* mailbox.h: worker threads hand items to the event loop.
 *
 * The one way a thread of ours (a database pool thread, the LISTEN thread,
 * an inference worker) passes something to the loop: it posts an item, and
 * the loop calls deliver() for each item, in posting order, on its own
 * thread.  As libevent's own cross-thread wake-up (a threaded base is
 * notified through its eventfd when event_active is called from another
 * thread), one event per mailbox, raised only when the mailbox goes from
 * empty to not empty; the loop takes the whole list under the lock and
 * delivers it without the lock, so deliver() may post, free the item or
 * take other locks.
 *
 * Items are the callers' own structs, linked through their own next
 * pointer (ops->next/set_next), so posting never allocates and never fails.
 * The mailbox borrows an item from post until deliver() is called on it
 * (or mailbox_take hands it back); deliver() receives it back.
 * Needs evthread_use_pthreads() before the base is made. */
#ifndef COMMON_MAILBOX_H
#define COMMON_MAILBOX_H

#include <event2/event.h>
#include <stddef.h>

struct mailbox;

struct mailbox_ops {
	void *(*next)(void *item); /* the item's link */
	void (*set_next)(void *item, void *next);
	void (*deliver)(void *arg, void *item); /* on the loop; may free item */
};

/* Defines PREFIX_next and PREFIX_set_next, the ops of items of TYPE linked
 * through their FIELD (a pointer to TYPE). */
#define MAILBOX_LINK(prefix, type, field)                     \
	static void *prefix##_next(void *item)                \
	{                                                     \
		return ((type *)item)->field;                 \
	}                                                     \
	static void prefix##_set_next(void *item, void *next) \
	{                                                     \
		((type *)item)->field = next;                 \
	}

/* ops is borrowed (a static table); arg is passed to deliver(). */
struct mailbox *mailbox_new(struct event_base *base, const struct mailbox_ops *ops, void *arg)
	__attribute__((warn_unused_result));
/* Any thread: appends item and wakes the loop.  Returns the number of items
 * waiting, this one included (a poster may bound its mailbox with it). */
size_t mailbox_post(struct mailbox *mb, void *item);
/* Any thread: appends a chain of n items, first to last, already linked
 * through their next (ops->set_next; last's is set to NULL here), under one
 * lock and with at most one wake-up, so the loop delivers them in one turn
 * unless it is taking the list at that moment (a writer's commit batch:
 * its answers' Redis settles then leave together, billing/authz/turnq.h).
 * Returns the number of items waiting, these included; n == 0 does
 * nothing and returns 0. */
size_t mailbox_post_chain(struct mailbox *mb, void *first, void *last, size_t n);
/* Any thread: the undelivered items, oldest first (linked through next),
 * or NULL; they are the caller's again and will not be delivered. */
void *mailbox_take(struct mailbox *mb);
/* Delivers what waits now on the calling thread: the loop's own callback,
 * or a caller whose posting threads have stopped (before freeing). */
void mailbox_drain(struct mailbox *mb);
/* Frees the mailbox; items still waiting are not delivered (take or drain
 * them first when they need it).  Accepts NULL. */
void mailbox_free(struct mailbox *mb);

#endif
