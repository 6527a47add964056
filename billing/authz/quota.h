/* quota.h: the Redis side of authorization: one Lua script per decision
 * (EVALSHA; on NOSCRIPT the script is sent whole and loaded again).
 * See quota.lua.h for the key layout.  Runs on the event loop.
 *
 * Callbacks get the script's reply (valid only during the callback) or NULL
 * when Redis could not answer; they are never called when the submit
 * function returned -1. */
#ifndef BILLING_QUOTA_H
#define BILLING_QUOTA_H

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stdint.h>

#include "billing/authz/rconn.h"
#include "common/error.h"
#include "common/rclient.h"

enum quota_script {
	QUOTA_AUTHORIZE,
	QUOTA_SETTLE,
	QUOTA_INVALIDATE,
	QUOTA_HELD,
	QUOTA_AUTHORIZE_GROUP, /* quota_authorize's calls of two or more decisions */
	QUOTA_SETTLE_GROUP,    /* quota_settles' calls */
	QUOTA_N_SCRIPTS
};

/* The most decisions one grouped call carries (quota_authorize). */
#define QUOTA_GROUP_MAX 32
/* The authorize script's arguments per decision (quota.lua.h). */
#define QUOTA_AUTHORIZE_ARGC 16

typedef void (*quota_cb)(void *arg, redisReply *reply);

struct quota;

/* base: the loop r runs on (grouped decisions are sent at the end of its turn). */
struct quota *quota_new(struct rconn *r, struct event_base *base) __attribute__((warn_unused_result));
/* fn(arg) runs each time a Redis connection comes up, after the scripts'
 * loads were sent on it and before anything else is (rconn_on_connect). */
void quota_on_connect(struct quota *q, void (*fn)(void *arg), void *arg);
/* Pending grouped decisions get cb(NULL) (the rconn may be gone already). */
void quota_free(struct quota *q);
/* Runs a script for an account with string arguments (copied). */
int quota_run(struct quota *q, enum quota_script s, int64_t account_id, int argc, const char *const *argv, quota_cb cb,
	      void *arg) __attribute__((warn_unused_result));
/* One authorize decision (the authorize script's QUOTA_AUTHORIZE_ARGC
 * arguments; argv and its strings are borrowed until cb), grouped in a turn
 * queue (turnq.h): the decisions queued in one loop turn are sent at its
 * end, in the order they came, as one script call per Redis connection (quota.lua.h,
 * quota_lua_authorize_group: one TIME, the decisions in order, one answer
 * each) of at most QUOTA_GROUP_MAX decisions.  On a single server a call
 * takes decisions of any accounts; on a cluster only those whose keys share
 * one slot, so routing (MOVED, ASK) stays per slot.  A decision alone runs
 * the authorize script.  cb gets its own answer (valid only during the
 * callback), or NULL when the call failed (not sent, a lost connection, an
 * error reply): every decision of that call then gets NULL.  cb is never
 * called before quota_authorize returns; -1 (out of memory): never called. */
int quota_authorize(struct quota *q, int64_t account_id, const char *const *argv, quota_cb cb, void *arg)
	__attribute__((warn_unused_result));
/* Counters since start: grouped script calls sent and the decisions they carried. */
void quota_group_stats(const struct quota *q, uint64_t *calls, uint64_t *decisions);
/* The same, synchronously on a client of the caller's thread (a mirror
 * load, under the account's row lock): the reply (the caller frees it;
 * error replies included), or NULL with err when Redis did not answer. */
redisReply *quota_run_sync(struct rclient *c, enum quota_script s, int64_t account_id, int argc,
			   const char *const *argv, struct error *err) __attribute__((warn_unused_result));

/* Synchronous, for a thread of its own or start-up: drops every balance
 * mirror (bumping versions) on the Redis at addr (every master of a
 * cluster).  Returns the count or -1. */
long quota_invalidate_all_sync(const char *addr, int timeout_ms);

/* Synchronous, for the CLIs: the live held amount of an account (the
 * QUOTA_HELD script) on the Redis at addr.  0, or -1 with err (503
 * unavailable when Redis cannot be reached). */
int quota_held_sync(const char *addr, int64_t account_id, int timeout_ms, int64_t *held, struct error *err)
	__attribute__((warn_unused_result));

/* ---- settles and held reads of usage answers, grouped ---- */

/* The settle script's arguments (quota.lua.h). */
#define QUOTA_SETTLE_ARGC 11
/* The most entries one grouped settle call carries. */
#define QUOTA_SETTLE_GROUP_MAX 128

enum quota_settle_mode {
	QUOTA_SETTLE_ONLY = 1, /* the settle script */
	QUOTA_HELD_ONLY = 2,   /* the held script */
	QUOTA_SETTLE_HELD = 3, /* the settle script, then the held script */
};

/* The settles and held reads queued in one loop turn, sent at its end (a
 * turn queue of their own, turnq.h, as the decisions') in the order they
 * came as one script call per Redis connection
 * (quota.lua.h, quota_lua_settle_group: one TIME, the entries in order) of
 * at most QUOTA_SETTLE_GROUP_MAX entries; on a cluster one call holds one
 * slot's entries, so routing (MOVED, ASK) stays per slot.  Each entry runs
 * exactly as the settle script and then the held script would for it. */
struct quota_settles;

/* q and base are borrowed and must outlive it. */
struct quota_settles *quota_settles_new(struct quota *q, struct rconn *r, struct event_base *base)
	__attribute__((warn_unused_result));
/* Entries not sent yet get cb(NULL). */
void quota_settles_free(struct quota_settles *qs);
/* Queues one entry of account_id: argv (QUOTA_SETTLE_ARGC strings, copied;
 * NULL for QUOTA_HELD_ONLY).  cb gets the entry's answer (an integer: the
 * held amount when mode asks for it, else released 0/1; valid only during
 * the callback) or NULL when the call failed (not sent, a lost connection,
 * an error reply; then every entry of that call gets NULL, and a settle in
 * it may or may not have run).  cb is never called before quota_settle
 * returns; -1 (out of memory): never called. */
int quota_settle(struct quota_settles *qs, int64_t account_id, enum quota_settle_mode mode, const char *const *argv,
		 quota_cb cb, void *arg) __attribute__((warn_unused_result));
/* Counters since start: grouped settle calls sent and the entries they carried. */
void quota_settles_stats(const struct quota_settles *qs, uint64_t *calls, uint64_t *entries);

#endif
