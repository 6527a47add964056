/* rkeys.h: the Redis keys of one account, spelled once for billingd
 * (billing/authz/quota.c, authorize.c, billing/usage/usage.c) and `ledger
 * reconcile` (ledger/reconcile.c).  What each holds: billing/authz/quota.lua.h.
 * All keys of an account share the hash tag {a:ID}: one Redis Cluster slot,
 * so every script touches one node. */
#ifndef COMMON_RKEYS_H
#define COMMON_RKEYS_H

#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* In the order the quota scripts take them as KEYS[1..8]. */
enum rkey { RKEY_BAL, RKEY_HOLDS, RKEY_HEXP, RKEY_HELD, RKEY_CONCN, RKEY_RL, RKEY_VER, RKEY_LGEN, RKEY_N };

/* Every account's mirror (SCAN MATCH). */
#define RKEY_BAL_PATTERN "{a:*}:bal"
/* Long enough for any key of any account. */
#define RKEY_BUF 48

static inline const char *rkey_suffix(enum rkey k)
{
	static const char *const suffix[RKEY_N] = {"bal", "holds", "hexp", "held", "concn", "rl", "ver", "lgen"};

	return suffix[k];
}

/* out (RKEY_BUF bytes) = key k of account. */
static inline void rkey(char *out, size_t n, int64_t account, enum rkey k)
{
	snprintf(out, n, "{a:%" PRId64 "}:%s", account, rkey_suffix(k));
}

#endif
