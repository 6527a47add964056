"""`ledger verify` and what the hashes do not cover: which customer a ledger
account belongs to and what type it is.  Statements, balances, burn-down,
the trial balance and exports all read them from ledger_accounts (and
grants), so a superuser who moved a grant's bucket to another customer, or
relabelled cash clearing as breakage, changed every report while each hash
still checked out and verify said "ok".  Both follow from hashed facts
(system accounts 1..5 have fixed types, a customer's postings sit in that
customer's transactions, a grant names the transaction that funded it), and
verify now names the first ledger account that disagrees.  Each test has its
own database: the tamper stays there."""
import json

from conftest import Env


def _books(stack, tmp_path):
    e = Env(stack, stack.new_database(), str(tmp_path))
    ids = []
    for i in range(2):
        a = json.loads(e.admin("account", "create", "--external-id", f"va-{i}", "--json").stdout)["account_id"]
        e.admin("topup", "--account", a, "--amount", "10", "--payment-ref", f"va-pay-{i}")
        e.admin("grant", "--account", a, "--amount", "3", "--reason", "goodwill")
        ids.append(a)
    e.assert_books_sound()
    return e, ids


def _as_superuser(e, table, stmt, params=None):
    e.sql(f"ALTER TABLE {table} DISABLE TRIGGER {table}_append_only; {stmt};"
          f" ALTER TABLE {table} ENABLE ALWAYS TRIGGER {table}_append_only", params, user="postgres")


def _failed(e):
    v = e.ledger("verify", check=False)
    assert v.returncode == 1, v.stdout + v.stderr
    assert v.stderr.startswith("ledger: verify failed: ") and v.stderr.count("\n") == 1, v.stderr
    return v


def test_a_grant_bucket_moved_to_another_customer_is_named(stack, tmp_path):
    e, (a, b) = _books(stack, tmp_path)
    la, grant = e.one("SELECT g.ledger_account_id, g.grant_id FROM grants g WHERE g.account_id = %s"
                      " AND g.kind = 'admin'", (b,))
    before = e.admin_json("account", "show", a)["balance"]["promo_nanos"]
    _as_superuser(e, "ledger_accounts", "UPDATE ledger_accounts SET account_id = %s WHERE ledger_account_id = %s",
                  (a, la))
    # every report now gives b's credit to a ...
    assert e.admin_json("account", "show", a)["balance"]["promo_nanos"] == before + 3_000_000_000
    # ... and verify names the bucket (it said "ok" before)
    v = _failed(e)
    assert f"ledger account {la}: customer {a}, where the hashed transactions say customer {b}" in v.stdout, v.stdout


def test_a_grant_row_moved_to_another_customer_is_named(stack, tmp_path):
    e, (a, b) = _books(stack, tmp_path)
    la, grant = e.one("SELECT g.ledger_account_id, g.grant_id FROM grants g WHERE g.account_id = %s"
                      " AND g.kind = 'admin'", (b,))
    _as_superuser(e, "grants", "UPDATE grants SET account_id = %s WHERE grant_id = %s", (a, grant))
    v = _failed(e)
    assert f"ledger account {la}: grant {grant} of customer {a}" in v.stdout, v.stdout


def test_a_relabelled_system_account_is_named(stack, tmp_path):
    e, _ = _books(stack, tmp_path)
    _as_superuser(e, "ledger_accounts", "UPDATE ledger_accounts SET type = 'breakage' WHERE ledger_account_id = 4")
    # the trial balance still balances: only the label moved 20 CNY from cash clearing to breakage
    tb = json.loads(e.ledger("trial-balance", "--json").stdout)
    assert tb["balanced"] and "cash_clearing" not in {r["type"] for r in tb["accounts"]}
    v = _failed(e)
    assert "ledger account 4: breakage with customer none, where the hashed transactions say cash_clearing" \
        in v.stdout, v.stdout


def test_a_paid_balance_relabelled_as_promotional_is_named(stack, tmp_path):
    e, (a, _) = _books(stack, tmp_path)
    la = e.one("SELECT ledger_account_id FROM ledger_accounts WHERE account_id = %s AND type = 'customer_paid'", (a,))
    _as_superuser(e, "ledger_accounts", "UPDATE ledger_accounts SET type = 'customer_promo'"
                  " WHERE ledger_account_id = %s", (la,))
    v = _failed(e)
    assert f"ledger account {la}: customer_promo with customer {a}, where the hashed transactions say" \
           " customer_paid" in v.stdout, v.stdout


def test_a_duplicated_journal_row_is_named_as_such(stack, tmp_path):
    """A second journal row with a seq its chain already has (a copy of a
    transaction, written with the triggers off) was reported as "transaction
    seq N+1 is missing (deleted?)": nothing was missing.  Verify names the
    row and the transaction whose seq it repeats."""
    e, _ = _books(stack, tmp_path)
    txn, writer, seq = e.one("SELECT txn_id, writer, seq FROM journal WHERE kind = 'topup' ORDER BY txn_id LIMIT 1")
    copy = e.one("ALTER TABLE journal DISABLE TRIGGER ALL;"
                 " INSERT INTO journal (writer, seq, kind, idempotency_key, content_hash, account_id, actor, reason,"
                 "  details, created_at, prev_hash, hash)"
                 " SELECT writer, seq, kind, idempotency_key || '-copy', content_hash, account_id, actor, reason,"
                 "  details, created_at + interval '1 microsecond', prev_hash, hash FROM journal WHERE txn_id = %s"
                 " RETURNING txn_id", (txn,), user="postgres")
    e.sql("ALTER TABLE journal ENABLE TRIGGER ALL", user="postgres")
    v = _failed(e)
    assert "is missing" not in v.stdout, v.stdout
    assert f"(writer {writer}, seq {seq}): seq {seq} comes a second time" in v.stdout, v.stdout
    assert f"transaction {txn}" in v.stdout and f"transaction {copy}" in v.stdout, v.stdout


def test_verify_of_the_database_answers_json(stack, tmp_path):
    """`--json wherever a command shows data` (docs/cli.md): `ledger verify
    --json` printed the text verdict unless --export was given."""
    e, (a, b) = _books(stack, tmp_path)
    ok = json.loads(e.ledger("verify", "--json").stdout)
    assert ok == {"ok": True, "transactions": 6, "chains": 1, "problem": None, "txn_id": None, "writer": None,
                  "seq": None}, ok
    txn, writer, seq = e.one("SELECT txn_id, writer, seq FROM journal WHERE kind = 'topup' ORDER BY txn_id LIMIT 1")
    e.sql("ALTER TABLE postings DISABLE TRIGGER postings_append_only;"
          " UPDATE postings SET amount = amount + 1 WHERE txn_id = %s AND line = 1;"
          " ALTER TABLE postings ENABLE ALWAYS TRIGGER postings_append_only", (txn,), user="postgres")
    v = e.ledger("verify", "--json", check=False)
    assert v.returncode == 1 and v.stderr.startswith("ledger: verify failed: ") and v.stderr.count("\n") == 1
    bad = json.loads(v.stdout)
    assert bad["ok"] is False and (bad["txn_id"], bad["writer"], bad["seq"]) == (txn, writer, seq), bad
    assert f"transaction {txn} " in bad["problem"]
