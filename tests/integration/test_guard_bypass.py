"""The books' guards against a session that tries to go around them (review6).

The guards are PL/pgSQL trigger functions running SECURITY DEFINER as the
schema owner.  Each of them must read and write the books' own tables, for
every role that calls it, whatever that session did to its own environment
beforehand (temporary tables, settings)."""
import datetime as dt

import psycopg2
import pytest

from conftest import new_account

UTC = dt.timezone.utc

JOURNAL_ROW = ("INSERT INTO journal (writer, seq, kind, idempotency_key, content_hash, account_id, actor, reason,"
               " details, created_at, prev_hash, hash) VALUES (%s, 1, 'x', %s, '\\x00', %s, 'me', 'r', '{}', %s,"
               " '\\x00', '\\x00') RETURNING txn_id")
POSTINGS = ("INSERT INTO postings (txn_id, line, ledger_account_id, amount, created_at)"
            " VALUES (%s, 1, 1, 7, %s), (%s, 2, 5, -7, %s)")

# Temporary tables named like the books' tables the guards read and write,
# open to every role (a temporary table's owner may grant it).  A function
# whose search_path does not name pg_temp searches pg_temp FIRST for tables.
SHADOWS = (
    "CREATE TEMP TABLE ledger_pending_checks (check_id bigserial PRIMARY KEY, txn_ids bigint[], created_ats timestamptz[])",
    "CREATE TEMP TABLE customers (account_id bigint)",
    "CREATE TEMP TABLE ledger_idempotency (idempotency_key text, txn_id bigint, writer text, seq bigint,"
    " account_id bigint, content_hash bytea, created_at timestamptz, hash bytea)",
    "GRANT ALL ON ledger_pending_checks, customers, ledger_idempotency TO PUBLIC",
    "GRANT ALL ON SEQUENCE ledger_pending_checks_check_id_seq TO PUBLIC",
)


def shadowed(env, *customers):
    """A connection of the service role with the shadow tables in place
    (the shadow customers: those given)."""
    c = psycopg2.connect(env.stack.conninfo(env.db, "billing"))
    cur = c.cursor()
    for s in SHADOWS:
        cur.execute(s)
    for a in customers:
        cur.execute("INSERT INTO customers VALUES (%s)", (a,))
    c.commit()
    return c, cur


def books(env):
    return (env.one("SELECT count(*) FROM journal"), env.one("SELECT count(*) FROM postings"),
            env.one("SELECT count(*) FROM ledger_idempotency"))


def test_every_security_definer_function_searches_pg_temp_last(env):
    """PostgreSQL's rule for SECURITY DEFINER functions: a search_path with
    pg_temp written last, or a caller's temporary table named like one of
    the function's tables is the one it reads and writes."""
    assert env.one("SELECT count(*) FROM pg_proc WHERE pronamespace = 'public'::regnamespace AND prosecdef",
                   user="postgres") >= 10
    bad = env.sql("SELECT p.oid::regprocedure::text, p.proconfig FROM pg_proc p"
                  " WHERE p.pronamespace = 'public'::regnamespace AND p.prosecdef"
                  "   AND NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) s"
                  "                    WHERE s ~ '^search_path=([^,]+, *)+\"?pg_temp\"?$') ORDER BY 1", user="postgres")
    assert bad == []


def test_the_service_role_cannot_shadow_the_books_with_temporary_tables(env):
    """The service role's own temporary tables named ledger_pending_checks,
    customers and ledger_idempotency: a journal row without postings is
    still refused at COMMIT, a missing customer still refused, a second
    journal row with a key already used still refused; nothing changes."""
    a = new_account(env, "gb-shadow")
    now = dt.datetime.now(UTC)
    env.admin("topup", "--account", a, "--amount", "1", "--payment-ref", "gb-pay-1")
    assert env.one("SELECT count(*) FROM ledger_idempotency WHERE idempotency_key = 'topup:gb-pay-1'") == 1
    before = books(env)

    # a journal row without postings
    c, cur = shadowed(env, a)
    cur.execute(JOURNAL_ROW, ("gb-evil", "gb-evil-1", a, now))
    with pytest.raises(psycopg2.Error) as e:
        c.commit()
    assert e.value.pgcode == "23514" and "has 0 postings" in str(e.value), str(e.value)
    c.close()
    # a customer that does not exist (present in the shadow customers only)
    c, cur = shadowed(env, a, 424242424242)
    with pytest.raises(psycopg2.Error) as e:
        cur.execute(JOURNAL_ROW, ("gb-evil", "gb-evil-2", 424242424242, now))
        cur.fetchone()
        c.commit()
    assert e.value.pgcode == "23503" and "customers" in str(e.value), str(e.value)
    c.close()
    # the same idempotency key again, with balanced postings
    c, cur = shadowed(env, a)
    with pytest.raises(psycopg2.Error) as e:
        cur.execute(JOURNAL_ROW, ("gb-evil", "topup:gb-pay-1", a, now))
        t = cur.fetchone()[0]
        cur.execute(POSTINGS, (t, now, t, now))
        c.commit()
    assert e.value.pgcode == "23505" and "topup:gb-pay-1" in str(e.value), str(e.value)
    c.close()

    assert books(env) == before
    assert env.one("SELECT count(*) FROM journal WHERE writer = 'gb-evil'") == 0
    assert env.one("SELECT count(*) FROM ledger_pending_checks", user="postgres") == 0
    env.assert_books_sound()


def test_the_guards_hold_under_session_replication_role_replica(env):
    """A superuser's session_replication_role = replica (a bulk load, a
    logical-replication habit) skips every trigger that is not ENABLE
    ALWAYS: the guards are, so that the books refuse there what they refuse
    everywhere.  (Only a superuser may set it; ALTER TABLE ... DISABLE
    TRIGGER takes the table's owner.)"""
    a = new_account(env, "gb-srr")
    env.admin("topup", "--account", a, "--amount", "1", "--payment-ref", "gb-srr-pay")
    now = dt.datetime.now(UTC)
    before = books(env)
    cases = [
        (JOURNAL_ROW, ("gb-srr", "gb-srr-1", None, now), "23514"),    # no postings: refused at COMMIT
        (JOURNAL_ROW, ("gb-srr", "gb-srr-2", 10 ** 12, now), "23503"),  # a missing customer
        ("UPDATE journal SET reason = 'edited' WHERE idempotency_key = 'topup:gb-srr-pay'", None, "42501"),
        ("DELETE FROM postings WHERE account_id = %s", (a,), "42501"),
        ("DELETE FROM ledger_idempotency WHERE idempotency_key = 'topup:gb-srr-pay'", None, "42501"),
        ("TRUNCATE journal", None, "42501"),
        ("TRUNCATE postings_default", None, "42501"),
        ("DELETE FROM ledger_accounts WHERE ledger_account_id = 1", None, "42501"),
    ]
    for stmt, args, code in cases:
        c = psycopg2.connect(env.stack.conninfo(env.db, "postgres"))
        cur = c.cursor()
        cur.execute("SET session_replication_role = replica")
        with pytest.raises(psycopg2.Error) as e:
            cur.execute(stmt, args)
            c.commit()
        assert e.value.pgcode == code, (stmt, str(e.value))
        c.close()
    assert books(env) == before
    assert env.one("SELECT count(*) FROM journal WHERE writer = 'gb-srr' OR reason = 'edited'") == 0
    env.assert_books_sound()


def test_every_guard_trigger_fires_always_on_every_partition(env):
    """Every trigger of the schema's tables (partitions too, a month made
    after the migration too) is ENABLE ALWAYS."""
    env.one("SELECT ledger_ensure_partitions(6)")
    assert env.one("SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
                   " WHERE c.relnamespace = 'public'::regnamespace AND NOT t.tgisinternal",
                   user="postgres") >= 45
    bad = env.sql("SELECT c.relname, t.tgname, t.tgenabled FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
                  " WHERE c.relnamespace = 'public'::regnamespace AND NOT t.tgisinternal AND t.tgenabled <> 'A'"
                  " ORDER BY 1, 2", user="postgres")
    assert bad == []


@pytest.mark.parametrize("level", ["REPEATABLE READ", "SERIALIZABLE"])
def test_a_named_customer_cannot_go_under_a_snapshot_older_than_its_journal_row(stack, tmp_path, level):
    """customers_keep_referenced (0011) looks for the journal rows and usage
    records that name the customer with the deleting transaction's
    snapshot.  Under REPEATABLE READ or SERIALIZABLE that snapshot may be
    older than a journal row committed meanwhile (the foreign key it
    replaced checked against the newest one): the owner's DELETE must still
    be refused, and the customer stays.  (Its own database: the hand-written
    journal row has no valid hash.)"""
    from conftest import Env
    env = Env(stack, stack.new_database(), str(tmp_path))
    now = dt.datetime.now(UTC)
    own = psycopg2.connect(env.stack.conninfo(env.db, "billing_owner"))
    cur = own.cursor()
    # a customer without ledger accounts, so that no remaining foreign key holds it
    cur.execute("INSERT INTO customers (external_id, referral_code) VALUES ('gb-rr', 'gb-rr-rc') RETURNING account_id")
    named = cur.fetchone()[0]
    own.commit()

    own.set_session(isolation_level=level)
    cur.execute("SELECT count(*) FROM journal")  # the snapshot is taken here
    svc = psycopg2.connect(env.stack.conninfo(env.db, "billing"))
    scur = svc.cursor()
    scur.execute(JOURNAL_ROW, ("gb-rr", "gb-rr-1", named, now))
    txn = scur.fetchone()[0]
    scur.execute(POSTINGS, (txn, now, txn, now))
    svc.commit()
    svc.close()

    with pytest.raises(psycopg2.Error) as e:
        cur.execute("DELETE FROM customers WHERE account_id = %s", (named,))
        own.commit()
    assert e.value.pgcode in ("23503", "40001", "55000"), str(e.value)
    own.rollback()
    own.close()
    assert env.one("SELECT count(*) FROM customers WHERE account_id = %s", (named,)) == 1
    assert env.one("SELECT count(*) FROM journal j WHERE NOT EXISTS"
                   " (SELECT 1 FROM customers c WHERE c.account_id = j.account_id) AND j.account_id IS NOT NULL") == 0


@pytest.mark.parametrize("user", ["billing_owner", "postgres"])
def test_keys_and_balances_are_written_by_the_books_triggers_only(env, user):
    """ledger_idempotency is what a posting's reference to its journal row
    is checked against (0006): a key row written by hand let postings in
    whose journal row does not exist.  The stored balances are what billingd
    spends from: a balance written by hand moves money without a posting.
    Both are written by the books' own triggers only, for every role."""
    a = new_account(env, f"gb-keys-{user}")
    env.admin("topup", "--account", a, "--amount", "1", "--payment-ref", f"gb-keys-pay-{user}")
    now = dt.datetime.now(UTC)
    before = books(env)
    balances = env.sql("SELECT ledger_account_id, balance FROM ledger_balances ORDER BY 1")
    ghost = 987654321 + len(user)
    cases = [
        ("INSERT INTO ledger_idempotency (idempotency_key, txn_id, writer, seq, content_hash, created_at, hash)"
         " VALUES (%s, %s, 'gb-ghost-' || %s, 1, '\\x00', %s, '\\x00');" + POSTINGS,
         (f"gb-ghost-{user}", ghost, user, now, ghost, now, ghost, now)),
        ("UPDATE ledger_balance_rows SET balance = balance + 1000000000000 WHERE account_id = %s", (a,)),
        ("INSERT INTO ledger_balance_parts AS b (ledger_account_id, part, balance) VALUES (4, 0, 5)"
         " ON CONFLICT (ledger_account_id, part) DO UPDATE SET balance = b.balance + 5", None),
    ]
    for stmt, args in cases:
        with pytest.raises(psycopg2.Error) as e:
            env.sql(stmt, args, user=user)
        assert e.value.pgcode == "42501" and "refused" in str(e.value), (stmt, str(e.value))
    assert books(env) == before
    assert env.sql("SELECT ledger_account_id, balance FROM ledger_balances ORDER BY 1") == balances
    assert env.one("SELECT count(*) FROM postings p WHERE NOT EXISTS"
                   " (SELECT 1 FROM journal j WHERE j.txn_id = p.txn_id AND j.created_at = p.created_at)") == 0
    # the books' own writes still go through
    env.admin("topup", "--account", a, "--amount", "2", "--payment-ref", f"gb-keys-pay2-{user}")
    env.assert_books_sound()


@pytest.mark.parametrize("user", ["billing_owner", "postgres"])
def test_deleting_the_pending_check_does_not_skip_it(env, user):
    """The deferred check reads its pending row as it was inserted: an owner
    who deletes ledger_pending_checks' rows before COMMIT (DELETE is not
    refused there: the check deletes its own row) still has a journal row
    without postings refused."""
    now = dt.datetime.now(UTC)
    before = books(env)
    c = psycopg2.connect(env.stack.conninfo(env.db, user))
    cur = c.cursor()
    cur.execute(JOURNAL_ROW, (f"gb-del-{user}", f"gb-del-{user}-1", None, now))
    txn = cur.fetchone()[0]
    cur.execute("DELETE FROM ledger_pending_checks")
    assert cur.rowcount == 1
    with pytest.raises(psycopg2.Error) as e:
        c.commit()
    assert e.value.pgcode == "23514" and f"ledger transaction {txn} has 0 postings" in str(e.value), str(e.value)
    c.close()
    assert books(env) == before


def test_immediate_constraints_and_one_query_of_journal_and_postings(stack, tmp_path):
    """SET CONSTRAINTS ALL IMMEDIATE checks at the end of the journal
    statement; a journal row and its postings in one query (a data-modifying
    CTE) commit when they balance and are refused when they do not.  (Its
    own database: the hand-written journal row has no valid hash.)"""
    from conftest import Env
    env = Env(stack, stack.new_database(), str(tmp_path))
    now = dt.datetime.now(UTC)
    cte = ("WITH j AS (" + JOURNAL_ROW.replace("RETURNING txn_id", "RETURNING txn_id, created_at") + ")"
           " INSERT INTO postings (txn_id, line, ledger_account_id, amount, created_at)"
           " SELECT txn_id, l, CASE l WHEN 1 THEN 1 ELSE 5 END, CASE l WHEN 1 THEN 7 ELSE %s END, created_at"
           " FROM j, generate_series(1, 2) l")
    before = books(env)
    c = psycopg2.connect(env.stack.conninfo(env.db, "billing"))
    cur = c.cursor()
    cur.execute("SET CONSTRAINTS ALL IMMEDIATE")
    with pytest.raises(psycopg2.Error) as e:
        cur.execute(JOURNAL_ROW, ("gb-imm", "gb-imm-1", None, now))
    assert e.value.pgcode == "23514", str(e.value)
    c.rollback()
    for immediate in (False, True):
        if immediate:
            cur.execute("SET CONSTRAINTS ALL IMMEDIATE")
        with pytest.raises(psycopg2.Error) as e:
            cur.execute(cte, ("gb-cte", f"gb-cte-bad-{immediate}", None, now, -6))
            c.commit()
        assert e.value.pgcode == "23514", str(e.value)
        c.rollback()
    assert books(env) == before
    cur.execute("SET CONSTRAINTS ALL IMMEDIATE")
    cur.execute(cte, ("gb-cte", "gb-cte-ok", None, now, -7))
    c.commit()
    c.close()
    assert books(env) == (before[0] + 1, before[1] + 2, before[2] + 1)
    assert env.one("SELECT count(*) FROM ledger_pending_checks", user="postgres") == 0
    assert env.sql("SELECT * FROM ledger_balance_mismatches()") == []
