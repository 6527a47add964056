"""Every balance answer tells the live held amount
(available = paid + promo - held) or says it cannot be known; the account
view shows the limits that apply and where each comes from; a signup replay
is the first answer."""
import json
import time

import pytest
import requests

from conftest import Billingd, UNIT, free_port, now_rfc3339, set_price

PRICE_MODEL = "av-model"


@pytest.fixture(scope="module")
def bd(env):
    # the Redis is shared by every module and account ids repeat across their
    # databases: holds another module left on this module's ids (run before
    # it in any order) must not count here
    env.redis_flushall()
    # one unit per 1M input tokens, nothing for output: exact hold amounts
    set_price(env, PRICE_MODEL, UNIT, UNIT, 0, effective="2026-01-01T00:00:00Z")
    b = Billingd(env)
    time.sleep(1.2)  # prices are refreshed every second
    yield b
    b.stop()
    # the Redis is shared by every module (account ids repeat across their
    # databases): the live holds left here must not reach the next module
    env.redis_flushall()


def signup(bd, ext, **extra):
    r = bd.post("/v1/accounts", {"external_id": ext, **extra})
    assert r.status_code in (200, 201), r.text
    return r.json()


def authorize(bd, acct, rid, tokens):
    r = bd.post("/v1/authorize", {"request_id": rid, "account_id": acct, "model": PRICE_MODEL,
                                  "input_tokens": tokens, "max_output_tokens": 0})
    assert r.status_code == 200, r.text
    return r.json()


def check_balance(bal, held):
    assert bal["held_known"] is True
    assert bal["held_nanos"] == held
    assert bal["available_nanos"] == bal["paid_nanos"] + bal["promo_nanos"] - held


def test_account_view_reports_live_holds(env, bd):
    acct = signup(bd, "av-holds")["account_id"]
    a1 = authorize(bd, acct, "av-h1", 12_000)          # 12,000,000 nanos
    a2 = authorize(bd, acct, "av-h2", 3_000_000)       # 3 units
    held = a1["held_nanos"] + a2["held_nanos"]
    assert held == 12_000_000 + 3 * UNIT
    g = bd.get(f"/v1/accounts/{acct}").json()
    check_balance(g["balance"], held)
    # the same number authorize answered
    assert g["balance"]["available_nanos"] == a2["available_nanos"]
    assert g["balance"]["available_nanos"] == 14 * UNIT - held

    # a top-up answer: the new paid balance, the same live holds
    t = bd.post("/v1/topups", {"account_id": acct, "amount_nanos": 5 * UNIT, "payment_ref": "av-pay-1"})
    assert t.status_code == 201, t.text
    check_balance(t.json()["balance"], held)
    assert t.json()["balance"]["available_nanos"] == 19 * UNIT - held

    # settling one hold: the usage answer holds only the other one
    u = bd.post("/v1/usage", {"request_id": "av-h2", "account_id": acct, "model": PRICE_MODEL,
                              "input_tokens": 2_000_000, "output_tokens": 0, "started_at": now_rfc3339(),
                              "hold_id": a2["hold_id"]})
    assert u.status_code == 200, u.text
    check_balance(u.json()["balance"], a1["held_nanos"])
    assert u.json()["balance"]["available_nanos"] == 17 * UNIT - a1["held_nanos"]
    # a batch answer likewise
    ub = bd.post("/v1/usage/batch", {"records": [
        {"request_id": "av-b1", "account_id": acct, "model": PRICE_MODEL, "input_tokens": 1_000_000,
         "output_tokens": 0, "started_at": now_rfc3339()}]})
    assert ub.status_code == 200, ub.text
    check_balance(ub.json()["results"][0]["balance"], a1["held_nanos"])

    # billing-admin account show reads the same Redis
    j = env.admin_json("account", "show", str(acct))
    check_balance(j["balance"], a1["held_nanos"])
    assert j["balance"]["available_nanos"] == 16 * UNIT - a1["held_nanos"]
    text = env.admin("account", "show", str(acct)).stdout
    assert "held" in text and f"({a1['held_nanos']} nanos)" in text
    assert f"({16 * UNIT - a1['held_nanos']} nanos)" in text


def test_expired_hold_is_not_held(env):
    b = Billingd(env, {"hold_ttl_seconds": "1"})
    try:
        time.sleep(1.2)
        acct = signup(b, "av-expire")["account_id"]
        authorize(b, acct, "av-e1", 1_000_000)
        check_balance(b.get(f"/v1/accounts/{acct}").json()["balance"], UNIT)
        time.sleep(1.3)
        check_balance(b.get(f"/v1/accounts/{acct}").json()["balance"], 0)
    finally:
        b.stop()


def test_held_unknown_when_redis_is_away(env, bd):
    acct = signup(bd, "av-noredis")["account_id"]
    dead = f"127.0.0.1:{free_port()}"
    # a billingd whose Redis does not answer: the view says so instead of a number
    b = BillingdWithoutRedis(env, {"redis": dead, "redis_timeout_ms": "200"})
    try:
        r = b.get(f"/v1/accounts/{acct}")
        assert r.status_code == 200, r.text
        bal = r.json()["balance"]
        assert bal["held_known"] is False
        assert bal["held_nanos"] is None and bal["available_nanos"] is None
        assert "Redis" in bal["note"]
        assert bal["paid_nanos"] == 0 and bal["promo_nanos"] == 14 * UNIT
    finally:
        b.stop()
    p = env.admin("account", "show", str(acct), "--json", env=env.cli_env(BILLING_REDIS=dead))
    bal = json.loads(p.stdout)["balance"]
    assert bal["held_known"] is False and bal["held_nanos"] is None and bal["available_nanos"] is None


class BillingdWithoutRedis(Billingd):
    """/readyz needs Redis: up means /healthz answers."""

    def wait_ready(self, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise AssertionError("billingd not up:\n" + self.logs())


def test_signup_replay_is_the_first_answer(env, bd):
    first = bd.post("/v1/accounts", {"external_id": "av-replay", "identity": ["av-phone-1"]})
    assert first.status_code == 201, first.text
    f = first.json()
    assert f["promotion"]["applied"] is True and f["promotion"]["amount_nanos"] == 14 * UNIT
    acct = f["account_id"]
    # the balance moves after the signup...
    authorize(bd, acct, "av-r1", 1_000_000)
    assert bd.post("/v1/topups", {"account_id": acct, "amount_nanos": UNIT, "payment_ref": "av-pay-r"}).status_code == 201
    # ...the replay still answers what the first call answered
    again = bd.post("/v1/accounts", {"external_id": "av-replay", "identity": ["av-phone-1"]})
    assert again.status_code == 200, again.text
    a = again.json()
    assert a["duplicate"] is True
    f.pop("duplicate")
    a.pop("duplicate")
    assert a == f


def test_account_view_shows_the_limits_that_apply(env, bd):
    acct = signup(bd, "av-limits")["account_id"]
    other = signup(bd, "av-limits-other")["account_id"]
    empty = bd.get(f"/v1/accounts/{acct}").json()["limits"]
    assert empty == {"tier": "default", "all_models": {k: None for k in ("rpm", "tpm", "rpd", "tpd", "concurrency")},
                     "models": {}}
    t = env.admin_json("limits", "set", "--tier", "default", "--rpm", "100", "--tpm", "50000")
    a1 = env.admin_json("limits", "set", "--account", str(acct), "--rpm", "2", "--concurrency", "3")
    m = env.admin_json("limits", "set", "--tier", "default", "--model", PRICE_MODEL, "--tpd", "7000")
    am = env.admin_json("limits", "set", "--account", str(acct), "--model", PRICE_MODEL, "--rpd", "5")
    env.admin_json("limits", "set", "--account", str(other), "--rpm", "1")  # another account's: not shown
    # 'none' clears an account limit: the tier's applies again
    a2 = env.admin_json("limits", "set", "--account", str(acct), "--rpm", "none")
    lim = bd.get(f"/v1/accounts/{acct}").json()["limits"]
    assert lim["tier"] == "default"
    assert lim["all_models"] == {
        "rpm": {"value": 100, "source": "tier", "limit_id": t["limit_id"]},
        "tpm": {"value": 50000, "source": "tier", "limit_id": t["limit_id"]},
        "rpd": None, "tpd": None,
        "concurrency": {"value": 3, "source": "account", "limit_id": a2["limit_id"]},
    }
    assert lim["models"] == {PRICE_MODEL: {
        "rpm": None, "tpm": None,
        "rpd": {"value": 5, "source": "account", "limit_id": am["limit_id"]},
        "tpd": {"value": 7000, "source": "tier", "limit_id": m["limit_id"]},
        "concurrency": None}}
    assert a1["limit_id"] < a2["limit_id"]
    # what the view says is what authorize enforces: rpm 100 from the tier, not the cleared 2
    time.sleep(1.2)  # billingd reloads limits within a second
    for i in range(3):
        authorize(bd, acct, f"av-lim-{i}", 1)
    # concurrency 3 from the account row: a fourth live hold is refused
    r = bd.post("/v1/authorize", {"request_id": "av-lim-x", "account_id": acct, "model": PRICE_MODEL,
                                  "input_tokens": 1, "max_output_tokens": 0})
    assert r.status_code == 429 and r.json()["error"]["limit"] == 3, r.text
    # limits show --account lists the tier rows that apply as well
    shown = env.admin_json("limits", "show", "--account", str(acct))
    assert {x["limit_id"] for x in shown} == {t["limit_id"], m["limit_id"], a2["limit_id"], am["limit_id"]}
    text = env.admin("limits", "show", "--account", str(acct)).stdout
    assert "tier default" in text and f"account {acct}" in text
