/* quota.h: the Redis side of authorization: one Lua script per decision
 * (EVALSHA; on NOSCRIPT the script is sent whole and loaded again).
 * See quota.lua.h for the key layout.  Runs on the event loop.
 *
 * Callbacks get the script's reply (valid only during the callback) or NULL
 * when Redis could not answer; they are never called when the submit
 * function returned -1. */
#ifndef BILLING_QUOTA_H
#define BILLING_QUOTA_H

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stdint.h>

#include "billing/authz/rconn.h"
#include "common/error.h"
#include "common/rclient.h"

enum quota_script { QUOTA_AUTHORIZE, QUOTA_SETTLE, QUOTA_INVALIDATE, QUOTA_HELD, QUOTA_N_SCRIPTS };

typedef void (*quota_cb)(void *arg, redisReply *reply);

struct quota;

struct quota *quota_new(struct rconn *r) __attribute__((warn_unused_result));
void quota_free(struct quota *q);
/* Runs a script for an account with string arguments (copied). */
int quota_run(struct quota *q, enum quota_script s, int64_t account_id, int argc, const char *const *argv, quota_cb cb,
	      void *arg) __attribute__((warn_unused_result));
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

#endif
