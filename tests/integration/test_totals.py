"""Amounts that accumulate (CONTRACT.md section 4a): balances and totals are
exact past int64, never wrapped; a single top-up or grant above its configured
ceiling gets 422 and changes nothing; migration 0010 converts a filled
database in place."""
import datetime
import json
import os
import shutil
import subprocess
import time
import uuid

import psycopg2
import pytest

from conftest import ADMIN_TOKEN, ROOT, Billingd, Env, UNIT, ledger_counts, new_account, set_price, units, \
    wait_prices

I64 = 2 ** 63 - 1
BIG = 2 ** 61 - 1  # the largest single amount a request may carry (as the audit used)
N_A = 5  # top-ups of BIG on customer a: its paid balance passes int64


def cash_clearing(env):
    return env.one("SELECT b.balance FROM ledger_balances b JOIN ledger_accounts la USING (ledger_account_id)"
                   " WHERE la.type = 'cash_clearing'")


def trial(env):
    return json.loads(env.ledger("trial-balance", "--json").stdout)


def by_type(tb, t):
    """a type's row; a type without postings yet has none: zeros"""
    return next((a for a in tb["accounts"] if a["type"] == t), {"debits_nanos": 0, "credits_nanos": 0})


@pytest.fixture(scope="module")
def big(env, request):
    """billingd whose top-up ceiling admits a single top-up of 2^62 nanos."""
    b = Billingd(env, {"max_topup": units(I64), "max_grant": units(I64)})
    yield b
    b.stop()


def topup(b, acct, amount, ref=None):
    return b.post("/v1/topups", {"account_id": acct, "amount_nanos": amount,
                                 "payment_ref": ref or f"big-{uuid.uuid4().hex}"}, token=ADMIN_TOKEN)


def test_topups_past_int64_keep_books_exact(env, big, tmp_path):
    a = new_account(env, "totals-a")
    c = new_account(env, "totals-b")
    cash0 = cash_clearing(env)
    tb0 = trial(env)
    refs = [f"big-{uuid.uuid4().hex}" for _ in range(N_A + 3)]
    answers = [topup(big, a, BIG, refs[i]) for i in range(N_A)] + [topup(big, c, BIG, refs[N_A + i]) for i in range(3)]
    assert [r.status_code for r in answers] == [201] * (N_A + 3), [r.text for r in answers]
    # the fifth top-up of a took its paid balance past int64: written exactly
    assert answers[N_A - 1].json()["balance"]["paid_nanos"] == N_A * BIG > I64
    assert f'"paid_nanos":{N_A * BIG}' in answers[N_A - 1].text
    # the same answer again on a replay
    again = topup(big, a, BIG, refs[N_A - 1])
    assert again.status_code == 200 and again.json()["balance"] == answers[N_A - 1].json()["balance"]
    assert cash_clearing(env) == cash0 - (N_A + 3) * BIG < -I64

    got = big.get(f"/v1/accounts/{a}", token=ADMIN_TOKEN)
    assert got.status_code == 200, got.text
    bal = got.json()["balance"]
    assert bal["paid_nanos"] == N_A * BIG
    assert bal["available_nanos"] == N_A * BIG + bal["promo_nanos"] - bal["held_nanos"] > I64

    tb = trial(env)
    assert tb["balanced"] and tb["total_debits_nanos"] == tb["total_credits_nanos"]
    cc, cp = by_type(tb, "cash_clearing"), by_type(tb, "customer_paid")
    assert cc["debits_nanos"] - by_type(tb0, "cash_clearing")["debits_nanos"] == (N_A + 3) * BIG
    assert cp["credits_nanos"] - by_type(tb0, "customer_paid")["credits_nanos"] == (N_A + 3) * BIG
    text = env.ledger("trial-balance").stdout
    debits = cc["debits_nanos"]
    assert f"{debits // UNIT}.{debits % UNIT:09d}" in text, text
    assert "-" not in text.split("cash_clearing")[1].split()[0], text  # debits never wrap negative
    env.assert_books_sound()

    # billing-admin account show, text and JSON
    shown = env.admin_json("account", "show", str(a))
    assert shown["balance"]["paid_nanos"] == N_A * BIG
    assert f"({N_A * BIG} nanos)" in env.admin("account", "show", str(a)).stdout


def test_usage_and_mirror_on_a_balance_past_int64(env, big):
    a = env.one("SELECT account_id FROM customers WHERE external_id = 'totals-a'")
    # paid only: the charge comes off the paid balance beyond int64, not the signup credit
    set_price(env, "tot-model", 2 * UNIT, UNIT // 2, 8 * UNIT, paid_only=True)
    wait_prices()
    key = json.loads(env.admin("key", "create", "--account", str(a), "--json").stdout)["api_key"]
    au = big.post("/v1/authorize", {"request_id": "tot-1", "api_key": key, "model": "tot-model",
                                    "input_tokens": 1000, "max_output_tokens": 1000})
    assert au.status_code == 200, au.text
    # the mirror holds paid saturated at 2^52 and the rest beside it
    mirror = env.redis_cli("HGET", f"{{a:{a}}}:bal", "paid")
    off = env.redis_cli("HGET", f"{{a:{a}}}:bal", "poff")
    assert int(mirror) == 2 ** 52 and int(mirror) + int(off) == N_A * BIG
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    us = big.post("/v1/usage", {"request_id": "tot-1", "api_key": key, "model": "tot-model", "input_tokens": 1000,
                                "output_tokens": 500, "started_at": started, "hold_id": au.json()["hold_id"]})
    assert us.status_code == 200, us.text
    cost = us.json()["cost_nanos"]
    assert cost == (1000 * 2 * UNIT + 500 * 8 * UNIT) // 10 ** 6
    assert us.json()["balance"]["paid_nanos"] == N_A * BIG - cost
    # a replay answers the same exact balance
    rep = big.post("/v1/usage", {"request_id": "tot-1", "api_key": key, "model": "tot-model", "input_tokens": 1000,
                                 "output_tokens": 500, "started_at": started, "hold_id": au.json()["hold_id"]})
    assert rep.status_code == 200 and rep.json()["duplicate"] is True
    assert rep.json()["balance"]["paid_nanos"] == N_A * BIG - cost
    # the mirror moved by the charge and still adds up to the ledger: reconcile sees no difference
    deadline = time.time() + 10
    while int(env.redis_cli("HGET", f"{{a:{a}}}:bal", "paid")) != 2 ** 52 - cost and time.time() < deadline:
        time.sleep(0.05)
    rc = json.loads(env.ledger("reconcile", "--json").stdout)
    assert rc["differences"] == 0, rc
    # a wrong mirror is named exactly and repaired to the split form
    env.redis_cli("HSET", f"{{a:{a}}}:bal", "poff", "0")
    rc = json.loads(env.ledger("reconcile", "--repair", "--json").stdout)
    d = next(x for x in rc["diffs"] if x["account_id"] == a)
    assert d["ledger"]["paid_nanos"] == N_A * BIG - cost and d["mirror"]["paid_nanos"] == 2 ** 52 - cost
    assert d["repair"] == "repaired"
    assert int(env.redis_cli("HGET", f"{{a:{a}}}:bal", "paid")) == 2 ** 52
    assert int(env.redis_cli("HGET", f"{{a:{a}}}:bal", "poff")) == N_A * BIG - cost - 2 ** 52
    assert json.loads(env.ledger("reconcile", "--json").stdout)["differences"] == 0
    # charges that take a saturated mirror below 2^51 drop it (it would soon
    # refuse calls the books admit): the next call loads it again from the books
    env.redis_cli("HSET", f"{{a:{a}}}:bal", "paid", str(2 ** 51 + cost // 2))
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    us = big.post("/v1/usage", {"request_id": "tot-2", "api_key": key, "model": "tot-model", "input_tokens": 1000,
                                "output_tokens": 500, "started_at": started})
    assert us.status_code == 200 and us.json()["balance"]["paid_nanos"] == N_A * BIG - 2 * cost, us.text
    deadline = time.time() + 10
    while env.redis_cli("EXISTS", f"{{a:{a}}}:bal") != "0" and time.time() < deadline:
        time.sleep(0.05)
    assert env.redis_cli("EXISTS", f"{{a:{a}}}:bal") == "0"
    au = big.post("/v1/authorize", {"request_id": "tot-3", "api_key": key, "model": "tot-model",
                                    "input_tokens": 1000, "max_output_tokens": 1000})
    assert au.status_code == 200, au.text
    assert int(env.redis_cli("HGET", f"{{a:{a}}}:bal", "paid")) == 2 ** 52
    assert int(env.redis_cli("HGET", f"{{a:{a}}}:bal", "poff")) == N_A * BIG - 2 * cost - 2 ** 52
    env.assert_books_sound()


def test_statement_and_manifest_totals_past_int64(env, big, tmp_path):
    a = env.one("SELECT account_id FROM customers WHERE external_id = 'totals-a'")
    now = datetime.datetime.now(datetime.timezone.utc)
    month = now.strftime("%Y-%m")
    st = json.loads(env.ledger("statement", "--account", str(a), "--month", month, "--format", "json").stdout)
    paid_now = env.one("SELECT b.balance FROM ledger_balances b JOIN ledger_accounts la USING (ledger_account_id)"
                       " WHERE la.account_id = %s AND la.type = 'customer_paid'", (a,))
    assert paid_now > I64
    assert st["balanced"] is True
    assert st["closing"]["paid_nanos"] == paid_now
    topups = next(m for m in st["movements"] if m["kind"] == "topup")
    assert topups["paid_nanos"] == N_A * BIG
    csv = env.ledger("statement", "--account", str(a), "--month", month, "--format", "csv").stdout
    assert f",{N_A * BIG}," in csv, csv

    if not os.path.exists(env.signing_key):
        env.admin("keygen", "--out", env.signing_key)
    out = str(tmp_path / "big.csv")
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + datetime.timedelta(days=32)).replace(day=1)
    env.ledger("export", "--from", start.strftime("%Y-%m-%d"), "--to", end.strftime("%Y-%m-%d"), "--out", out)
    with open(out + ".manifest.json") as f:
        m = json.load(f)
    tb = trial(env)
    assert m["totals"]["by_type"]["cash_clearing"]["debits_nanos"] == by_type(tb, "cash_clearing")["debits_nanos"]
    assert m["totals"]["debits_nanos"] == m["totals"]["credits_nanos"] > I64
    v = env.ledger("verify", "--export", out, check=False)
    assert v.returncode == 0, v.stdout + v.stderr
    # the totals are signed: one nano changed in the manifest is caught
    with open(out + ".manifest.json") as f:
        text = f.read()
    total = m["totals"]["debits_nanos"]
    with open(out + ".manifest.json", "w") as f:
        f.write(text.replace(str(total), str(total + 1)))
    v = env.ledger("verify", "--export", out, check=False)
    assert v.returncode == 1, v.stdout + v.stderr


# ---- ceilings ----

def test_ceiling_edges_api(env):
    b = Billingd(env, {"max_topup": "100", "max_grant": "10"})
    try:
        a = new_account(env, "totals-ceiling")
        before = ledger_counts(env)
        over = topup(b, a, 100 * UNIT + 1, ref="ceil-over")
        assert over.status_code == 422 and over.json()["error"]["code"] == "invalid_amount", over.text
        g = b.post("/v1/admin/grants", {"account_id": a, "amount_nanos": 10 * UNIT + 1, "reason": "edge",
                                        "operator": "tester"}, token=ADMIN_TOKEN)
        assert g.status_code == 422 and g.json()["error"]["code"] == "invalid_amount", g.text
        assert ledger_counts(env) == before
        # nothing was written under the key: the same ref within the ceiling is a new top-up
        ok = topup(b, a, 100 * UNIT, ref="ceil-over")
        assert ok.status_code == 201, ok.text
        g = b.post("/v1/admin/grants", {"account_id": a, "amount_nanos": 10 * UNIT, "reason": "edge",
                                        "operator": "tester"}, token=ADMIN_TOKEN)
        assert g.status_code == 201, g.text
    finally:
        b.stop()


def test_ceiling_edges_cli(env):
    a = new_account(env, "totals-ceiling-cli")
    e = env.cli_env(BILLING_MAX_TOPUP="100", BILLING_MAX_GRANT="10")
    before = ledger_counts(env)
    p = env.admin("topup", "--account", a, "--amount", "100.000000001", "--payment-ref", "cli-ceil", check=False, env=e)
    assert p.returncode == 1 and "invalid_amount" in p.stderr and p.stderr.count("\n") == 1, p.stderr
    p = env.admin("grant", "--account", a, "--amount", "10.000000001", "--reason", "edge", check=False, env=e)
    assert p.returncode == 1 and "invalid_amount" in p.stderr, p.stderr
    assert ledger_counts(env) == before
    env.admin("topup", "--account", a, "--amount", "100", "--payment-ref", "cli-ceil", env=e)
    env.admin("grant", "--account", a, "--amount", "10", "--reason", "edge", env=e)
    # the defaults: 10,000,000 per top-up, 1,000,000 per grant
    before = ledger_counts(env)
    p = env.admin("topup", "--account", a, "--amount", "10000000.000000001", "--payment-ref", "cli-def", check=False)
    assert p.returncode == 1 and "invalid_amount" in p.stderr, p.stderr
    p = env.admin("grant", "--account", a, "--amount", "1000000.000000001", "--reason", "edge", check=False)
    assert p.returncode == 1 and "invalid_amount" in p.stderr, p.stderr
    assert ledger_counts(env) == before
    env.admin("topup", "--account", a, "--amount", "10000000", "--payment-ref", "cli-def")
    # a bad ceiling is a configuration error
    p = env.admin("topup", "--account", a, "--amount", "1", "--payment-ref", "cli-x", check=False,
                  env=env.cli_env(BILLING_MAX_TOPUP="-1"))
    assert p.returncode == 1 and "max_topup" in p.stderr, p.stderr


# ---- the migration ----

def test_migration_0010_converts_a_filled_database(stack, tmp_path):
    name = f"billing_m10_{os.getpid()}"
    c = psycopg2.connect(stack.conninfo("postgres", "postgres"))
    c.autocommit = True
    c.cursor().execute(f"CREATE DATABASE {name} TEMPLATE template0 OWNER billing_owner")
    c.close()
    old = tmp_path / "migrations"
    old.mkdir()
    for f in sorted(os.listdir(os.path.join(ROOT, "migrations"))):
        if f < "0010":
            shutil.copy(os.path.join(ROOT, "migrations", f), old / f)
    env = Env(stack, name, str(tmp_path))
    env.admin("migrate", env=env.cli_env(BILLING_MIGRATIONS_DIR=str(old)))
    assert env.one("SELECT data_type FROM information_schema.columns"
                   " WHERE table_name = 'ledger_balance_rows' AND column_name = 'balance'") == "bigint"
    # fill it: top-ups near the old limit, grants, an adjustment, a campaign's credit
    accts = [new_account(env, f"m10-{i}") for i in range(3)]
    near = 2 ** 61 - 1
    e = env.cli_env(BILLING_MAX_TOPUP=units(I64), BILLING_MAX_GRANT=units(I64))
    for i, a in enumerate(accts):
        env.admin("topup", "--account", a, "--amount", units(near), "--payment-ref", f"m10-{i}", env=e)
        env.admin("grant", "--account", a, "--amount", "3.5", "--reason", "m10", env=e)
    env.admin("adjust", "--account", accts[0], "--amount", "-1.25", "--reason", "m10")
    bal_before = env.sql("SELECT ledger_account_id, balance FROM ledger_balances ORDER BY 1")
    tb_before = trial(env)
    fin_before = env.sql("SELECT account_id, paid_nanos, promo_nanos, total_nanos FROM finance_account_balances"
                         " ORDER BY 1")
    env.assert_books_sound()

    env.admin("migrate")  # 0010 and anything after it
    types = dict(env.sql("SELECT table_name || '.' || column_name, data_type FROM information_schema.columns"
                         " WHERE (table_name, column_name) IN (('ledger_balance_rows', 'balance'),"
                         " ('ledger_balance_parts', 'balance'), ('ledger_balances', 'balance'),"
                         " ('finance_account_balances', 'paid_nanos'), ('finance_usage_daily', 'cost_nanos'),"
                         " ('finance_promo_liability_summary', 'remaining_nanos'), ('campaigns', 'granted_nanos'))"))
    assert set(types.values()) == {"numeric"} and len(types) == 7, types
    assert env.sql("SELECT ledger_account_id, balance FROM ledger_balances ORDER BY 1") == bal_before
    assert trial(env) == tb_before
    assert env.sql("SELECT account_id, paid_nanos, promo_nanos, total_nanos FROM finance_account_balances"
                   " ORDER BY 1") == fin_before
    env.assert_books_sound()
    # the fourth top-up near the old limit, which used to fail with bigint out of range
    env.admin("topup", "--account", accts[0], "--amount", units(near), "--payment-ref", "m10-4th", env=e)
    env.admin("topup", "--account", accts[1], "--amount", units(near), "--payment-ref", "m10-5th", env=e)
    assert cash_clearing(env) == -5 * near
    assert env.one("SELECT paid_nanos FROM finance_account_balances WHERE account_id = %s", (accts[0],)) == \
        2 * near - 125 * 10 ** 7
    env.assert_books_sound()
