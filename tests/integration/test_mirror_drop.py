"""A top-up or grant drops the account's balance mirror before it is
answered, also right after billingd reconnects to Redis, before the first
PONG on the new connection: that connection already carries the caller's
next authorize, so the drop must go ahead of it (a loaded machine drops a
connection whose PING waits more than redis_timeout_ms)."""
import json
import time

from conftest import ADMIN_TOKEN, Billingd, UNIT, now_rfc3339, set_price


def new_account(env, name):
    return json.loads(env.admin("account", "create", "--external-id", name, "--json").stdout)["account_id"]


def authorize(bd, acct, rid):
    return bd.post("/v1/authorize", {"request_id": rid, "account_id": acct, "model": "md-model",
                                     "input_tokens": 1_000_000, "max_output_tokens": 0})


def at_zero(env, bd, name):
    """A new account whose balance is 0 and whose mirror says so."""
    acct = new_account(env, name)
    r = bd.post("/v1/usage", {"request_id": f"{name}-spend", "account_id": acct, "model": "md-model",
                              "input_tokens": 14_000_000, "cached_input_tokens": 0, "output_tokens": 0,
                              "started_at": now_rfc3339()})
    assert r.status_code == 200, r.text
    assert authorize(bd, acct, f"{name}-0").status_code == 402
    return acct


def test_credit_answered_across_a_reconnect_is_in_the_next_decision(env):
    set_price(env, "md-model", UNIT, UNIT, 0, effective="2026-01-01T00:00:00Z")
    bd = Billingd(env)
    try:
        accts = [at_zero(env, bd, f"md-{i}") for i in range(12)]
        for i, acct in enumerate(accts):
            # billingd's connections are cut; it reconnects within a tick
            # (250 ms), and the drop of the mirror sent meanwhile is lost
            env.redis_cli("CLIENT", "KILL", "TYPE", "normal")
            if i % 2 == 0:
                r = bd.post("/v1/topups", {"account_id": acct, "amount_nanos": UNIT, "payment_ref": f"md-pay-{acct}"})
            else:
                r = bd.post("/v1/admin/grants", {"account_id": acct, "amount_nanos": UNIT, "reason": "support",
                                                 "operator": "test", "idempotency_key": f"md-grant-{acct}"},
                            token=ADMIN_TOKEN)
            assert r.status_code == 201, r.text
            # 503 while the connection is down (fail-closed); the first
            # decision it carries must see the credit
            deadline = time.time() + 5
            while (a := authorize(bd, acct, f"md-1-{acct}")).status_code == 503 and time.time() < deadline:
                time.sleep(0.01)
            assert a.status_code == 200, f"account {i}: the credit answered before is not seen: {a.text}"
    finally:
        bd.stop()
        # Redis is shared by the suite's modules, whose account ids start at 1
        # again: the 12 live holds left here would count in the next module's
        env.redis_flushall()
