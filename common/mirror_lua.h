/* mirror_lua.h: loading an account's balance mirror into Redis, one Lua
 * function for billingd's locked loads (billing/authz/quota.lua.h, inside the
 * authorize script) and `ledger reconcile --repair` (ledger/reconcile.c,
 * MIRROR_LUA_REPAIR), so both leave the same keys behind.
 *
 * Keys (common/rkeys.h, all in the account's hash tag {a:ID}):
 *   KEYS[1] {a:ID}:bal   hash  paid, promo (nanos, the ledger's values saturated at
 *                              2^52, ledger/reconcile.h), poff, qoff (the excess),
 *                              status, lg (the load generation that wrote it);
 *                              PEXPIRE'd (mirror_ttl_ms), dropped by invalidation
 *   KEYS[2] {a:ID}:st    hash  what outlives the mirror: held (sum of the live
 *                              hold records), ver (bumped by every change: an
 *                              unlocked load lands only if it did not move), lgen
 *                              (bumped by every load, started from Redis TIME in
 *                              microseconds when absent, so a FLUSHALL cannot bring
 *                              an old value back), and the quota fields of
 *                              billing/authz/quota.lua.h (due, c:<model>, r:<scope>:<kind>)
 *   KEYS[3] {a:ID}:hold  hash  hold_id -> struct.pack('<i8i8', amount, tokens) .. model
 *   KEYS[4] {a:ID}:hexp  zset  hold_id scored by expiry (ms, Redis TIME)
 *
 * A load stores the balance, takes a new load generation, bumps the version
 * and sets held to the sum of the hold records (healing any drift; a hold
 * already due is counted until the next sweep releases it, as its record is),
 * and gives st its lifetime (MIRROR_ST_TTL_MS_STR). */
#ifndef COMMON_MIRROR_LUA_H
#define COMMON_MIRROR_LUA_H

#include <stdint.h>

/* An idle account's mirror goes away by itself after this long. */
#define MIRROR_TTL_MS 300000

/* ... and its state hash (st) after this long without a load: 2 days, so
 * st outlives every mirror (loaded within MIRROR_TTL_MS), every hold admitted
 * under one (hold_ttl_seconds <= 1 day) and every GCRA window (1 day); a
 * load never shortens it: a settle may have pushed a TPM/TPD time further
 * ahead and st past it (billing/authz/quota.lua.h, settle).  When
 * st goes, bal went long before: the next decision loads the mirror, and
 * the load sets held from the hold records again, so a hold left unswept
 * in the old st cannot make held wrong (billing/authz/quota.lua.h). */
#define MIRROR_ST_TTL_MS_STR "172800000"

/* The mirror's lifetime: MIRROR_TTL_MS, but never past the first expiry of
 * a grant with credit left (earliest_expiry_us, 0 = none): after that
 * instant its credit is no longer spendable. */
static inline int64_t mirror_ttl_ms(int64_t now_us, int64_t earliest_expiry_us)
{
	int64_t left;

	if (!earliest_expiry_us)
		return MIRROR_TTL_MS;
	left = (earliest_expiry_us - now_us) / 1000;
	if (left >= MIRROR_TTL_MS)
		return MIRROR_TTL_MS;
	return left > 1 ? left : 1;
}

/* mirror_load(t, locked, paid, promo, status, ttl_ms, poff, qoff): t is the
 * reply of TIME.  Only a locked load (billingd's: it holds the account's row
 * lock, billing/authz/quota.lua.h) writes its generation into bal.lg: a
 * settle takes that as "this load read the ledger after my COMMIT".  An
 * unlocked load writes "-" there, so a settle prepared before it drops the
 * mirror instead of trusting it. */
#define MIRROR_LUA_LOAD                                                                                              \
	"local function mirror_load(t, locked, paid, promo, status, ttl, poff, qoff)\n"                              \
	"  local g = redis.call('HINCRBY', KEYS[2], 'lgen', 1)\n"                                                    \
	"  if g == 1 then g = tonumber(t[1]) * 1000000 + tonumber(t[2]) end\n"                                       \
	"  g = string.format('%d', g)\n"                                                                             \
	"  local held = 0\n"                                                                                         \
	"  for _, v in ipairs(redis.call('HVALS', KEYS[3])) do held = held + struct.unpack('<i8', v) end\n"          \
	"  redis.call('HSET', KEYS[1], 'paid', paid, 'promo', promo, 'status', status, 'lg', locked and g or '-',\n" \
	"             'poff', poff, 'qoff', qoff)\n"                                                                 \
	"  redis.call('PEXPIRE', KEYS[1], ttl)\n"                                                                    \
	"  redis.call('HINCRBY', KEYS[2], 'ver', 1)\n"                                                               \
	"  redis.call('HSET', KEYS[2], 'lgen', g, 'held', string.format('%d', held))\n"                              \
	"  if redis.call('PTTL', KEYS[2]) < " MIRROR_ST_TTL_MS_STR " then\n"                                         \
	"    redis.call('PEXPIRE', KEYS[2], " MIRROR_ST_TTL_MS_STR ")\n"                                             \
	"  end\n"                                                                                                    \
	"end\n"

/* The unlocked load of `ledger reconcile --repair`: KEYS as above;
 * ARGV 1 paid 2 promo 3 status 4 ttl_ms 5 poff 6 qoff 7 the version read
 * with the mirror ("" = none).  -> 1 loaded | 0 the version moved (billingd
 * changed the mirror meanwhile: nothing stored). */
#define MIRROR_LUA_REPAIR                                                               \
	"local t = redis.call('TIME')\n" MIRROR_LUA_LOAD                                \
	"if (redis.call('HGET', KEYS[2], 'ver') or '') ~= ARGV[7] then return 0 end\n"  \
	"mirror_load(t, false, ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6])\n" \
	"return 1\n"

#endif
