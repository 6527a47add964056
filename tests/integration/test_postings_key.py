"""Postings without their surrogate key (migration 0018): a database filled
before it converts with its rows, balances, hash chain and export unchanged
and verifies; postings written after it carry no posting_id; a posting is
still unique by (txn_id, line) for every role that may write, and a
refund still finds the postings it reverses."""
import datetime as dt
import json
import os

import psycopg2
import pytest

from conftest import Billingd, db_before_migration, rfc3339, set_price

UTC = dt.timezone.utc
STARTED = rfc3339(dt.datetime.now(UTC) - dt.timedelta(minutes=1))


def usage(rid, account, tin=1000, tout=100):
    return {"request_id": rid, "account_id": account, "model": "pk-m", "input_tokens": tin,
            "cached_input_tokens": 0, "output_tokens": tout, "started_at": STARTED}


def snapshot(e):
    return (e.sql("SELECT txn_id, writer, seq, encode(hash, 'hex') FROM journal ORDER BY txn_id"),
            e.sql("SELECT posting_id, txn_id, line, ledger_account_id, amount FROM postings ORDER BY txn_id, line"),
            e.sql("SELECT ledger_account_id, balance, account_id FROM ledger_balances ORDER BY 1"),
            e.sql("SELECT request_id, txn_id, cost_nanos, response FROM usage_records ORDER BY request_id"))


def export(e, path, env=None):
    if not os.path.exists(e.signing_key):
        e.admin("keygen", "--out", e.signing_key)
    e.ledger("export", "--from", "2000-01-01", "--to", "2100-01-01", "--format", "csv", "--out", str(path),
             env=env)
    return path.read_bytes()


def test_database_filled_before_0018_converts_and_verifies(stack, tmp_path):
    e, old_env, out = db_before_migration(stack, "billing_pre18", tmp_path, "0018")
    assert "applied 0017_posting_lines.sql" in out
    set_price(e, "pk-m", 2 * 10 ** 9, 10 ** 9, 8 * 10 ** 9)
    accts = [json.loads(e.admin("account", "create", "--external-id", f"pre18-{i}", "--json",
                                env=old_env).stdout)["account_id"] for i in range(3)]
    for i, a in enumerate(accts):
        e.admin("topup", "--account", a, "--amount", "10", "--payment-ref", f"pre18-pay-{i}", env=old_env)
    bd = Billingd(e, {"migrations_dir": old_env["BILLING_MIGRATIONS_DIR"]})
    try:
        for i in range(4):
            assert bd.post("/v1/usage", usage(f"pre18-u{i}", accts[i % 3])).status_code == 200
        r = bd.post("/v1/usage/batch", {"records": [usage(f"pre18-b{i}", accts[i % 3]) for i in range(30)]})
        assert r.status_code == 200 and all("cost_nanos" in x for x in r.json()["results"])
    finally:
        bd.stop()
    before = snapshot(e)
    n = len(before[0])
    assert len(before[3]) == 34 and all(p[0] is not None for p in before[1])
    exported = export(e, tmp_path / "before.csv", env=old_env)

    out = e.admin("migrate").stdout
    assert "applied 0018_postings_no_surrogate.sql" in out
    assert snapshot(e) == before
    assert export(e, tmp_path / "after.csv") == exported
    assert e.ledger("verify", "--export", str(tmp_path / "after.csv"), check=False).returncode == 0
    assert f"ok: {n} transactions" in e.ledger("verify").stdout
    e.assert_books_sound()
    # the surrogate key and its sequence are gone; the rule that names a posting stays
    assert e.one("SELECT count(*) FROM pg_constraint WHERE conrelid = 'postings'::regclass AND contype = 'p'") == 0
    assert e.one("SELECT to_regclass('postings_posting_id_seq') IS NULL") is True
    assert e.one("SELECT pg_get_indexdef(conindid) FROM pg_constraint"
                 " WHERE conrelid = 'postings'::regclass AND contype = 'u'").endswith("(txn_id, line, created_at)")

    bd = Billingd(e)
    try:
        r = bd.post("/v1/usage/batch", {"records": [usage(f"post18-b{i}", accts[i % 3]) for i in range(30)]
                                        + [usage("pre18-b0", accts[0]), usage("pre18-b1", accts[1], tin=7)]})
        res = r.json()["results"]
        assert r.status_code == 200 and all("cost_nanos" in x for x in res[:31])
        assert res[30]["duplicate"] is True and res[31]["error"]["code"] == "idempotency_conflict"
    finally:
        bd.stop()
        e.redis_flushall()  # one Redis per database: the module's own finds none of this one's mirrors
    new = e.sql("SELECT p.posting_id FROM postings p JOIN usage_records u USING (txn_id, created_at)"
                " WHERE u.request_id LIKE 'post18-%'")
    assert len(new) >= 60 and all(p[0] is None for p in new)
    e.admin("refund", "--request-id", "pre18-u1", "--reason", "pk test")
    e.admin("refund", "--request-id", "post18-b1", "--reason", "pk test")
    assert e.one("SELECT count(*) FROM ledger_idempotency WHERE idempotency_key LIKE 'refund:%'") == 2
    assert f"ok: {n + 32} transactions" in e.ledger("verify").stdout
    e.assert_books_sound()


@pytest.mark.parametrize("user", ["billing_owner", "postgres"])
def test_a_posting_line_is_unique_without_the_surrogate_key(env, user):
    """The postings of an existing transaction once more, in one statement
    (balanced, so that only uniqueness can refuse them), are refused
    (23505) for the owner and a superuser alike."""
    a = json.loads(env.admin("account", "create", "--external-id", f"pk-dup-{user}", "--json").stdout)["account_id"]
    env.admin("topup", "--account", a, "--amount", "3", "--payment-ref", f"pk-dup-{user}")
    txn, at = env.one("SELECT txn_id, created_at FROM ledger_idempotency WHERE idempotency_key = %s",
                      (f"topup:pk-dup-{user}",))
    rows = env.sql("SELECT line, ledger_account_id, amount FROM postings WHERE txn_id = %s ORDER BY line", (txn,))
    assert len(rows) >= 2 and sum(r[2] for r in rows) == 0
    c = psycopg2.connect(env.stack.conninfo(env.db, user))
    try:
        cur = c.cursor()
        values = ", ".join(cur.mogrify("(%s, %s, %s, %s, %s)", (txn, ln, la, amt, at)).decode()
                           for ln, la, amt in rows)
        with pytest.raises(psycopg2.Error) as err:
            cur.execute("INSERT INTO postings (txn_id, line, ledger_account_id, amount, created_at) VALUES " + values)
        assert err.value.pgcode == "23505", str(err.value)
        c.rollback()
    finally:
        c.close()
    assert env.sql("SELECT line, ledger_account_id, amount FROM postings WHERE txn_id = %s ORDER BY line",
                   (txn,)) == rows
