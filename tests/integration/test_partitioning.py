"""Ledger tables partitioned by month (migration 0006), partitions
made ahead of time, the DEFAULT partition, the guards on partitions, and the
conversion of a database that already holds rows written under 0001-0005."""
import datetime as dt
import hashlib
import json
import os
import subprocess
import threading
import time

import psycopg2
import pytest

from conftest import ITEST, Env, db_before_migration, journal_hash, new_account, set_price, wait_prices

UTC = dt.timezone.utc
TABLES = ("journal", "postings", "usage_records")


def month_name(table, d):
    return f"{table}_y{d.year:04d}m{d.month:02d}"


def months_from(d, n):
    y, m = d.year, d.month
    out = []
    for _ in range(n):
        out.append(dt.date(y, m, 1))
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


def partitions(env, table):
    return {r[0] for r in env.sql("SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = %s::regclass",
                                  (table,), user="billing_owner")}


def where(env, table, lo, hi):
    """The partitions holding table's rows created in [lo, hi)."""
    return {r[0] for r in env.sql(f"SELECT DISTINCT tableoid::regclass::text FROM {table}"
                                  " WHERE created_at >= %s AND created_at < %s", (lo, hi))}


def test_partitions_exist_from_now_for_three_months_and_a_default(env):
    now = dt.datetime.now(UTC).date()
    for t in TABLES:
        got = partitions(env, t)
        for d in months_from(now, 4):
            assert month_name(t, d) in got, (t, d, got)
        assert f"{t}_default" in got
    # idempotent: nothing to create a second time
    assert env.one("SELECT ledger_ensure_partitions(3)") == 0
    # the key table is not partitioned
    assert env.one("SELECT relkind FROM pg_class WHERE relname = 'ledger_idempotency'") == "r"


def test_rows_land_in_the_month_partition(env, billingd):
    now = dt.datetime.now(UTC)
    a = new_account(env, "part-1")
    env.admin("topup", "--account", a, "--amount", "10", "--payment-ref", "part-pay-1")
    set_price(env, "part-m", 2 * 10 ** 9, 10 ** 9, 8 * 10 ** 9)
    wait_prices()
    body = {"request_id": "part-r1", "account_id": a, "model": "part-m", "input_tokens": 1000,
            "cached_input_tokens": 0, "output_tokens": 10, "started_at": now.strftime("%Y-%m-%dT%H:%M:%SZ")}
    r = billingd.post("/v1/usage", body)
    assert r.status_code == 200, r.text
    first = r.json()
    # a replay is found through the key table, with the same answer
    r2 = billingd.post("/v1/usage", body)
    assert r2.status_code == 200 and r2.json()["duplicate"] is True
    assert {k: v for k, v in r2.json().items() if k != "duplicate"} == \
        {k: v for k, v in first.items() if k != "duplicate"}
    r3 = billingd.post("/v1/usage", dict(body, output_tokens=11))
    assert r3.status_code == 409 and r3.json()["error"]["code"] == "idempotency_conflict"
    # where the rows are (created_at is the commit instant: this month, unless the month just turned)
    txn, created = env.one("SELECT txn_id, created_at FROM journal WHERE idempotency_key = 'usage:part-r1'")
    month = created.astimezone(UTC).date()
    assert env.one("SELECT tableoid::regclass::text FROM journal WHERE txn_id = %s", (txn,)) == \
        month_name("journal", month)
    assert {r[0] for r in env.sql("SELECT tableoid::regclass::text FROM postings WHERE txn_id = %s", (txn,))} == \
        {month_name("postings", month)}
    assert env.one("SELECT tableoid::regclass::text FROM usage_records WHERE request_id = 'part-r1'") == \
        month_name("usage_records", month)
    n_posts = env.one("SELECT count(*) FROM postings WHERE txn_id = %s", (txn,))
    assert n_posts >= 2 and env.one("SELECT count(*) FROM postings p JOIN journal j ON j.txn_id = p.txn_id"
                                    " WHERE j.txn_id = %s AND p.created_at = j.created_at", (txn,)) == n_posts
    assert env.one("SELECT count(*) FROM usage_records u JOIN journal j ON j.txn_id = u.txn_id"
                   " WHERE u.request_id = 'part-r1' AND u.created_at = j.created_at") == 1
    # one key row per journal row, with the same txn_id and account
    assert env.one("SELECT count(*) FROM journal") == env.one("SELECT count(*) FROM ledger_idempotency")
    assert env.one("SELECT txn_id, account_id FROM ledger_idempotency WHERE idempotency_key = 'usage:part-r1'") == \
        (txn, a)
    # every ledger table carries account_id
    assert env.one("SELECT count(*) FROM ledger_balances b JOIN ledger_accounts la USING (ledger_account_id)"
                   " WHERE b.account_id IS DISTINCT FROM la.account_id") == 0
    env.assert_books_sound()


def test_far_months_go_to_default_or_their_partition(env):
    # far months: years after the stack's own clock, where no partition is made ahead
    y = int(env.one("SELECT extract(year FROM now())::int"))
    f1, f2, f3 = y + 5, y + 6, y + 7
    # rows dated June of f1 (no partition): the DEFAULT partition takes them
    p = subprocess.run([os.path.join(ITEST, "export_load"), env.pg, "3", "50", "91", f"{f1}-06-01", f"{f1}-07-01"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert where(env, "journal", f"{f1}-06-01", f"{f1}-07-01") == {"journal_default"}
    assert where(env, "postings", f"{f1}-06-01", f"{f1}-07-01") == {"postings_default"}
    # a month whose rows sit in the default partition is not created (they may not move) ...
    c = psycopg2.connect(env.stack.conninfo(env.db, "billing_owner"))
    c.autocommit = True
    cur = c.cursor()
    cur.execute("SELECT ledger_create_partition('journal', %s)", (f"{f1}-06-10T00:00:00Z",))
    assert cur.fetchone()[0] is False
    assert any("rows of that month are in journal_default" in n for n in c.notices)
    # ... an empty far month is, and later rows of that month land in it
    cur.execute("SELECT ledger_create_partition(t::regclass, %s)"
                " FROM unnest(ARRAY['journal', 'postings', 'usage_records']) t", (f"{f2}-03-01T00:00:00Z",))
    assert [r[0] for r in cur.fetchall()] == [True, True, True]
    c.close()
    p = subprocess.run([os.path.join(ITEST, "export_load"), env.pg, "0", "20", "92", f"{f2}-03-01", f"{f2}-04-01"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert where(env, "journal", f"{f2}-03-01", f"{f2}-04-01") == {f"journal_y{f2}m03"}
    assert where(env, "postings", f"{f2}-03-01", f"{f2}-04-01") == {f"postings_y{f2}m03"}
    # the service role cannot make partitions at will
    with pytest.raises(psycopg2.Error):
        env.sql("SELECT ledger_create_partition('journal', %s)", (f"{f3}-01-01T00:00:00Z",))
    env.assert_books_sound()


def test_making_partitions_never_holds_one_parent_while_waiting_for_another(env):
    """ledger_ensure_partitions takes journal, postings and usage_records at
    once or not at all (0019): while a reader holds postings it gives up at
    once (55P03), holding nothing, so a reader of journal never queues behind
    it.  Before, it held journal while it waited for postings up to its
    lock_timeout: a deadlock with a reader of postings then journal, which
    under libfaketime (no PostgreSQL timeout fires) hung the calendar suite."""
    reader = psycopg2.connect(env.stack.conninfo(env.db, "billing"))
    maker = psycopg2.connect(env.stack.conninfo(env.db, "billing"))
    other = psycopg2.connect(env.stack.conninfo(env.db, "billing"))
    maker.autocommit = other.autocommit = True
    got = {}

    def make():
        try:
            cur = maker.cursor()
            cur.execute("SELECT ledger_ensure_partitions(6)")  # months 4..6 ahead do not exist yet
            got["made"] = cur.fetchone()[0]
        except psycopg2.Error as e:
            got["error"] = e.pgcode

    try:
        reader.cursor().execute("SELECT count(*) FROM postings")  # holds postings until it ends
        th = threading.Thread(target=make)
        th.start()
        time.sleep(0.05)  # the maker is in (or already out of) its call
        cur = other.cursor()
        cur.execute("SET lock_timeout = '150ms'")
        cur.execute("SELECT count(*) FROM journal")  # must not wait for the maker
        th.join(timeout=60)
        assert not th.is_alive()
        assert got == {"error": "55P03"}, got
    finally:
        reader.rollback()
        for c in (reader, maker, other):
            c.close()
    # with nothing in the way it makes them
    assert env.one("SELECT ledger_ensure_partitions(6)") > 0
    now = dt.datetime.fromisoformat(env.one("SELECT now()::text")).date()
    for t in TABLES:
        got = partitions(env, t)
        for d in months_from(now, 7):
            assert month_name(t, d) in got, (t, d)
    assert env.one("SELECT ledger_ensure_partitions(6)") == 0


def test_partitions_are_guarded_like_their_parents(env):
    a = new_account(env, "part-guard")
    env.admin("topup", "--account", a, "--amount", "3", "--payment-ref", "part-guard-1")
    txn, created = env.one("SELECT txn_id, created_at FROM journal WHERE idempotency_key = 'topup:part-guard-1'")
    jp = env.one("SELECT tableoid::regclass::text FROM journal WHERE txn_id = %s", (txn,))
    pp = env.one("SELECT DISTINCT tableoid::regclass::text FROM postings WHERE txn_id = %s", (txn,))
    for user in ("billing_owner", "postgres"):
        for stmt in (f"UPDATE {pp} SET amount = amount + 1 WHERE txn_id = {txn}",
                     f"DELETE FROM {pp} WHERE txn_id = {txn}", f"TRUNCATE {pp}",
                     f"UPDATE {jp} SET reason = 'x' WHERE txn_id = {txn}", f"DELETE FROM {jp} WHERE txn_id = {txn}",
                     f"TRUNCATE {jp} CASCADE", "TRUNCATE journal_default CASCADE",
                     "UPDATE ledger_idempotency SET account_id = 0", "DELETE FROM ledger_idempotency",
                     "TRUNCATE ledger_idempotency CASCADE", "TRUNCATE usage_records_default"):
            with pytest.raises(psycopg2.Error) as e:
                env.sql(stmt, user=user)
            assert "append-only" in str(e.value), (stmt, str(e.value))
        # inserting into a partition directly would skip the parent's checks
        with pytest.raises(psycopg2.Error) as e:
            env.sql(f"INSERT INTO {pp} (txn_id, line, ledger_account_id, amount, created_at)"
                    f" VALUES ({txn}, 9, 1, 0, %s)", (created,), user=user)
        assert "insert into its parent table" in str(e.value)
    # the service role has no privilege on partitions at all
    for stmt in (f"SELECT count(*) FROM {jp}", f"UPDATE {pp} SET amount = 0", "SELECT 1 FROM journal_default"):
        with pytest.raises(psycopg2.Error) as e:
            env.sql(stmt)
        assert "permission denied" in str(e.value)
    # a usage record must belong to the journal transaction keyed usage:<request_id>
    with pytest.raises(psycopg2.Error) as e:
        env.sql("INSERT INTO usage_records (request_id, account_id, txn_id, body_hash, model, input_tokens,"
                " cached_input_tokens, output_tokens, started_at, cost_nanos, price_version, response, created_at)"
                " SELECT 'part-forged', %s, %s, '\\x00', 'm', 1, 0, 1, now(), 1,"
                " (SELECT min(price_version) FROM prices), '{}', %s", (a, txn, created))
    assert "does not belong" in str(e.value)
    # the same key twice is refused by the key table (journal itself is unique only per month)
    row = env.one("SELECT writer, seq, kind, idempotency_key FROM journal WHERE txn_id = %s", (txn,))
    c = psycopg2.connect(env.stack.conninfo(env.db, "billing"))
    cur = c.cursor()
    with pytest.raises(psycopg2.Error) as e:
        cur.execute("""INSERT INTO journal (writer, seq, kind, idempotency_key, content_hash, actor, reason, details,
                                            created_at, prev_hash, hash)
                       VALUES ('raw-dup', 1, 'x', %s, '\\x00', 'me', 'r', '{}', now() + interval '400 days', '\\x00', '\\x00')""",
                    (row[3],))
    assert e.value.pgcode == "23505"
    c.rollback()
    with pytest.raises(psycopg2.Error) as e:
        cur.execute("""INSERT INTO journal (writer, seq, kind, idempotency_key, content_hash, actor, reason, details,
                                            created_at, prev_hash, hash)
                       VALUES (%s, %s, 'x', 'part-other-key', '\\x00', 'me', 'r', '{}', now() + interval '400 days', '\\x00', '\\x00')""",
                    (row[0], row[1]))
    assert e.value.pgcode == "23505"
    c.close()
    env.assert_books_sound()


# ---- a database that already holds rows written under 0001..0005 ----

def b2(data):
    return hashlib.blake2b(data.encode(), digest_size=32).digest()


def write_old_rows(cur):
    """Rows as billingd and the CLI wrote them under 0005: three customers,
    top-ups in September 2026 and this month, a grant, a usage record."""
    now = dt.datetime.now(UTC).replace(microsecond=123456)
    sept = dt.datetime(2026, 9, 14, 10, 0, 0, 654321, tzinfo=UTC)
    cur.execute("INSERT INTO prices (model, input_nanos, cached_input_nanos, output_nanos, effective_from, actor)"
                " VALUES ('old-m', 1000000000, 0, 0, '2020-01-01', 'x') RETURNING price_version")
    pv = cur.fetchone()[0]
    accts = []
    for i in range(3):
        cur.execute("INSERT INTO customers (external_id, referral_code) VALUES (%s, %s) RETURNING account_id",
                    (f"old-{i}", f"OLDREF{i}"))
        a = cur.fetchone()[0]
        cur.execute("INSERT INTO ledger_accounts (type, account_id) VALUES ('customer_paid', %s)"
                    " RETURNING ledger_account_id", (a,))
        accts.append((a, cur.fetchone()[0]))
    prev, seq, txns = bytes(32), 0, []

    def post(kind, key, account, details, at, postings, chash):
        nonlocal prev, seq
        seq += 1
        us = int(at.timestamp()) * 1000000 + at.microsecond
        h = journal_hash(prev, "old-writer", seq, kind, key, account, "tester", kind, details, us,
                         [(la, amt) for la, amt, _ in postings])
        cur.execute("""INSERT INTO journal (writer, seq, kind, idempotency_key, content_hash, account_id, actor, reason,
                                            details, created_at, prev_hash, hash)
                       VALUES ('old-writer', %s, %s, %s, %s, %s, 'tester', %s, %s, %s, %s, %s) RETURNING txn_id""",
                    (seq, kind, key, chash, account, kind, details, at, prev, h))
        txn = cur.fetchone()[0]
        rows = [(txn, i + 1, la, acc, amt) for i, (la, amt, acc) in enumerate(postings)]
        # one statement: the balance check runs per statement
        cur.execute("INSERT INTO postings (txn_id, line, ledger_account_id, account_id, amount) VALUES " +
                    ", ".join(["(%s, %s, %s, %s, %s)"] * len(rows)), [v for r in rows for v in r])
        prev = h
        txns.append(txn)
        return txn

    for i, (a, la) in enumerate(accts):
        at = sept if i < 2 else now
        amt = (i + 1) * 10 * 10 ** 9
        details = json.dumps({"amount_nanos": amt, "balance_after": {"paid_nanos": amt, "promo_nanos": 0},
                              "payment_ref": f"old-pay-{i}"}, separators=(",", ":"))
        post("topup", f"topup:old-pay-{i}", a, details, at, [(la, amt, a), (4, -amt, None)],
             b2(f"topup|{a}|{amt}|"))
    a, la = accts[0]
    cur.execute("INSERT INTO ledger_accounts (type, account_id) VALUES ('customer_promo', %s)"
                " RETURNING ledger_account_id", (a,))
    gla = cur.fetchone()[0]
    gtxn = post("grant", "grant:old-g", a, '{"amount_nanos":5}', sept, [(gla, 5, a), (2, -5, None)], b2("g"))
    cur.execute("INSERT INTO grants (account_id, ledger_account_id, kind, amount_nanos, txn_id)"
                " VALUES (%s, %s, 'admin', 5, %s)", (a, gla, gtxn))
    utxn = post("usage", "usage:old-r1", a, '{"request_id":"old-r1"}', sept, [(la, -1000, a), (1, 1000, None)],
                b2("u"))
    cur.execute("""INSERT INTO usage_records (request_id, account_id, txn_id, body_hash, model, input_tokens,
                       cached_input_tokens, output_tokens, started_at, cost_nanos, price_version, response)
                   VALUES ('old-r1', %s, %s, %s, 'old-m', 1000, 0, 0, %s, 1000, %s, '{"request_id":"old-r1"}')""",
                (a, utxn, b2("u"), sept, pv))
    return accts, txns


def test_database_with_rows_under_0005_migrates_and_verifies(stack, tmp_path):
    e, _, out = db_before_migration(stack, "billing_pre6", tmp_path, "0006")
    assert "applied 0005_limits_truncate.sql" in out
    c = psycopg2.connect(e.pg)
    accts, txns = write_old_rows(c.cursor())
    c.commit()
    c.close()
    before = e.sql("SELECT txn_id, writer, seq, encode(hash, 'hex') FROM journal ORDER BY txn_id")
    balances = e.sql("SELECT ledger_account_id, balance FROM ledger_balances ORDER BY 1")
    posts = e.sql("SELECT txn_id, line, ledger_account_id, amount FROM postings ORDER BY txn_id, line")

    out = e.admin("migrate").stdout
    assert "applied 0006_partitioning.sql" in out
    # nothing lost, nothing changed; the chain still verifies
    assert e.sql("SELECT txn_id, writer, seq, encode(hash, 'hex') FROM journal ORDER BY txn_id") == before
    assert e.sql("SELECT ledger_account_id, balance FROM ledger_balances ORDER BY 1") == balances
    assert e.sql("SELECT txn_id, line, ledger_account_id, amount FROM postings ORDER BY txn_id, line") == posts
    v = e.ledger("verify")
    assert f"ok: {len(txns)} transactions in 1 chains verified" in v.stdout
    e.assert_books_sound()
    # September's rows got a September partition, this month's the current one
    now = dt.datetime.now(UTC).date()
    assert e.sql("SELECT tableoid::regclass::text, count(*) FROM journal GROUP BY 1 ORDER BY 1") == \
        sorted([("journal_y2026m09", 4), (month_name("journal", now), 1)])
    assert e.one("SELECT tableoid::regclass::text FROM usage_records") == "usage_records_y2026m09"
    assert e.one("SELECT count(*) FROM ledger_idempotency") == len(txns)
    assert e.one("SELECT account_id FROM ledger_balances WHERE ledger_account_id = %s", (accts[1][1],)) == accts[1][0]
    # replays of keys written before the migration are still found, conflicts still refused
    t = json.loads(e.admin("topup", "--account", accts[1][0], "--amount", "20", "--payment-ref", "old-pay-1",
                           "--json").stdout)
    assert t["duplicate"] is True and t["balance"]["paid_nanos"] == 20 * 10 ** 9
    bad = e.admin("topup", "--account", accts[1][0], "--amount", "21", "--payment-ref", "old-pay-1", check=False)
    assert bad.returncode == 1 and "idempotency_conflict" in bad.stderr
    # tampering after the migration is still named
    e.admin("topup", "--account", accts[2][0], "--amount", "1", "--payment-ref", "new-pay-1")
    e.assert_books_sound()
    e.sql("ALTER TABLE postings DISABLE TRIGGER postings_append_only; UPDATE postings SET amount = amount + 1"
          " WHERE txn_id = %s AND line = 1; ALTER TABLE postings ENABLE ALWAYS TRIGGER postings_append_only",
          (txns[1],), user="postgres")
    v = e.ledger("verify", check=False)
    assert v.returncode == 1 and f"transaction {txns[1]} " in v.stdout


def test_verify_names_a_key_row_that_disagrees_with_its_journal_row(stack, tmp_path):
    e = Env(stack, stack.new_database(), str(tmp_path))
    a = new_account(e, "part-key-1")
    e.admin("topup", "--account", a, "--amount", "2", "--payment-ref", "part-key-pay")
    e.assert_books_sound()
    txn = e.one("SELECT txn_id FROM journal WHERE idempotency_key = 'topup:part-key-pay'")
    e.sql("ALTER TABLE ledger_idempotency DISABLE TRIGGER idempotency_append_only;"
          " UPDATE ledger_idempotency SET hash = '\\x00' WHERE txn_id = %s;"
          " ALTER TABLE ledger_idempotency ENABLE ALWAYS TRIGGER idempotency_append_only",
          (txn,), user="postgres")
    v = e.ledger("verify", check=False)
    assert v.returncode == 1 and f"transaction {txn} " in v.stdout and "ledger_idempotency" in v.stdout
