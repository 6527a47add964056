/* quota.lua.h: the Redis scripts of quota.c, one string each.
 *
 * Four keys per account, all in the hash tag {a:ID} (one Cluster slot), in
 * the order common/rkeys.h gives them: KEYS[1] bal, KEYS[2] st, KEYS[3] hold,
 * KEYS[4] hexp.  The mirror (bal) and the load: common/mirror_lua.h.  The
 * fields of st this file adds:
 *   due              no later than the earliest expiry of a live hold (ms; 2^53-1
 *                    when none): the sweep of due holds runs only when it has
 *                    come (absent: sweep), and held() looks for due holds only then
 *   hx               when hold and hexp expire (ms, PEXPIREAT): the latest
 *                    hold's expiry plus at least its ttl, set when a hold is
 *                    added past hx less a ttl, when the account held nothing
 *                    (the keys may be new), or when hx is absent (then never
 *                    earlier than the keys' own PEXPIRETIME).  So an account
 *                    nobody settles or sweeps leaves no hold records for good;
 *                    a sweep that finds no hold left sets held to 0 and drops
 *                    the c:<model> counts (records that expired unswept)
 *   c:<model>        live holds of that model (model concurrency)
 *   r:<scope>:<kind> GCRA theoretical arrival times, scope '*' or a model,
 *                    kind rpm tpm rpd tpd (a time in the past means the same
 *                    as none, so they need no expiry)
 * Account-wide concurrency is ZCARD hexp.  Hold records are packed
 * (struct.pack, read in C by Redis), never parsed as text in Lua.  A string
 * becomes a number by arithmetic (x + 0), not tonumber(x): Lua 5.1's
 * tonumber converts it twice (lua_isnumber, then lua_tonumber), each a
 * glibc strtod of about 500 instructions, and a decision converts about ten.
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

#include "common/mirror_lua.h"

/* release(k, h): drops hold h of the account whose keys are k (bal st hold
 * hexp: KEYS of a one-account script, four of a group's) -- its record,
 * expiry, share of held and of its model's concurrency -- -> its estimated
 * tokens, or nil when it was gone.  sweep(k, now): releases the holds due
 * (at most 1000) and sets due.  Both write st, and may create it (st gone
 * while hold records stay): whatever writes st first gives it its lifetime
 * when it has none (PEXPIRE NX), so no path leaves an st that never expires
 * (tests/integration/test_state_ttl.py). */
#define QUOTA_LUA_RELEASE                                                                             \
	"local function release(k, h)\n"                                                              \
	"  local v = redis.call('HGET', k[3], h)\n"                                                   \
	"  redis.call('ZREM', k[4], h)\n"                                                             \
	"  if not v then return nil end\n"                                                            \
	"  local amt, tok, pos = struct.unpack('<i8i8', v)\n"                                         \
	"  local c = 'c:' .. string.sub(v, pos)\n"                                                    \
	"  redis.call('HDEL', k[3], h)\n"                                                             \
	"  redis.call('HINCRBY', k[2], 'held', string.format('%d', -amt))\n"                          \
	"  if redis.call('HINCRBY', k[2], c, -1) <= 0 then redis.call('HDEL', k[2], c) end\n"         \
	"  return tok\n"                                                                              \
	"end\n"                                                                                       \
	"local function sweep(k, now)\n"                                                              \
	"  for _, h in ipairs(redis.call('ZRANGEBYSCORE', k[4], '-inf', now, 'LIMIT', 0, 1000)) do\n" \
	"    release(k, h)\n"                                                                         \
	"  end\n"                                                                                     \
	"  local first = redis.call('ZRANGE', k[4], 0, 0, 'WITHSCORES')\n"                            \
	"  if first[2] then\n"                                                                        \
	"    redis.call('HSET', k[2], 'due', first[2])\n"                                             \
	"  else\n"                                                                                    \
	"    local d = {}\n"                                                                          \
	"    for _, f in ipairs(redis.call('HKEYS', k[2])) do\n"                                      \
	"      if string.sub(f, 1, 2) == 'c:' then d[#d + 1] = f end\n"                               \
	"    end\n"                                                                                   \
	"    if #d > 0 then redis.call('HDEL', k[2], unpack(d)) end\n"                                \
	"    redis.call('HSET', k[2], 'due', '9007199254740991', 'held', '0')\n"                      \
	"  end\n"                                                                                     \
	"  redis.call('PEXPIRE', k[2], " MIRROR_ST_TTL_MS_STR ", 'NX')\n"                             \
	"end\n"

/* decide(k, a, o, now, t, load, nolim, rep, hid, amt, po, ttl, tokens,
 * model): one authorization of the account whose keys are k; hid .. model
 * are the authorize script's first six arguments (a group unpacks them from
 * its packed ARGV 1: ttl and tokens may be numbers), a[o + 7 ..] the rest
 * when present (the one-account script passes ARGV and 0, a group's full
 * form its ARGV and the decision's offset); now and t the script's Redis
 * TIME (ms, and TIME's reply) -> the authorize script's answer.  load: a locked load (ARGV 17-23 present)
 * stores the mirror through mirror_load, which writes KEYS: only the
 * one-account script, where k is KEYS, passes one; a group never does.
 * nolim: no limit in force (a group's short form).  rep: k[5..11] carry
 * the account's state within the call (an account with more than one
 * decision in a group, the grouped script below); else decide neither
 * reads nor writes them (a table look-up or store is 100-200 instructions).
 * The kept state is used only while its due is in the future: a sweep
 * releases at most 1000 due holds, and with more due the next decision must
 * sweep again, as it would without grouping.
 *
 * Each redis.call is a whole command dispatch inside Redis (1.5-2 us on the
 * bench machine, docs/benchmarks.md), so the common decision makes six:
 * TIME (once per script call), HMGET st, HMGET bal, HSETNX hold (the replay
 * check and the new record in one), ZADD hexp, HSET st; ZCARD hexp only
 * with an account-wide concurrency limit.  A refusal stores nothing: it
 * reads the record (HGET) only to answer a replay.  No closures, and no
 * tables for the limits unless one is in force (KINDS and PERIOD: index 1-4
 * account-wide rpm tpm rpd tpd, 5-8 the same per model, as ARGV 7-10 and
 * 12-15); with none in force (the common case) one comparison of the eight
 * arguments with '0' instead of a loop over them. */
#define QUOTA_LUA_DECIDE                                                                                                                            \
	"local KINDS = {'rpm', 'tpm', 'rpd', 'tpd', 'rpm', 'tpm', 'rpd', 'tpd'}\n"                                                                  \
	"local PERIOD = {60000, 60000, 86400000, 86400000, 60000, 60000, 86400000, 86400000}\n"                                                     \
	"local function decide(k, a, o, now, t, load, nolim, rep, hid, amt, po, ttl, tokens, model)\n"                                              \
	"  if load and now > a[o + 17] + 0 then return 'LATE' end\n"                                                                                \
	"  tokens = tokens + 0\n"                                                                                                                   \
	"  local cf = 'c:' .. model\n"                                                                                                              \
	"  local f, lim\n"                                                                                                                          \
	"  if not nolim and (a[o + 7] ~= '0' or a[o + 8] ~= '0' or a[o + 9] ~= '0' or a[o + 10] ~= '0' or a[o + 12] ~= '0'\n"                       \
	"     or a[o + 13] ~= '0' or a[o + 14] ~= '0' or a[o + 15] ~= '0') then\n"                                                                  \
	"    for x = 1, 8 do\n"                                                                                                                     \
	"      local i = x <= 4 and 6 + x or 7 + x\n"                                                                                               \
	"      if a[o + i] ~= '0' then\n"                                                                                                           \
	"        local limit = a[o + i] + 0\n"                                                                                                      \
	"        if limit > 0 then\n"                                                                                                               \
	"          if not f then f, lim = {'held', 'due', cf, 'hx'}, {} end\n"                                                                      \
	"          local kind = KINDS[x]\n"                                                                                                         \
	"          f[#f + 1] = (x <= 4 and 'r:*:' or 'r:' .. model .. ':') .. kind\n"                                                               \
	"          lim[#lim + 1] = x\n"                                                                                                             \
	"          lim[#lim + 1] = limit\n"                                                                                                         \
	"        end\n"                                                                                                                             \
	"      end\n"                                                                                                                               \
	"    end\n"                                                                                                                                 \
	"  end\n"                                                                                                                                   \
	"  local st, held, due, cm, hx\n"                                                                                                           \
	"  local cached = rep and k[5]\n"                                                                                                           \
	"  if cached then k[5] = false end\n"                                                                                                       \
	"  if not f and cached == model and k[7] > now then\n"                                                                                      \
	"    held, due, cm, hx = k[6], k[7], k[8], k[9]\n"                                                                                          \
	"  else\n"                                                                                                                                  \
	"    if f then st = redis.call('HMGET', k[2], unpack(f)) else st = redis.call('HMGET', k[2], 'held', 'due', cf, 'hx') end\n"                \
	"    local reread = false\n"                                                                                                                \
	"    due = st[2] and st[2] + 0\n"                                                                                                           \
	"    if not due or due <= now then sweep(k, now); reread = true end\n"                                                                      \
	"    if load then\n"                                                                                                                        \
	"      mirror_load(t, true, a[o + 18], a[o + 19], a[o + 20], a[o + 21], a[o + 22], a[o + 23])\n"                                            \
	"      reread = true\n"                                                                                                                     \
	"    end\n"                                                                                                                                 \
	"    if reread then\n"                                                                                                                      \
	"      if f then st = redis.call('HMGET', k[2], unpack(f)) else st = redis.call('HMGET', k[2], 'held', 'due', cf, 'hx') end\n"              \
	"      due = st[2] and st[2] + 0\n"                                                                                                         \
	"    end\n"                                                                                                                                 \
	"    held, cm, hx = (st[1] or '0') + 0, (st[3] or '0') + 0, st[4] and st[4] + 0\n"                                                          \
	"  end\n"                                                                                                                                   \
	"  local paid, promo\n"                                                                                                                     \
	"  if rep then paid, promo = k[10], k[11] end\n"                                                                                            \
	"  if not paid then\n"                                                                                                                      \
	"    local b = redis.call('HMGET', k[1], 'paid', 'promo', 'status')\n"                                                                      \
	"    if not b[1] or not b[2] then return 'NOMIRROR' end\n"                                                                                  \
	"    if b[3] == 'frozen' then return 'FROZEN' end\n"                                                                                        \
	"    paid, promo = b[1] + 0, b[2] + 0\n"                                                                                                    \
	"    if rep then k[10], k[11] = paid, promo end\n"                                                                                          \
	"  end\n"                                                                                                                                   \
	"  local avail\n"                                                                                                                           \
	"  if po == '1' then avail = paid - held else avail = paid + promo - held end\n"                                                            \
	"  local amount = amt + 0\n"                                                                                                                \
	"  local no, w\n"                                                                                                                           \
	"  if nolim then\n"                                                                                                                         \
	"  elseif a[o + 11] ~= '0' and redis.call('ZCARD', k[4]) >= a[o + 11] + 0 then\n"                                                           \
	"    no = string.format('CONC concurrency %d', a[o + 11] + 0)\n"                                                                            \
	"  elseif a[o + 16] ~= '0' and cm >= a[o + 16] + 0 then\n"                                                                                  \
	"    no = string.format('CONC model_concurrency %d', a[o + 16] + 0)\n"                                                                      \
	"  end\n"                                                                                                                                   \
	"  if lim and not no then\n"                                                                                                                \
	"    w = {}\n"                                                                                                                              \
	"    for j = 1, #lim, 2 do\n"                                                                                                               \
	"      local x, limit = lim[j], lim[j + 1]\n"                                                                                               \
	"      local period, cost = PERIOD[x], 1\n"                                                                                                 \
	"      if x % 2 == 0 then cost = tokens end\n"                                                                                              \
	"      local tat = ((st[4 + (j + 1) / 2] or '0') + 0)\n"                                                                                    \
	"      if tat < now then tat = now end\n"                                                                                                   \
	"      local new = tat + cost * period / limit\n"                                                                                           \
	"      if new - period > now then\n"                                                                                                        \
	"        local wait = new - period - now\n"                                                                                                 \
	"        if cost > limit then wait = period end\n"                                                                                          \
	"        local kind = KINDS[x]\n"                                                                                                           \
	"        if x > 4 then kind = 'model_' .. kind end\n"                                                                                       \
	"        no = string.format('RATE %s %d %d', kind, math.ceil(wait), limit)\n"                                                               \
	"        break\n"                                                                                                                           \
	"      end\n"                                                                                                                               \
	"      w[#w + 1] = f[4 + (j + 1) / 2]; w[#w + 1] = new\n"                                                                                   \
	"    end\n"                                                                                                                                 \
	"  end\n"                                                                                                                                   \
	"  if not no and (paid < 0 or amount > avail) then no = string.format('BALANCE %d', avail) end\n"                                           \
	"  if no or redis.call('HSETNX', k[3], hid, struct.pack('<i8i8', amount, tokens) .. model) == 0 then\n"                                     \
	"    local old = redis.call('HGET', k[3], hid)\n"                                                                                           \
	"    if old then\n"                                                                                                                         \
	"      local _, otok, pos = struct.unpack('<i8i8', old)\n"                                                                                  \
	"      if otok ~= tokens or string.sub(old, pos) ~= model then return 'CONFLICT' end\n"                                                     \
	"      return string.format('OK %d %d %d 1', struct.unpack('<i8', old), avail, math.floor((redis.call('ZSCORE', k[4], hid) or now) + 0))\n" \
	"    end\n"                                                                                                                                 \
	"    return no\n"                                                                                                                           \
	"  end\n"                                                                                                                                   \
	"  ttl = ttl + 0\n"                                                                                                                         \
	"  local exp = now + ttl\n"                                                                                                                 \
	"  local e = string.format('%d', exp)\n"                                                                                                    \
	"  redis.call('ZADD', k[4], e, hid)\n"                                                                                                      \
	"  local h, c = string.format('%d', held + amount), string.format('%d', cm + 1)\n"                                                          \
	"  local lx\n"                                                                                                                              \
	"  if not hx then\n"                                                                                                                        \
	"    lx = exp + 2 * ttl\n"                                                                                                                  \
	"    for i = 3, 4 do\n"                                                                                                                     \
	"      local pt = redis.call('PEXPIRETIME', k[i])\n"                                                                                        \
	"      if pt > lx then lx = pt end\n"                                                                                                       \
	"    end\n"                                                                                                                                 \
	"  elseif held == 0 or exp + ttl > hx then\n"                                                                                               \
	"    lx = math.max(exp + 2 * ttl, hx)\n"                                                                                                    \
	"  end\n"                                                                                                                                   \
	"  if lx then\n"                                                                                                                            \
	"    hx = lx\n"                                                                                                                             \
	"    lx = string.format('%d', lx)\n"                                                                                                        \
	"    redis.call('PEXPIREAT', k[3], lx)\n"                                                                                                   \
	"    redis.call('PEXPIREAT', k[4], lx)\n"                                                                                                   \
	"  end\n"                                                                                                                                   \
	"  if w then\n"                                                                                                                             \
	"    w[#w + 1] = 'held'; w[#w + 1] = h; w[#w + 1] = cf; w[#w + 1] = c\n"                                                                    \
	"    if not due or exp < due then w[#w + 1] = 'due'; w[#w + 1] = e end\n"                                                                   \
	"    if lx then w[#w + 1] = 'hx'; w[#w + 1] = lx end\n"                                                                                     \
	"    redis.call('HSET', k[2], unpack(w))\n"                                                                                                 \
	"  elseif lx then\n"                                                                                                                        \
	"    if not due or exp < due then\n"                                                                                                        \
	"      redis.call('HSET', k[2], 'held', h, cf, c, 'due', e, 'hx', lx)\n"                                                                    \
	"    else\n"                                                                                                                                \
	"      redis.call('HSET', k[2], 'held', h, cf, c, 'hx', lx)\n"                                                                              \
	"    end\n"                                                                                                                                 \
	"  elseif not due or exp < due then\n"                                                                                                      \
	"    redis.call('HSET', k[2], 'held', h, cf, c, 'due', e)\n"                                                                                \
	"  else\n"                                                                                                                                  \
	"    redis.call('HSET', k[2], 'held', h, cf, c)\n"                                                                                          \
	"  end\n"                                                                                                                                   \
	"  if rep then\n"                                                                                                                           \
	"    if not due or exp < due then due = exp end\n"                                                                                          \
	"    k[5], k[6], k[7], k[8], k[9] = model, held + amount, due, cm + 1, hx\n"                                                                \
	"  end\n"                                                                                                                                   \
	"  return 'OK ' .. amt .. ' ' .. string.format('%d', avail - amount) .. ' ' .. e .. ' 0'\n"                                                 \
	"end\n"

/* authorize: KEYS bal st hold hexp
 * ARGV 1 hold_id 2 amount 3 paid_only 4 ttl_ms 5 tokens 6 model
 *      7..11 account-wide rpm tpm rpd tpd concurrency (0 = none)
 *      12..16 per-model   rpm tpm rpd tpd concurrency
 *      with a locked load (authorize.c): 17 deadline (ms, Redis TIME) 18 paid 19 promo
 *      20 status 21 mirror ttl_ms 22 poff 23 qoff (ledger/reconcile.h: paid and promo
 *      saturated at 2^52, the excess beside them): stores the mirror first, then decides
 * -> one string, the tag and its integers (and the limit's name) separated by
 *    one space, read by authorize.c without a reply object per field:
 *    'OK amount available_after expires_ms existing(0/1)' | 'NOMIRROR' | 'FROZEN'
 *    | 'CONFLICT' (the request id holds a live hold of another model or token count)
 *    | 'BALANCE available' | 'RATE what retry_ms limit' | 'CONC what limit'
 *    | 'LATE' (a load that arrived after its deadline: nothing stored)
 * The common case reads st once (HMGET of held, due, the model's concurrency
 * and the GCRA state of the limits in force) and writes it once (HSET), and
 * writes the hold record with its replay check (HSETNX).
 * Past a locked load's deadline the loader may have let go of its row lock:
 * a charge may have committed since its read (LATE). */
static const char quota_lua_authorize[] =
	"local t = redis.call('TIME')\n"
	"local now = t[1] * 1000 + math.floor(t[2] / 1000)\n" MIRROR_LUA_LOAD QUOTA_LUA_RELEASE QUOTA_LUA_DECIDE
	"return decide(KEYS, ARGV, 0, now, t, ARGV[21] ~= nil, false, false, ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6])\n";

/* authorize, grouped (quota_authorize): the decisions of one loop turn that
 * go to one Redis connection, in one call: one TIME for all, each decision
 * in the order given, exactly as that many authorize calls in a row would
 * take them (each account's due sweep runs at its first decision; the later
 * ones find due in the future).
 * KEYS: bal st hold hexp of account 1, of account 2, ...
 * ARGV 1: the decisions, packed (struct.pack, little-endian), each
 *       QUOTA_AUTHORIZE_PACK: int16 j, the account's number (its keys are
 *       KEYS[4j-3..4j]), plus 64 when the call holds more than one decision
 *       of that account; then the authorize script's first six arguments:
 *       uint16 length and hold_id, uint8 length and amount (its decimal
 *       digits), one byte paid_only ('0'/'1'), int64 ttl_ms, int64 tokens,
 *       uint16 length and model.  That is the whole decision when no limit
 *       is in force (the authorize script's ARGV 7-16 all '0', the common
 *       case); else j is negated, the six are empty (zero lengths and
 *       numbers, paid_only '0') and the decision's 16 arguments (the
 *       authorize script's) are the next 16 of ARGV 2.. in order.  Each ARGV
 *       is a string Redis reads, makes an object of and pushes into Lua: one
 *       string for the whole group instead of 7 a decision, unpacked into
 *       locals (no table), ttl and tokens numbers without Lua's strtod
 *       (docs/benchmarks.md, authz9)
 * An account with more than one decision in the call gets a table k whose
 * k[5..11] carry what its last admitted decision left in st (the model,
 * held, due, that model's count, hx) and its mirror's paid and promo as first read in the call
 * (nothing in a group writes the mirror; a settle or load in a group
 * would have to clear them): the
 * next decision of the same account and model without limits reads
 * neither hash again (nothing else writes them during the call; the group
 * never loads a mirror).  k[5] is false before a decision changes
 * anything, so a decision that fails midway leaves nothing cached behind.
 * The others' k holds the four keys alone: a table store costs Lua about
 * 150-200 instructions, not worth it for an account seen once.
 * -> one string: the answers of the authorize script, one per decision in
 *    order, separated by '\n' (turnq_split reads it: one reply object a
 *    call instead of one a decision and the array); a decision Redis could
 *    not run (an error on its account's keys) answers '-' and that error
 *    (its newlines as spaces) alone, as it would have without grouping, and
 *    the others go on (what it wrote before the error stays, as for the
 *    one-account script).  No answer of the authorize script is empty,
 *    starts with '-' or holds a '\n'. */
#define QUOTA_AUTHORIZE_PACK "<hHc0Bc0c1i8i8Hc0"
static const char quota_lua_authorize_group[] =
	"local t = redis.call('TIME')\n"
	"local now = t[1] * 1000 + math.floor(t[2] / 1000)\n" MIRROR_LUA_LOAD QUOTA_LUA_RELEASE QUOTA_LUA_DECIDE
	"local d, out, ks, c = ARGV[1], {}, {}, 0\n"
	"local pos, n, p = 1, #ARGV[1], 1\n"
	"while pos <= n do\n"
	"  local j, hid, amt, po, ttl, tokens, model\n"
	"  j, hid, amt, po, ttl, tokens, model, pos = struct.unpack('" QUOTA_AUTHORIZE_PACK "', d, pos)\n"
	"  local nolim, o = j > 0, p\n"
	"  if not nolim then\n"
	"    j = -j\n"
	"    hid, amt, po, ttl, tokens, model = ARGV[p + 1], ARGV[p + 2], ARGV[p + 3], ARGV[p + 4], ARGV[p + 5], ARGV[p + 6]\n"
	"    p = p + 16\n"
	"  end\n"
	"  local rep = j > 64\n"
	"  local k = ks[j]\n"
	"  if not k then\n"
	"    if rep then\n"
	"      k = {KEYS[4 * j - 259], KEYS[4 * j - 258], KEYS[4 * j - 257], KEYS[4 * j - 256], false, 0, 0, 0, 0, false, 0}\n"
	"    else\n"
	"      k = {KEYS[4 * j - 3], KEYS[4 * j - 2], KEYS[4 * j - 1], KEYS[4 * j]}\n"
	"    end\n"
	"    ks[j] = k\n"
	"  end\n"
	"  local ok, r = pcall(decide, k, ARGV, o, now, t, false, nolim, rep, hid, amt, po, ttl, tokens, model)\n"
	"  if not ok then\n"
	"    if type(r) == 'table' and r.err then r = r.err else r = tostring(r) end\n"
	"    r = '-' .. (string.gsub(r, '\\n', ' '))\n"
	"    if r == '-' then r = '-ERR' end\n"
	"  end\n"
	"  c = c + 1\n"
	"  out[c] = r\n"
	"end\n"
	"return table.concat(out, '\\n')\n";

/* settle(k, a, o): one settle of the account whose keys are k (bal st
 * hold hexp), its arguments a[o+1..o+11] (the ARGV of the settle script
 * below) -> released (0/1).  QUOTA_LUA_HELD: held(k, now): the sum of the account's live
 * holds at now (ms): holds already due are left out, not released.  One
 * text for the one-record scripts and the grouped one, so a grouped settle
 * is exactly a settle. */
#define QUOTA_LUA_SETTLE                                                                                                                                                                   \
	"local function settle(k, a, o)\n"                                                                                                                                                 \
	"  local released = 0\n"                                                                                                                                                           \
	"  if a[o + 5] == '1' then\n"                                                                                                                                                      \
	"    if redis.call('HINCRBY', k[2], 'ver', 1) == 1 then redis.call('PEXPIRE', k[2], " MIRROR_ST_TTL_MS_STR                                                                         \
	") end\n"                                                                                                                                                                          \
	"    if redis.call('EXISTS', k[1]) == 1 then\n" /* the delta is right only for a mirror loaded before the commit: the                                       \
	 * writer read the load generation before COMMIT (ARGV 11) */                      \
	"      local g = redis.call('HGET', k[2], 'lgen') or '0'\n"                                                                                                                        \
	"      if a[o + 11] ~= '-1' and g == a[o + 11] then\n"                                                                                                                             \
	"        local p = redis.call('HINCRBY', k[1], 'paid', a[o + 2])\n"                                                                                                                \
	"        local q = redis.call('HINCRBY', k[1], 'promo', a[o + 3])\n" /* a balance saturated at 2^52 (excess in poff/qoff, ledger/reconcile.h)                                    \
	 * that charges took below 2^51: drop the mirror, the next call loads                                       \
	 * it again from the books, so the saturation never refuses a call the                                      \
	 * exact balance admits */ \
	"        if (p < 2251799813685248 and ((redis.call('HGET', k[1], 'poff') or '0') + 0) > 0)\n"                                                                                      \
	"           or (q < 2251799813685248 and ((redis.call('HGET', k[1], 'qoff') or '0') + 0) > 0) then\n"                                                                              \
	"          redis.call('DEL', k[1])\n"                                                                                                                                              \
	"        end\n" /* a load since: if the newest is a locked load (its lg is the current                                      \
	 * generation), it read the ledger after this COMMIT and holds the charge */                                                      \
	"      elseif a[o + 11] == '-1' or redis.call('HGET', k[1], 'lg') ~= g then\n"                                                                                                     \
	"        redis.call('DEL', k[1])\n"                                                                                                                                                \
	"      end\n"                                                                                                                                                                      \
	"    end\n"                                                                                                                                                                        \
	"  end\n"                                                                                                                                                                          \
	"  if a[o + 1] ~= '' then\n"                                                                                                                                                       \
	"    local est = release(k, a[o + 1])\n"                                                                                                                                           \
	"    if est then\n"                                                                                                                                                                \
	"      released = 1\n" /* a replay that still finds its hold: the first answer's settle was lost,                                  \
	 * so the mirror misses that charge: drop it, the ledger reloads it */                                               \
	"      if a[o + 5] ~= '1' then\n"                                                                                                                                                  \
	"        redis.call('HINCRBY', k[2], 'ver', 1); redis.call('DEL', k[1])\n"                                                                                                         \
	"        redis.call('PEXPIRE', k[2], " MIRROR_ST_TTL_MS_STR ", 'NX')\n"                                                                                                            \
	"      end\n"                                                                                                                                                                      \
	"      local delta = a[o + 4] + 0 - est\n"                                                                                                                                         \
	"      local function fix(scope, kind, limit, period)\n"                                                                                                                           \
	"        if limit <= 0 or delta == 0 then return end\n"                                                                                                                            \
	"        local f = 'r:' .. scope .. ':' .. kind\n"                                                                                                                                 \
	"        local tat = redis.call('HGET', k[2], f)\n"                                                                                                                                \
	"        if not tat then return end\n"                                                                                                                                             \
	"        tat = tat + delta * period / limit\n"                                                                                                                                     \
	"        redis.call('HSET', k[2], f, tat)\n" /* st lives at least as long as the time it holds (a tat in the past                                       \
	 * means none): a call far beyond its estimate pushes it days ahead */                          \
	"        if delta > 0 then redis.call('PEXPIREAT', k[2], string.format('%d', math.ceil(tat)), 'GT') end\n"                                                                         \
	"      end\n"                                                                                                                                                                      \
	"      fix('*', 'tpm', a[o + 7] + 0, 60000)\n"                                                                                                                                     \
	"      fix('*', 'tpd', a[o + 8] + 0, 86400000)\n"                                                                                                                                  \
	"      fix(a[o + 6], 'tpm', a[o + 9] + 0, 60000)\n"                                                                                                                                \
	"      fix(a[o + 6], 'tpd', a[o + 10] + 0, 86400000)\n"                                                                                                                            \
	"    end\n"                                                                                                                                                                        \
	"  end\n"                                                                                                                                                                          \
	"  return released\n"                                                                                                                                                              \
	"end\n"
#define QUOTA_LUA_HELD                                                                      \
	"local function held(k, now)\n"                                                     \
	"  local s = redis.call('HMGET', k[2], 'held', 'due')\n"                            \
	"  local h = ((s[1] or '0') + 0)\n"                                                 \
	"  if s[2] and s[2] + 0 > now then return h end\n"                                  \
	"  local due = redis.call('ZRANGEBYSCORE', k[4], '-inf', now)\n"                    \
	"  if #due == 0 and h ~= 0 and redis.call('EXISTS', k[4]) == 0 then return 0 end\n" \
	"  for _, x in ipairs(due) do\n"                                                    \
	"    local v = redis.call('HGET', k[3], x)\n"                                       \
	"    if v then h = h - struct.unpack('<i8', v) end\n"                               \
	"  end\n"                                                                           \
	"  return h\n"                                                                      \
	"end\n"

/* settle: KEYS bal st hold hexp
 * ARGV 1 hold_id ('' none) 2 d_paid 3 d_promo 4 actual_tokens 5 apply_delta(0/1) 6 model
 *      7 account tpm 8 account tpd 9 model tpm 10 model tpd
 *      11 load generation the writer saw before COMMIT (-1 unknown)
 * Releases the hold if it is still there (twice changes nothing), applies the
 * committed charge to the mirror, corrects TPM/TPD by actual - estimate. -> released (0/1) */
static const char quota_lua_settle[] = QUOTA_LUA_RELEASE QUOTA_LUA_SETTLE "return settle(KEYS, ARGV, 0)\n";

/* held: KEYS bal st hold hexp -> the sum of live holds (nanos).  Read only:
 * holds already due are left out, not released. */
static const char quota_lua_held[] =
	"local t = redis.call('TIME')\n"
	"local now = t[1] * 1000 + math.floor(t[2] / 1000)\n" QUOTA_LUA_HELD "return held(KEYS, now)\n";

/* settle and held, grouped (quota_settles): the usage answers of one loop
 * turn that go to one Redis connection, in one call: one TIME for all, each
 * entry in the order given, exactly as a settle script call followed by a
 * held script call (or only one of them) per entry would take them.
 * KEYS: bal st hold hexp of account 1, of account 2, ...
 * ARGV: per entry 13 values: the account's number j (its keys are
 *       KEYS[4j-3..4j]), what to run ('s' settle, 'h' held, 'sh' both, in
 *       that order) and the 11 arguments of the settle script ('' when 'h')
 * -> per entry, in order: the held amount when 'h' is asked, else released
 *    (0/1); an entry Redis could not run answers that error alone and the
 *    others go on (what it wrote before the error stays, as for the
 *    one-account scripts). */
static const char quota_lua_settle_group[] =
	"local t = redis.call('TIME')\n"
	"local now = t[1] * 1000 + math.floor(t[2] / 1000)\n" QUOTA_LUA_RELEASE QUOTA_LUA_SETTLE QUOTA_LUA_HELD
	"local function entry(k, m, o)\n"
	"  local r = 0\n"
	"  if m ~= 'h' then r = settle(k, ARGV, o) end\n"
	"  if m ~= 's' then r = held(k, now) end\n"
	"  return r\n"
	"end\n"
	"local out, ks, p = {}, {}, 1\n"
	"while p + 12 <= #ARGV do\n"
	"  local j = ARGV[p] + 0\n"
	"  local k = ks[j]\n"
	"  if not k then k = {KEYS[4 * j - 3], KEYS[4 * j - 2], KEYS[4 * j - 1], KEYS[4 * j]}; ks[j] = k end\n"
	"  local ok, r = pcall(entry, k, ARGV[p + 1], p + 1)\n"
	"  if not ok then r = type(r) == 'table' and r.err and r or redis.error_reply(tostring(r)) end\n"
	"  out[#out + 1] = r\n"
	"  p = p + 13\n"
	"end\n"
	"return out\n";

/* invalidate: KEYS bal st hold hexp -> drops the mirror, bumps the version */
static const char quota_lua_invalidate[] = "if redis.call('HINCRBY', KEYS[2], 'ver', 1) == 1 then\n"
					   "  redis.call('PEXPIRE', KEYS[2], " MIRROR_ST_TTL_MS_STR ")\n"
					   "end\n"
					   "redis.call('DEL', KEYS[1])\n"
					   "return 1\n";

#endif
