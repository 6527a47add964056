"""Signup and referral credit, once per invitee, identity and cap
rules, an atomic campaign budget, expiry to breakage, paid-only models."""
import concurrent.futures as cf
import json
import time

import pytest
import requests

from conftest import Billingd, UNIT, now_rfc3339, set_price

SIGNUP = 14 * UNIT


@pytest.fixture(scope="module")
def bd(env):
    set_price(env, "p-model", UNIT, UNIT, 0, effective="2026-01-01T00:00:00Z")
    set_price(env, "p-paid", UNIT, UNIT, 0, effective="2026-01-01T00:00:00Z", paid_only=True)
    b = Billingd(env, {"expiry_interval_s": "1"})
    yield b
    b.stop()


def signup(bd, ext, code=None, identity=None, session=None):
    body = {"external_id": ext}
    if code:
        body["referral_code"] = code
    if identity:
        body["identity"] = identity
    s = session or requests
    return s.post(bd.url + "/v1/accounts", json=body, headers=bd.h(), timeout=60)


def usage(bd, acct, rid, units, model="p-model"):
    return bd.post("/v1/usage", {"request_id": rid, "account_id": acct, "model": model,
                                 "input_tokens": units * 1_000_000, "cached_input_tokens": 0, "output_tokens": 0,
                                 "started_at": now_rfc3339()})


def referral_grants(env, inviter):
    return env.sql("SELECT amount_nanos FROM grants WHERE account_id = %s AND kind = 'referral'", (inviter,))


def test_signup_credit_and_referral_once_under_concurrency(env, bd):
    r = signup(bd, "inviter-1")
    assert r.status_code == 201
    inviter = r.json()
    assert inviter["balance"]["promo_nanos"] == SIGNUP and inviter["promotion"]["applied"] is True
    assert env.one("SELECT amount_nanos FROM grants WHERE account_id = %s AND kind = 'signup'",
                   (inviter["account_id"],)) == SIGNUP
    inv = signup(bd, "invitee-1", code=inviter["referral_code"]).json()
    # no reward before the invitee qualifies
    assert referral_grants(env, inviter["account_id"]) == []
    v = bd.post(f"/v1/accounts/{inv['account_id']}/verify", {})
    assert v.status_code == 200 and v.json()["referral"]["rewarded"] is True
    assert v.json()["referral"]["amount_nanos"] == SIGNUP
    assert bd.post(f"/v1/accounts/{inv['account_id']}/verify", {}).json()["referral"]["rewarded"] is False
    assert referral_grants(env, inviter["account_id"]) == [(SIGNUP,)]
    # a second invitee verified 20 times at once: one reward
    inv2 = signup(bd, "invitee-2", code=inviter["referral_code"]).json()
    with cf.ThreadPoolExecutor(20) as ex:
        res = list(ex.map(lambda _: bd.post(f"/v1/accounts/{inv2['account_id']}/verify", {}), range(20)))
    assert all(r.status_code == 200 for r in res)
    assert sum(r.json()["referral"]["rewarded"] for r in res) == 1
    assert referral_grants(env, inviter["account_id"]) == [(SIGNUP,), (SIGNUP,)]
    a = bd.get(f"/v1/accounts/{inviter['account_id']}").json()
    assert a["balance"]["promo_nanos"] == 3 * SIGNUP
    assert env.one("SELECT count(*) FROM journal WHERE idempotency_key = %s",
                   (f"referral:{inv2['account_id']}",)) == 1
    env.assert_books_sound()


def test_shared_identity_gives_no_reward(env, bd):
    inviter = signup(bd, "self-ref-a", identity=["phone:111", "device:aaa"]).json()
    inv = signup(bd, "self-ref-b", code=inviter["referral_code"], identity=["device:aaa"]).json()
    v = bd.post(f"/v1/accounts/{inv['account_id']}/verify", {}).json()
    assert v["referral"]["rewarded"] is False and "identity" in v["referral"]["note"]
    assert referral_grants(env, inviter["account_id"]) == []
    # different identities: rewarded
    inv2 = signup(bd, "self-ref-c", code=inviter["referral_code"], identity=["device:bbb"]).json()
    assert bd.post(f"/v1/accounts/{inv2['account_id']}/verify", {}).json()["referral"]["rewarded"] is True


def test_cap_51st_referral_gives_none(env, bd):
    inviter = signup(bd, "capper").json()
    s = requests.Session()
    rewarded = []
    for i in range(51):
        inv = signup(bd, f"cap-invitee-{i}", code=inviter["referral_code"], session=s).json()
        v = s.post(f"{bd.url}/v1/accounts/{inv['account_id']}/verify", json={}, headers=bd.h()).json()
        rewarded.append(v["referral"]["rewarded"])
    assert rewarded[:50] == [True] * 50
    assert rewarded[50] is False
    assert len(referral_grants(env, inviter["account_id"])) == 50
    assert env.one("SELECT outcome FROM referrals WHERE inviter_id = %s ORDER BY invitee_id DESC LIMIT 1",
                   (inviter["account_id"],)).startswith("inviter reached the cap")


def test_budget_exact_under_300_concurrent_signups(env, bd):
    granted = env.one("SELECT granted_nanos FROM campaigns WHERE name = 'default'")
    env.sql("UPDATE campaigns SET budget_nanos = %s WHERE name = 'default'", (granted + 100 * SIGNUP,),
            user="billing_owner")
    sessions = [requests.Session() for _ in range(40)]
    with cf.ThreadPoolExecutor(40) as ex:
        res = list(ex.map(lambda i: signup(bd, f"budget-{i}", session=sessions[i % 40]), range(300)))
    assert all(r.status_code == 201 for r in res), {r.status_code for r in res}
    applied = [r.json()["promotion"] for r in res]
    assert sum(p["applied"] for p in applied) == 100
    refused = [p for p in applied if not p["applied"]]
    assert len(refused) == 200 and all("budget exhausted" in p["note"] and p["amount_nanos"] == 0 for p in refused)
    assert env.one("SELECT count(*) FROM grants g JOIN customers c USING (account_id)"
                   " WHERE c.external_id LIKE 'budget-%%' AND g.kind = 'signup'") == 100
    assert env.one("SELECT granted_nanos = budget_nanos FROM campaigns WHERE name = 'default'") is True
    env.sql("UPDATE campaigns SET budget_nanos = NULL WHERE name = 'default'", user="billing_owner")
    env.assert_books_sound()


def test_expired_credit_is_never_spent_and_goes_to_breakage(env, bd):
    acct = signup(bd, "expiry-1").json()["account_id"]
    # spend the signup credit, then a short-lived grant of 5 units
    assert usage(bd, acct, "exp-spend", 14).status_code == 200
    env.admin("grant", "--account", acct, "--amount", "5", "--reason", "short", "--expires", now_rfc3339(2))
    r = usage(bd, acct, "exp-use-1", 2)
    assert [c["bucket"] for c in r.json()["charged"]] == ["grant"]
    time.sleep(2.2)
    # expired: not spent, even before the worker ran; the charge goes to arrears
    r = usage(bd, acct, "exp-use-2", 1).json()
    assert [c["bucket"] for c in r["charged"]] == ["arrears"] and r["balance"]["paid_nanos"] == -UNIT
    deadline = time.time() + 5
    while env.one("SELECT count(*) FROM journal WHERE kind = 'breakage' AND account_id = %s", (acct,)) == 0:
        assert time.time() < deadline, "the expiry worker did not run"
        time.sleep(0.2)
    moved = env.one("""SELECT p.amount FROM postings p JOIN journal j USING (txn_id)
                       WHERE j.kind = 'breakage' AND j.account_id = %s AND p.ledger_account_id = 3""", (acct,))
    assert moved == 3 * UNIT  # 5 granted - 2 used
    assert env.one("""SELECT b.balance FROM ledger_balances b JOIN grants g USING (ledger_account_id)
                      WHERE g.account_id = %s AND g.kind = 'admin'""", (acct,)) == 0
    env.assert_books_sound()


def test_paid_only_model_never_consumes_promotional_credit(env, bd):
    acct = signup(bd, "paidonly-1").json()["account_id"]
    env.admin("topup", "--account", acct, "--amount", "1", "--payment-ref", f"po-{acct}")
    r = usage(bd, acct, "po-1", 3, model="p-paid").json()
    assert [(c["bucket"], c["amount_nanos"]) for c in r["charged"]] == [("paid", UNIT), ("arrears", 2 * UNIT)]
    assert r["balance"]["promo_nanos"] == SIGNUP and r["balance"]["paid_nanos"] == -2 * UNIT


def test_arrears_beside_promotional_credit_refuse_every_authorize(env, bd):
    """CONTRACT.md §3: arrears make later calls 402.  Promotional credit
    left beside them (a paid_only model's usage went to arrears) pays for no
    new call, although available_nanos (paid + promo - held) is positive:
    docs/http-api.md says so."""
    acct = signup(bd, "arrears-promo-1").json()["account_id"]
    r = usage(bd, acct, "ap-1", 1, model="p-paid").json()
    assert r["balance"]["paid_nanos"] == -UNIT and r["balance"]["promo_nanos"] == SIGNUP
    view = bd.get(f"/v1/accounts/{acct}").json()["balance"]
    assert view["available_nanos"] == SIGNUP - UNIT
    for i, model in enumerate(("p-model", "p-paid")):
        a = bd.post("/v1/authorize", {"request_id": f"ap-az-{i}", "account_id": acct, "model": model,
                                      "input_tokens": 1000, "max_output_tokens": 0})
        assert a.status_code == 402 and a.json()["error"]["code"] == "insufficient_balance", a.text


def test_budget_exhausted_campaign_still_creates_accounts_via_cli(env, bd):
    granted = env.one("SELECT granted_nanos FROM campaigns WHERE name = 'default'")
    env.sql("UPDATE campaigns SET budget_nanos = %s WHERE name = 'default'", (granted,), user="billing_owner")
    p = env.admin("account", "create", "--external-id", "cli-nobudget", "--json")
    # the outcome is part of the answer; nothing on stderr on success
    out = json.loads(p.stdout)
    assert out["balance"]["promo_nanos"] == 0 and p.stderr == ""
    assert out["promotion"]["applied"] is False and "budget exhausted" in out["promotion"]["note"]
    p = env.admin("account", "create", "--external-id", "cli-nobudget-text")
    assert "budget exhausted" in p.stdout and p.stderr == ""
    env.sql("UPDATE campaigns SET budget_nanos = NULL WHERE name = 'default'", user="billing_owner")


def test_same_signup_50_times_at_once_creates_one_account(env, bd):
    """A retried transaction (unique violation between two racing signups)
    must not leave its error behind: 1 x 201, 49 x 200, one account, one grant."""
    sessions = [requests.Session() for _ in range(25)]
    for k in range(3):
        with cf.ThreadPoolExecutor(25) as ex:
            res = list(ex.map(lambda i: signup(bd, f"burst-same-{k}", session=sessions[i % 25]), range(50)))
        codes = [r.status_code for r in res]
        assert codes.count(201) == 1 and codes.count(200) == 49, codes
        assert len({r.json()["account_id"] for r in res}) == 1
        assert env.one("SELECT count(*) FROM grants g JOIN customers c USING (account_id)"
                       " WHERE c.external_id = %s AND g.kind = 'signup'", (f"burst-same-{k}",)) == 1


# ---------------------------------------------------------------- the identity rule (CONTRACT.md §4)


def test_signup_credit_once_per_identity_string_ever(env, bd):
    """20 signups with different external_ids and the same identity string:
    one signup credit; every other account is created, without credit, and
    its answer says why.  Sharing any one string is enough; a signup with
    only new strings is credited again."""
    res = [signup(bd, f"farm-{i}", identity=["phone:farm-1"]) for i in range(20)]
    assert all(r.status_code == 201 for r in res), [r.text for r in res]
    promos = [r.json()["promotion"] for r in res]
    assert [p["applied"] for p in promos] == [True] + [False] * 19
    for r in res[1:]:
        p = r.json()["promotion"]
        assert p["amount_nanos"] == 0 and p["grant_id"] is None and "identity" in p["note"], p
        assert r.json()["balance"]["promo_nanos"] == 0
    assert env.one("SELECT count(*) FROM grants g JOIN customers c USING (account_id)"
                   " WHERE c.external_id LIKE 'farm-%%' AND g.kind = 'signup'") == 1
    # any shared string is enough, in any position
    r = signup(bd, "farm-mixed", identity=["device:new-1", "card:new-1", "phone:farm-1"]).json()
    assert r["promotion"]["applied"] is False
    # the strings of an uncredited signup were not claimed: device:new-1 still earns credit
    r = signup(bd, "farm-fresh", identity=["device:new-1"]).json()
    assert r["promotion"]["applied"] is True and r["balance"]["promo_nanos"] == SIGNUP
    # compared exactly (the gateway normalizes)
    assert signup(bd, "farm-case", identity=["PHONE:farm-1"]).json()["promotion"]["applied"] is True
    env.assert_books_sound()


def test_signup_identity_rule_holds_under_concurrency(env, bd):
    """40 signups at once sharing one identity string (each with another of
    its own), in different orders: exactly one signup credit."""
    sessions = [requests.Session() for _ in range(20)]

    def one(i):
        ids = ["device:race-shared", f"phone:race-{i}"]
        return signup(bd, f"race-{i}", identity=ids if i % 2 else ids[::-1], session=sessions[i % 20])

    with cf.ThreadPoolExecutor(20) as ex:
        res = list(ex.map(one, range(40)))
    assert all(r.status_code == 201 for r in res), {r.status_code for r in res}
    assert sum(r.json()["promotion"]["applied"] for r in res) == 1
    assert env.one("SELECT count(*) FROM grants g JOIN customers c USING (account_id)"
                   " WHERE c.external_id LIKE 'race-%%' AND g.kind = 'signup'") == 1
    # the database holds the rule, not only the service
    assert env.one("SELECT count(*) FROM promo_identity_claims WHERE identity = 'device:race-shared'") == 1


def test_referral_reward_once_per_invitee_identity_string(env, bd):
    """5 invitees of one inviter sharing one identity string: one reward,
    verified one after the other or all at once."""
    for tag, parallel in (("seq", False), ("par", True)):
        inviter = signup(bd, f"ref-farm-{tag}", identity=[f"phone:ref-farm-inviter-{tag}"]).json()
        invitees = [signup(bd, f"ref-farm-{tag}-{i}", code=inviter["referral_code"],
                           identity=[f"device:ref-farm-{tag}", f"phone:ref-farm-{tag}-{i}"]).json()
                    for i in range(5)]

        def verify(inv):
            return bd.post(f"/v1/accounts/{inv['account_id']}/verify", {})

        if parallel:
            with cf.ThreadPoolExecutor(5) as ex:
                res = list(ex.map(verify, invitees))
        else:
            res = [verify(inv) for inv in invitees]
        assert all(r.status_code == 200 for r in res)
        refs = [r.json()["referral"] for r in res]
        assert sum(x["rewarded"] for x in refs) == 1, refs
        assert all("identity" in x["note"] for x in refs if not x["rewarded"]), refs
        assert referral_grants(env, inviter["account_id"]) == [(SIGNUP,)]
    env.assert_books_sound()


def test_no_referral_reward_while_inviter_or_invitee_is_frozen(env, bd):
    for frozen_side in ("inviter", "invitee"):
        inviter = signup(bd, f"frz-{frozen_side}-a", identity=[f"phone:frz-{frozen_side}-a"]).json()
        inv = signup(bd, f"frz-{frozen_side}-b", code=inviter["referral_code"],
                     identity=[f"phone:frz-{frozen_side}-b"]).json()
        who = inviter if frozen_side == "inviter" else inv
        env.admin("account", "freeze", who["account_id"], "--reason", "farming suspected")
        v = bd.post(f"/v1/accounts/{inv['account_id']}/verify", {})
        assert v.status_code == 200, v.text
        assert v.json()["referral"]["rewarded"] is False and "frozen" in v.json()["referral"]["note"], v.json()
        assert referral_grants(env, inviter["account_id"]) == []
        # once both are active again, the referral still pays (once)
        env.admin("account", "unfreeze", who["account_id"], "--reason", "cleared")
        v = bd.post(f"/v1/accounts/{inv['account_id']}/verify", {}).json()
        assert v["referral"]["rewarded"] is True, v
        assert referral_grants(env, inviter["account_id"]) == [(SIGNUP,)]
    env.assert_books_sound()


def test_first_top_up_rewards_the_inviter_when_referral_trigger_is_topup(env):
    """referral_trigger = topup: verification gives nothing, the invitee's
    first top-up rewards its inviter, whether billingd's POST /v1/topups or
    `billing-admin topup` records it, and a second top-up gives nothing more."""
    b = Billingd(env, {"referral_trigger": "topup"})
    try:
        inviter = signup(b, "ref-top-inviter", identity=["phone:ref-top-inviter"]).json()
        via_api, via_cli = (signup(b, f"ref-top-{k}", code=inviter["referral_code"],
                                   identity=[f"phone:ref-top-{k}"]).json()["account_id"] for k in ("api", "cli"))
        r = b.post(f"/v1/accounts/{via_api}/verify", {})
        assert r.status_code == 200 and not r.json()["referral"]["rewarded"], r.text
        assert "top-up" in r.json()["referral"]["note"]
        assert referral_grants(env, inviter["account_id"]) == []
        for ref in ("ref-top-pay-1", "ref-top-pay-2"):
            r = b.post("/v1/topups", {"account_id": via_api, "amount_nanos": 5 * UNIT, "payment_ref": ref})
            assert r.status_code == 201, r.text
        assert referral_grants(env, inviter["account_id"]) == [(SIGNUP,)]
        cli_env = env.cli_env(BILLING_REFERRAL_TRIGGER="topup")
        first, second = (json.loads(env.admin("topup", "--account", via_cli, "--amount", "5", "--payment-ref", ref,
                                              "--json", env=cli_env).stdout)
                         for ref in ("ref-top-pay-3", "ref-top-pay-4"))
        assert first["referral"]["rewarded"] and first["referral"]["amount_nanos"] == SIGNUP, first
        assert "referral" not in second   # the second top-up: nothing more
        assert referral_grants(env, inviter["account_id"]) == [(SIGNUP,), (SIGNUP,)]
    finally:
        b.stop()
    env.assert_books_sound()


def test_require_identity_switch_gives_no_credit_without_identity_strings(env, bd):
    """The identity rule (CONTRACT.md §4) cannot limit signups that send no
    identity string: each got the signup credit.  `promo set
    --require-identity on` makes at least one identity string a condition
    of signup credit and of referral rewards (invitee and inviter): the
    account is still created, without credit, and the answer says why, as
    for a used identity string or an exhausted budget.  Off (the default)
    is the contract's behaviour."""
    p = env.admin("promo", "set", "--require-identity", "on", "--reason", "farming without identity")
    assert p.stderr == ""
    try:
        assert [c["require_identity"] for c in env.admin_json("promo", "show") if c["active"]] == [True]
        r = signup(bd, "noid-1")
        assert r.status_code == 201, r.text
        p = r.json()["promotion"]
        assert p["applied"] is False and p["amount_nanos"] == 0 and p["grant_id"] is None, p
        assert "identity" in p["note"] and "requires" in p["note"], p
        assert r.json()["balance"]["promo_nanos"] == 0
        again = signup(bd, "noid-1")
        assert again.status_code == 200 and again.json()["promotion"] == p
        # the CLI's signup says so too, on stdout
        out = json.loads(env.admin("account", "create", "--external-id", "noid-cli", "--json").stdout)
        assert out["promotion"]["applied"] is False and "requires" in out["promotion"]["note"]
        # with an identity string: credited as before
        inviter = signup(bd, "noid-inviter", identity=["phone:noid-inviter"]).json()
        assert inviter["promotion"]["applied"] is True and inviter["balance"]["promo_nanos"] == SIGNUP
        # an invitee without identity strings earns its inviter nothing, and says why
        inv = signup(bd, "noid-invitee", code=inviter["referral_code"]).json()
        v = bd.post(f"/v1/accounts/{inv['account_id']}/verify", {}).json()["referral"]
        assert v["rewarded"] is False and "identity" in v["note"] and "requires" in v["note"], v
        # nor does an inviter without any (the shared-identity rule needs both sides)
        bare = signup(bd, "noid-bare-inviter").json()
        inv3 = signup(bd, "noid-invitee-3", code=bare["referral_code"], identity=["phone:noid-invitee-3"]).json()
        v = bd.post(f"/v1/accounts/{inv3['account_id']}/verify", {}).json()["referral"]
        assert v["rewarded"] is False and "requires" in v["note"], v
        assert referral_grants(env, bare["account_id"]) == []
        # an invitee with one: rewarded
        inv2 = signup(bd, "noid-invitee-2", code=inviter["referral_code"], identity=["phone:noid-invitee-2"]).json()
        v = bd.post(f"/v1/accounts/{inv2['account_id']}/verify", {}).json()["referral"]
        assert v["rewarded"] is True, v
        assert referral_grants(env, inviter["account_id"]) == [(SIGNUP,)]
    finally:
        env.admin("promo", "set", "--require-identity", "off")
    # audited like the other settings: who, why, before and after
    hist = env.sql("SELECT reason, details FROM audit_log WHERE action = 'campaign.change'"
                   " AND details->'after'->>'require_identity' = 'true'"
                   " AND details->'before'->>'require_identity' = 'false'")
    assert [h[0] for h in hist] == ["farming without identity"]
    # off again: a signup without identity strings is credited (the contract's default)
    assert signup(bd, "noid-2").json()["promotion"]["applied"] is True
    env.assert_books_sound()
