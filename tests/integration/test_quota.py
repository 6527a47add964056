"""/v1/authorize against real Redis: no overdraft under concurrency,
GCRA rate limits, concurrency, hold expiry, mirror rebuilt after Redis loses
its data, CLI changes visible within a second."""
import concurrent.futures as cf
import json
import os
import subprocess
import time

import pytest
import requests

from conftest import ADMIN_TOKEN, Billingd, GATEWAY_TOKEN, UNIT, now_rfc3339, set_price, wait_gone


@pytest.fixture(scope="module")
def bd(env):
    # one unit per 1M input tokens, nothing for output: easy arithmetic
    set_price(env, "q-model", UNIT, UNIT, 0, effective="2026-01-01T00:00:00Z")
    set_price(env, "q-paid", UNIT, UNIT, 0, effective="2026-01-01T00:00:00Z", paid_only=True)
    set_price(env, "q-other", UNIT, UNIT, 0, effective="2026-01-01T00:00:00Z")
    b = Billingd(env, {"hold_ttl_seconds": "2"})
    # prices are refreshed every second
    time.sleep(1.2)
    yield b
    b.stop()


def new_account(env, name):
    return json.loads(env.admin("account", "create", "--external-id", name, "--json").stdout)["account_id"]


def authorize(bd, acct, rid, units=1, model="q-model", session=None):
    body = {"request_id": rid, "account_id": acct, "model": model, "input_tokens": units * 1_000_000,
            "max_output_tokens": 0}
    s = session or requests
    return s.post(bd.url + "/v1/authorize", json=body, headers=bd.h(), timeout=30)


def usage(bd, acct, rid, units=1, hold=None, model="q-model", started_at=None):
    body = {"request_id": rid, "account_id": acct, "model": model, "input_tokens": units * 1_000_000,
            "cached_input_tokens": 0, "output_tokens": 0, "started_at": started_at or now_rfc3339()}
    if hold:
        body["hold_id"] = hold
    return bd.post("/v1/usage", body)


def set_limits(env, account=None, tier=None, model="", **kw):
    cols = ["rpm", "tpm", "rpd", "tpd", "concurrency"]
    env.sql("INSERT INTO limits (tier, account_id, model, rpm, tpm, rpd, tpd, concurrency, actor)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 'test')",
            (tier, account, model, *[kw.get(c) for c in cols]))
    time.sleep(1.2)  # billingd reloads limits within a second


def test_overdraft_race_exactly_n_allowed(env, bd):
    acct = new_account(env, "race-1")  # 14 units of signup credit: covers exactly 14 calls of 1 unit
    n = 14
    with cf.ThreadPoolExecutor(max_workers=50) as ex:
        sessions = [requests.Session() for _ in range(50)]
        futs = [ex.submit(authorize, bd, acct, f"race-{i}", 1, "q-model", sessions[i % 50]) for i in range(50 * n)]
        res = [f.result() for f in futs]
    ok = [r for r in res if r.status_code == 200]
    assert len(ok) == n, [r.status_code for r in res][:20]
    assert all(r.status_code == 402 and r.json()["error"]["code"] == "insufficient_balance"
               for r in res if r.status_code != 200)
    # settle every allowed call with its actual usage
    for r in ok:
        h = r.json()["hold_id"]
        assert usage(bd, acct, "use-" + h, 1, hold=h).status_code == 200
    a = bd.get(f"/v1/accounts/{acct}").json()
    assert a["balance"]["paid_nanos"] == 0 and a["balance"]["promo_nanos"] == 0
    # and now nothing is left
    assert authorize(bd, acct, "race-after").status_code == 402
    env.assert_books_sound()


def test_rpm_burst_admits_the_limit(env, bd):
    acct = new_account(env, "rpm-1")
    set_limits(env, account=acct, rpm=10)
    codes, ras = [], []
    for i in range(30):
        r = authorize(bd, acct, f"rpm-{i}", units=0)
        codes.append(r.status_code)
        if r.status_code == 429:
            ras.append((int(r.headers["Retry-After"]), r.json()["error"]))
    assert 9 <= codes.count(200) <= 11, codes
    assert codes.count(429) == 30 - codes.count(200)
    # GCRA: one request every 6 s once the burst is spent
    ra, err = ras[0]
    assert err["code"] == "rate_limited" and err["limit"] == 10 and err["limit_type"] == "rpm"
    assert 1 <= ra <= 7 and 0 < err["retry_after_ms"] <= 6000


def test_tpm_per_model_and_correction(env, bd):
    acct = new_account(env, "tpm-1")
    # 10M tokens per minute for q-model only; each call estimates 1M
    set_limits(env, account=acct, model="q-model", tpm=10_000_000)
    codes = [authorize(bd, acct, f"tpm-{i}", units=1).status_code for i in range(14)]
    # 14 units of credit would allow 14; the model's TPM allows 10
    assert 9 <= codes.count(200) <= 11, codes
    r = authorize(bd, acct, "tpm-x")
    assert r.status_code == 429 and r.json()["error"]["limit_type"] == "model_tpm"
    # other models are not limited by it
    r = authorize(bd, acct, "tpm-other", model="q-other", units=1)
    assert r.status_code == 200, r.text


def test_the_state_hash_outlives_a_rate_time_a_settle_pushed_days_ahead(env, bd):
    """TPD is corrected at settle by actual minus estimated tokens: a call
    that used far more than its estimate pushes the account's GCRA time
    more than a day ahead.  The state hash that holds it must live at least
    until then (docs/billingd.md: st outlives every GCRA window): expiring
    2 days after the last load, it would forget the limit while GCRA still
    refuses, and the account would be admitted again early."""
    acct = new_account(env, "tpd-ahead")
    set_limits(env, account=acct, tpd=2_000_000)  # tokens per day
    st = f"{{a:{acct}}}:st"
    r = authorize(bd, acct, "tpd-ahead-1", units=1)  # estimated 1M tokens: half a day of the limit
    assert r.status_code == 200, r.text
    r = usage(bd, acct, "tpd-ahead-1", units=9, hold="tpd-ahead-1")  # 8M more than estimated: 4 days more
    assert r.status_code == 200, r.text
    tat = float(_redis(env, "HGET", st, "r:*:tpd"))
    now_ms = int(_redis(env, "TIME").split()[0]) * 1000
    assert tat > now_ms + 4 * 86_400_000, (tat, now_ms)
    assert int(_redis(env, "PEXPIRETIME", st)) >= tat, (_redis(env, "PEXPIRETIME", st), tat)
    r = authorize(bd, acct, "tpd-ahead-2", units=1)
    assert r.status_code == 429 and r.json()["error"]["limit_type"] == "tpd", r.text
    # a load of the mirror (every 5 minutes at most) does not shorten it again
    lgen = int(_redis(env, "HGET", st, "lgen"))
    _redis(env, "DEL", f"{{a:{acct}}}:bal")
    r = authorize(bd, acct, "tpd-ahead-3", units=1)
    assert r.status_code == 429 and r.json()["error"]["limit_type"] == "tpd", r.text
    assert int(_redis(env, "HGET", st, "lgen")) > lgen  # the mirror was loaded
    assert int(_redis(env, "PEXPIRETIME", st)) >= tat, (_redis(env, "PEXPIRETIME", st), tat)


def test_concurrency_and_expired_hold_gives_back(env, bd):
    acct = new_account(env, "conc-1")
    set_limits(env, account=acct, concurrency=3)
    codes = [authorize(bd, acct, f"c-{i}", units=1).status_code for i in range(9)]
    assert codes.count(200) == 3 and codes.count(429) == 6, codes
    r = authorize(bd, acct, "c-late")
    assert r.json()["error"]["limit_type"] == "concurrency"
    # holds expire after 2 s (hold_ttl_seconds): slots and balance come back
    time.sleep(2.3)
    r = authorize(bd, acct, "c-after", units=1)
    assert r.status_code == 200, r.text
    assert r.json()["available_nanos"] == 14 * UNIT - 1 * UNIT


def test_expired_hold_returns_balance_and_double_settle_changes_nothing(env, bd):
    acct = new_account(env, "exp-1")
    r = authorize(bd, acct, "big", units=14)
    assert r.status_code == 200 and r.json()["available_nanos"] == 0
    assert authorize(bd, acct, "big-2", units=1).status_code == 402
    time.sleep(2.3)
    r = authorize(bd, acct, "big-3", units=14)
    assert r.status_code == 200, r.text
    hold = r.json()["hold_id"]
    t1 = now_rfc3339()
    u1 = usage(bd, acct, "settle-1", 2, hold=hold, started_at=t1)
    assert u1.status_code == 200
    # the hold is gone: 14 - 2 available
    r = authorize(bd, acct, "probe", units=12)
    assert r.status_code == 200 and r.json()["available_nanos"] == 0
    # settling the same hold again (a new record) charges that record but releases nothing twice
    u2 = usage(bd, acct, "settle-2", 1, hold=hold)
    assert u2.status_code == 200
    r = authorize(bd, acct, "probe-2", units=1)
    assert r.status_code == 402  # 14 - 2 - 1 = 11 left, 12 held by probe
    # a replay of the first settle changes nothing
    u1b = usage(bd, acct, "settle-1", 2, hold=hold, started_at=t1)
    assert u1b.json()["duplicate"] is True
    a = bd.get(f"/v1/accounts/{acct}").json()["balance"]
    assert a["promo_nanos"] == 11 * UNIT


def _redis(env, *args):
    return env.redis_cli(*args)


def test_flushall_rebuilds_mirror_from_ledger(env, bd):
    poor = new_account(env, "flush-poor")
    rich = new_account(env, "flush-rich")
    # poor spends its promotional credit: zero left
    assert usage(bd, poor, "poor-spend", 14).status_code == 200
    assert authorize(bd, poor, "p-1").status_code == 402
    assert authorize(bd, rich, "r-1", units=4).status_code == 200
    stop = time.time() + 3
    decisions = []

    def hammer():
        s = requests.Session()
        i = 0
        while time.time() < stop:
            i += 1
            r = authorize(bd, poor, f"p-h-{i}-{time.time()}", session=s)
            decisions.append(r.status_code)

    with cf.ThreadPoolExecutor(4) as ex:
        futs = [ex.submit(hammer) for _ in range(4)]
        time.sleep(0.5)
        env.redis_flushall()
        for f in futs:
            f.result()
    # never admitted: the mirror is rebuilt from the ledger, never assumed
    assert 200 not in decisions and decisions.count(402) > 10, set(decisions)
    # correct again within 2 s for the rich account: its 4-unit hold is gone with the flush
    deadline = time.time() + 2
    while True:
        r = authorize(bd, rich, f"r-after-{time.time()}", units=1)
        if r.status_code == 200:
            break
        assert time.time() < deadline, r.text
    assert r.json()["available_nanos"] == 13 * UNIT
    mirror = _redis(env, "HGET", f"{{a:{rich}}}:bal", "promo")
    assert int(mirror) == env.one("""SELECT sum(b.balance) FROM ledger_balances b JOIN ledger_accounts la
                                     USING (ledger_account_id) WHERE la.account_id = %s AND la.type = 'customer_promo'""",
                                  (rich,))


def _restart_cluster_master(env, bd, acct):
    """In a cluster: the master of the account's slot stops and comes back
    (empty, with its slots); the others are not involved."""
    c = env.cluster
    node = c.owner(c.keyslot(f"{{a:{acct}}}:bal"))
    c.kill(node, 15)
    r = authorize(bd, acct, "rs-down")
    assert r.status_code == 503 and "Retry-After" in r.headers
    c.start_node(node)


def test_redis_restart_recovers(env, bd):
    acct = new_account(env, "restart-1")
    assert authorize(bd, acct, "rs-1").status_code == 200
    if env.cluster:
        _restart_cluster_master(env, bd, acct)
    else:
        _restart_single_redis(env, bd, acct)
    deadline = time.time() + 8
    while True:
        r = authorize(bd, acct, f"rs-after-{time.time()}")
        if r.status_code == 200:
            break
        assert time.time() < deadline, r.text
        time.sleep(0.1)
    # the hold taken before the restart is gone with Redis; the ledger balance is intact
    assert r.json()["available_nanos"] == 13 * UNIT


def _restart_single_redis(env, bd, acct):
    pidfile = os.path.join(env.stack.dir, "redis.pid")
    pid = int(open(pidfile).read())
    os.kill(pid, 15)
    wait_gone(pid, 5.0)
    # fail closed while it is down
    r = authorize(bd, acct, "rs-down")
    assert r.status_code == 503 and "Retry-After" in r.headers
    subprocess.run(["redis-server", "--bind", "127.0.0.1", "--port", str(env.stack.redis_port), "--save", "",
                    "--appendonly", "no", "--dir", os.path.join(env.stack.dir, "redis"), "--daemonize", "yes",
                    "--pidfile", pidfile, "--logfile", os.path.join(env.stack.dir, "redis", "redis.log")],
                   check=True)


def test_cli_grant_reaches_authorize_within_a_second(env, bd):
    acct = new_account(env, "cli-grant")
    assert usage(bd, acct, "cli-spend", 14).status_code == 200
    assert authorize(bd, acct, "cg-0").status_code == 402
    env.admin("grant", "--account", acct, "--amount", "3", "--reason", "support")
    t0 = time.time()
    while True:
        r = authorize(bd, acct, f"cg-{time.time()}")
        if r.status_code == 200:
            break
        assert time.time() - t0 < 1.0, r.text
        time.sleep(0.02)
    # a CLI freeze is seen within a second too
    env.admin("account", "freeze", acct, "--reason", "test")
    t0 = time.time()
    while True:
        r = authorize(bd, acct, f"cf-{time.time()}")
        if r.status_code == 403:
            assert r.json()["error"]["code"] == "account_frozen"
            break
        assert time.time() - t0 < 1.0, r.text
        time.sleep(0.02)


def test_a_topup_or_grant_is_in_the_next_decision_once_answered(env, bd):
    """A top-up (gateway) or an admin grant drops the account's mirror before
    it is answered: an authorize sent right after the answer sees the new
    balance, with no wait for the NOTIFY.  20 rounds at a balance of zero."""
    acct = new_account(env, "topup-now")
    assert usage(bd, acct, "tn-spend", 14).status_code == 200
    assert authorize(bd, acct, "tn-0").status_code == 402  # mirror loaded at 0
    with requests.Session() as sess:
        for i in range(20):
            if i % 2 == 0:
                r = bd.post("/v1/topups", {"account_id": acct, "amount_nanos": UNIT, "payment_ref": f"tn-pay-{i}"})
            else:
                r = bd.post("/v1/admin/grants", {"account_id": acct, "amount_nanos": UNIT, "reason": "support", "operator": "test",
                                                 "idempotency_key": f"tn-grant-{i}"}, token=ADMIN_TOKEN)
            assert r.status_code == 201, r.text
            a = authorize(bd, acct, f"tn-a-{i}", session=sess)
            assert a.status_code == 200, f"round {i}: the credit answered a moment ago is not seen: {a.text}"
            u = usage(bd, acct, f"tn-a-{i}", 1, hold=f"tn-a-{i}")
            assert u.status_code == 200 and u.json()["balance"]["available_nanos"] == 0, u.text


def test_api_key_principal_and_revocation(env, bd):
    acct = new_account(env, "key-auth")
    key = json.loads(env.admin("key", "create", "--account", acct, "--json").stdout)
    body = {"request_id": "k-1", "api_key": key["api_key"], "model": "q-model", "input_tokens": 1_000_000,
            "max_output_tokens": 0}
    r = bd.post("/v1/authorize", body)
    assert r.status_code == 200 and r.json()["account_id"] == acct
    env.admin("key", "revoke", key["key_id"])
    t0 = time.time()
    while True:
        body["request_id"] = f"k-{time.time()}"
        r = bd.post("/v1/authorize", body)
        if r.status_code == 403:
            assert r.json()["error"]["code"] == "forbidden"
            break
        assert time.time() - t0 < 1.5, r.text
        time.sleep(0.05)
    bad = dict(body, api_key="sk-nope")
    r = bd.post("/v1/authorize", bad)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_paid_only_model_ignores_promotional_credit(env, bd):
    acct = new_account(env, "paid-only")
    r = authorize(bd, acct, "po-1", model="q-paid")
    assert r.status_code == 402
    env.admin("topup", "--account", acct, "--amount", "2", "--payment-ref", f"po-{acct}")
    t0 = time.time()
    while authorize(bd, acct, f"po-{time.time()}", model="q-paid").status_code != 200:
        assert time.time() - t0 < 1.5
        time.sleep(0.05)
    u = usage(bd, acct, "po-use", 1, model="q-paid")
    assert [c["bucket"] for c in u.json()["charged"]] == ["paid"]
    assert u.json()["balance"]["promo_nanos"] == 14 * UNIT


def _mirror(env, acct):
    """What a mirror load writes (common/mirror_lua.h): the balance hash and its
    lifetime, held/lgen/ver of the state hash."""
    bal = env.redis_cli("HMGET", f"{{a:{acct}}}:bal", "paid", "promo", "status", "poff", "qoff", "lg").split("\n")
    st = env.redis_cli("HMGET", f"{{a:{acct}}}:st", "held", "lgen", "ver").split("\n")
    pttl = int(env.redis_cli("PTTL", f"{{a:{acct}}}:bal"))
    return dict(zip(("paid", "promo", "status", "poff", "qoff", "lg"), bal)), \
        dict(zip(("held", "lgen", "ver"), (int(v) for v in st))), pttl


def test_reconcile_repair_leaves_what_a_load_of_billingd_leaves(env, bd):
    acct = new_account(env, "repair-like-load")
    r = authorize(bd, acct, "rl-1", units=2)  # no mirror yet: billingd loads it, then holds 2 units
    assert r.status_code == 200, r.text
    bal, st, pttl = _mirror(env, acct)
    assert bal["status"] == "active" and int(bal["promo"]) == 14 * UNIT and bal["lg"] == str(st["lgen"])
    assert st["held"] == 2 * UNIT and 0 < pttl <= 300000
    # drift a load heals: a wrong paid balance, a wrong held amount, no lifetime
    env.redis_cli("HSET", f"{{a:{acct}}}:bal", "paid", "123")
    env.redis_cli("HSET", f"{{a:{acct}}}:st", "held", "999")
    env.redis_cli("PERSIST", f"{{a:{acct}}}:bal")
    p = env.ledger("reconcile", "--repair", "--settle-ms", "0", "--json", check=False)
    assert p.returncode == 0, p.stdout + p.stderr  # found and repaired
    rep = json.loads(p.stdout)
    assert [d["repair"] for d in rep["diffs"] if d["account_id"] == acct] == ["repaired"], rep
    bal2, st2, pttl2 = _mirror(env, acct)
    # the same balance fields, a new load generation, held recomputed from
    # the hold records, a lifetime, the version bumped; only the mark of a
    # locked load differs: a repair holds no row lock, so a settle prepared
    # before it drops the mirror rather than trusting it
    assert {k: v for k, v in bal2.items() if k != "lg"} == {k: v for k, v in bal.items() if k != "lg"}
    assert st2["lgen"] == st["lgen"] + 1 and bal2["lg"] == "-"
    assert st2["held"] == 2 * UNIT
    assert st2["ver"] == st["ver"] + 1
    assert 0 < pttl2 <= 300000
    # and billingd decides on it as on its own load
    r = authorize(bd, acct, "rl-2", units=1)
    assert r.status_code == 200 and r.json()["available_nanos"] == 11 * UNIT, r.text


def test_mirror_does_not_outlive_an_expiring_grant_beyond_the_first_64(env, bd):
    """The mirror's lifetime ends at the first expiry of a grant with credit
    left, whichever grant it is: also when that grant comes after the first
    64 grants in burn-down order (the grants an account view lists).  Else
    the mirror keeps counting credit that has expired, and authorize admits
    calls that the balance no longer covers."""
    acct = new_account(env, "mirror-65")  # 14 units of signup credit
    for i in range(64):  # burn first: priority 0, never expire
        r = bd.post("/v1/admin/grants", {"account_id": acct, "amount_nanos": 1, "reason": "crumb",
                                         "operator": "test", "priority": 0}, token=ADMIN_TOKEN)
        assert r.status_code == 201, r.text
    r = bd.post("/v1/admin/grants", {"account_id": acct, "amount_nanos": 5 * UNIT, "reason": "short trial",
                                     "operator": "test", "priority": 1000000, "expires_at": now_rfc3339(5)},
                token=ADMIN_TOKEN)
    assert r.status_code == 201, r.text
    expires = r.json()["expires_at"]
    # loads the mirror while the 5 units are spendable: 19 units and 64 nanos
    r = authorize(bd, acct, "m65-load", units=1)
    assert r.status_code == 200 and r.json()["available_nanos"] == 18 * UNIT + 64, r.text
    while now_rfc3339() <= expires:
        time.sleep(0.1)
    time.sleep(0.2)
    # 14 units and 64 nanos are left, one of them held (or its hold expired):
    # 16 units must not be admitted
    r = authorize(bd, acct, "m65-after", units=16)
    assert r.status_code == 402, r.text


def _calls(port):
    """Calls per command since the Redis at port started (INFO commandstats)."""
    out = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), "INFO", "commandstats"],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    calls = {}
    for line in out.splitlines():
        if line.startswith("cmdstat_"):
            name, rest = line[len("cmdstat_"):].split(":", 1)
            calls[name] = int(rest.split(",")[0].split("=")[1])
    return calls


def test_an_admitted_authorize_runs_six_redis_commands(env, bd):
    """The common decision (mirror loaded, no limits, no hold due, a new
    request id): TIME, HMGET st, HMGET bal, HSETNX hold (the replay check and
    the record in one), ZADD hexp, HSET st, and nothing else that touches
    the account."""
    acct = new_account(env, "six-commands")
    assert authorize(bd, acct, "six-0").status_code == 200  # loads the mirror
    port = env.redis_port_for(f"{{a:{acct}}}:bal")
    for i in range(1, 4):
        before = _calls(port)
        r = authorize(bd, acct, f"six-{i}")
        after = _calls(port)
        assert r.status_code == 200 and r.json()["available_nanos"] == (13 - i) * UNIT, r.text
        # the NOTIFY of the account's creation may drop the mirror (DEL) in
        # this window, and the decision then loads it again: measure anew
        if after.get("del", 0) == before.get("del", 0):
            break
    ran = {c: after.get(c, 0) - before.get(c, 0)
           for c in ("time", "hmget", "hget", "hsetnx", "hset", "zadd", "zcard", "hincrby", "zrangebyscore", "del")}
    assert ran == {"time": 1, "hmget": 2, "hget": 0, "hsetnx": 1, "hset": 1, "zadd": 1, "zcard": 0,
                   "hincrby": 0, "zrangebyscore": 0, "del": 0}, ran


def test_a_refused_authorize_stores_no_hold(env, bd):
    acct = new_account(env, "refused-no-hold")

    def stored(rid):
        return (env.redis_cli("HEXISTS", f"{{a:{acct}}}:hold", rid),
                env.redis_cli("ZSCORE", f"{{a:{acct}}}:hexp", rid))

    # refused by the decision of a locked load (no mirror yet), then by a plain one
    assert authorize(bd, acct, "rn-big", units=15).status_code == 402
    assert stored("rn-big") == ("0", "")
    assert authorize(bd, acct, "rn-big", units=15).status_code == 402
    assert stored("rn-big") == ("0", "")
    # the same id within the balance: a new hold, not a replay of the refusal
    r = authorize(bd, acct, "rn-big", units=14)
    assert r.status_code == 200 and r.json()["available_nanos"] == 0, r.text
    assert stored("rn-big")[0] == "1"
    # its replay answers the same hold, even though nothing is left now
    r2 = authorize(bd, acct, "rn-big", units=14)
    assert r2.status_code == 200 and r2.json()["hold_id"] == r.json()["hold_id"], r2.text
    assert r2.json()["expires_at"] == r.json()["expires_at"] and r2.json()["held_nanos"] == 14 * UNIT
    assert authorize(bd, acct, "rn-more", units=1).status_code == 402
    assert stored("rn-more") == ("0", "")
    # a concurrency refusal stores nothing either
    other = new_account(env, "refused-conc")
    set_limits(env, account=other, concurrency=1)
    assert authorize(bd, other, "rc-1").status_code == 200
    r = authorize(bd, other, "rc-2")
    assert r.status_code == 429 and r.json()["error"]["limit_type"] == "concurrency", r.text
    assert env.redis_cli("HEXISTS", f"{{a:{other}}}:hold", "rc-2") == "0"
    assert env.redis_cli("HLEN", f"{{a:{other}}}:hold") == "1"


def test_the_same_request_id_for_another_call_is_a_conflict_not_the_first_hold(env, bd):
    """A replay of an authorize answers its first hold.  Another call under
    the same request_id (5 units where 1 was held, or another model) was
    answered 200 with the first 1-unit hold too, so the gateway ran a call
    that no hold covered: the balance could go 4 units into arrears
    (review A).  Now 409 idempotency_conflict while the first hold lives;
    the replay itself still answers the first hold, refused or not."""
    acct = new_account(env, "replay-conflict")
    first = authorize(bd, acct, "rc-same", units=1)
    assert first.status_code == 200 and first.json()["held_nanos"] == UNIT, first.text
    for units, model in ((5, "q-model"), (1, "q-other"), (20, "q-model")):
        r = authorize(bd, acct, "rc-same", units=units, model=model)
        assert r.status_code == 409 and r.json()["error"]["code"] == "idempotency_conflict", (units, model, r.text)
    r = authorize(bd, acct, "rc-same", units=1)
    assert r.status_code == 200 and r.json()["held_nanos"] == UNIT
    assert r.json()["expires_at"] == first.json()["expires_at"]
    assert bd.get(f"/v1/accounts/{acct}").json()["balance"]["held_nanos"] == UNIT
    # once its hold is settled the id is free for a new decision, as before
    assert usage(bd, acct, "rc-same", 1, hold="rc-same").status_code == 200
    r = authorize(bd, acct, "rc-same", units=5)
    assert r.status_code == 200 and r.json()["held_nanos"] == 5 * UNIT, r.text
