"""The statement triggers of the books (0006, 0009, 0011, 0012) when one
statement breaks several of their checks: which one is named (the order
any rewrite of the triggers into fewer queries must keep; such a rewrite
was measured and not kept: docs/benchmarks.md, "Fewer queries in the
statement triggers"); and the branch that reads the postings a transaction
had before the statement.  (Each check alone, for every role:
test_usage_path.py, test_set_checks.py, test_guard_bypass.py.)"""
import datetime as dt

import psycopg2
import pytest

from conftest import Env, new_account, set_price

UTC = dt.timezone.utc
MISSING = 10 ** 12

JOURNAL = ("INSERT INTO journal (writer, seq, kind, idempotency_key, content_hash, account_id, actor, reason,"
           " details, created_at, prev_hash, hash) VALUES ('tq-raw', %s, 'x', %s, '\\x00', %s, 'me', 'r', '{}',"
           " %s, '\\x00', '\\x00') RETURNING txn_id")
POSTING = "INSERT INTO postings (txn_id, line, ledger_account_id, account_id, amount, created_at) VALUES "
RECORD = ("INSERT INTO usage_records (request_id, account_id, txn_id, body_hash, model, input_tokens,"
          " cached_input_tokens, output_tokens, started_at, cost_nanos, price_version, response, created_at)"
          " VALUES (%s, %s, %s, '\\x00', 'm', 1, 0, 1, now(), 5, %s, '{}', %s)")


def refused(cur, c, q, args):
    with pytest.raises(psycopg2.Error) as e:
        cur.execute(q, args)
    c.rollback()
    return e.value


@pytest.mark.parametrize("user", ["billing", "billing_owner", "postgres"])
def test_a_statement_breaking_several_checks_is_refused_by_the_first(stack, tmp_path, user):
    """postings: a missing ledger account before a journal mismatch before
    an unbalanced transaction; usage_records: a missing customer before a
    missing price version before a wrong journal key.  Nothing is written."""
    env = Env(stack, stack.new_database(), str(tmp_path))
    set_price(env, "tq-m", 10 ** 9, 10 ** 9, 10 ** 9)
    a = new_account(env, f"tq-{user}")
    paid = env.one("SELECT ledger_account_id FROM ledger_accounts WHERE account_id = %s AND type = 'customer_paid'",
                   (a,))
    pv = env.one("SELECT coalesce(max(price_version), 0) FROM prices")
    now = dt.datetime.now(UTC)
    before = [env.one(f"SELECT count(*) FROM {t}") for t in ("journal", "postings", "usage_records")]
    c = psycopg2.connect(env.stack.conninfo(env.db, user))
    cur = c.cursor()

    def journal(key):
        cur.execute(JOURNAL, (1, key, a, now))
        return cur.fetchone()[0]

    # unbalanced, and a ledger account that does not exist: the ledger account is named
    t = journal("tq-1")
    e = refused(cur, c, POSTING + "(%s, 1, %s, %s, -5, %s), (%s, 2, 888888888, NULL, 4, %s)",
                (t, paid, a, now, t, now))
    assert e.pgcode == "23503" and "ledger_account_id 888888888 is not in ledger_accounts" in str(e), str(e)
    # unbalanced, and no journal row: the journal row is named
    e = refused(cur, c, POSTING + "(%s, 1, %s, %s, -5, %s), (%s, 2, 1, NULL, 4, %s)",
                (MISSING, paid, a, now, MISSING, now))
    assert e.pgcode == "23503" and f"ledger transaction {MISSING} do not match a journal row" in str(e), str(e)
    # unbalanced only
    t = journal("tq-2")
    e = refused(cur, c, POSTING + "(%s, 1, %s, %s, -5, %s), (%s, 2, 1, NULL, 4, %s)", (t, paid, a, now, t, now))
    assert e.pgcode == "23514" and f"ledger transaction {t} does not balance" in str(e), str(e)
    # one posting of zero, none before it: fewer than two
    t = journal("tq-3")
    e = refused(cur, c, POSTING + "(%s, 1, %s, %s, 0, %s)", (t, paid, a, now))
    assert e.pgcode == "23514" and f"ledger transaction {t} does not balance" in str(e), str(e)

    def record(rid, acct, price, key):
        t = journal(key)
        cur.execute(POSTING + "(%s, 1, %s, %s, -5, %s), (%s, 2, 1, NULL, 5, %s)", (t, paid, a, now, t, now))
        return refused(cur, c, RECORD, (rid, acct, t, price, now))

    # no customer, no price version, no journal row keyed usage:<id>: the customer is named
    e = record("tq-u1", MISSING, pv + 1000, "not-the-key-1")
    assert e.pgcode == "23503" and f"account_id {MISSING} is not in customers" in str(e), str(e)
    # no price version, no journal key: the price version
    e = record("tq-u2", a, pv + 1000, "not-the-key-2")
    assert e.pgcode == "23503" and f"price_version {pv + 1000} is not in prices" in str(e), str(e)
    # the journal key only
    e = record("tq-u3", a, pv, "not-the-key-3")
    assert e.pgcode == "23503" and "usage record tq-u3 does not belong to the journal transaction" in str(e), str(e)
    c.close()
    assert [env.one(f"SELECT count(*) FROM {t}") for t in ("journal", "postings", "usage_records")] == before


def test_a_transaction_whose_postings_span_statements(stack, tmp_path):
    """A statement that adds one posting to a transaction counts the
    postings before it (postings_after_insert reads the partitioned table
    only then): a zero line after two balanced ones commits; the same line
    alone is refused.  The pending checks are gone after each COMMIT."""
    env = Env(stack, stack.new_database(), str(tmp_path))
    a = new_account(env, "tq-span")
    paid = env.one("SELECT ledger_account_id FROM ledger_accounts WHERE account_id = %s AND type = 'customer_paid'",
                   (a,))
    now = dt.datetime.now(UTC)
    c = psycopg2.connect(env.stack.conninfo(env.db, "billing"))
    cur = c.cursor()
    cur.execute(JOURNAL, (1, "tq-span-1", a, now))
    t = cur.fetchone()[0]
    cur.execute(POSTING + "(%s, 1, %s, %s, -5, %s), (%s, 2, 1, NULL, 5, %s)", (t, paid, a, now, t, now))
    cur.execute(POSTING + "(%s, 3, 1, NULL, 0, %s)", (t, now))
    c.commit()
    assert env.one("SELECT count(*) FROM postings WHERE txn_id = %s", (t,)) == 3
    cur.execute(JOURNAL, (2, "tq-span-2", a, now))
    t2 = cur.fetchone()[0]
    e = refused(cur, c, POSTING + "(%s, 1, 1, NULL, 0, %s)", (t2, now))
    assert e.pgcode == "23514" and f"ledger transaction {t2} does not balance" in str(e), str(e)
    c.close()
    assert env.one("SELECT count(*) FROM ledger_pending_checks", user="postgres") == 0
    assert env.one("SELECT count(*) FROM ledger_balance_mismatches()") == 0
