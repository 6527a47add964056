/* rconn.h: Redis on the event loop (hiredis + libevent): one server, or a
 * Redis Cluster reached through a list of seed nodes.
 *
 * addr is the `redis` setting: "host:port", or "host:port,host:port,..."
 * seed nodes.  At the first connection rconn asks CLUSTER SLOTS: a server
 * without cluster support (an error reply) is used alone, exactly as one
 * plain connection; a cluster node gives the slot map, and every command
 * then goes to the master of its key's slot (common/rslot.h says which key),
 * one connection per master.  MOVED updates that slot and resends the
 * command there (then the whole map is read again), ASK resends it once
 * after ASKING, TRYAGAIN (a multi-key command during a slot migration)
 * resends it after 20 ms, for at most timeout_ms; at most 5 redirections.
 * The map is read again, from any reachable seed or known node, after a
 * MOVED, a lost connection, and every 5 s.
 *
 * Each connection is reconnected by a timer after any failure and pinged
 * every 250 ms.  hiredis 0.14 has no command timeouts: rconn enforces one
 * per connection by dropping it when a PING is older than timeout_ms;
 * pending callbacks then get a NULL reply.  A lost connection is never
 * retried elsewhere (the command may have run).  Never free the rconn from
 * inside one of its callbacks. */
#ifndef BILLING_RCONN_H
#define BILLING_RCONN_H

#include <event2/event.h>
#include <hiredis/async.h>
#include <stdbool.h>
#include <stdint.h>

struct rconn;

/* NULL when addr is not a seed list (logged) or out of memory. */
struct rconn *rconn_new(struct event_base *base, const char *addr, int timeout_ms) __attribute__((warn_unused_result));
void rconn_free(struct rconn *r);
/* True when every slot's master (or the one server) is connected and
 * answered PING within 2 s. */
bool rconn_ready(const struct rconn *r);
/* True when at least one node is connected and answers: some commands may
 * succeed (in a cluster with one master down, those of the other slots). */
bool rconn_usable(const struct rconn *r);
/* True once the first answer showed a Redis Cluster: a script may then take
 * keys of one slot only. */
bool rconn_cluster(const struct rconn *r);
/* Sends a command (argv form; copied) to the node that serves its key.  -1
 * when that node is not connected or the slot map is not known yet (the
 * callback is not called).  reply is valid only during the callback; NULL on
 * failure (a lost connection, a timeout, redirections exhausted).  A command
 * without a key goes to the node being connected during an on_connect
 * callback, otherwise to any connected node. */
int rconn_commandv(struct rconn *r, redisCallbackFn *cb, void *privdata, int argc, const char **argv,
		   const size_t *argvlen) __attribute__((warn_unused_result));
/* Writes the commands queued on each connection now instead of at the next
 * loop turn (when hiredis's write event would): one loop turn, and the
 * write event's epoll_ctl on and off, less per call.  Not from inside a
 * callback of this rconn (hiredis may free a context whose write fails). */
void rconn_flush(struct rconn *r);
/* Called after each (re)connect of each node, e.g. to load scripts there. */
void rconn_on_connect(struct rconn *r, void (*fn)(void *arg), void *arg);

#endif
