/* rslot.h: the pure parts of talking to a Redis Cluster, shared by the
 * asynchronous connection (billing/authz/rconn.c) and the synchronous client
 * (common/rclient.c): the key slot as Redis computes it, which key of a
 * command decides its slot, the seed list of the `redis` setting, the
 * MOVED/ASK error replies and the CLUSTER SLOTS answer.  No sockets. */
#ifndef COMMON_RSLOT_H
#define COMMON_RSLOT_H

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

#define RSLOT_N 16384
#define RSLOT_MAX_SEEDS 16

struct rslot_addr {
	char host[256];
	int port;
	int db; /* "/db" suffix, only meaningful for a single non-cluster server */
};

/* CRC16 (XMODEM) of the key, or of the first non-empty "{...}" in it, mod 16384. */
int rslot_of(const char *key, size_t len);
/* The key that decides where a command goes: EVAL/EVALSHA/FCALL the first key
 * (when numkeys > 0), XREAD/XREADGROUP the first stream after STREAMS,
 * XGROUP/XINFO/OBJECT the argument after the subcommand, keyless commands
 * (PING, SCRIPT, CLUSTER, INFO, SCAN, ...) none; otherwise argv[1].  Returns
 * the slot, or -1 for a command with no key. */
int rslot_command(int argc, const char *const *argv, const size_t *argvlen);
/* Parses "host:port[/db][,host:port...]" (spaces around commas allowed) into
 * out[0..max); returns the count (>= 1), or -1 with err (invalid_config). */
int rslot_parse_seeds(const char *s, struct rslot_addr *out, int max, struct error *err)
	__attribute__((warn_unused_result));
/* "MOVED 3999 127.0.0.1:6381" / "ASK 3999 127.0.0.1:6381": 1 for MOVED, 2
 * for ASK (slot and address filled), 0 for anything else. */
int rslot_parse_redirect(const char *errstr, int *slot, struct rslot_addr *to);
/* A CLUSTER SLOTS reply -> owner[slot] = node_index(arg, host, port) of the
 * master of each covered slot, -1 where none.  An empty host (the node does
 * not know its address) is passed as "".  0, or -1 when the reply is not a
 * slot table (owner is then left untouched). */
int rslot_parse_slots(const redisReply *r, int (*node_index)(void *arg, const char *host, int port), void *arg,
		      int16_t owner[RSLOT_N]) __attribute__((warn_unused_result));

#endif
