"""An export of a range that has ended holds every entry of the range, also
one whose transaction was still running when the export started.

A writer gives a transaction its created_at before it commits: the CLI
after locking the customer, then it waits for its chain's lock; billingd's
batches wait for their commit (and a standby's confirmation).  An export
took its snapshot at once, so a transaction with created_at inside the
range that committed a moment later was in no export of that range taken
meanwhile, yet in every later one: two signed manifests of the same range
that disagree, the first one short.  The export now first waits for the
transactions of its database that began before the range's end and have
written (or are about to write) something, then takes its snapshot."""
import datetime as dt
import os
import threading
import time

import psycopg2

from conftest import new_account


def _export(env, path, frm, to):
    return env.ledger("export", "--from", frm, "--to", to, "--out", path, "--quiet", check=False)


def test_an_entry_committed_after_the_export_started_is_in_it(env, tmp_path):
    if not os.path.exists(env.signing_key):
        env.admin("keygen", "--out", env.signing_key)
    a = new_account(env, "late-commit")
    frm = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    # hold the CLI writer's chain lock: the next CLI top-up locks its
    # customer, takes its created_at, then waits for the chain
    holder = psycopg2.connect(env.pg)
    hc = holder.cursor()
    hc.execute("SELECT pg_advisory_xact_lock(hashtextextended('chain:cli', 0))")
    out = {}
    t = threading.Thread(target=lambda: out.update(
        topup=env.admin("topup", "--account", a, "--amount", "7", "--payment-ref", "late-commit-pay")))
    t.start()
    try:
        deadline = time.time() + 20
        while time.time() < deadline and not env.sql(
                "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
                " AND query LIKE '%%pg_advisory_xact_lock%%' AND pid <> pg_backend_pid()"):
            time.sleep(0.05)
        time.sleep(0.2)
        to = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")   # after its created_at
        first = {}
        e = threading.Thread(target=lambda: first.update(p=_export(env, tmp_path / "first.csv", frm, to)))
        e.start()
        time.sleep(1.5)                  # the export runs while the top-up is still in flight
    finally:
        holder.rollback()                # the top-up commits now
        holder.close()
    t.join(60)
    e.join(60)
    assert out["topup"].returncode == 0
    created = env.one("SELECT created_at FROM journal WHERE idempotency_key = 'topup:late-commit-pay'")
    assert created < dt.datetime.strptime(to, "%Y-%m-%dT%H:%M:%S.%f%z")       # inside [frm, to)
    assert first["p"].returncode == 0, first["p"].stderr
    again = _export(env, tmp_path / "again.csv", frm, to)
    assert again.returncode == 0, again.stderr
    one, two = (tmp_path / "first.csv").read_text(), (tmp_path / "again.csv").read_text()
    assert "topup:late-commit-pay" in two
    assert "topup:late-commit-pay" in one, "the export of a past range missed an entry committed late"
    assert one == two
    for f in ("first.csv", "again.csv"):
        v = env.ledger("verify", "--export", tmp_path / f)
        assert v.returncode == 0, v.stdout + v.stderr


def test_a_writer_that_does_not_end_makes_the_export_fail_not_short(env, tmp_path):
    """A transaction that began before the range's end, has written and
    does not end: the export does not guess, it exits 1 naming it and
    leaves no file (it also ignores transactions begun after --to, and
    read-only ones)."""
    if not os.path.exists(env.signing_key):
        env.admin("keygen", "--out", env.signing_key)
    a = new_account(env, "late-commit-stuck")
    frm = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    stuck = psycopg2.connect(env.pg)
    sc = stuck.cursor()
    sc.execute("SELECT account_id FROM customers WHERE account_id = %s FOR UPDATE", (a,))   # holds an xid
    reader = psycopg2.connect(env.pg)
    rc = reader.cursor()
    rc.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT count(*) FROM journal")
    try:
        time.sleep(0.05)
        to = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        out = tmp_path / "stuck.csv"
        t0 = time.time()
        p = env.ledger(
            "export", "--from", frm, "--to", to, "--out", out, "--quiet", "--wait-ms", "700", check=False)
        assert p.returncode == 1, p.stdout + p.stderr
        assert time.time() - t0 >= 0.7
        lines = p.stderr.strip("\n").split("\n")
        assert len(lines) == 1 and lines[0].startswith("ledger: ") and "still in progress" in lines[0], p.stderr
        assert not out.exists() and not (tmp_path / "stuck.csv.manifest.json").exists()
        # a range that ended before it began does not wait for it
        old_to = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
        p = env.ledger("export", "--from", frm, "--to", old_to, "--out", tmp_path / "old.csv", "--quiet",
                       "--wait-ms", "700", check=False)
        assert p.returncode == 0, p.stderr
        # once the writer has ended, the same export goes through; the
        # read-only transaction (begun before --to, still open) holds nothing up
        stuck.rollback()
        p = env.ledger("export", "--from", frm, "--to", to, "--out", out, "--quiet", "--wait-ms", "700",
                       check=False)
        assert p.returncode == 0, p.stderr
    finally:
        stuck.rollback()
        stuck.close()
        reader.rollback()
        reader.close()
