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
