"""billingd against a three-master Redis Cluster (make
integration-cluster): accounts spread over the masters with every key of an
account in its slot; a master killed (SIGKILL) and restarted under load; an
account's slot migrated between masters under load (ASK, MOVED).  The quota,
usage and stream suites run against the same cluster too."""
import json
import signal
import threading
import time

import pytest
import requests

from conftest import Billingd, CLUSTER, UNIT, now_rfc3339, set_price

pytestmark = pytest.mark.skipif(not CLUSTER, reason="needs BILLING_IT_REDIS=cluster (make integration-cluster)")

SMALL_TOKENS = 1000          # at 1 unit per 1M input tokens: 0.001 unit
SMALL = 1_000_000            # nanos of one such call
KEYS = ("bal", "st", "hold", "hexp")  # common/rkeys.h


@pytest.fixture(scope="module")
def bd(env):
    set_price(env, "c-model", UNIT, UNIT, 0, effective="2026-01-01T00:00:00Z")
    b = Billingd(env)
    time.sleep(1.2)  # prices are refreshed every second
    yield b
    b.stop()


def new_account(env, name):
    return json.loads(env.admin("account", "create", "--external-id", name, "--json").stdout)["account_id"]


def slot_of(env, acct):
    return env.cluster.keyslot(f"{{a:{acct}}}:bal")


def master_of(env, acct):
    return env.cluster.owner(slot_of(env, acct))


def accounts_on(env, prefix, want):
    """Creates accounts until want = {master: count} is met; {master: [ids]}."""
    got = {m: [] for m in want}
    for i in range(200):
        if all(len(got[m]) >= n for m, n in want.items()):
            return got
        a = new_account(env, f"{prefix}-{i}")
        m = master_of(env, a)
        if m in got and len(got[m]) < want[m]:
            got[m].append(a)
    raise AssertionError(f"could not place accounts: {got}")


def authorize(bd, acct, rid, tokens=SMALL_TOKENS, session=None):
    body = {"request_id": rid, "account_id": acct, "model": "c-model", "input_tokens": tokens,
            "max_output_tokens": 0}
    return (session or requests).post(bd.url + "/v1/authorize", json=body, headers=bd.h(), timeout=30)


def usage(bd, acct, rid, hold=None, tokens=SMALL_TOKENS, session=None):
    body = {"request_id": rid, "account_id": acct, "model": "c-model", "input_tokens": tokens,
            "cached_input_tokens": 0, "output_tokens": 0, "started_at": now_rfc3339()}
    if hold:
        body["hold_id"] = hold
    return (session or requests).post(bd.url + "/v1/usage", json=body, headers=bd.h(), timeout=30)


def balance(bd, acct):
    return bd.get(f"/v1/accounts/{acct}").json()["balance"]


def reconcile(env):
    p = env.ledger("reconcile", "--settle-ms", "1500", "--json", check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    return json.loads(p.stdout)


class Load:
    """One thread per account: authorize a small call, settle it with its
    usage (hold_id), again, until stopped.  Records (time, authorize status,
    usage status or None)."""

    def __init__(self, bd, accounts, tag, settle=True):
        self.bd, self.stop_at, self.tag, self.settle = bd, None, tag, settle
        self.events = {a: [] for a in accounts}
        self.threads = [threading.Thread(target=self.run, args=(a,), daemon=True) for a in accounts]
        self._stop = threading.Event()
        for t in self.threads:
            t.start()

    def run(self, acct):
        s = requests.Session()
        i = 0
        while not self._stop.is_set():
            i += 1
            rid = f"{self.tag}-{acct}-{i}"
            t = time.time()
            r = authorize(self.bd, acct, rid, session=s)
            u = None
            if r.status_code == 200 and self.settle:
                u = usage(self.bd, acct, "u-" + rid, hold=r.json()["hold_id"], session=s).status_code
            self.events[acct].append((t, r.status_code, u, r.headers.get("Retry-After")))
            time.sleep(0.01)  # bounded load: others share these 2 cores

    def stop(self):
        self._stop.set()
        for t in self.threads:
            t.join(timeout=60)


def test_accounts_spread_over_the_masters(env, bd):
    assert "redis: a cluster" in bd.logs()
    placed = accounts_on(env, "spread", {1: 1, 2: 1, 3: 1})
    for m, (acct,) in placed.items():
        r = authorize(bd, acct, f"spread-{acct}")
        assert r.status_code == 200, r.text
        assert r.json()["available_nanos"] == 14 * UNIT - SMALL
        h = r.json()["hold_id"]
        assert usage(bd, acct, f"spread-u-{acct}", hold=h).status_code == 200
        # every key of the account is on its slot's master, asked directly (no -c)
        port = env.cluster.ports[m - 1]
        n = env.cluster.cli(port, "EXISTS", *[f"{{a:{acct}}}:{k}" for k in ("bal", "st")])
        assert n == "2", n
        st = env.cluster.cli(port, "HMGET", f"{{a:{acct}}}:st", "ver", "lgen", "held").split()
        assert len(st) == 3 and st[2] == "0", st
        promo = env.cluster.cli(port, "HGET", f"{{a:{acct}}}:bal", "promo")
        assert int(promo) == 14 * UNIT - SMALL == balance(bd, acct)["promo_nanos"]
    rec = reconcile(env)
    assert rec["differences"] == 0 and rec["matching"] >= 3, rec


def test_master_restart_under_load(env, bd):
    """SIGKILL of one master during load: its accounts fail closed (503), the
    others are untouched; a spent account is never admitted; after the
    restart (empty, same slots) decisions are right again within seconds."""
    c = env.cluster
    placed = accounts_on(env, "mr", {1: 2, 2: 1})
    victim, poor, other = placed[1][0], placed[1][1], placed[2][0]
    assert usage(bd, poor, "mr-poor-spend", tokens=14_000_000).status_code == 200
    assert authorize(bd, poor, "mr-poor-0").status_code == 402
    load = Load(bd, [victim, other], "mr")
    poor_codes = []
    stop_poor = threading.Event()

    def hammer_poor():
        s = requests.Session()
        i = 0
        while not stop_poor.is_set():
            i += 1
            poor_codes.append(authorize(bd, poor, f"mr-poor-{i}", session=s).status_code)
            time.sleep(0.01)

    th = threading.Thread(target=hammer_poor, daemon=True)
    th.start()
    try:
        time.sleep(1.0)
        t_kill = time.time()
        c.kill(1, signal.SIGKILL)
        time.sleep(2.0)
        c.start_node(1)
        t_back = time.time()
        time.sleep(6.0)
    finally:
        load.stop()
        stop_poor.set()
        th.join(timeout=60)
    v, o = load.events[victim], load.events[other]
    # the victim's master was away: its account failed closed, with Retry-After
    down = [e for e in v if t_kill + 0.5 < e[0] < t_back]
    assert down and all(e[1] == 503 and e[3] for e in down), down[:5]
    assert {e[1] for e in v} <= {200, 503}, {e[1] for e in v}
    # the other masters' accounts never noticed
    assert o and all(e[1] == 200 for e in o), [e for e in o if e[1] != 200][:5]
    # every admitted call was charged (usage needs only PostgreSQL)
    assert all(e[2] == 200 for e in v + o if e[1] == 200)
    # right again within 5 s of the restart
    ok_after = [e[0] for e in v if e[0] > t_back and e[1] == 200]
    assert ok_after and ok_after[0] - t_back < 5.0, (ok_after[:1], t_back)
    assert not [e for e in v if e[0] > ok_after[0] + 1.0 and e[1] != 200]
    # a spent account is never admitted: the mirror is rebuilt from the ledger
    assert poor_codes and 200 not in poor_codes and set(poor_codes) <= {402, 503}, set(poor_codes)
    assert poor_codes[-1] == 402
    # exact amounts: each admitted call charged once, nothing held any more
    for acct, ev in ((victim, v), (other, o)):
        charged = sum(1 for e in ev if e[2] == 200)
        b = balance(bd, acct)
        assert b["promo_nanos"] == 14 * UNIT - charged * SMALL and b["paid_nanos"] == 0, (acct, b, charged)
        r = authorize(bd, acct, f"mr-final-{acct}")
        assert r.status_code == 200 and r.json()["available_nanos"] == b["promo_nanos"] - SMALL, r.text
    env.assert_books_sound()
    assert reconcile(env)["differences"] == 0


def test_master_down_fail_open_is_per_slot(env, bd):
    """With redis_fail_open, only the accounts of the master that is down are
    admitted on the fail-open allowance (and no further); the others are
    decided by their own master as usual."""
    c = env.cluster
    placed = accounts_on(env, "fo", {2: 1, 3: 1})
    victim, other = placed[2][0], placed[3][0]
    fo = Billingd(env, {"redis_fail_open": "true", "redis_fail_open_nanos": str(3 * SMALL)})
    try:
        time.sleep(1.2)  # prices
        for a in (victim, other):
            r = authorize(fo, a, f"fo-warm-{a}")
            assert r.status_code == 200 and "fail_open" not in r.json(), r.text
        c.kill(2, signal.SIGKILL)
        try:
            res = [authorize(fo, victim, f"fo-v-{i}") for i in range(6)]
            assert [r.status_code for r in res] == [200, 200, 200, 503, 503, 503], [r.text for r in res]
            assert all(r.json().get("fail_open") is True for r in res[:3])
            assert all(r.json()["error"]["code"] == "unavailable" and r.headers["Retry-After"] for r in res[3:])
            r = authorize(fo, other, "fo-o-1")
            assert r.status_code == 200 and "fail_open" not in r.json(), r.text
            assert r.json()["available_nanos"] == 14 * UNIT - 2 * SMALL
            # the other master's answer does not refill the victim's allowance
            r = authorize(fo, victim, "fo-v-6")
            assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable", r.text
        finally:
            c.start_node(2)
        assert fo.logs().count("fail-open admission") == 3
        deadline = time.time() + 8
        while True:
            r = authorize(fo, victim, f"fo-after-{time.time()}")
            if r.status_code == 200 and "fail_open" not in r.json():
                break
            assert time.time() < deadline, r.text
            time.sleep(0.1)
        # the restarted master lost the warm-up hold; the ledger balance stands
        assert r.json()["available_nanos"] == 14 * UNIT - SMALL
    finally:
        fo.stop()


def test_slot_migration_under_load(env, bd):
    """An account's slot moves to another master while it is used: with its
    keys already on the target (slot MIGRATING/IMPORTING) billingd and the
    CLIs follow ASK; after SETSLOT NODE they follow MOVED.  No call fails,
    nothing is over-admitted, the books and the mirror agree."""
    c = env.cluster
    placed = accounts_on(env, "mig", {1: 1, 3: 1})
    acct, other = placed[1][0], placed[3][0]
    slot = slot_of(env, acct)
    src, dst = 1, 2
    assert c.owner(slot) == src
    env.sql("INSERT INTO limits (tier, account_id, model, rpm, tpm, rpd, tpd, concurrency, actor)"
            " VALUES (NULL, %s, '', 1000000, NULL, NULL, NULL, NULL, 'test')", (acct,))
    time.sleep(1.2)
    # one settled call (the version key), and one hold kept for the whole test:
    # all four keys of the account exist, so a multi-key script can follow ASK
    r = authorize(bd, acct, "mig-first")
    assert usage(bd, acct, "mig-first-u", hold=r.json()["hold_id"]).status_code == 200
    assert authorize(bd, acct, "mig-kept").status_code == 200
    keys = [f"{{a:{acct}}}:{k}" for k in KEYS]
    assert env.redis_cli("EXISTS", *keys) == str(len(KEYS))
    src_port, dst_port = c.ports[src - 1], c.ports[dst - 1]
    src_id, dst_id = c.node_id(src), c.node_id(dst)
    load = Load(bd, [acct, other], "mig")
    try:
        time.sleep(0.5)
        c.cli(dst_port, "CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        c.cli(src_port, "CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        in_slot = c.cli(src_port, "CLUSTER", "GETKEYSINSLOT", slot, 100).split()
        assert sorted(in_slot) == sorted(keys), in_slot
        assert c.cli(src_port, "MIGRATE", "127.0.0.1", dst_port, "", 0, 5000, "KEYS", *in_slot) == "OK"
        # the keys are on the target, the slot still belongs to the source:
        # the source answers ASK, which billingd and the CLI follow
        assert c.cli(src_port, "HGET", keys[1], "ver", check=False).startswith("ASK"), "no ASK from the source"
        r = authorize(bd, acct, "mig-during")
        assert r.status_code == 200, r.text
        rec = reconcile(env)
        assert rec["differences"] == 0, rec
        time.sleep(1.0)
        for port in (dst_port, src_port, c.ports[2]):
            c.cli(port, "CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        time.sleep(2.0)
    finally:
        load.stop()
    ev = load.events[acct] + load.events[other]
    assert len(load.events[acct]) > 20, len(load.events[acct])
    bad = [e for e in ev if e[1] != 200 or e[2] != 200]
    assert not bad, bad[:5]
    assert c.owner(slot) == dst
    assert c.cli(dst_port, "EXISTS", keys[0]) == "1"
    moved = [line for line in bd.logs().splitlines() if "slot moved" in line and f"slot={slot} " in line]
    assert moved, "billingd never followed MOVED for the slot"
    # exact amounts: the calls charged, the kept and the new hold held
    charged = 1 + sum(1 for e in load.events[acct] if e[2] == 200)
    b = balance(bd, acct)
    assert b["promo_nanos"] == 14 * UNIT - charged * SMALL, (b, charged)
    r = authorize(bd, acct, "mig-final")
    # held: mig-kept, mig-during (never settled) and this one
    assert r.status_code == 200 and r.json()["available_nanos"] == b["promo_nanos"] - 3 * SMALL, r.text
    env.assert_books_sound()
    assert reconcile(env)["differences"] == 0
