"""The posting trigger's balance update (migration 0020): one statement's
postings move each customer's balance row by their sum with a plain UPDATE,
and each system account's part of this connection, exactly as the upserts
did; the rows are locked in ledger account order, so writers whose
statements name the same customers wait for each other and never deadlock;
a customer ledger account without its balance row is refused (the upsert's
join skipped it: postings that moved no stored balance)."""
import datetime as dt
import threading
import time

import psycopg2
import pytest

from conftest import new_account

UTC = dt.timezone.utc

JOURNAL_ROW = ("INSERT INTO journal (writer, seq, kind, idempotency_key, content_hash, account_id, actor, reason,"
               " details, created_at, prev_hash, hash) VALUES (%s, %s, 'x', %s, '\\x00', NULL, 'me', 'r', '{}', %s,"
               " '\\x00', '\\x00') RETURNING txn_id")
REVENUE = 1


def paid_account(env, name):
    a = new_account(env, name)
    return env.one("SELECT ledger_account_id FROM ledger_accounts WHERE account_id = %s AND type = 'customer_paid'",
                   (a,))


def sound(env):
    """Stored balances equal their postings (the journal rows here carry no
    real hash: no chain walk)."""
    assert env.sql("SELECT * FROM ledger_balance_mismatches()") == []


def balance(env, la):
    return env.one("SELECT balance FROM ledger_balances WHERE ledger_account_id = %s", (la,))


def post(cur, writer, seq, moves):
    """One journal row and its postings in one statement: moves is
    [(ledger_account_id, amount)], in the given line order, plus the
    balancing line to revenue."""
    now = dt.datetime.now(UTC)
    cur.execute(JOURNAL_ROW, (writer, seq, f"{writer}-{seq}", now))
    txn = cur.fetchone()[0]
    lines = list(moves) + [(REVENUE, -sum(a for _, a in moves))]
    cur.execute("INSERT INTO postings (txn_id, line, ledger_account_id, amount, created_at)"
                " SELECT %s, l, la, amt, %s FROM unnest(%s::bigint[], %s::bigint[]) WITH ORDINALITY AS x(la, amt, l)",
                (txn, now, [la for la, _ in lines], [a for _, a in lines]))
    return txn


def test_one_statement_moves_each_balance_by_its_sum(env):
    """Several transactions in one statement, a customer named in more than
    one of them: each customer's row moves once by the sum, revenue's part
    by the rest; the stored balances equal their postings."""
    p = [paid_account(env, f"bu-sum-{i}") for i in range(3)]
    before = {la: balance(env, la) for la in p + [REVENUE]}
    c = psycopg2.connect(env.stack.conninfo(env.db, "billing"))
    cur = c.cursor()
    now = dt.datetime.now(UTC)
    txns = []
    for seq in (1, 2):
        cur.execute(JOURNAL_ROW, ("bu-sum", seq, f"bu-sum-{seq}", now))
        txns.append(cur.fetchone()[0])
    # txn 1: p0 +5, p2 +7, revenue -12; txn 2: p2 +1, p1 +3, p0 +2, revenue -6
    rows = [(txns[0], 1, p[0], 5), (txns[0], 2, p[2], 7), (txns[0], 3, REVENUE, -12),
            (txns[1], 1, p[2], 1), (txns[1], 2, p[1], 3), (txns[1], 3, p[0], 2), (txns[1], 4, REVENUE, -6)]
    cur.execute("INSERT INTO postings (txn_id, line, ledger_account_id, amount, created_at)"
                " SELECT t, l, la, amt, %s FROM unnest(%s::bigint[], %s::int[], %s::bigint[], %s::bigint[])"
                " AS x(t, l, la, amt)",
                (now, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows]))
    c.commit()
    c.close()
    assert {la: balance(env, la) - before[la] for la in before} == {p[0]: 7, p[1]: 3, p[2]: 8, REVENUE: -18}
    assert env.one("SELECT count(*) FROM ledger_balance_rows WHERE ledger_account_id = ANY(%s)", (p,)) == 3
    sound(env)


def test_writers_naming_the_same_customers_wait_and_never_deadlock(env):
    """A holds p1 and waits for p2 (held by a third transaction); B's
    statement names p3 before p1 in its lines.  Locked in ledger account
    order, B waits for p1 holding nothing, so when the third commits, A and
    then B commit; locked in line order, B would hold p3 while waiting for A,
    which then needs p3: a deadlock (40P01)."""
    p1, p2, p3 = sorted(paid_account(env, f"bu-lock-{i}") for i in range(3))
    before = {la: balance(env, la) for la in (p1, p2, p3)}
    conns = [psycopg2.connect(env.stack.conninfo(env.db, "billing")) for _ in range(3)]
    for c in conns:
        c.cursor().execute("SET lock_timeout = '20s'")
        c.commit()
    holder, a, b = conns
    post(holder.cursor(), "bu-lock-h", 1, [(p2, 1)])  # holds p2's row
    errors = []

    def write(c, writer, moves):
        try:
            post(c.cursor(), writer, 1, moves)
            c.commit()
        except psycopg2.Error as e:
            errors.append((writer, e.pgcode, str(e)))
            c.rollback()

    ta = threading.Thread(target=write, args=(a, "bu-lock-a", [(p1, 10), (p2, 10), (p3, 10)]))
    ta.start()
    time.sleep(1.0)  # A holds p1, waits for p2
    tb = threading.Thread(target=write, args=(b, "bu-lock-b", [(p3, 100), (p1, 100)]))
    tb.start()
    time.sleep(1.0)  # B waits (for p1 in order; with p3 held, were it in line order)
    holder.commit()
    ta.join(30)
    tb.join(30)
    for c in conns:
        c.close()
    assert errors == []
    assert {la: balance(env, la) - before[la] for la in (p1, p2, p3)} == {p1: 110, p2: 11, p3: 110}
    sound(env)


def test_a_customer_account_without_its_balance_row_is_refused(env):
    """Balance rows are made with their ledger account and never deleted; a
    database that lost one (a superuser with the guards switched off) gets
    the posting refused, not committed with no stored balance moved.  The
    row is put back after (the module's balances stay sound)."""
    la = paid_account(env, "bu-lost")
    acct = env.one("SELECT account_id FROM ledger_accounts WHERE ledger_account_id = %s", (la,))
    sup = psycopg2.connect(env.stack.conninfo(env.db, "postgres"))
    sup.autocommit = True
    scur = sup.cursor()
    scur.execute("ALTER TABLE ledger_balance_rows DISABLE TRIGGER balance_rows_no_delete")
    try:
        scur.execute("DELETE FROM ledger_balance_rows WHERE ledger_account_id = %s", (la,))
    finally:
        scur.execute("ALTER TABLE ledger_balance_rows ENABLE ALWAYS TRIGGER balance_rows_no_delete")
    c = psycopg2.connect(env.stack.conninfo(env.db, "billing"))
    try:
        with pytest.raises(psycopg2.Error) as e:
            post(c.cursor(), "bu-lost", 1, [(la, 5)])
            c.commit()
        assert e.value.pgcode == "XX000" and "balances of 0 customer ledger accounts moved, 1 expected" in str(e.value)
        c.rollback()
    finally:
        c.close()
        scur.execute("ALTER TABLE ledger_balance_rows DISABLE TRIGGER balance_rows_by_postings")
        try:
            scur.execute("INSERT INTO ledger_balance_rows (ledger_account_id, balance, account_id) VALUES (%s, 0, %s)",
                         (la, acct))
        finally:
            scur.execute("ALTER TABLE ledger_balance_rows ENABLE ALWAYS TRIGGER balance_rows_by_postings")
            sup.close()
    assert env.one("SELECT count(*) FROM postings WHERE ledger_account_id = %s", (la,)) == 0
    sound(env)
