/* rconn.h: one asynchronous Redis connection on the event loop (hiredis +
 * libevent), reconnected by a timer after any failure, pinged every second.
 *
 * hiredis 0.14 has no command timeouts: rconn enforces one per connection by
 * dropping the connection when the oldest command is older than timeout_ms;
 * pending callbacks then get a NULL reply.  Never free the rconn from inside
 * one of its callbacks. */
#ifndef BILLING_RCONN_H
#define BILLING_RCONN_H

#include <event2/event.h>
#include <hiredis/async.h>
#include <stdbool.h>
#include <stdint.h>

struct rconn;

struct rconn *rconn_new(struct event_base *base, const char *addr, int timeout_ms) __attribute__((warn_unused_result));
void rconn_free(struct rconn *r);
/* True when connected and the last PING answered within 2 s. */
bool rconn_ready(const struct rconn *r);
/* Sends a command (argv form).  -1 when not connected (the callback is not
 * called).  reply is valid only during the callback; NULL on failure. */
int rconn_commandv(struct rconn *r, redisCallbackFn *cb, void *privdata, int argc, const char **argv,
		   const size_t *argvlen) __attribute__((warn_unused_result));
/* Called after each (re)connect, e.g. to load scripts. */
void rconn_on_connect(struct rconn *r, void (*fn)(void *arg), void *arg);

#endif
