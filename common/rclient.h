/* rclient.h: a synchronous Redis client for threads of their own and the
 * CLIs: one server, or a Redis Cluster reached through seed nodes (the
 * `redis` setting, as billing/authz/rconn.h).  The first use asks CLUSTER SLOTS:
 * an error answer means a single server (used alone, with SELECT db when the
 * address ends in /db); otherwise commands go to the master of their key's
 * slot (common/rslot.h), MOVED and ASK (after ASKING) are followed up to 5
 * times, TRYAGAIN is retried every 20 ms for at most timeout_ms, and the slot
 * map is read again (from any seed or known node) after a MOVED or a lost
 * connection.  A command whose connection failed is never resent (it may
 * have run): the caller gets NULL.  Not thread-safe: one per thread. */
#ifndef COMMON_RCLIENT_H
#define COMMON_RCLIENT_H

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

struct rclient;

struct rclient_cmd {
	int argc;
	const char **argv;
	const size_t *argvlen; /* NULL: strlen */
};

/* Parses addr; no I/O yet.  NULL with err (invalid_config, oom). */
struct rclient *rclient_new(const char *addr, int timeout_ms, struct error *err) __attribute__((warn_unused_result));
void rclient_free(struct rclient *c);
/* Connects now (mode and slot map): 0, or -1 with err (503 unavailable). */
int rclient_connect(struct rclient *c, struct error *err) __attribute__((warn_unused_result));
/* One command.  The reply (the caller frees it; error replies included,
 * redirections excepted), or NULL with err (503 unavailable). */
redisReply *rclient_commandv(struct rclient *c, int argc, const char **argv, const size_t *argvlen, struct error *err)
	__attribute__((warn_unused_result));
/* n commands, pipelined per node; replies[i] the reply of cmds[i] (the
 * caller frees them) or NULL.  0 when every command got a reply, else -1
 * with err. */
int rclient_pipeline(struct rclient *c, size_t n, const struct rclient_cmd *cmds, redisReply **replies,
		     struct error *err) __attribute__((warn_unused_result));
/* Appends cmd in RESP to out (*argc, then $len and the bytes of each
 * argument): the bytes redisFormatCommandArgv writes, without its sds. */
struct buf;
void rclient_format(struct buf *out, const struct rclient_cmd *cmd);
/* Calls fn with the connection of each master (or the single server), e.g.
 * for SCAN; ctx stays allocated until fn returns, also when fn's own
 * commands through c close it (then it answers them with errors).  fn
 * returns 0 or -1.  0, or -1 with err when any master could
 * not be reached or fn failed there (the others are visited all the same). */
int rclient_each_master(struct rclient *c, int (*fn)(redisContext *ctx, void *arg), void *arg, struct error *err)
	__attribute__((warn_unused_result));
/* The identity of the Redis (or Cluster) c reaches: a random id stored once
 * under RKEY_REDIS_ID (`SET NX GET`: the first client to ask creates it, every
 * later one reads it) into out (RCLIENT_ID_LEN + 1 bytes).  Two billingd
 * instances that read the same id settle into the same mirrors
 * (billing/authz/authorize.c, notify_cb).  0, or -1 with err and out "". */
#define RCLIENT_ID_LEN 32
int rclient_redis_id(struct rclient *c, char *out, struct error *err) __attribute__((warn_unused_result));
/* Which billing database the Redis (or Cluster) c reaches serves: mine
 * (ledger/db.h db_identity) is stored under RKEY_REDIS_OWNER unless one is
 * there (`SET NX GET`; with claim false only read).  Account ids start at 1
 * in every database, so a Redis that held another database's mirrors would
 * have its balances, holds and limits trusted as this one's.  0: the Redis
 * is this database's (or, without claim, nobody's yet); 1: another's, its
 * identity in other (cap bytes); -1 with err. */
int rclient_redis_owner(struct rclient *c, const char *mine, bool claim, char *other, size_t cap, struct error *err)
	__attribute__((warn_unused_result));
/* How many connections c has opened so far (to any node).  The server at an
 * address may be another one after a reconnect (a restart without
 * persistence, a moved name, a failover to a server that is no copy): an id
 * read before it says nothing of what the new connection reaches. */
uint64_t rclient_connects(const struct rclient *c);

#endif
