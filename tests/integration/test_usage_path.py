"""The durable usage path (migration 0009).  A database filled
under 0006 converts and verifies; references are still refused for every
role; system-account balances kept in parts read the same through
ledger_balances; the writers route records by account."""
import datetime as dt
import json
import select
import time

import psycopg2
import pytest

from conftest import Billingd, db_before_migration, new_account, rfc3339, set_price, wait_prices

UTC = dt.timezone.utc
STARTED = rfc3339(dt.datetime.now(UTC) - dt.timedelta(minutes=1))  # one instant: a replay is the same body


def usage(rid, account, tin=1000, tout=100):
    return {"request_id": rid, "account_id": account, "model": "path-m", "input_tokens": tin,
            "cached_input_tokens": 0, "output_tokens": tout, "started_at": STARTED}


def snapshot(e):
    return (e.sql("SELECT txn_id, writer, seq, encode(hash, 'hex') FROM journal ORDER BY txn_id"),
            e.sql("SELECT txn_id, line, ledger_account_id, amount FROM postings ORDER BY txn_id, line"),
            e.sql("SELECT ledger_account_id, balance, account_id FROM ledger_balances ORDER BY 1"),
            e.sql("SELECT request_id, txn_id, cost_nanos, response FROM usage_records ORDER BY request_id"))


def test_database_filled_under_0006_converts_and_verifies(stack, tmp_path):
    e, old_env, out = db_before_migration(stack, "billing_pre7", tmp_path, "0009")
    assert "applied 0008_signup_answer.sql" in out
    set_price(e, "path-m", 2 * 10 ** 9, 10 ** 9, 8 * 10 ** 9)
    accts = [json.loads(e.admin("account", "create", "--external-id", f"pre7-{i}", "--json",
                                env=old_env).stdout)["account_id"] for i in range(3)]
    for i, a in enumerate(accts):
        e.admin("topup", "--account", a, "--amount", "10", "--payment-ref", f"pre7-pay-{i}", env=old_env)
    e.admin("grant", "--account", accts[0], "--amount", "0.001", "--reason", "pre7", env=old_env)
    # usage written by billingd on the 0006 schema: single records and a batch
    bd = Billingd(e, {"migrations_dir": old_env["BILLING_MIGRATIONS_DIR"]})
    try:
        for i in range(6):
            assert bd.post("/v1/usage", usage(f"pre7-u{i}", accts[i % 3])).status_code == 200
        r = bd.post("/v1/usage/batch", {"records": [usage(f"pre7-b{i}", accts[i % 3]) for i in range(20)]})
        assert r.status_code == 200 and all("cost_nanos" in x for x in r.json()["results"])
    finally:
        bd.stop()
    e.assert_books_sound()
    before = snapshot(e)
    n = len(before[0])
    assert len(before[3]) == 26 and n >= 3 + 1 + 26  # top-ups, the grant, the usage records

    out = e.admin("migrate").stdout
    assert "applied 0009_usage_path.sql" in out
    # nothing lost, nothing changed, balances read the same; the chains verify
    assert snapshot(e) == before
    v = e.ledger("verify")
    assert f"ok: {n} transactions" in v.stdout
    e.assert_books_sound()

    # after: usage goes on, revenue moves in parts, balances still equal their postings
    revenue_row = e.one("SELECT balance FROM ledger_balance_rows WHERE ledger_account_id = 1", user="billing_owner")
    bd = Billingd(e)
    try:
        for i in range(8):
            assert bd.post("/v1/usage", usage(f"post7-u{i}", accts[i % 3])).status_code == 200
        r = bd.post("/v1/usage", usage("pre7-u0", accts[0]))  # a replay of a record written before
        assert r.status_code == 200 and r.json()["duplicate"] is True
        r = bd.post("/v1/usage", usage("pre7-u1", accts[1], tin=5))  # same id, other body
        assert r.status_code == 409
    finally:
        bd.stop()
        e.redis_flushall()  # one Redis per database: the module's own finds none of this one's mirrors
    assert e.one("SELECT balance FROM ledger_balance_rows WHERE ledger_account_id = 1",
                 user="billing_owner") == revenue_row
    assert e.one("SELECT count(*) FROM ledger_balance_parts WHERE ledger_account_id = 1") >= 1
    assert e.one("SELECT balance FROM ledger_balances WHERE ledger_account_id = 1") == \
        e.one("SELECT sum(amount) FROM postings WHERE ledger_account_id = 1")
    e.assert_books_sound()
    v = e.ledger("verify")
    assert f"ok: {n + 8} transactions" in v.stdout
    # tampering after the conversion is still named
    txn = e.one("SELECT txn_id FROM journal WHERE idempotency_key = 'usage:post7-u3'")
    e.sql("ALTER TABLE postings DISABLE TRIGGER postings_append_only; UPDATE postings SET amount = amount + 1"
          " WHERE txn_id = %s AND line = 1; ALTER TABLE postings ENABLE ALWAYS TRIGGER postings_append_only",
          (txn,), user="postgres")
    v = e.ledger("verify", check=False)
    assert v.returncode == 1 and f"transaction {txn} " in v.stdout


def raw(env, user, *stmts):
    """Runs stmts in one transaction as user; returns the error raised."""
    c = psycopg2.connect(env.stack.conninfo(env.db, user))
    try:
        cur = c.cursor()
        with pytest.raises(psycopg2.Error) as e:
            for s in stmts:
                cur.execute(*s) if isinstance(s, tuple) else cur.execute(s)
            c.commit()
        c.rollback()
        return e.value
    finally:
        c.close()


JOURNAL = ("INSERT INTO journal (writer, seq, kind, idempotency_key, content_hash, account_id, actor, reason,"
           " details, created_at, prev_hash, hash) VALUES ('raw-ref', %s, 'x', %s, '\\x00', %s, 'me', 'r', '{}',"
           " %s, '\\x00', '\\x00') RETURNING txn_id")


@pytest.mark.parametrize("user", ["billing", "billing_owner"])
def test_references_are_refused_for_every_role(env, user):
    set_price(env, "path-m", 10 ** 9, 10 ** 9, 10 ** 9)
    a = new_account(env, f"ref-{user}")
    paid = env.one("SELECT ledger_account_id FROM ledger_accounts WHERE account_id = %s AND type = 'customer_paid'",
                   (a,))
    now = dt.datetime.now(UTC)
    before = env.one("SELECT count(*) FROM journal")
    # a journal row naming a customer that does not exist
    err = raw(env, user, (JOURNAL, (1, f"ref-1-{user}", 10 ** 12, now)))
    assert err.pgcode == "23503" and "customers" in str(err)
    # postings to a ledger account that does not exist (the rest balanced)
    c = psycopg2.connect(env.stack.conninfo(env.db, user))
    cur = c.cursor()
    cur.execute(JOURNAL, (1, f"ref-2-{user}", a, now))
    txn = cur.fetchone()[0]
    with pytest.raises(psycopg2.Error) as e:
        cur.execute("INSERT INTO postings (txn_id, line, ledger_account_id, account_id, amount, created_at)"
                    " VALUES (%s, 1, %s, %s, -5, %s), (%s, 2, 999999999, NULL, 5, %s)",
                    (txn, paid, a, now, txn, now))
    assert e.value.pgcode == "23503" and "ledger_accounts" in str(e.value)
    c.rollback()
    # a usage record naming a price version or a customer that does not exist
    pv = env.one("SELECT coalesce(max(price_version), 0) FROM prices")
    for acct, price, what in ((a, pv + 1000, "prices"), (10 ** 12, pv, "customers")):
        rid = f"ref-u-{user}-{price}"
        cur.execute(JOURNAL, (2, f"usage:{rid}", a, now))
        txn = cur.fetchone()[0]
        cur.execute("INSERT INTO postings (txn_id, line, ledger_account_id, account_id, amount, created_at)"
                    " VALUES (%s, 1, %s, %s, -5, %s), (%s, 2, 1, NULL, 5, %s)", (txn, paid, a, now, txn, now))
        with pytest.raises(psycopg2.Error) as e:
            cur.execute("INSERT INTO usage_records (request_id, account_id, txn_id, body_hash, model, input_tokens,"
                        " cached_input_tokens, output_tokens, started_at, cost_nanos, price_version, response,"
                        " created_at) VALUES (%s, %s, %s, '\\x00', 'm', 1, 0, 1, now(), 5, %s, '{}', %s)",
                        (rid, acct, txn, price, now))
        assert e.value.pgcode == "23503" and what in str(e.value), str(e.value)
        c.rollback()
    c.close()
    assert env.one("SELECT count(*) FROM journal") == before
    env.assert_books_sound()


def test_balance_parts_are_guarded(env):
    a = new_account(env, "parts-guard")
    env.admin("topup", "--account", a, "--amount", "3", "--payment-ref", "parts-guard-1")
    # cash clearing moved in a part; the view sums it; nobody writes balances by hand
    assert env.one("SELECT balance FROM ledger_balances WHERE ledger_account_id = 4") == \
        env.one("SELECT sum(amount) FROM postings WHERE ledger_account_id = 4")
    for user in ("billing", "billing_owner"):
        for stmt in ("UPDATE ledger_balances SET balance = 0", "DELETE FROM ledger_balances",
                     "DELETE FROM ledger_balance_parts", "TRUNCATE ledger_balance_parts",
                     "INSERT INTO ledger_balances (ledger_account_id, balance) VALUES (1, 5)"):
            with pytest.raises(psycopg2.Error):
                env.sql(stmt, user=user)
    for stmt in ("UPDATE ledger_balance_parts SET balance = 0", "UPDATE ledger_balance_rows SET balance = 0",
                 "INSERT INTO ledger_balance_parts VALUES (1, 0, 5)"):
        with pytest.raises(psycopg2.Error) as e:
            env.sql(stmt)
        assert "permission denied" in str(e.value)
    env.assert_books_sound()


def test_records_of_one_account_go_to_one_writer(env):
    """Two writer threads: each account's records land in one hash chain."""
    set_price(env, "path-m", 10 ** 9, 10 ** 9, 10 ** 9)
    accts = [new_account(env, f"route-{i}") for i in range(6)]
    for i, a in enumerate(accts):
        env.admin("topup", "--account", a, "--amount", "5", "--payment-ref", f"route-{i}")
    bd = Billingd(env, {"writer_threads": "2", "instance_id": "route"})
    try:
        wait_prices()
        recs = [usage(f"route-b{i}", accts[i % 6], tin=10, tout=1) for i in range(60)]
        r = bd.post("/v1/usage/batch", {"records": recs})
        assert r.status_code == 200 and all("cost_nanos" in x for x in r.json()["results"])
    finally:
        bd.stop()
    rows = env.sql("SELECT account_id, array_agg(DISTINCT writer) FROM journal"
                   " WHERE kind = 'usage' AND writer IN ('route', 'route.t1') GROUP BY 1")
    assert len(rows) == 6 and all(len(w) == 1 for _, w in rows)
    assert {w[0] for _, w in rows} == {"route", "route.t1"}
    env.assert_books_sound()


def test_usage_commit_notifies_after_its_rows_are_visible(env):
    """The usage writer's NOTIFY billing_balance ('ACCOUNT WRITER REDIS_ID',
    test_shared_mirror.py) runs in a transaction of its own right after the
    batch's COMMIT: every charged account is announced once per batch, and
    when the notification arrives the record it announces is already
    committed."""
    set_price(env, "path-m", 10 ** 9, 10 ** 9, 10 ** 9)
    accts = [new_account(env, f"notify-{i}") for i in range(3)]
    lc = psycopg2.connect(env.pg)
    lc.autocommit = True
    lc.cursor().execute("LISTEN billing_balance")
    bd = Billingd(env, {"instance_id": "notify"})
    try:
        wait_prices()
        recs = [usage(f"notify-b{i}", accts[i % 3], tin=10, tout=1) for i in range(9)]
        r = bd.post("/v1/usage/batch", {"records": recs})
        assert r.status_code == 200 and all("cost_nanos" in x for x in r.json()["results"])
        got = []
        deadline = time.time() + 5
        while time.time() < deadline and len({p for p in got}) < 3:
            if select.select([lc], [], [], 0.2)[0]:
                lc.poll()
                while lc.notifies:
                    n = lc.notifies.pop(0)
                    if n.payload.split(" ")[1].startswith("notify"):
                        acct, writer, rid = n.payload.split(" ")
                        assert rid == env.redis_cli("GET", "billing:redis_id"), n.payload
                        got.append(f"{acct} {writer}")
                        acct = int(n.payload.split(" ")[0])
                        # the record it announces is visible to a fresh reader
                        assert env.one("SELECT count(*) FROM usage_records WHERE account_id = %s"
                                       " AND request_id LIKE 'notify-b%%'", (acct,)) == 3
    finally:
        bd.stop()
        lc.close()
    assert sorted(set(got)) == sorted(f"{a} {w}" for a, w in
                                      env.sql("SELECT DISTINCT account_id, writer FROM journal"
                                              " WHERE kind = 'usage' AND writer LIKE 'notify%%'"))
    env.assert_books_sound()
