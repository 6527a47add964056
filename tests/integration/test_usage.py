"""Usage ingestion through a real billingd and PostgreSQL.

Must show 1 (cost table end to end), 2 (burn-down), 3 (200 concurrent
clients with replays and conflicts), 4 (kill -9 during load).  Must show 5
(PostgreSQL stopped) is test_usage_outage.py, 6 (bad bodies) is
test_http_errors.py.  Every amount is exact: each expected cost is written
out by hand and also recomputed from the formula of CONTRACT.md section 2."""
import datetime as dt
import json
import os
import signal
import time

import pytest

from conftest import (ADMIN_TOKEN, UNIT, expected_cost, ledger_counts, new_account, result_lines, rfc3339, run_load, set_price,
                      wait_prices)

UTC = dt.timezone.utc
NOW = dt.datetime.now(UTC)
DAY = (NOW - dt.timedelta(days=2)).date()  # every time of this day is 2-3 days old


def journal_rows(env, accts):
    """Journal rows so far, less the expiry job's breakage rows of other
    accounts: billingd writes one for every expired grant with credit left
    (every 60 s), and an earlier test's grant may expire during a window
    these tests count in."""
    return env.one("SELECT count(*) FROM journal WHERE NOT (kind = 'breakage' AND account_id <> ALL(%s))",
                   (list(accts),))


def at(h, m=0, s=0, us=0, day=None):
    d = day or DAY
    return dt.datetime(d.year, d.month, d.day, h, m, s, us, tzinfo=UTC)


def usage(rid, account, model, tin, tcached, tout, started):
    return {"request_id": rid, "account_id": account, "model": model, "input_tokens": tin,
            "cached_input_tokens": tcached, "output_tokens": tout,
            "started_at": started if isinstance(started, str) else rfc3339(started)}


def without_dup(r):
    return {k: v for k, v in r.items() if k != "duplicate"}


LIVE = ("held_nanos", "available_nanos", "held_known", "note")


def recorded(r):
    """An answer without what is read live when it is sent (the held amount
    and what follows from it): the part recorded with the usage."""
    r = without_dup(r)
    r["balance"] = {k: v for k, v in r["balance"].items() if k not in LIVE}
    return r


# ---------------------------------------------------------------- 1. cost table

STD = (2 * UNIT, UNIT // 2, 8 * UNIT)  # 2 / 0.5 / 8 units per 1M tokens
OFFPEAK = ["22:00-02:00=5000"]
TWO_WIN = ["16:30-00:30=5000", "09:00-10:00=7500"]
DAY_BEFORE = DAY - dt.timedelta(days=1)

# name, (input, cached, output) nanos per 1M, windows, paid_only, tokens (in, cached, out),
# started_at, multiplier by hand, cost by hand (None: refused with 422)
COST_CASES = [
    ("zero tokens", STD, [], False, (0, 0, 0), at(12), 10000, 0),
    ("one input token", STD, [], False, (1, 0, 0), at(12), 10000, 2000),
    ("one output token", STD, [], False, (0, 0, 1), at(12), 10000, 8000),
    ("1000 in 500 out", STD, [], False, (1000, 0, 500), at(12), 10000, 6000000),
    ("cache hit 400 of 1000", STD, [], False, (1000, 400, 500), at(12), 10000, 5400000),
    ("all input cached", STD, [], False, (1000, 1000, 0), at(12), 10000, 500000),
    ("cached price zero", (2 * UNIT, 0, 8 * UNIT), [], False, (1000, 999, 0), at(12), 10000, 2000),
    ("odd prices", (1234567891, 123456789, 9876543211), [], False, (777, 333, 4444), at(12), 10000, 44480617),
    ("paid_only does not change cost", STD, [], True, (1000, 400, 500), at(12), 10000, 5400000),
    ("paid_only in a window", STD, OFFPEAK, True, (1000, 400, 500), at(23), 5000, 2700000),
    ("0.5 nano rounds up", (1, 0, 0), [], False, (500000, 0, 0), at(12), 10000, 1),
    ("0.499999 rounds down", (1, 0, 0), [], False, (499999, 0, 0), at(12), 10000, 0),
    ("1.5 rounds to 2", (1, 0, 0), [], False, (1500000, 0, 0), at(12), 10000, 2),
    ("2.5 rounds to 3, not to even", (1, 0, 0), [], False, (2500000, 0, 0), at(12), 10000, 3),
    ("half from cached part", (0, 1, 0), [], False, (500000, 500000, 0), at(12), 10000, 1),
    ("half from output part", (0, 0, 3), [], False, (0, 0, 500000), at(12), 10000, 2),
    ("half made by the window", (1, 0, 0), OFFPEAK, False, (1000000, 0, 0), at(23), 5000, 1),
    ("quarter made by a window rounds down", (1, 0, 0), ["11:00-13:00=2500"], False, (1000000, 0, 0), at(12), 2500, 0),
    ("window start inclusive 22:00", STD, OFFPEAK, False, (1000, 0, 500), at(22), 5000, 3000000),
    ("21:59:59.999999 before the window", STD, OFFPEAK, False, (1000, 0, 500), at(21, 59, 59, 999999), 10000,
     6000000),
    ("window at midnight", STD, OFFPEAK, False, (1000, 0, 500), at(0), 5000, 3000000),
    ("window 23:59:59.999999", STD, OFFPEAK, False, (1000, 0, 500), at(23, 59, 59, 999999), 5000, 3000000),
    ("window 01:59:59.999999", STD, OFFPEAK, False, (1000, 0, 500), at(1, 59, 59, 999999), 5000, 3000000),
    ("window end exclusive 02:00", STD, OFFPEAK, False, (1000, 0, 500), at(2), 10000, 6000000),
    ("midday outside the window", STD, OFFPEAK, False, (1000, 0, 500), at(12), 10000, 6000000),
    ("offset +08:00 puts 06:00 local at 22:00Z", STD, OFFPEAK, False, (1000, 0, 500),
     f"{DAY.isoformat()}T06:00:00+08:00", 5000, 3000000),
    ("offset -05:00 puts 20:59 local at 01:59Z", STD, OFFPEAK, False, (1000, 0, 500),
     f"{DAY_BEFORE.isoformat()}T20:59:59.5-05:00", 5000, 3000000),
    ("16:30 starts the wrapping window", STD, TWO_WIN, False, (1000, 0, 500), at(16, 30), 5000, 3000000),
    ("16:29:59.999999 full price", STD, TWO_WIN, False, (1000, 0, 500), at(16, 29, 59, 999999), 10000, 6000000),
    ("00:29:59 still half", STD, TWO_WIN, False, (1000, 0, 500), at(0, 29, 59), 5000, 3000000),
    ("00:30 full again", STD, TWO_WIN, False, (1000, 0, 500), at(0, 30), 10000, 6000000),
    ("09:00 second window 75%", STD, TWO_WIN, False, (1000, 0, 500), at(9), 7500, 4500000),
    ("10:00 full", STD, TWO_WIN, False, (1000, 0, 500), at(10), 10000, 6000000),
    ("free window", STD, ["00:00-06:00=0"], False, (1000, 0, 500), at(3), 0, 0),
    ("surcharge window 150%", (1, 0, 0), ["11:00-13:00=15000"], False, (1000000, 0, 0), at(12), 15000, 2),
    ("cache hit off-peak", STD, OFFPEAK, False, (1000000, 750000, 250000), at(1), 5000, 1437500000),
    ("1e9 in and out at std", STD, [], False, (10 ** 9, 0, 10 ** 9), at(12), 10000, 10000 * UNIT),
    ("1e9 each, half cached, 1e15/1M", (10 ** 15,) * 3, [], False, (10 ** 9, 5 * 10 ** 8, 10 ** 9), at(12), 10000,
     2 * 10 ** 18),
    ("cost above int64 refused", (0, 0, 10 ** 16), [], False, (0, 0, 10 ** 9), at(12), 10000, None),
]


@pytest.fixture(scope="module")
def cost_setup(env, billingd):
    acct = new_account(env, "cost-table")
    versions = []
    for i, (name, prices, windows, paid_only, *_rest) in enumerate(COST_CASES):
        versions.append(set_price(env, f"cost-{i:02d}", *prices, windows=windows, paid_only=paid_only))
    wait_prices()
    return acct, versions


def test_cost_table_hand_values_match_the_formula():
    assert len(COST_CASES) >= 30
    for name, prices, _w, _p, toks, _t, m, want in COST_CASES:
        if want is not None:
            assert expected_cost(*prices, *toks, m=m) == want, name
        else:
            assert expected_cost(*prices, *toks, m=m) > 2 ** 63 - 1, name


@pytest.mark.parametrize("i", range(len(COST_CASES)), ids=[c[0] for c in COST_CASES])
def test_cost_table_end_to_end(env, billingd, cost_setup, i):
    acct, versions = cost_setup
    name, prices, windows, paid_only, (tin, tc, tout), started, m, want = COST_CASES[i]
    before = ledger_counts(env)
    body = usage(f"cost-{i:02d}", acct, f"cost-{i:02d}", tin, tc, tout, started)
    r = billingd.post("/v1/usage", body)
    if want is None:
        assert r.status_code == 422, r.text
        assert r.json()["error"]["code"] == "invalid_tokens"
        assert ledger_counts(env) == before
        return
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["cost_nanos"] == want
    assert j["price_version"] == versions[i]
    assert j["request_id"] == body["request_id"] and j["account_id"] == acct and j["duplicate"] is False
    assert sum(c["amount_nanos"] for c in j["charged"]) == want
    assert all(c["amount_nanos"] > 0 for c in j["charged"])
    row = env.one("SELECT cost_nanos, price_version, model, input_tokens, cached_input_tokens, output_tokens,"
                  " txn_id FROM usage_records WHERE request_id = %s", (body["request_id"],))
    assert row[:6] == (want, versions[i], body["model"], tin, tc, tout)
    # the journal transaction moves exactly the cost to revenue, balanced
    posts = env.sql("SELECT ledger_account_id, amount FROM postings WHERE txn_id = %s ORDER BY line", (row[6],))
    assert sum(a for _, a in posts) == 0
    assert [a for la, a in posts if la == 1] == [want]
    # replay: the original answer
    r2 = billingd.post("/v1/usage", body)
    assert r2.status_code == 200 and r2.json()["duplicate"] is True
    assert without_dup(r2.json()) == without_dup(j)


def test_cost_table_through_batch(env, billingd, cost_setup):
    acct, versions = cost_setup
    recs = [usage(f"costb-{i:02d}", acct, f"cost-{i:02d}", *c[4], c[5]) for i, c in enumerate(COST_CASES)]
    j0 = journal_rows(env, [acct])
    r = billingd.post("/v1/usage/batch", {"records": recs})
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert len(res) == len(COST_CASES)
    ok = 0
    for i, c in enumerate(COST_CASES):
        if c[7] is None:
            assert res[i]["error"]["status"] == 422, res[i]
            continue
        assert res[i]["request_id"] == f"costb-{i:02d}", res[i]
        assert res[i]["cost_nanos"] == c[7] and res[i]["price_version"] == versions[i], (c[0], res[i])
        ok += 1
    assert journal_rows(env, [acct]) == j0 + ok


def test_price_versions_ties_and_first_price(env, billingd):
    acct = new_account(env, "versions")
    old = rfc3339(NOW - dt.timedelta(days=10))
    recent = rfc3339(NOW - dt.timedelta(days=1))
    v1 = set_price(env, "ver", UNIT, 0, 0, effective=old)
    v2 = set_price(env, "ver", 2 * UNIT, 0, 0, effective=recent)
    v3 = set_price(env, "ver", 3 * UNIT, 0, 0, effective=recent)  # same instant: the greater version wins
    set_price(env, "ver", 9 * UNIT, 0, 0, effective=rfc3339(NOW + dt.timedelta(days=30)))  # not yet
    assert v1 < v2 < v3
    wait_prices()
    # 1000 tokens at 1 unit per 1M tokens: 10^6 nanos
    cases = [("ver-a", NOW - dt.timedelta(days=5), v1, 1000000),
             ("ver-b", NOW - dt.timedelta(minutes=1), v3, 3000000),
             ("ver-c", NOW - dt.timedelta(days=1) + dt.timedelta(seconds=1), v3, 3000000)]
    for rid, t, v, cost in cases:
        r = billingd.post("/v1/usage", usage(rid, acct, "ver", 1000, 0, 0, t))
        assert r.status_code == 200, r.text
        assert (r.json()["price_version"], r.json()["cost_nanos"]) == (v, cost), rid
        assert env.one("SELECT price_version FROM usage_records WHERE request_id = %s", (rid,)) == v
    before = ledger_counts(env)
    r = billingd.post("/v1/usage", usage("ver-d", acct, "ver", 1000, 0, 0, NOW - dt.timedelta(days=11)))
    assert r.status_code == 422 and r.json()["error"]["code"] == "no_price_in_effect", r.text
    assert ledger_counts(env) == before
    # a record 4 minutes ahead is accepted and priced
    r = billingd.post("/v1/usage", usage("ver-e", acct, "ver", 1000, 0, 0, dt.datetime.now(UTC) + dt.timedelta(minutes=4)))
    assert r.status_code == 200 and r.json()["cost_nanos"] == 3000000, r.text


# ---------------------------------------------------------------- 2. burn-down


def grant(env, acct, amount, reason, priority=None, expires=None):
    args = ["grant", "--account", acct, "--amount", amount, "--reason", reason]
    if priority is not None:
        args += ["--priority", priority]
    if expires is not None:
        args += ["--expires", expires]
    return json.loads(env.admin(*args, "--json").stdout)["grant_id"]


def grant_la(env, grant_id):
    return env.one("SELECT ledger_account_id FROM grants WHERE grant_id = %s", (grant_id,))


def paid_la(env, acct):
    return env.one("SELECT ledger_account_id FROM ledger_accounts WHERE account_id = %s AND type = 'customer_paid'",
                   (acct,))


def postings_of(env, rid):
    txn = env.one("SELECT txn_id FROM usage_records WHERE request_id = %s", (rid,))
    return sorted(env.sql("SELECT ledger_account_id, amount FROM postings WHERE txn_id = %s", (txn,)))


def charged(j):
    return [(c["bucket"], c["grant_id"], c["amount_nanos"]) for c in j["charged"]]


def test_burn_down_order_spanning_buckets_and_arrears(env, billingd):
    set_price(env, "burn", UNIT, 0, 0)  # 1 unit per 1M input tokens: 1000 nanos a token
    a = new_account(env, "burn-1")
    signup = env.one("SELECT grant_id FROM grants WHERE account_id = %s", (a,))
    assert env.one("SELECT amount_nanos, priority FROM grants WHERE grant_id = %s", (signup,)) == (14 * UNIT, 100)
    exp10 = rfc3339(NOW + dt.timedelta(days=10))
    # a grant cannot be made already expired (422 / exit 2): one that expires in two seconds, waited out below
    expired_at = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=2)
    g_expired = grant(env, a, "4", "expired before use", priority=1, expires=rfc3339(expired_at))
    g1 = grant(env, a, "1", "prio 10, 30 days", priority=10, expires=rfc3339(NOW + dt.timedelta(days=30)))
    g2 = grant(env, a, "2", "prio 10, 10 days", priority=10, expires=exp10)
    g5 = grant(env, a, "0.5", "prio 10, 10 days, younger", priority=10, expires=exp10)
    g3 = grant(env, a, "3", "prio 50, never expires", priority=50)
    env.admin("topup", "--account", a, "--amount", "5", "--payment-ref", "burn-pay-1")
    wait_prices()
    while dt.datetime.now(dt.timezone.utc) <= expired_at:
        time.sleep(0.1)
    t = NOW - dt.timedelta(minutes=1)
    pl, rev = paid_la(env, a), 1

    def charge(rid, nanos):
        assert nanos % 1000 == 0
        r = billingd.post("/v1/usage", usage(rid, a, "burn", nanos // 1000, 0, 0, t))
        assert r.status_code == 200, r.text
        j = r.json()
        assert j["cost_nanos"] == nanos
        return j

    # 0.5: from the first grant in order (g2: priority 10, earliest expiry, older than g5)
    j = charge("burn-1", UNIT // 2)
    assert charged(j) == [("grant", g2, UNIT // 2)]
    assert j["balance"]["paid_nanos"] == 5 * UNIT and j["balance"]["promo_nanos"] == 20 * UNIT
    assert postings_of(env, "burn-1") == sorted([(grant_la(env, g2), -UNIT // 2), (rev, UNIT // 2)])
    # 2.0: the rest of g2, then g5 (same priority and expiry, younger)
    j = charge("burn-2", 2 * UNIT)
    assert charged(j) == [("grant", g2, 3 * UNIT // 2), ("grant", g5, UNIT // 2)]
    assert postings_of(env, "burn-2") == sorted([(grant_la(env, g2), -3 * UNIT // 2), (grant_la(env, g5), -UNIT // 2),
                                                 (rev, 2 * UNIT)])
    assert j["balance"]["promo_nanos"] == 18 * UNIT
    # 24.5: g1, g3, the signup grant, the paid balance, then 1.5 of arrears: one line per bucket
    j = charge("burn-3", 49 * UNIT // 2)
    assert charged(j) == [("grant", g1, UNIT), ("grant", g3, 3 * UNIT), ("grant", signup, 14 * UNIT),
                          ("paid", None, 5 * UNIT), ("arrears", None, 3 * UNIT // 2)]
    assert j["balance"] == {"paid_nanos": -3 * UNIT // 2, "promo_nanos": 0, "held_nanos": 0,
                            "available_nanos": -3 * UNIT // 2, "held_known": True}
    # postings: one per ledger account (paid and arrears are both the paid account)
    assert postings_of(env, "burn-3") == sorted([(grant_la(env, g1), -UNIT), (grant_la(env, g3), -3 * UNIT),
                                                 (grant_la(env, signup), -14 * UNIT), (pl, -13 * UNIT // 2),
                                                 (rev, 49 * UNIT // 2)])
    # 1.0 more: arrears only
    j = charge("burn-4", UNIT)
    assert charged(j) == [("arrears", None, UNIT)]
    assert j["balance"]["paid_nanos"] == -5 * UNIT // 2
    assert postings_of(env, "burn-4") == sorted([(pl, -UNIT), (rev, UNIT)])
    # a free call: no charged line, balances unchanged, a zero movement in the books
    j = charge("burn-5", 0)
    assert charged(j) == [] and j["balance"]["paid_nanos"] == -5 * UNIT // 2
    assert sum(a for _, a in postings_of(env, "burn-5")) == 0
    # the expired grant was never touched; every other grant is empty
    bal = dict(env.sql("SELECT g.grant_id, b.balance FROM grants g JOIN ledger_balances b USING (ledger_account_id)"
                       " WHERE g.account_id = %s", (a,)))
    assert bal[g_expired] in (4 * UNIT, 0)  # 0 only if the expiry job moved it to breakage
    assert env.one("SELECT count(*) FROM postings p JOIN usage_records u USING (txn_id)"
                   " WHERE p.ledger_account_id = %s", (grant_la(env, g_expired),)) == 0
    assert all(bal[g] == 0 for g in (g1, g2, g3, g5, signup))
    assert env.one("SELECT balance FROM ledger_balances WHERE ledger_account_id = %s", (pl,)) == -5 * UNIT // 2
    acc = billingd.get(f"/v1/accounts/{a}").json()
    assert acc["balance"]["paid_nanos"] == -5 * UNIT // 2
    env.assert_books_sound()


def test_paid_only_model_never_consumes_grants(env, billingd):
    set_price(env, "po", UNIT, 0, 0, paid_only=True)
    set_price(env, "po-free", UNIT, 0, 0)
    a = new_account(env, "paid-only-1")
    signup = env.one("SELECT grant_id FROM grants WHERE account_id = %s", (a,))
    extra = grant(env, a, "3", "priority 0", priority=0)
    env.admin("topup", "--account", a, "--amount", "2", "--payment-ref", "po-pay-1")
    wait_prices()
    t = NOW - dt.timedelta(minutes=1)
    r = billingd.post("/v1/usage", usage("po-1", a, "po", 1500000, 0, 0, t))
    assert r.status_code == 200, r.text
    assert charged(r.json()) == [("paid", None, 3 * UNIT // 2)]
    assert r.json()["balance"]["promo_nanos"] == 17 * UNIT
    r = billingd.post("/v1/usage", usage("po-2", a, "po", 1000000, 0, 0, t))
    assert charged(r.json()) == [("paid", None, UNIT // 2), ("arrears", None, UNIT // 2)]
    assert r.json()["balance"]["paid_nanos"] == -UNIT // 2 and r.json()["balance"]["promo_nanos"] == 17 * UNIT
    # grants untouched by both; the paid account alone moved
    assert env.one("SELECT sum(b.balance) FROM grants g JOIN ledger_balances b USING (ledger_account_id)"
                   " WHERE g.account_id = %s", (a,)) == 17 * UNIT
    assert postings_of(env, "po-2") == sorted([(paid_la(env, a), -UNIT), (1, UNIT)])
    # the same account on an ordinary model: grants first even in arrears
    r = billingd.post("/v1/usage", usage("po-3", a, "po-free", 1000000, 0, 0, t))
    assert charged(r.json()) == [("grant", extra, UNIT)]
    assert signup != extra
    env.assert_books_sound()


def test_one_bad_record_does_not_fail_its_commit_batch(env, billingd):
    """A record that fails inside the database is isolated: the others of the
    same group commit are charged.  The failure is injected with a trigger
    that refuses one request_id."""
    a = new_account(env, "iso-1")
    set_price(env, "iso-m", UNIT, 0, 0)
    env.sql("""CREATE FUNCTION refuse_iso_bad() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN IF NEW.request_id = 'iso-bad' THEN RAISE EXCEPTION 'injected failure'; END IF;
               RETURN NEW; END $$;
               CREATE TRIGGER refuse_iso_bad BEFORE INSERT ON usage_records
               FOR EACH ROW EXECUTE FUNCTION refuse_iso_bad()""", user="billing_owner")
    try:
        wait_prices()
        t = NOW - dt.timedelta(minutes=1)
        recs = [usage(f"iso-{i}", a, "iso-m", 1000 * (i + 1), 0, 0, t) for i in range(40)]
        recs[17] = usage("iso-bad", a, "iso-m", 5000, 0, 0, t)
        j0 = journal_rows(env, [a])
        r = billingd.post("/v1/usage/batch", {"records": recs}, timeout=120)
        assert r.status_code == 200, r.text
        res = r.json()["results"]
        for i, x in enumerate(res):
            if i == 17:
                assert "error" in x and x["error"]["status"] == 500, x
            else:
                assert x.get("cost_nanos") == 1000 * (i + 1) * 1000 and x["duplicate"] is False, (i, x)
        assert journal_rows(env, [a]) == j0 + 39
        assert env.one("SELECT count(*) FROM usage_records WHERE request_id = 'iso-bad'") == 0
    finally:
        env.sql("DROP TRIGGER refuse_iso_bad ON usage_records; DROP FUNCTION refuse_iso_bad()", user="billing_owner")
    # the same record goes through once the failure is gone
    assert billingd.post("/v1/usage", recs[17]).status_code == 200
    assert billingd.post("/v1/usage", usage("iso-ok", a, "iso-m", 1000, 0, 0, t)).status_code == 200
    env.assert_books_sound()


def test_caller_keys_cannot_take_a_usage_key(env, billingd):
    """A grant's idempotency key is namespaced: 'usage:X' given by a caller
    never blocks usage X."""
    a = new_account(env, "ns-1")
    set_price(env, "ns-m", UNIT, 0, 0)
    r = billingd.post("/v1/admin/grants", {"account_id": a, "amount_nanos": UNIT, "reason": "collide",
                                           "operator": "tester", "idempotency_key": "usage:ns-x"},
                      token=ADMIN_TOKEN)
    assert r.status_code == 201, r.text
    wait_prices()
    r = billingd.post("/v1/usage", usage("ns-x", a, "ns-m", 1000, 0, 0, NOW - dt.timedelta(minutes=1)))
    assert r.status_code == 200 and r.json()["cost_nanos"] == 1000 * 1000
    env.assert_books_sound()


# ---------------------------------------------------------------- 3. concurrency

LOAD_IN, LOAD_CACHED, LOAD_OUT = 200 * UNIT, 50 * UNIT, 800 * UNIT
LOAD_WINDOWS = ["22:00-02:00=5000"]


def load_body(rid, acct, seed, base):
    h = (seed * 7919 + 104729) % 1000003
    tin = 100 + h % 5000
    tc = tin * (h % 4) // 4
    tout = h % 2000
    started = base - dt.timedelta(seconds=h % 86000, microseconds=h % 999999)
    return usage(rid, acct, "load-m", tin, tc, tout, started)


def load_cost(b):
    t = dt.datetime.fromisoformat(b["started_at"].replace("Z", "+00:00"))
    sod = t.hour * 3600 + t.minute * 60 + t.second
    m = 5000 if (sod >= 22 * 3600 or sod < 2 * 3600) else 10000
    return expected_cost(LOAD_IN, LOAD_CACHED, LOAD_OUT, b["input_tokens"], b["cached_input_tokens"],
                         b["output_tokens"], m=m)


def test_200_clients_50_records_replays_and_conflicts(env, billingd, tmp_path):
    n_clients, per_client, n_accts = 200, 50, 20
    accts = [new_account(env, f"load-{i}") for i in range(n_accts)]
    for i, a in enumerate(accts):
        env.admin("topup", "--account", a, "--amount", "100", "--payment-ref", f"load-pay-{i}")
    version = set_price(env, "load-m", LOAD_IN, LOAD_CACHED, LOAD_OUT, windows=LOAD_WINDOWS)
    wait_prices()
    before = {a: env.one("SELECT coalesce(sum(b.balance), 0) FROM ledger_accounts la JOIN ledger_balances b"
                         " USING (ledger_account_id) WHERE la.account_id = %s", (a,)) for a in accts}
    j0 = journal_rows(env, accts)
    u0 = env.one("SELECT count(*) FROM usage_records")
    base = dt.datetime.now(UTC) - dt.timedelta(minutes=10)
    plan, meta = [], []  # meta: (kind, request_id, body, original plan line or None)
    by_client = {}
    for c in range(n_clients):
        lines = {}
        for k in range(per_client):
            acct = accts[(c * per_client + k) % n_accts]
            if k == 0:  # the same request_id from two clients at once
                rid = f"race-{c % 100}"
                b = load_body(rid, accts[c % 100 % n_accts], 10 ** 6 + c % 100, base)
                meta.append(("race", rid, b, None))
            elif k % 10 == 9:  # 10%: replay of one of my own earlier, acknowledged records
                orig = lines[k - 5]
                b = meta[orig][2]
                meta.append(("replay", b["request_id"], b, orig))
            elif k == 47 and c % 2 == 0:  # 1%: the same request_id with another body
                orig = lines[43]
                b = dict(meta[orig][2], output_tokens=meta[orig][2]["output_tokens"] + 1)
                meta.append(("conflict", b["request_id"], b, orig))
            else:
                rid = f"ld-{c}-{k}"
                b = load_body(rid, acct, c * per_client + k, base)
                meta.append(("new", rid, b, None))
            lines[k] = len(plan)
            plan.append((f"c{c}", "/v1/usage", b))
        by_client[c] = lines
    kinds = [m[0] for m in meta]
    assert len(plan) == 10000 and kinds.count("replay") == 1000 and kinds.count("conflict") == 100
    t0 = time.time()
    res = run_load(billingd, plan, str(tmp_path), "load")
    elapsed = time.time() - t0
    print(f"10000 usage requests from 200 clients in {elapsed:.1f} s")
    statuses = {}
    for i, (st, _ra, _b) in res.items():
        statuses[st] = statuses.get(st, 0) + 1
    assert statuses == {200: 9900, 409: 100}, statuses
    originals = {}
    for i, (kind, rid, b, orig) in enumerate(meta):
        st, _ra, j = res[i]
        if kind == "conflict":
            assert st == 409 and j["error"]["code"] == "idempotency_conflict", j
            continue
        assert st == 200 and j["request_id"] == rid, j
        assert j["cost_nanos"] == load_cost(b), (rid, j)
        assert j["price_version"] == version
        assert sum(c["amount_nanos"] for c in j["charged"]) == j["cost_nanos"]
        if kind == "new":
            assert j["duplicate"] is False, j
            originals[rid] = j
        elif kind == "replay":
            assert j["duplicate"] is True, j
            assert without_dup(j) == without_dup(res[orig][2]), rid
    # a race pair: exactly one charge, the other its replay
    for r in range(100):
        pair = [res[by_client[c][0]][2] for c in (r, r + 100)]
        assert sorted(p["duplicate"] for p in pair) == [False, True], pair
        assert without_dup(pair[0]) == without_dup(pair[1])
        originals[f"race-{r}"] = pair[0]
    # the books: exactly one usage record and one journal transaction per request_id
    assert env.one("SELECT count(*) FROM usage_records") - u0 == len(originals) == 8800
    assert journal_rows(env, accts) - j0 == 8800
    assert env.one("SELECT count(*) FROM journal WHERE kind = 'usage' AND idempotency_key IN"
                   " (SELECT 'usage:' || request_id FROM usage_records WHERE model = 'load-m')") == 8800
    assert env.one("SELECT count(DISTINCT txn_id) FROM usage_records WHERE model = 'load-m'") == 8800
    rows = env.sql("SELECT request_id, cost_nanos, output_tokens FROM usage_records WHERE model = 'load-m'")
    assert {r[0]: r[1] for r in rows} == {rid: j["cost_nanos"] for rid, j in originals.items()}
    out_tokens = {r[0]: r[2] for r in rows}
    for kind, rid, b, orig in meta:
        if kind == "conflict":  # the conflicting body changed nothing
            assert out_tokens[rid] == meta[orig][2]["output_tokens"]
    # revenue and every account moved by exactly the costs
    per_acct = {}
    for rid, j in originals.items():
        per_acct[j["account_id"]] = per_acct.get(j["account_id"], 0) + j["cost_nanos"]
    for a in accts:
        now_bal = env.one("SELECT coalesce(sum(b.balance), 0) FROM ledger_accounts la JOIN ledger_balances b"
                          " USING (ledger_account_id) WHERE la.account_id = %s", (a,))
        assert before[a] - now_bal == per_acct[a], a
    assert env.one("SELECT -sum(p.amount) FROM postings p JOIN usage_records u USING (txn_id)"
                   " WHERE u.model = 'load-m' AND p.ledger_account_id <> 1") == sum(per_acct.values())
    assert env.one("SELECT count(*) FROM usage_records WHERE model = 'load-m' AND cost_nanos > 0") > 8000
    env.assert_books_sound()
    assert elapsed < 60


# ---------------------------------------------------------------- 4. kill -9


def test_kill_9_during_load_loses_nothing_and_replays_charge_nothing(env, billingd, tmp_path):
    accts = [new_account(env, f"k9-{i}") for i in range(5)]
    set_price(env, "k9-m", 3 * UNIT, UNIT, 9 * UNIT)
    wait_prices()
    base = dt.datetime.now(UTC) - dt.timedelta(minutes=5)
    plan = []
    for c in range(40):
        for k in range(60):
            b = usage(f"k9-{c}-{k}", accts[(c + k) % 5], "k9-m", 1000 + c * 60 + k, (c * 60 + k) % 1000, 10 + k,
                      base)
            plan.append((f"c{c}", "/v1/usage", b))
    out_path = os.path.join(str(tmp_path), "k9.out")
    proc, collect = run_load(billingd, plan, str(tmp_path), "k9", error_sleep_ms=100, background=True)
    deadline = time.time() + 30
    while result_lines(out_path) < 500 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    assert result_lines(out_path) >= 500, "the load never got going"
    billingd.kill(signal.SIGKILL)
    assert billingd.proc.returncode == -signal.SIGKILL
    time.sleep(0.3)
    billingd.start()
    res = collect()
    acked = {i for i, (st, _, _) in res.items() if st == 200}
    lost = {i for i, (st, _, _) in res.items() if st != 200}
    print(f"kill -9: {len(acked)} acknowledged, {len(lost)} without an answer")
    assert lost, "the kill did not hit the load"
    assert acked, "nothing was acknowledged"
    assert all(res[i][0] in (0, 503) for i in lost), {res[i][0] for i in lost}
    stored = dict(env.sql("SELECT request_id, response FROM usage_records WHERE model = 'k9-m'"))
    for i in acked:  # every 200 is in the ledger, with the answer that was given
        rid = plan[i][2]["request_id"]
        assert rid in stored, rid
        assert recorded(json.loads(stored[rid])) == recorded(res[i][2])
    n_usage = env.one("SELECT count(*) FROM journal WHERE kind = 'usage'")
    assert env.one("SELECT count(*) FROM usage_records") == n_usage
    # replay everything: acknowledged ones are duplicates with the same answer;
    # never-acknowledged ones are duplicates if they were committed, else charged now, once
    res2 = run_load(billingd, plan, str(tmp_path), "k9-replay")
    newly = 0
    for i, (st, _, j) in res2.items():
        rid = plan[i][2]["request_id"]
        assert st == 200, (rid, st, j)
        if i in acked or rid in stored:
            assert j["duplicate"] is True, j
            if i in acked:
                assert without_dup(j) == without_dup(res[i][2])
        else:
            assert j["duplicate"] is False, j
            newly += 1
    assert env.one("SELECT count(*) FROM journal WHERE kind = 'usage'") == n_usage + newly
    assert env.one("SELECT count(*) FROM usage_records WHERE model = 'k9-m'") == len(plan)
    # and once more: nothing new at all
    before = ledger_counts(env)
    res3 = run_load(billingd, plan, str(tmp_path), "k9-replay2")
    assert all(st == 200 and j["duplicate"] is True for st, _, j in res3.values())
    assert ledger_counts(env) == before
    for i, (st, _, j) in res3.items():
        assert j["cost_nanos"] == expected_cost(3 * UNIT, UNIT, 9 * UNIT, plan[i][2]["input_tokens"],
                                                plan[i][2]["cached_input_tokens"], plan[i][2]["output_tokens"])
    env.assert_books_sound()
