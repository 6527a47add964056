"""The double-entry ledger, its guards, migrations and the CLIs."""
import json
import os
import re
import shutil
import subprocess

import psycopg2
import pytest

from conftest import ROOT, BIN

ITEST = os.environ.get("BILLING_ITEST_BIN", os.path.join(ROOT, "build", "itest"))


def test_randomized_10000_transactions_balance_and_verify(env):
    p = subprocess.run([os.path.join(ITEST, "ledger_load"), env.pg, "100", "10000", "42"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    n = env.one("SELECT count(*) FROM journal")
    assert n >= 10100
    assert env.one("SELECT count(DISTINCT account_id) FROM journal WHERE account_id IS NOT NULL") >= 100
    # four kinds were posted
    kinds = {r[0] for r in env.sql("SELECT DISTINCT kind FROM journal")}
    assert {"grant", "topup", "adjust", "usage"} <= kinds
    # trial balance zero, balances = sums of postings, chains verify
    assert env.one("SELECT sum(amount) FROM postings") == 0
    assert env.sql("SELECT * FROM ledger_balance_mismatches()") == []
    assert env.one("""SELECT count(*) FROM ledger_balances b WHERE b.balance <>
                      (SELECT coalesce(sum(amount), 0) FROM postings p WHERE p.ledger_account_id = b.ledger_account_id)""") == 0
    tb = json.loads(env.ledger("trial-balance", "--json").stdout)
    assert tb["balanced"] and tb["total_debits_nanos"] == tb["total_credits_nanos"] > 0
    v = env.ledger("verify")
    assert "ok:" in v.stdout and str(n) in v.stdout


def test_a_transaction_of_40000_postings_keeps_its_line_numbers(env, tmp_path):
    """A charge drawn from more buckets than a smallint counts (one posting per
    bucket): its lines are 1..40000 in order, and verify, the export and its
    verifier agree.  Before 0017 the writer's 16-bit line wrapped negative."""
    p = subprocess.run([os.path.join(ITEST, "ledger_load"), env.pg, "wide", "40000"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    txn = env.one("SELECT txn_id FROM journal WHERE idempotency_key = 'wide'")
    assert env.sql("SELECT min(line), max(line), count(*), count(DISTINCT line), sum(amount) FROM postings"
                   " WHERE txn_id = %s", (txn,)) == [(1, 40000, 40000, 40000, 0)]
    assert env.ledger("verify", check=False).returncode == 0
    if not os.path.exists(env.signing_key):
        env.admin("keygen", "--out", env.signing_key)
    out = tmp_path / "wide.csv"
    env.ledger("export", "--from", "2000-01-01", "--to", "2100-01-01", "--format", "csv", "--out", str(out))
    assert env.ledger("verify", "--export", str(out), check=False).returncode == 0


def test_unbalanced_transaction_refused_by_database(env):
    acct = json.loads(env.admin("account", "create", "--external-id", "raw-sql-1", "--json").stdout)["account_id"]
    paid = env.one("SELECT ledger_account_id FROM ledger_accounts WHERE account_id=%s AND type='customer_paid'", (acct,))
    before = env.one("SELECT count(*) FROM journal")
    for user in ("billing", "billing_owner", "postgres"):
        c = psycopg2.connect(env.stack.conninfo(env.db, user))
        cur = c.cursor()
        with pytest.raises(psycopg2.Error) as e:
            cur.execute("""INSERT INTO journal (writer, seq, kind, idempotency_key, content_hash, actor, reason, details,
                                                created_at, prev_hash, hash)
                           VALUES ('raw', 1, 'x', 'raw-' || %s, '\\x00', 'me', 'r', '{}', now(), '\\x00', '\\x00')
                           RETURNING txn_id""", (user,))
            txn = cur.fetchone()[0]
            cur.execute("INSERT INTO postings (txn_id, line, ledger_account_id, amount) VALUES (%s, 1, %s, 100), (%s, 2, 1, -99)",
                        (txn, paid, txn))
            c.commit()
        assert "does not balance" in str(e.value)
        c.rollback()
        # a journal row without postings is refused at commit
        with pytest.raises(psycopg2.Error) as e:
            cur.execute("""INSERT INTO journal (writer, seq, kind, idempotency_key, content_hash, actor, reason, details,
                                                created_at, prev_hash, hash)
                           VALUES ('raw', 1, 'x', 'raw2-' || %s, '\\x00', 'me', 'r', '{}', now(), '\\x00', '\\x00')""", (user,))
            c.commit()
        assert "postings" in str(e.value)
        c.rollback()
        c.close()
    assert env.one("SELECT count(*) FROM journal") == before
    env.assert_books_sound()


def test_service_role_cannot_change_ledger(env):
    for stmt in ("UPDATE postings SET amount = amount + 1", "DELETE FROM postings", "TRUNCATE postings",
                 "UPDATE journal SET reason = 'x'", "DELETE FROM journal", "TRUNCATE journal CASCADE",
                 "UPDATE ledger_balances SET balance = 0", "DELETE FROM ledger_accounts",
                 "UPDATE usage_records SET cost_nanos = 0", "DELETE FROM audit_log", "UPDATE prices SET input_nanos = 0"):
        with pytest.raises(psycopg2.Error):
            env.sql(stmt)
    # the owner is refused by the triggers too
    for stmt in ("UPDATE postings SET amount = amount + 1", "DELETE FROM journal", "TRUNCATE postings"):
        with pytest.raises(psycopg2.Error) as e:
            env.sql(stmt, user="billing_owner")
        assert "append-only" in str(e.value)


def _tamper_env(stack, tmp_path):
    from conftest import Env
    e = Env(stack, stack.new_database(), str(tmp_path))
    for i in range(3):
        a = json.loads(e.admin("account", "create", "--external-id", f"t{i}", "--json").stdout)["account_id"]
        e.admin("topup", "--account", a, "--amount", "10", "--payment-ref", f"pay-{i}")
    e.assert_books_sound()
    return e


def test_superuser_tampering_is_named_by_verify(stack, tmp_path):
    e = _tamper_env(stack, tmp_path)
    txn = e.one("SELECT txn_id FROM journal WHERE kind = 'topup' ORDER BY txn_id LIMIT 1 OFFSET 1")
    e.sql("ALTER TABLE postings DISABLE TRIGGER postings_append_only;"
          " UPDATE postings SET amount = amount + 1 WHERE txn_id = %s AND line = 1;"
          " ALTER TABLE postings ENABLE ALWAYS TRIGGER postings_append_only",
          (txn,), user="postgres")
    v = e.ledger("verify", check=False)
    assert v.returncode == 1
    assert f"transaction {txn} " in v.stdout and f"transaction {txn} " in v.stderr


def test_superuser_delete_is_named_by_verify(stack, tmp_path):
    e = _tamper_env(stack, tmp_path)
    txn, writer, seq = e.one("SELECT txn_id, writer, seq FROM journal WHERE kind = 'topup' ORDER BY txn_id LIMIT 1 OFFSET 1")
    e.sql("ALTER TABLE postings DISABLE TRIGGER postings_append_only; ALTER TABLE journal DISABLE TRIGGER journal_append_only;"
          " DELETE FROM postings WHERE txn_id = %s; DELETE FROM journal WHERE txn_id = %s;"
          " ALTER TABLE postings ENABLE ALWAYS TRIGGER postings_append_only;"
          " ALTER TABLE journal ENABLE ALWAYS TRIGGER journal_append_only",
          (txn, txn), user="postgres")
    v = e.ledger("verify", check=False)
    assert v.returncode == 1
    assert f"writer {writer}, seq {seq}: transaction seq {seq} is missing" in v.stdout


def test_idempotency_key_returns_original_and_refuses_changes(env):
    a = json.loads(env.admin("account", "create", "--external-id", "idem-1", "--json").stdout)["account_id"]
    g1 = env.admin_json("grant", "--account", a, "--amount", "3.5", "--reason", "goodwill", "--idempotency-key", "k-1")
    g2 = env.admin_json("grant", "--account", a, "--amount", "3.5", "--reason", "goodwill", "--idempotency-key", "k-1")
    assert g1["grant_id"] == g2["grant_id"] and g2["duplicate"] is True and g1["duplicate"] is False
    assert env.one("SELECT count(*) FROM journal WHERE idempotency_key = 'grant:k-1'") == 1
    bad = env.admin("grant", "--account", a, "--amount", "4", "--reason", "goodwill", "--idempotency-key", "k-1", check=False)
    assert bad.returncode == 1 and "idempotency_conflict" in bad.stderr
    # top-ups: payment_ref is the key
    t1 = env.admin_json("topup", "--account", a, "--amount", "100", "--payment-ref", "ref-1")
    t2 = env.admin_json("topup", "--account", a, "--amount", "100", "--payment-ref", "ref-1")
    assert t2["duplicate"] is True and t1["balance"]["paid_nanos"] == t2["balance"]["paid_nanos"] == 100_000_000_000
    bad = env.admin("topup", "--account", a, "--amount", "101", "--payment-ref", "ref-1", check=False)
    assert bad.returncode == 1 and "idempotency_conflict" in bad.stderr
    assert env.one("SELECT count(*) FROM journal WHERE idempotency_key = 'topup:ref-1'") == 1
    env.assert_books_sound()


def test_edited_migration_is_refused(stack, tmp_path):
    from conftest import Env
    e = Env(stack, stack.new_database(), str(tmp_path))
    mig = tmp_path / "migrations"
    shutil.copytree(os.path.join(ROOT, "migrations"), mig)
    env = e.cli_env(BILLING_MIGRATIONS_DIR=str(mig))
    out = e.admin("migrate", env=env)
    assert "nothing to apply" in out.stdout
    with open(mig / "0002_pricing_usage.sql", "a") as f:
        f.write("\n-- edited\n")
    bad = e.admin("migrate", env=env, check=False)
    assert bad.returncode == 1
    assert "0002_pricing_usage.sql" in bad.stderr and "changed" in bad.stderr
    # a new file applies once, recorded with its checksum
    (mig / "0002_pricing_usage.sql").write_text(open(os.path.join(ROOT, "migrations", "0002_pricing_usage.sql")).read())
    (mig / "9999_test.sql").write_text("CREATE TABLE t_new (x int);\n")
    out = e.admin("migrate", env=env)
    assert "applied 9999_test.sql" in out.stdout
    assert e.one("SELECT sha256 FROM schema_migrations WHERE name = '9999_test.sql'") and \
        len(e.one("SELECT sha256 FROM schema_migrations WHERE name = '9999_test.sql'")) == 64
    assert "nothing to apply" in e.admin("migrate", env=env).stdout


def test_amount_parsing_and_usage_errors(env):
    a = json.loads(env.admin("account", "create", "--external-id", "cli-err", "--json").stdout)["account_id"]
    r = env.admin("grant", "--account", a, "--amount", "1.0000000001", "--reason", "x", check=False)
    assert r.returncode == 2 and r.stderr.startswith("billing-admin: ") and "9 decimal" in r.stderr
    r = env.admin("grant", "--account", a, "--amount", "1", check=False)
    assert r.returncode == 2 and "--reason" in r.stderr
    r = env.admin("grant", "--account", 999999, "--amount", "1", "--reason", "x", check=False)
    assert r.returncode == 1 and "not found" in r.stderr
    r = env.admin("topup", "--account", a, "--amount", "1e3", "--payment-ref", "z", check=False)
    assert r.returncode == 2
    r = env.admin("frobnicate", check=False)
    assert r.returncode == 2
    g = env.admin_json("grant", "--account", a, "--amount", "0.000000001", "--reason", "one nano")
    assert g["amount_nanos"] == 1
    assert env.admin("--help").returncode == 0
    assert "--payment-ref" in env.admin("topup", "--help").stdout


def test_export_and_manifest_are_readable_by_the_owner_only(env, tmp_path):
    """Finance data: `ledger export` writes the file and its manifest 0600
    whatever the umask, also when --force overwrites a wider file."""
    import os
    import stat
    if not os.path.exists(env.signing_key):
        env.admin("keygen", "--out", env.signing_key)
    a = json.loads(env.admin("account", "create", "--external-id", "export-mode", "--json").stdout)["account_id"]
    env.admin("topup", "--account", a, "--amount", "3", "--payment-ref", "export-mode-1")
    out = str(tmp_path / "books.csv")
    old = os.umask(0o022)
    try:
        for fmt, force in (("csv", []), ("ndjson", ["--force"])):
            if force:
                os.chmod(out, 0o644)
                os.chmod(out + ".manifest.json", 0o644)
            env.ledger("export", "--from", "2000-01-01", "--to", "2100-01-01", "--format", fmt, "--out", out, *force)
            for path in (out, out + ".manifest.json"):
                mode = stat.S_IMODE(os.stat(path).st_mode)
                assert mode == 0o600, (fmt, path, oct(mode))
    finally:
        os.umask(old)
    assert env.ledger("verify", "--export", out).returncode == 0


def test_service_role_changes_in_place_leave_a_database_written_audit_row(env):
    """An account's status, an API key's revocation and a campaign's budget
    changed by the service role directly in SQL (not through a CLI that
    writes its own audit row) each leave an audit_log row, written by a
    trigger, which the service role can neither skip nor remove."""
    a = json.loads(env.admin("account", "create", "--external-id", "audit-trig", "--json").stdout)["account_id"]
    key_id = json.loads(env.admin("key", "create", "--account", a, "--json").stdout)["key_id"]
    n0 = env.one("SELECT count(*) FROM audit_log")
    env.sql("UPDATE customers SET status = 'frozen' WHERE account_id = %s", (a,))            # user billing
    env.sql("UPDATE customers SET status = 'frozen' WHERE account_id = %s", (a,))            # no change: no row
    env.sql("UPDATE api_keys SET revoked_at = now() WHERE key_id = %s", (key_id,))
    env.sql("UPDATE campaigns SET budget_nanos = granted_nanos + 123 WHERE name = 'default'")
    env.sql("UPDATE campaigns SET budget_nanos = NULL WHERE name = 'default'")
    rows = env.sql("SELECT actor, action, target, details FROM audit_log WHERE audit_id > "
                   "(SELECT max(audit_id) FROM audit_log) - %s ORDER BY audit_id",
                   (env.one("SELECT count(*) FROM audit_log") - n0,))
    acts = [(r[1], r[2]) for r in rows]
    assert acts == [("db.customer.status", str(a)), ("db.api_key.revoked_at", str(key_id)),
                    ("campaign.change", "default"), ("campaign.change", "default")], acts
    st = rows[0][3]
    assert (st["before"], st["after"], st["db_user"]) == ("active", "frozen", "billing") and rows[0][0] == "billing"
    assert rows[1][3]["before"] is None and rows[1][3]["after"] is not None and rows[1][3]["account_id"] == a
    assert rows[2][3]["after"]["budget_nanos"] == rows[2][3]["after"]["granted_nanos"] + 123
    # the service role cannot remove them, nor switch the trigger off
    for q in ("DELETE FROM audit_log", "UPDATE audit_log SET actor = 'x'",
              "ALTER TABLE customers DISABLE TRIGGER customers_status_audit"):
        with pytest.raises(psycopg2.Error):
            env.sql(q)
    # the CLI's freeze names its operator and reason in the database's row too
    env.sql("UPDATE customers SET status = 'active' WHERE account_id = %s", (a,))
    env.admin("account", "freeze", a, "--reason", "chargeback", "--operator", "dana")
    row = env.one("SELECT actor, reason FROM audit_log WHERE action = 'db.customer.status' AND target = %s"
                  " ORDER BY audit_id DESC LIMIT 1", (str(a),))
    assert row == ("dana", "chargeback"), row


def _escape_units(line):
    """The JSON escape units of a line (\\uXXXX six bytes, others two), in
    order: \\\\u0008 is an escaped backslash, then the text u0008."""
    i = 0
    while i < len(line):
        if line[i:i + 1] == b"\\":
            n = 6 if line[i + 1:i + 2] == b"u" else 2
            yield i, line[i:i + n]
            i += n
        else:
            i += 1


def _short_escapes(line):
    """The line as the export writer of commits 0b994f4..286f7c0 wrote it:
    its JSON strings spelled the bytes 0x08 and 0x0c as \\b and \\f (every
    other writer, today's included: \\u0008 and \\u000c)."""
    out, at = bytearray(), 0
    for i, unit in _escape_units(line):
        out += line[at:i] + {b"\\u0008": b"\\b", b"\\u000c": b"\\f"}.get(unit, unit)
        at = i + len(unit)
    return bytes(out + line[at:])


def test_an_ndjson_export_in_either_spelling_of_0x08_and_0x0c_verifies(env, tmp_path):
    """NDJSON exports spell a backspace or form feed in a string (reason,
    actor, keys) \\u0008 and \\u000c, as every writer but one did, so
    older verifiers accept today's files; the writer of 0b994f4..286f7c0
    spelled them \\b and \\f, and its signed files are genuine too:
    `ledger verify --export` must accept both."""
    import hashlib
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    if not os.path.exists(env.signing_key):
        env.admin("keygen", "--out", env.signing_key)
    a = json.loads(env.admin("account", "create", "--external-id", "legacy-esc", "--json").stdout)["account_id"]
    env.admin("adjust", "--account", a, "--amount", "1.5", "--reason", "goodwill\fpage two\bback",
              "--idempotency-key", "legacy\fesc")
    out = tmp_path / "legacy.ndjson"
    env.ledger("export", "--from", "2000-01-01", "--to", "2100-01-01", "--account", str(a), "--format", "ndjson",
               "--out", str(out))
    assert env.ledger("verify", "--export", str(out), check=False).returncode == 0
    data = out.read_bytes()
    units = [u for _, u in _escape_units(data)]
    assert b"\\u000c" in units and b"\\u0008" in units and b"\\f" not in units and b"\\b" not in units
    # the same file as the writer of 0b994f4..286f7c0 made it: row hashes,
    # file hash and signature as that writer computed them
    m = json.loads(open(str(out) + ".manifest.json").read())
    sep = b',"row_hash":"'
    h = hashlib.blake2b(b"billing-ledger-export-v1\0ndjson", digest_size=32).digest()
    lines, cps = [], []
    for n, ln in enumerate(data.split(b"\n")[:-1], 1):
        body = _short_escapes(ln[:ln.rindex(sep)])
        h = hashlib.blake2b(h + body, digest_size=32).digest()
        lines.append(body + sep + h.hex().encode() + b'"}\n')
        if n % m["row_hash"]["checkpoint_every"] == 0:
            cps.append({"row": n, "row_hash": h.hex()})
    old = b"".join(lines)
    units = [u for _, u in _escape_units(old)]
    assert b"\\f" in units and b"\\b" in units and b"\\u000c" not in units
    out.write_bytes(old)
    m.pop("signature")
    m["bytes"], m["blake2b_256"] = len(old), hashlib.blake2b(old, digest_size=32).hexdigest()
    m["row_hash"]["last"], m["row_hash"]["checkpoints"] = h.hex(), cps
    sk = bytes.fromhex(open(env.signing_key).read().strip())
    canonical = json.dumps(m, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    m["signature"] = Ed25519PrivateKey.from_private_bytes(sk[:32]).sign(canonical).hex()
    with open(str(out) + ".manifest.json", "w") as f:
        json.dump(m, f)
    p = env.ledger("verify", "--export", str(out), check=False)
    assert p.returncode == 0, p.stdout + p.stderr
