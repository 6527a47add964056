/* quota.lua.h: the Redis scripts of quota.c, one string each.
 *
 * Keys of one account share the hash tag {a:ID}, so each script touches one
 * slot (Redis Cluster ready):
 *   {a:ID}:bal    hash  paid, promo (nanos, mirror of the ledger), status, lg (the
 *                       load generation of the locked load that wrote it); PEXPIRE'd
 *   {a:ID}:ver    int   bumped by every change; an unlocked load (ledger reconcile
 *                       --repair) only lands if unchanged
 *   {a:ID}:holds  hash  hold_id -> "amount|paid_only|tokens|model"
 *   {a:ID}:hexp   zset  hold_id scored by expiry (ms, Redis TIME)
 *   {a:ID}:held   int   sum of live holds
 *   {a:ID}:concn  hash  model -> live holds of that model
 *   {a:ID}:rl     hash  GCRA theoretical arrival times, field "<scope>:<kind>"
 *   {a:ID}:lgen   int   bumped by every mirror load (started from Redis TIME in
 *                       microseconds when absent, so a FLUSHALL cannot make an old
 *                       value come back): a settle applies its delta only if no
 *                       load happened since its COMMIT was prepared
 * Times come from Redis TIME, never the service's clock.
 *
 * Mirror loads are locked loads (authorize.c): the loader holds the account's
 * customers row FOR SHARE from before it reads the ledger until the load
 * script has run, and every transaction that changes a balance or a status
 * holds that row FOR UPDATE (the usage writer reads lgen under it, before
 * COMMIT).  So a load and a charge are ordered: a load whose lgen is newer
 * than the one the charge's writer read happened after its COMMIT and holds
 * the charge.  A locked load checks no version: contention cannot make it
 * fail, and it decides the authorization in the same script. */
#ifndef BILLING_QUOTA_LUA_H
#define BILLING_QUOTA_LUA_H

/* Shared prologue: now, and expiry of due holds. */
#define QUOTA_LUA_PROLOGUE                                                                           \
	"local t = redis.call('TIME')\n"                                                             \
	"local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"                    \
	"local function release(h)\n"                                                                \
	"  local v = redis.call('HGET', KEYS[2], h)\n"                                               \
	"  redis.call('ZREM', KEYS[3], h)\n"                                                         \
	"  if not v then return nil end\n"                                                           \
	"  local amt, po, tok, model = string.match(v, '^(%-?%d+)|(%d)|(%d+)|(.*)$')\n"              \
	"  redis.call('HDEL', KEYS[2], h)\n"                                                         \
	"  redis.call('DECRBY', KEYS[4], amt)\n"                                                     \
	"  if redis.call('HINCRBY', KEYS[5], model, -1) <= 0 then redis.call('HDEL', KEYS[5], model) end\n" \
	"  return tonumber(tok)\n"                                                                   \
	"end\n"                                                                                      \
	"local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 1000)\n"          \
	"for _, h in ipairs(due) do release(h) end\n"

/* authorize: KEYS bal holds hexp held concn rl ver lgen
 * ARGV 1 hold_id 2 amount 3 paid_only 4 ttl_ms 5 tokens 6 model
 *      7..11 account-wide rpm tpm rpd tpd concurrency (0 = none)
 *      12..16 per-model   rpm tpm rpd tpd concurrency
 *      with a locked load (authorize.c): 17 deadline (ms, Redis TIME) 18 paid 19 promo
 *      20 status 21 mirror ttl_ms 22 poff 23 qoff (ledger/reconcile.h: paid and promo
 *      saturated at 2^52, the excess beside them): stores the mirror first, then decides
 * -> {'OK', amount, available_after, expires_ms, existing(0/1)} | {'NOMIRROR'} | {'FROZEN'}
 *    | {'BALANCE', available} | {'RATE', what, retry_ms, limit} | {'CONC', what, limit}
 *    | {'LATE'} (a load that arrived after its deadline: nothing stored) */
static const char quota_lua_authorize[] = QUOTA_LUA_PROLOGUE
	"if ARGV[21] then\n"
	/* past the deadline the loader may have let go of its row lock: a charge
	 * may have committed since its read */
	"  if now > tonumber(ARGV[17]) then return {'LATE'} end\n"
	"  local g = string.format('%d', redis.call('INCR', KEYS[8]))\n"
	"  if g == '1' then\n"
	"    g = string.format('%d', tonumber(t[1]) * 1000000 + tonumber(t[2]))\n"
	"    redis.call('SET', KEYS[8], g)\n"
	"  end\n"
	"  redis.call('HSET', KEYS[1], 'paid', ARGV[18], 'promo', ARGV[19], 'status', ARGV[20], 'lg', g,\n"
	"             'poff', ARGV[22], 'qoff', ARGV[23])\n"
	"  redis.call('PEXPIRE', KEYS[1], ARGV[21])\n"
	"  local sum = 0\n"
	"  for _, v in ipairs(redis.call('HVALS', KEYS[2])) do\n"
	"    sum = sum + tonumber(string.match(v, '^(%-?%d+)|'))\n"
	"  end\n"
	"  redis.call('SET', KEYS[4], string.format('%d', sum))\n"
	"end\n"
	"if redis.call('EXISTS', KEYS[1]) == 0 then return {'NOMIRROR'} end\n"
	"local b = redis.call('HMGET', KEYS[1], 'paid', 'promo', 'status')\n"
	"if b[3] == 'frozen' then return {'FROZEN'} end\n"
	"local paid, promo = tonumber(b[1]), tonumber(b[2])\n"
	"local held = tonumber(redis.call('GET', KEYS[4]) or '0')\n"
	"local function avail()\n"
	"  if ARGV[3] == '1' then return paid - held end\n"
	"  return paid + promo - held\n"
	"end\n"
	"local old = redis.call('HGET', KEYS[2], ARGV[1])\n"
	"if old then\n"
	"  local amt = string.match(old, '^(%-?%d+)|')\n"
	"  return {'OK', tonumber(amt), avail(), math.floor(tonumber(redis.call('ZSCORE', KEYS[3], ARGV[1]) or now)), 1}\n"
	"end\n"
	"local amount = tonumber(ARGV[2])\n"
	"local model = ARGV[6]\n"
	"local conc_all, conc_m = tonumber(ARGV[11]), tonumber(ARGV[16])\n"
	"if conc_all > 0 and redis.call('ZCARD', KEYS[3]) >= conc_all then return {'CONC', 'concurrency', conc_all} end\n"
	"if conc_m > 0 and tonumber(redis.call('HGET', KEYS[5], model) or '0') >= conc_m then\n"
	"  return {'CONC', 'model_concurrency', conc_m} end\n"
	"local checks = {}\n"
	"local function gcra(scope, kind, limit, period, cost)\n"
	"  if limit <= 0 then return nil end\n"
	"  local f = scope .. ':' .. kind\n"
	"  local T = period / limit\n"
	"  local tat = tonumber(redis.call('HGET', KEYS[6], f) or '0')\n"
	"  if tat < now then tat = now end\n"
	"  local new = tat + cost * T\n"
	"  if new - period > now then\n"
	"    local wait = new - period - now\n"
	"    if cost > limit then wait = period end\n"
	"    return {kind, math.ceil(wait), limit}\n"
	"  end\n"
	"  checks[#checks + 1] = {f, new}\n"
	"  return nil\n"
	"end\n"
	"local tokens = tonumber(ARGV[5])\n"
	"local lim = {{'*', 7}, {model, 12}}\n"
	"for _, s in ipairs(lim) do\n"
	"  local base = s[2]\n"
	"  local scope = s[1]\n"
	"  local r = gcra(scope, 'rpm', tonumber(ARGV[base]), 60000, 1)\n"
	"    or gcra(scope, 'tpm', tonumber(ARGV[base + 1]), 60000, tokens)\n"
	"    or gcra(scope, 'rpd', tonumber(ARGV[base + 2]), 86400000, 1)\n"
	"    or gcra(scope, 'tpd', tonumber(ARGV[base + 3]), 86400000, tokens)\n"
	"  if r then\n"
	"    if scope ~= '*' then r[1] = 'model_' .. r[1] end\n"
	"    return {'RATE', r[1], r[2], r[3]}\n"
	"  end\n"
	"end\n"
	"if paid < 0 or amount > avail() then return {'BALANCE', avail()} end\n"
	"for _, c in ipairs(checks) do redis.call('HSET', KEYS[6], c[1], c[2]) end\n"
	"if #checks > 0 then redis.call('PEXPIRE', KEYS[6], 172800000) end\n"
	"local exp = now + tonumber(ARGV[4])\n"
	"redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. '|' .. ARGV[3] .. '|' .. ARGV[5] .. '|' .. model)\n"
	"redis.call('ZADD', KEYS[3], exp, ARGV[1])\n"
	"redis.call('INCRBY', KEYS[4], amount)\n"
	"redis.call('HINCRBY', KEYS[5], model, 1)\n"
	"held = held + amount\n"
	"return {'OK', amount, avail(), exp, 0}\n";

/* settle: KEYS bal holds hexp held concn rl ver lgen
 * ARGV 1 hold_id ('' none) 2 d_paid 3 d_promo 4 actual_tokens 5 apply_delta(0/1) 6 model
 *      7 account tpm 8 account tpd 9 model tpm 10 model tpd
 *      11 load generation the writer saw before COMMIT (-1 unknown)
 * Releases the hold if it is still there (twice changes nothing), applies the
 * committed charge to the mirror, corrects TPM/TPD by actual - estimate. -> released (0/1) */
static const char quota_lua_settle[] = QUOTA_LUA_PROLOGUE
	"local released = 0\n"
	"if ARGV[5] == '1' then\n"
	"  redis.call('INCR', KEYS[7])\n"
	"  if redis.call('EXISTS', KEYS[1]) == 1 then\n"
	/* the delta is right only for a mirror loaded before the commit: the
	 * writer read the load generation before COMMIT (ARGV 11) */
	"    local g = redis.call('GET', KEYS[8]) or '0'\n"
	"    if ARGV[11] ~= '-1' and g == ARGV[11] then\n"
	"      local p = redis.call('HINCRBY', KEYS[1], 'paid', ARGV[2])\n"
	"      local q = redis.call('HINCRBY', KEYS[1], 'promo', ARGV[3])\n"
	/* a balance saturated at 2^52 (excess in poff/qoff, ledger/reconcile.h)
	 * that charges took below 2^51: drop the mirror, the next call loads
	 * it again from the books, so the saturation never refuses a call the
	 * exact balance admits */
	"      if (p < 2251799813685248 and tonumber(redis.call('HGET', KEYS[1], 'poff') or '0') > 0)\n"
	"         or (q < 2251799813685248 and tonumber(redis.call('HGET', KEYS[1], 'qoff') or '0') > 0) then\n"
	"        redis.call('DEL', KEYS[1])\n"
	"      end\n"
	/* a load since: if the newest is a locked load (its lg is the current
	 * generation), it read the ledger after this COMMIT and holds the charge */
	"    elseif ARGV[11] == '-1' or redis.call('HGET', KEYS[1], 'lg') ~= g then\n"
	"      redis.call('DEL', KEYS[1])\n"
	"    end\n"
	"  end\n"
	"end\n"
	"if ARGV[1] ~= '' then\n"
	"  local est = release(ARGV[1])\n"
	"  if est then\n"
	"    released = 1\n"
	/* a replay that still finds its hold: the first answer's settle was lost,
	 * so the mirror misses that charge: drop it, the ledger reloads it */
	"    if ARGV[5] ~= '1' then redis.call('INCR', KEYS[7]); redis.call('DEL', KEYS[1]) end\n"
	"    local delta = tonumber(ARGV[4]) - est\n"
	"    local function fix(scope, kind, limit, period)\n"
	"      if limit <= 0 or delta == 0 then return end\n"
	"      local f = scope .. ':' .. kind\n"
	"      local tat = redis.call('HGET', KEYS[6], f)\n"
	"      if tat then redis.call('HSET', KEYS[6], f, tonumber(tat) + delta * period / limit) end\n"
	"    end\n"
	"    fix('*', 'tpm', tonumber(ARGV[7]), 60000)\n"
	"    fix('*', 'tpd', tonumber(ARGV[8]), 86400000)\n"
	"    fix(ARGV[6], 'tpm', tonumber(ARGV[9]), 60000)\n"
	"    fix(ARGV[6], 'tpd', tonumber(ARGV[10]), 86400000)\n"
	"  end\n"
	"end\n"
	"return released\n";

/* held: KEYS bal holds hexp held concn rl ver lgen -> the sum of live holds
 * (nanos).  Read only: holds already due are left out, not released. */
static const char quota_lua_held[] =
	"local t = redis.call('TIME')\n"
	"local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
	"local held = tonumber(redis.call('GET', KEYS[4]) or '0')\n"
	"for _, h in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)) do\n"
	"  local v = redis.call('HGET', KEYS[2], h)\n"
	"  if v then held = held - tonumber(string.match(v, '^(%-?%d+)|')) end\n"
	"end\n"
	"return held\n";

/* invalidate: KEYS bal holds hexp held concn rl ver lgen -> drops the mirror, bumps the version */
static const char quota_lua_invalidate[] =
	"redis.call('INCR', KEYS[7])\n"
	"redis.call('DEL', KEYS[1])\n"
	"return 1\n";

#endif
