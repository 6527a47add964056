/* turnq.h: a turn queue: the Redis script calls of one event-loop turn,
 * grouped.  Entries queued during a turn are sent at its end (an event
 * activated once per turn runs after the callbacks of every socket epoll
 * reported ready with the first one), in the order they came, as calls of
 * at most `max` entries: on a single Redis a call takes entries of any
 * accounts; on a Redis Cluster only those whose keys share one slot, so
 * routing (MOVED, ASK) stays per slot.  The owner writes each call as one
 * command (send); its answer, one element per entry in order (an array, or
 * one string of '\n'-separated answers: turnq_split), goes to each entry's
 * callback in order.  The calls are written to the socket in that
 * event (rconn_flush), not a loop turn later.  Runs on the event loop; its
 * users: quota.h (authorize decisions; settles and held reads). */
#ifndef BILLING_TURNQ_H
#define BILLING_TURNQ_H

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stdint.h>

#include "billing/authz/rconn.h"

/* reply: the entry's answer (valid only during the callback), or NULL when
 * its call failed (not sent, a lost connection, an error reply of the whole
 * call, an answer out of shape). */
typedef void (*turnq_cb)(void *arg, redisReply *reply);

/* One queued entry: account (its keys give the slot), argv the owner's
 * arguments for it (borrowed until cb, or owned: see turnq_new's release). */
struct turnq_entry {
	int64_t account;
	const char *const *argv;
	turnq_cb cb;
	void *arg;
	int slot; /* set at the flush (-1 off a cluster) */
};

struct turnq;

/* One call: its entries, in order (1 to max, of one slot on a cluster). */
struct turnq_call {
	struct turnq *t;
	int n;
	struct turnq_entry e[];
};

/* Writes g as one Redis command (rconn copies what it sends), whose reply
 * goes to turnq_answer(g, reply) (an array of one answer per entry) or, for
 * a command that answers for one entry alone, turnq_answer_one(g, reply).
 * 0: sent (g is then answered by those); -1: not sent (the queue answers
 * each entry NULL and frees g). */
typedef int (*turnq_send_fn)(void *owner, struct turnq_call *g);

/* r and base are borrowed and must outlive the queue.  max: entries a call
 * at most; send(owner, g) writes each call; release(argv), when not NULL,
 * frees an entry's argv once its call was sent or failed (the queue owns
 * it from turnq_push on); NULL: argv is borrowed until cb.  errors_null:
 * an entry whose element is an error reply gets NULL (logged), else the
 * error reply itself.  what names the calls in logs ("authorize"). */
struct turnq *turnq_new(struct rconn *r, struct event_base *base, int max, turnq_send_fn send, void *owner,
			void (*release)(const char *const *argv), bool errors_null, const char *what)
	__attribute__((warn_unused_result));
/* Entries not sent yet get cb(NULL) (the rconn may be gone already). */
void turnq_free(struct turnq *t);
/* Queues one entry.  cb is never called before turnq_push returns; -1 (out
 * of memory): never called (and argv stays the caller's). */
int turnq_push(struct turnq *t, int64_t account, const char *const *argv, turnq_cb cb, void *arg)
	__attribute__((warn_unused_result));
/* The reply of call g (arg): element i of an array to entry i, in order,
 * or, for a string (quota.lua.h's grouped authorize), its answer i
 * (turnq_split); frees g. */
void turnq_answer(void *g, redisReply *reply);
/* The answers of a group in one string s of len bytes (s[len] writable, the
 * NUL hiredis keeps after a string): n answers separated by '\n', each not
 * empty; one that starts with '-' is an error, its message after the '-'
 * (not empty).  When s holds exactly that and no NUL byte: each(arg, i, e)
 * for each answer in order (unless each is NULL), e a string or error reply
 * into s, NUL-terminated in place (valid only during the call), and 0.
 * Else -1, s unchanged and each never called. */
int turnq_split(char *s, size_t len, int n, void (*each)(void *arg, int i, redisReply *e), void *arg);
/* The reply of a call of one entry that answers for it alone; frees g. */
void turnq_answer_one(void *g, redisReply *reply);
/* Counters since start: calls handed to send and the entries they carried. */
void turnq_stats(const struct turnq *t, uint64_t *calls, uint64_t *entries);

#endif
