"""The account's state hash ({a:ID}:st) expires: 2 days after the last
mirror load, or after its creation by a settle or a drop; a throw-away
account leaves nothing in Redis for good.  And when st goes while hold
records it counted are still there (swept by nobody), the next decision
loads the mirror, which sets held from the hold records again: held never
goes below the truth, so nothing is over-admitted."""
import json
import time

import pytest

from conftest import Billingd, UNIT, now_rfc3339, set_price

TWO_DAYS_MS = 2 * 86400 * 1000


@pytest.fixture(scope="module")
def bd(env):
    set_price(env, "ttl-model", UNIT, UNIT, 0, effective="2026-01-01T00:00:00Z")
    b = Billingd(env, {"hold_ttl_seconds": "1"})
    time.sleep(1.2)  # prices are loaded within a second
    yield b
    b.stop()
    env.redis_flushall()  # shared by the suite's modules, whose account ids start at 1 again


def new_account(env, name):
    return json.loads(env.admin("account", "create", "--external-id", name, "--json").stdout)["account_id"]


def authorize(bd, acct, rid, units=1):
    return bd.post("/v1/authorize", {"request_id": rid, "account_id": acct, "model": "ttl-model",
                                     "input_tokens": units * 1_000_000, "max_output_tokens": 0})


def st_ttl(env, acct):
    return int(env.redis_cli("PTTL", f"{{a:{acct}}}:st"))


def test_the_state_hash_expires_whoever_made_it(env, bd):
    a = new_account(env, "ttl-auth")
    assert authorize(bd, a, "ttl-a-1").status_code == 200  # a locked load, then the decision
    assert TWO_DAYS_MS - 60_000 < st_ttl(env, a) <= TWO_DAYS_MS
    u = new_account(env, "ttl-usage")  # usage with no authorize: the settle makes st
    r = bd.post("/v1/usage", {"request_id": "ttl-u-1", "account_id": u, "model": "ttl-model",
                              "input_tokens": 1_000_000, "cached_input_tokens": 0, "output_tokens": 0,
                              "started_at": now_rfc3339()})
    assert r.status_code == 200, r.text
    assert TWO_DAYS_MS - 60_000 < st_ttl(env, u) <= TWO_DAYS_MS
    t = new_account(env, "ttl-topup")  # a top-up through billingd drops the (absent) mirror: st made
    r = bd.post("/v1/topups", {"account_id": t, "amount_nanos": UNIT, "payment_ref": f"ttl-pay-{t}"})
    assert r.status_code == 201, r.text
    assert TWO_DAYS_MS - 60_000 < st_ttl(env, t) <= TWO_DAYS_MS


def test_a_hold_left_behind_by_an_expired_state_hash_admits_nothing_extra(env, bd):
    a = new_account(env, "ttl-left")  # 14 units of signup credit
    assert authorize(bd, a, "ttl-l-1", units=4).status_code == 200
    time.sleep(1.3)  # the hold is due; nobody swept it
    # st and the mirror expire (as they would after 2 days idle); the hold record stays
    env.redis_cli("DEL", f"{{a:{a}}}:st", f"{{a:{a}}}:bal")
    r = authorize(bd, a, "ttl-l-2", units=14)
    assert r.status_code == 200, r.text
    assert r.json()["available_nanos"] == 0, r.text  # 14 - 14: the old hold is neither lost nor refunded twice
    assert authorize(bd, a, "ttl-l-3", units=1).status_code == 402
    assert int(env.redis_cli("HGET", f"{{a:{a}}}:st", "held")) == 14 * UNIT


def test_a_hold_nobody_settles_or_sweeps_leaves_no_hold_records(env, bd):
    """An abandoned account (a throw-away account of promotion farming): its
    hold is never settled and no later decision sweeps it.  Its record and
    expiry index ({a:ID}:hold, {a:ID}:hexp) live at least as long as the
    hold, and go by themselves within two hold lifetimes after it expires.
    When the account comes back, nothing of the old hold is held or counted."""
    a = new_account(env, "ttl-abandoned")  # 14 units of signup credit
    r = authorize(bd, a, "ttl-ab-1", units=4)
    assert r.status_code == 200, r.text
    keys = [f"{{a:{a}}}:hold", f"{{a:{a}}}:hexp"]
    hold_expires_ms = int(env.redis_cli("ZSCORE", keys[1], "ttl-ab-1"))
    for k in keys:  # never before the hold: 0 < PEXPIRETIME, and not earlier than the hold's expiry
        assert int(env.redis_cli("PEXPIRETIME", k)) >= hold_expires_ms, k
    deadline = time.monotonic() + 15  # hold_ttl_seconds = 1: gone about 3 s after the hold was made
    while time.monotonic() < deadline and any(env.redis_cli("EXISTS", k) == "1" for k in keys):
        time.sleep(0.2)
    assert [env.redis_cli("EXISTS", k) for k in keys] == ["0", "0"]
    # st (2 days) still counts the hold that went unswept: the next decision's sweep
    # finds no hold left, so nothing is held and no model counts a live hold
    assert int(env.redis_cli("HGET", f"{{a:{a}}}:st", "held")) == 4 * UNIT
    r = authorize(bd, a, "ttl-ab-2", units=14)
    assert r.status_code == 200 and r.json()["available_nanos"] == 0, r.text
    assert env.redis_cli("HGET", f"{{a:{a}}}:st", "c:ttl-model") == "1"
    assert int(env.redis_cli("HGET", f"{{a:{a}}}:st", "held")) == 14 * UNIT


def test_a_replayed_usage_that_releases_a_hold_gives_the_state_hash_its_ttl(env, bd):
    a = new_account(env, "ttl-replay")
    st = f"{{a:{a}}}:st"
    body = {"request_id": "ttl-r-u", "account_id": a, "model": "ttl-model", "input_tokens": 1_000_000,
            "cached_input_tokens": 0, "output_tokens": 0, "started_at": now_rfc3339(), "hold_id": "ttl-r-h"}
    r = bd.post("/v1/usage", body)
    assert r.status_code == 200 and r.json()["duplicate"] is False, r.text
    # the hold comes after the first answer (whose settle found none), and st
    # goes (expired or evicted) while the hold record stays: the replay's
    # settle releases the hold and so writes st again
    assert authorize(bd, a, "ttl-r-h").status_code == 200
    env.redis_cli("DEL", st)
    r = bd.post("/v1/usage", body)
    assert r.status_code == 200 and r.json()["duplicate"] is True, r.text
    assert env.redis_cli("HEXISTS", f"{{a:{a}}}:hold", "ttl-r-h") == "0"  # released by the replay
    assert TWO_DAYS_MS - 60_000 < st_ttl(env, a) <= TWO_DAYS_MS


def test_a_sweep_that_finds_no_state_hash_gives_the_new_one_its_ttl(env, bd):
    a = new_account(env, "ttl-sweep")
    assert authorize(bd, a, "ttl-s-1").status_code == 200  # a load: the mirror (bal) and st
    env.redis_cli("DEL", f"{{a:{a}}}:st")  # st gone, the mirror still there
    # the decision finds no 'due': it sweeps, which writes st again, then decides on the mirror
    assert authorize(bd, a, "ttl-s-2").status_code == 200
    assert TWO_DAYS_MS - 60_000 < st_ttl(env, a) <= TWO_DAYS_MS
