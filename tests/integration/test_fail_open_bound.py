"""redis_fail_open (docs/billingd.md, "Redis unreachable"): while Redis
cannot decide for an account, billingd admits its calls up to
redis_fail_open_nanos of estimated cost in total, then answers 503.  The
allowance must not be refilled by the answers Redis gives for OTHER
accounts meanwhile (review7): a decision Redis cannot run on one account's
keys (grouped or not), or a Redis Cluster master that is down, leaves the
other accounts' decisions answered, and each such answer used to wipe every
account's count, so the failing account was admitted without end."""
import time

import pytest

from conftest import Billingd, UNIT, new_account, set_price


@pytest.fixture(scope="module")
def fo(env):
    set_price(env, "fo-model", UNIT, UNIT, 0, effective="2026-01-01T00:00:00Z")
    # Redis is shared by the suite's modules, whose account ids start at 1 again
    env.redis_flushall()
    b = Billingd(env, {"redis_fail_open": "true", "redis_fail_open_nanos": str(2 * UNIT)})
    time.sleep(1.2)  # prices are loaded within a second
    yield b
    b.stop()
    env.redis_flushall()


def authorize(bd, acct, rid):
    return bd.post("/v1/authorize", {"request_id": rid, "account_id": acct, "model": "fo-model",
                                     "input_tokens": 1_000_000, "max_output_tokens": 0})


def test_answers_for_other_accounts_do_not_refill_the_fail_open_allowance(env, fo):
    broken, healthy = new_account(env, "fo-broken"), new_account(env, "fo-healthy")
    for a in (broken, healthy):  # mirrors loaded: the decisions below go straight to Redis
        r = authorize(fo, a, f"fo-warm-{a}")
        assert r.status_code == 200 and "fail_open" not in r.json(), r.text
    # Redis can no longer decide for the broken account (WRONGTYPE on its hold records)
    env.redis_cli("DEL", f"{{a:{broken}}}:hold")
    env.redis_cli("SET", f"{{a:{broken}}}:hold", "not-a-hash")
    got = []
    for i in range(5):
        r = authorize(fo, broken, f"fo-b-{i}")
        got.append(r.status_code)
        if r.status_code == 200:
            assert r.json()["fail_open"] is True and r.json()["held_nanos"] == UNIT, r.text
        else:
            assert r.json()["error"]["code"] == "unavailable" and r.headers["Retry-After"], r.text
        # Redis decides the healthy account as usual in between
        r = authorize(fo, healthy, f"fo-h-{i}")
        assert r.status_code == 200 and "fail_open" not in r.json(), r.text
        assert r.json()["available_nanos"] == (12 - i) * UNIT, r.text
    # 2 units of allowance, 1 unit each: two admissions in all, then 503
    assert got == [200, 200, 503, 503, 503], got
    assert fo.logs().count("fail-open admission") == 2


def test_a_frozen_account_is_never_admitted_by_failing_open(env, fo):
    """CONTRACT.md §3: freezing stops new authorizations.  Failing open
    admits calls Redis cannot decide, within an allowance: never those of a
    frozen account, whose status billingd read from PostgreSQL (review A:
    the fail-open answer was a 200 hold for a frozen account)."""
    frozen = new_account(env, "fo-frozen")
    env.admin("account", "freeze", frozen, "--reason", "fail-open test")
    time.sleep(1.2)  # the contract's second for a CLI change
    r = authorize(fo, frozen, "fo-frz-warm")
    assert r.status_code == 403 and r.json()["error"]["code"] == "account_frozen", r.text
    # Redis can no longer decide for it (WRONGTYPE on its state hash, read
    # before the mirror's status)
    env.redis_cli("DEL", f"{{a:{frozen}}}:st")
    env.redis_cli("SET", f"{{a:{frozen}}}:st", "not-a-hash")
    for i in range(3):
        r = authorize(fo, frozen, f"fo-frz-{i}")
        assert r.status_code == 403 and r.json()["error"]["code"] == "account_frozen", r.text
    assert not [line for line in fo.logs().splitlines()
                if "fail-open admission" in line and f"account={frozen} " in line]
    env.redis_cli("DEL", f"{{a:{frozen}}}:st")
