"""The books' guards checked once per statement (migration 0011): the
references of journal, postings and usage_records (which were foreign keys),
and the other side of them: a customer the books name does not go.  A
database filled before the migration converts and verifies.  (The inserts
that are refused for every role: test_usage_path.py,
test_references_are_refused_for_every_role, unchanged.)"""
import datetime as dt
import json

import psycopg2
import pytest

from conftest import Billingd, Env, db_before_migration, new_account, rfc3339, set_price

UTC = dt.timezone.utc
STARTED = rfc3339(dt.datetime.now(UTC) - dt.timedelta(minutes=1))


def usage(rid, account, tin=1000, tout=100):
    return {"request_id": rid, "account_id": account, "model": "sc-m", "input_tokens": tin,
            "cached_input_tokens": 0, "output_tokens": tout, "started_at": STARTED}


def snapshot(e):
    return (e.sql("SELECT txn_id, writer, seq, encode(hash, 'hex') FROM journal ORDER BY txn_id"),
            e.sql("SELECT txn_id, line, ledger_account_id, amount FROM postings ORDER BY txn_id, line"),
            e.sql("SELECT ledger_account_id, balance, account_id FROM ledger_balances ORDER BY 1"),
            e.sql("SELECT request_id, txn_id, cost_nanos, response FROM usage_records ORDER BY request_id"))


def test_database_filled_before_0011_converts_and_verifies(stack, tmp_path):
    e, old_env, out = db_before_migration(stack, "billing_pre11", tmp_path, "0011")
    assert "applied 0010_totals.sql" in out
    set_price(e, "sc-m", 2 * 10 ** 9, 10 ** 9, 8 * 10 ** 9)
    accts = [json.loads(e.admin("account", "create", "--external-id", f"pre11-{i}", "--json",
                                env=old_env).stdout)["account_id"] for i in range(3)]
    for i, a in enumerate(accts):
        e.admin("topup", "--account", a, "--amount", "10", "--payment-ref", f"pre11-pay-{i}", env=old_env)
    bd = Billingd(e, {"migrations_dir": old_env["BILLING_MIGRATIONS_DIR"]})
    try:
        for i in range(4):
            assert bd.post("/v1/usage", usage(f"pre11-u{i}", accts[i % 3])).status_code == 200
        r = bd.post("/v1/usage/batch", {"records": [usage(f"pre11-b{i}", accts[i % 3]) for i in range(30)]})
        assert r.status_code == 200 and all("cost_nanos" in x for x in r.json()["results"])
    finally:
        bd.stop()
    before = snapshot(e)
    n = len(before[0])
    assert len(before[3]) == 34

    out = e.admin("migrate").stdout
    assert "applied 0011_set_checks.sql" in out
    assert snapshot(e) == before
    assert f"ok: {n} transactions" in e.ledger("verify").stdout
    e.assert_books_sound()
    # no foreign key left on the three tables; the checks are the triggers'
    assert e.one("SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND conrelid IN"
                 " ('journal'::regclass, 'postings'::regclass, 'usage_records'::regclass)") == 0

    bd = Billingd(e)
    try:
        r = bd.post("/v1/usage/batch", {"records": [usage(f"post11-b{i}", accts[i % 3]) for i in range(30)]
                                        + [usage("pre11-b0", accts[0]), usage("pre11-b1", accts[1], tin=7)]})
        res = r.json()["results"]
        assert r.status_code == 200 and all("cost_nanos" in x for x in res[:31])
        stored = before_answer(before, "pre11-b0")
        assert res[30]["duplicate"] is True
        assert {k: res[30][k] for k in ("request_id", "cost_nanos", "price_version", "charged")} == \
            {k: stored[k] for k in ("request_id", "cost_nanos", "price_version", "charged")}
        assert res[31]["error"]["code"] == "idempotency_conflict"
    finally:
        bd.stop()
        e.redis_flushall()  # one Redis per database: the module's own finds none of this one's mirrors
    assert f"ok: {n + 30} transactions" in e.ledger("verify").stdout
    e.assert_books_sound()


def before_answer(snap, rid):
    return json.loads(next(r[3] for r in snap[3] if r[0] == rid))


def test_a_customer_the_books_name_cannot_go(stack, tmp_path):
    """The other side of the former foreign keys, for the owner (the service
    role has no DELETE at all): a customer named by a journal row or a usage
    record is neither deleted nor renumbered; one the books never named is.
    (Its own database: the hand-written journal row has no valid hash.)"""
    env = Env(stack, stack.new_database(), str(tmp_path))
    now = dt.datetime.now(UTC)
    c = psycopg2.connect(env.stack.conninfo(env.db, "billing_owner"))
    cur = c.cursor()
    # customers without ledger accounts, so that no other foreign key holds them
    cur.execute("INSERT INTO customers (external_id, referral_code) VALUES ('sc-named', 'sc-rc-1'), ('sc-free', 'sc-rc-2') RETURNING account_id")
    named, free = [r[0] for r in cur.fetchall()]
    cur.execute("INSERT INTO journal (writer, seq, kind, idempotency_key, content_hash, account_id, actor, reason,"
                " details, created_at, prev_hash, hash) VALUES ('sc-raw', 1, 'x', 'sc-raw-1', '\\x00', %s, 'me',"
                " 'r', '{}', %s, '\\x00', '\\x00') RETURNING txn_id", (named, now))
    txn = cur.fetchone()[0]
    cur.execute("INSERT INTO postings (txn_id, line, ledger_account_id, amount, created_at)"
                " VALUES (%s, 1, 1, 5, %s), (%s, 2, 5, -5, %s)", (txn, now, txn, now))
    c.commit()
    for stmt in ("DELETE FROM customers WHERE account_id = %s",
                 "UPDATE customers SET account_id = account_id + 1000000 WHERE account_id = %s"):
        with pytest.raises(psycopg2.Error) as e:
            cur.execute(stmt, (named,))
        assert e.value.pgcode == "23503" and "journal" in str(e.value), str(e.value)
        c.rollback()
    cur.execute("UPDATE customers SET external_id = 'sc-named-2' WHERE account_id = %s", (named,))
    cur.execute("DELETE FROM customers WHERE account_id = %s", (free,))
    assert cur.rowcount == 1
    c.commit()
    c.close()
    assert env.one("SELECT count(*) FROM customers WHERE account_id = %s", (named,)) == 1
    assert env.one("SELECT count(*) FROM customers WHERE account_id = %s", (free,)) == 0


def test_a_statement_naming_several_missing_references_changes_nothing(env):
    """One statement with good and bad rows is refused as a whole."""
    a = new_account(env, "sc-multi")
    paid = env.one("SELECT ledger_account_id FROM ledger_accounts WHERE account_id = %s AND type = 'customer_paid'",
                   (a,))
    now = dt.datetime.now(UTC)
    before = (env.one("SELECT count(*) FROM journal"), env.one("SELECT count(*) FROM postings"))
    c = psycopg2.connect(env.stack.conninfo(env.db, "billing"))
    cur = c.cursor()
    with pytest.raises(psycopg2.Error) as e:
        cur.execute("INSERT INTO journal (writer, seq, kind, idempotency_key, content_hash, account_id, actor, reason,"
                    " details, created_at, prev_hash, hash) SELECT 'sc-multi', g, 'x', 'sc-multi-' || g, '\\x00',"
                    " CASE WHEN g = 3 THEN 1000000000000 ELSE %s END, 'me', 'r', '{}', %s, '\\x00', '\\x00'"
                    " FROM generate_series(1, 5) g", (a, now))
    assert e.value.pgcode == "23503" and "customers" in str(e.value) and str(10 ** 12) in str(e.value)
    c.rollback()
    cur.execute("INSERT INTO journal (writer, seq, kind, idempotency_key, content_hash, account_id, actor, reason,"
                " details, created_at, prev_hash, hash) VALUES ('sc-multi', 1, 'x', 'sc-multi-ok', '\\x00', %s, 'me',"
                " 'r', '{}', %s, '\\x00', '\\x00') RETURNING txn_id", (a, now))
    txn = cur.fetchone()[0]
    with pytest.raises(psycopg2.Error) as e:
        cur.execute("INSERT INTO postings (txn_id, line, ledger_account_id, account_id, amount, created_at)"
                    " VALUES (%s, 1, %s, %s, -5, %s), (%s, 2, 1, NULL, 3, %s), (%s, 3, 888888888, NULL, 2, %s)",
                    (txn, paid, a, now, txn, now, txn, now))
    assert e.value.pgcode == "23503" and "888888888" in str(e.value) and "ledger_accounts" in str(e.value)
    c.rollback()
    c.close()
    assert (env.one("SELECT count(*) FROM journal"), env.one("SELECT count(*) FROM postings")) == before
    env.assert_books_sound()


JOURNAL_ROWS = ("INSERT INTO journal (writer, seq, kind, idempotency_key, content_hash, account_id, actor, reason,"
                " details, created_at, prev_hash, hash) SELECT 'pc-' || %s, g, 'x', 'pc-' || %s || '-' || g, '\\x00',"
                " NULL, 'me', 'r', '{}', %s, '\\x00', '\\x00' FROM generate_series(1, %s) g RETURNING txn_id")
POSTINGS = ("INSERT INTO postings (txn_id, line, ledger_account_id, amount, created_at)"
            " SELECT t, l, CASE l WHEN 1 THEN 1 ELSE 5 END, CASE l WHEN 1 THEN 7 ELSE -7 END, %s"
            " FROM unnest(%s::bigint[]) t, generate_series(1, 2) l")


@pytest.mark.parametrize("user", ["billing", "billing_owner", "postgres"])
def test_the_commit_check_covers_every_journal_row_of_every_statement(env, user):
    """0012: the check at COMMIT runs once per journal statement: a journal
    row of a statement, or of a later statement, left without postings is
    named and the whole transaction refused, for every role; rows whose
    postings came in any later statement commit; a savepoint rolled back
    takes its rows' checks with it; nothing pending stays behind."""
    now = dt.datetime.now(UTC)
    before = (env.one("SELECT count(*) FROM journal"), env.one("SELECT count(*) FROM postings"))
    c = psycopg2.connect(env.stack.conninfo(env.db, user))
    cur = c.cursor()

    def rows(tag, n):
        cur.execute(JOURNAL_ROWS, (f"{user}-{tag}", f"{user}-{tag}", now, n))
        return [r[0] for r in cur.fetchall()]

    # three rows in one statement, postings for the first and the last only
    a = rows("a", 3)
    cur.execute(POSTINGS, (now, [a[0], a[2]]))
    with pytest.raises(psycopg2.Error) as e:
        c.commit()
    assert e.value.pgcode == "23514" and f"ledger transaction {a[1]} has 0 postings" in str(e.value)
    c.rollback()
    # rows of a second statement are checked too
    a, b = rows("b1", 2), rows("b2", 2)
    cur.execute(POSTINGS, (now, a + b[:1]))
    with pytest.raises(psycopg2.Error) as e:
        c.commit()
    assert e.value.pgcode == "23514" and f"ledger transaction {b[1]} has 0 postings" in str(e.value)
    c.rollback()
    # a savepoint rolled back: its journal row and its check go; the rest commits
    a = rows("c1", 2)
    cur.execute("SAVEPOINT s")
    rows("c2", 1)
    cur.execute("ROLLBACK TO SAVEPOINT s")
    cur.execute(POSTINGS, (now, a[:1]))
    cur.execute(POSTINGS, (now, a[1:]))
    c.commit()
    c.close()
    assert (env.one("SELECT count(*) FROM journal"), env.one("SELECT count(*) FROM postings")) == \
        (before[0] + 2, before[1] + 4)
    assert env.one("SELECT count(*) FROM ledger_pending_checks", user="postgres") == 0
    assert env.one("SELECT count(*) FROM ledger_balance_mismatches()") == 0


def test_the_pending_checks_are_out_of_reach(env):
    """The service role can neither read nor write the pending checks; no
    role may change one; the per-row trigger it replaced is gone from every
    partition."""
    for stmt in ("SELECT * FROM ledger_pending_checks", "DELETE FROM ledger_pending_checks",
                 "INSERT INTO ledger_pending_checks (txn_ids, created_ats) VALUES ('{}', '{}')"):
        with pytest.raises(psycopg2.Error) as e:
            env.sql(stmt)
        assert e.value.pgcode == "42501"
    for user in ("billing_owner", "postgres"):
        for stmt in ("INSERT INTO ledger_pending_checks (txn_ids, created_ats) VALUES ('{}', '{}');"
                     " UPDATE ledger_pending_checks SET txn_ids = '{1}'", "TRUNCATE ledger_pending_checks"):
            with pytest.raises(psycopg2.Error) as e:
                env.sql(stmt, user=user)
            assert "refused" in str(e.value)
    assert env.one("SELECT count(*) FROM pg_trigger WHERE tgname = 'journal_has_postings'", user="postgres") == 0


def test_copy_meets_the_same_guards(env):
    """COPY into the books fires the statement triggers as INSERT does: a
    reference that does not exist is refused, and a journal row COPYed
    without postings is refused at COMMIT (for the service role, which may
    COPY what it may INSERT)."""
    import io
    a = new_account(env, "sc-copy")
    now = rfc3339(dt.datetime.now(UTC))
    before = (env.one("SELECT count(*) FROM journal"), env.one("SELECT count(*) FROM postings"))
    cols = "(writer, seq, kind, idempotency_key, content_hash, account_id, actor, reason, details, created_at," \
           " prev_hash, hash)"

    def row(key, acct):
        return f"sc-copy\t1\tx\t{key}\t\\\\x00\t{acct}\tme\tr\t{{}}\t{now}\t\\\\x00\t\\\\x00\n"

    c = psycopg2.connect(env.stack.conninfo(env.db, "billing"))
    cur = c.cursor()
    with pytest.raises(psycopg2.Error) as e:
        cur.copy_expert(f"COPY journal {cols} FROM STDIN", io.StringIO(row("sc-copy-1", a) + row("sc-copy-2", 10 ** 12)))
    assert e.value.pgcode == "23503" and "customers" in str(e.value)
    c.rollback()
    cur.copy_expert(f"COPY journal {cols} FROM STDIN", io.StringIO(row("sc-copy-3", a)))
    with pytest.raises(psycopg2.Error) as e:
        c.commit()
    assert e.value.pgcode == "23514" and "has 0 postings" in str(e.value)
    c.rollback()
    c.close()
    assert (env.one("SELECT count(*) FROM journal"), env.one("SELECT count(*) FROM postings")) == before
