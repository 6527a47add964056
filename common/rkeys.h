/* rkeys.h: the Redis keys of one account, spelled once for billingd
 * (billing/authz/quota.c, authorize.c, billing/usage/usage.c) and `ledger
 * reconcile` (ledger/reconcile.c).  What each holds: common/mirror_lua.h and
 * billing/authz/quota.lua.h.  All keys of an account share the hash tag
 * {a:ID}: one Redis Cluster slot, so every script touches one node. */
#ifndef COMMON_RKEYS_H
#define COMMON_RKEYS_H

#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/buf.h"

/* In the order the quota scripts take them as KEYS[1..4]:
 *   bal   the balance mirror (PEXPIRE'd, dropped by invalidation)
 *   st    what outlives the mirror: held, ver, lgen, due, concurrency, GCRA
 *   hold  hold_id -> packed record (amount, tokens, model)
 *   hexp  hold_id scored by expiry */
enum rkey { RKEY_BAL, RKEY_ST, RKEY_HOLD, RKEY_HEXP, RKEY_N };

/* Fields of {a:ID}:st read outside the scripts. */
#define RKEY_ST_VER "ver"
#define RKEY_ST_LGEN "lgen"
#define RKEY_ST_HELD "held"

/* Every account's mirror (SCAN MATCH), and the suffix of the state hash. */
#define RKEY_BAL_PATTERN "{a:*}:bal"
#define RKEY_ST_SUFFIX "st"
/* Not an account's: the Redis's own identity (common/rclient.h rclient_redis_id). */
#define RKEY_REDIS_ID "billing:redis_id"
/* Not an account's: which billing database the mirrors belong to
 * (common/rclient.h rclient_redis_owner). */
#define RKEY_REDIS_OWNER "billing:owner"
/* Long enough for any key of any account. */
#define RKEY_BUF 48

static inline const char *rkey_suffix(enum rkey k)
{
	static const char *const suffix[RKEY_N] = {"bal", RKEY_ST_SUFFIX, "hold", "hexp"};

	return suffix[k];
}

/* out (RKEY_BUF bytes) = key k of account, "{a:ID}:suffix"; its length.
 * Written without printf (every authorize formats four). */
static inline size_t rkey(char *out, size_t n, int64_t account, enum rkey k)
{
	const char *suffix = rkey_suffix(k);
	size_t len, sl = strlen(suffix);

	if (n < RKEY_BUF)
		return (size_t)snprintf(out, n, "{a:%" PRId64 "}:%s", account, suffix);
	memcpy(out, "{a:", 3);
	len = 3 + buf_fmt_i64(out + 3, account);
	memcpy(out + len, "}:", 2);
	memcpy(out + len + 2, suffix, sl + 1);
	return len + 2 + sl;
}

#endif
