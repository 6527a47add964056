"""Limit rows of 0 written before `limits set` refused 0 (0ee4bc3): billingd
read a stored 0 as "no limit" (the authorize script's 0 = none) while
`limits show` and GET /v1/accounts/{id} showed 0, and an account's 0
lifted its tier's limit.  Migration 0022 gives each scope whose newest row
holds a 0 a new row with those limits cleared (NULL: none, what `limits
set ... none` writes), recorded in audit_log, and a CHECK refuses 0 in
new rows; the old rows stay as history."""
import json

import psycopg2
import pytest

from conftest import Billingd, db_before_migration


def test_zero_limits_from_before_the_fix_convert_to_none(stack, tmp_path):
    e, old_env, out = db_before_migration(stack, "billing_pre22", tmp_path, "0022")
    a = json.loads(e.admin("account", "create", "--external-id", "lz-1", "--json", env=old_env).stdout)["account_id"]
    b = json.loads(e.admin("account", "create", "--external-id", "lz-2", "--json", env=old_env).stdout)["account_id"]
    # what the CLI wrote for --concurrency 0 etc. before the fix: plain rows
    ins = ("INSERT INTO limits (tier, account_id, model, rpm, tpm, rpd, tpd, concurrency, actor)"
           " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 'old-cli')")
    e.sql(ins, (None, a, "", 0, 5000, None, None, 0))
    e.sql(ins, (None, a, "m1", 7, None, None, None, None))
    e.sql(ins, ("lz-tier", None, "", 0, None, 0, None, None))
    e.sql(ins, (None, b, "", 0, None, None, None, None))       # superseded below: history only
    e.sql(ins, (None, b, "", 3, None, None, None, None))
    before = e.sql("SELECT * FROM limits ORDER BY limit_id")
    assert len(before) == 5

    out = e.admin("migrate").stdout
    assert "applied 0022_limits_positive.sql" in out, out
    after = e.sql("SELECT * FROM limits ORDER BY limit_id")
    assert after[:5] == before          # history unchanged
    new = e.sql("SELECT tier, account_id, model, rpm, tpm, rpd, tpd, concurrency, actor FROM limits"
                " WHERE limit_id > %s ORDER BY limit_id", (before[-1][0],))
    assert new == [(None, a, "", None, 5000, None, None, None, "migration 0022_limits_positive"),
                   ("lz-tier", None, "", None, None, None, None, None, "migration 0022_limits_positive")]
    # the newest row of every scope holds no 0 any more
    assert e.one("SELECT count(*) FROM (SELECT DISTINCT ON (tier, account_id, model) * FROM limits"
                 " ORDER BY tier, account_id, model, limit_id DESC) cur"
                 " WHERE 0 IN (rpm, tpm, rpd, tpd, concurrency)") == 0
    audit = e.sql("SELECT actor, action, target FROM audit_log WHERE action = 'limits.set' ORDER BY audit_id")
    assert audit == [("migration 0022_limits_positive", "limits.set", str(a)),
                     ("migration 0022_limits_positive", "limits.set", "lz-tier")]
    # docs/deployment.md "Upgrading": the accounts whose 0 is gone, and their scope
    listed = e.sql("SELECT target AS account_id, details->>'model' AS model, details"
                   "  FROM audit_log"
                   " WHERE actor = 'migration 0022_limits_positive' AND details->>'account_id' IS NOT NULL"
                   " ORDER BY audit_id")
    assert [(x[0], x[1], x[2]["tpm"]) for x in listed] == [(str(a), "", 5000)], listed
    shown = e.admin_json("limits", "show", "--account", a)
    assert [(x["model"], x["rpm"], x["tpm"], x["concurrency"]) for x in shown] == [("", None, 5000, None),
                                                                                  ("m1", 7, None, None)]
    bd = Billingd(e)
    try:
        view = bd.get(f"/v1/accounts/{a}").json()["limits"]["all_models"]
    finally:
        bd.stop()
    assert view["rpm"] is None and view["concurrency"] is None and view["tpm"]["value"] == 5000, view
    # a 0 cannot be written any more, by the service role or the owner
    for user in ("billing", "billing_owner"):
        with pytest.raises(psycopg2.errors.CheckViolation):
            e.sql(ins, (None, a, "", None, None, None, None, 0), user=user)
    # migrating again changes nothing
    assert "0022" not in e.admin("migrate").stdout
    assert e.one("SELECT count(*) FROM limits") == 7
