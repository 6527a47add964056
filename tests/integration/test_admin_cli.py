"""Every billing-admin command of CONTRACT.md §5, with its error
paths: exit codes 0/1/2, one stderr line starting with the program name,
--help, --json, and an audit row or journal transaction for every change."""
import datetime
import json
import os
import time

import pytest

from conftest import ADMIN_TOKEN, UNIT, now_rfc3339, set_price

MODEL = "admin-test-model"
NOW = datetime.datetime.now(datetime.timezone.utc)


def one_line_error(p, code):
    assert p.returncode == code, f"exit {p.returncode}, wanted {code}:\n{p.stdout}\n{p.stderr}"
    lines = p.stderr.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith("billing-admin: "), repr(p.stderr)
    return lines[0]


def new_account(env, ext):
    return env.admin_json("account", "create", "--external-id", ext)["account_id"]


@pytest.fixture(scope="module")
def svc(env, request):
    """billingd with a price for MODEL in force (set before it starts)."""
    set_price(env, MODEL, 2 * UNIT, UNIT // 2, 8 * UNIT, effective="2026-01-01T00:00:00Z")
    return request.getfixturevalue("billingd")


def usage(b, acct, rid, inp, out, cached=0):
    r = b.post("/v1/usage", {"request_id": rid, "account_id": acct, "model": MODEL, "input_tokens": inp,
                             "cached_input_tokens": cached, "output_tokens": out, "started_at": now_rfc3339()})
    assert r.status_code == 200, r.text
    return r.json()


ALL_COMMANDS = ["migrate", "keygen", "account create", "account show", "account freeze", "account unfreeze",
                "key create", "key revoke", "grant", "topup", "adjust", "refund", "price set", "price list",
                "limits set", "limits show", "promo show", "promo set", "expire"]


@pytest.mark.parametrize("cmd", ALL_COMMANDS)
def test_every_command_has_help(env, cmd):
    p = env.admin(*cmd.split(), "--help")
    assert p.returncode == 0 and p.stdout.startswith(f"usage: billing-admin {cmd} ")
    assert "options:" in p.stdout
    top = env.admin("--help").stdout
    assert f"  {cmd} " in top


def test_unknown_command_and_option(env):
    one_line_error(env.admin("frobnicate", check=False), 2)
    one_line_error(env.admin("account", "frobnicate", check=False), 2)
    one_line_error(env.admin("promo", check=False), 2)
    p = env.admin("promo", "--help")
    assert "promo show" in p.stdout and "promo set" in p.stdout
    line = one_line_error(env.admin("topup", "--bogus", "1", check=False), 2)
    assert "unknown option '--bogus'" in line
    assert env.admin(check=False).returncode == 2


def test_migrate_is_idempotent(env):
    p = env.admin("migrate")
    assert "nothing to apply" in p.stdout
    names = [r[0] for r in env.sql("SELECT name FROM schema_migrations ORDER BY name")]
    assert "0004_finance.sql" in names


def test_keygen(env, tmp_path):
    out = tmp_path / "k.key"
    p = env.admin("keygen", "--out", out, "--json")
    sk, pk = out.read_text().strip(), (tmp_path / "k.key.pub").read_text().strip()
    assert len(sk) == 128 and len(pk) == 64 and sk.endswith(pk) and json.loads(p.stdout)["public_key"] == pk
    assert oct(os.stat(out).st_mode & 0o777) == "0o600"
    one_line_error(env.admin("keygen", "--out", out, check=False), 1)          # never overwrites silently
    env.admin("keygen", "--out", out, "--force")
    assert (tmp_path / "k.key.pub").read_text().strip() != pk
    one_line_error(env.admin("keygen", check=False), 2)


def test_account_create_show(env):
    a = env.admin_json("account", "create", "--external-id", "adm-acct-1")
    assert a["account_id"] > 0 and a["status"] == "active"
    # the same external id again: the same account
    assert env.admin_json("account", "create", "--external-id", "adm-acct-1")["account_id"] == a["account_id"]
    s = env.admin_json("account", "show", a["account_id"])
    assert s["external_id"] == "adm-acct-1" and s["balance"]["paid_nanos"] == 0
    txt = env.admin("account", "show", a["account_id"]).stdout
    assert "adm-acct-1" in txt
    assert "account.create" in [r[0] for r in env.sql("SELECT action FROM audit_log WHERE target = 'adm-acct-1'")]
    one_line_error(env.admin("account", "create", check=False), 2)
    one_line_error(env.admin("account", "show", 99999999, check=False), 1)
    one_line_error(env.admin("account", "show", "abc", check=False), 2)
    one_line_error(env.admin("account", "show", check=False), 2)


def test_keys(env):
    a = new_account(env, "adm-key-1")
    k = env.admin_json("key", "create", "--account", a, "--name", "ci")
    assert k["api_key"] and k["account_id"] == a
    stored = env.one("SELECT encode(key_hash, 'hex') FROM api_keys WHERE key_id = %s", (k["key_id"],))
    assert k["api_key"] not in stored
    env.admin("key", "revoke", k["key_id"], "--reason", "rotated")
    assert env.one("SELECT revoked_at IS NOT NULL FROM api_keys WHERE key_id = %s", (k["key_id"],))
    one_line_error(env.admin("key", "revoke", k["key_id"], check=False), 1)   # already revoked
    one_line_error(env.admin("key", "revoke", "x1", check=False), 2)
    one_line_error(env.admin("key", "create", "--account", 99999999, check=False), 1)
    one_line_error(env.admin("key", "create", check=False), 2)
    acts = {r[0]: r[1] for r in env.sql("SELECT action, actor FROM audit_log WHERE target = %s", (str(k["key_id"]),))}
    # the CLI's rows, and the database's own row of the revocation (trigger, migration 0007)
    assert acts == {"key.create": "tester", "key.revoke": "tester", "db.api_key.revoked_at": "tester"}


def test_a_key_made_through_the_api_has_its_audit_row_too(env, billingd):
    """POST /v1/keys and `key create` are one path (ledger/apikey.c): the key
    and its audit row commit together, whoever asks."""
    a = new_account(env, "adm-key-api")
    r = billingd.post("/v1/keys", {"account_id": a, "name": "from-api"})
    assert r.status_code == 201, r.text
    k = r.json()
    assert k["api_key"].startswith("sk-") and k["account_id"] == a and k["name"] == "from-api"
    rows = env.sql("SELECT action, actor, reason FROM audit_log WHERE target = %s", (str(k["key_id"]),))
    assert rows == [("key.create", "gateway", "from-api")]
    r = billingd.post("/v1/keys", {"account_id": 99999999})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", r.text
    assert env.one("SELECT count(*) FROM api_keys WHERE account_id = 99999999") == 0

def test_grant_topup_adjust_and_their_errors(env):
    a = new_account(env, "adm-money-1")
    first = env.one("SELECT max(txn_id) FROM journal")
    g = env.admin_json("grant", "--account", a, "--amount", "2.5", "--reason", "goodwill")
    assert g["amount_nanos"] == 2_500_000_000
    t = env.admin_json("topup", "--account", a, "--amount", "100", "--payment-ref", "adm-pay-1")
    assert t["balance"]["paid_nanos"] == 100_000_000_000
    j = env.admin_json("adjust", "--account", a, "--amount", "-1.50", "--reason", "manual fee")
    assert j["balance"]["paid_nanos"] == 98_500_000_000 and j["amount_nanos"] == -1_500_000_000
    rows = env.sql("SELECT kind, actor, reason FROM journal WHERE account_id = %s AND txn_id > %s"
                   " ORDER BY txn_id", (a, first))
    assert [(r[0], r[1]) for r in rows] == [("grant", "tester"), ("topup", "tester"), ("adjust", "tester")]
    assert rows[0][2] == "goodwill" and rows[2][2] == "manual fee"
    for cmd in (["grant", "--account", a, "--reason", "x", "--amount"],
                ["topup", "--account", a, "--payment-ref", "adm-pay-2", "--amount"],
                ["adjust", "--account", a, "--reason", "x", "--amount"]):
        # ten decimals
        line = one_line_error(env.admin(*cmd, "1.0000000001", check=False), 2)
        assert "more than 9 decimal places" in line
        # unknown account
        bad = [99999999 if v == a else v for v in cmd]
        assert "not found" in one_line_error(env.admin(*bad, "1", check=False), 1)
    # missing reason
    assert "--reason" in one_line_error(env.admin("grant", "--account", a, "--amount", "1", check=False), 2)
    assert "--reason" in one_line_error(env.admin("adjust", "--account", a, "--amount", "1", check=False), 2)
    one_line_error(env.admin("topup", "--account", a, "--amount", "1", check=False), 2)        # no payment ref
    one_line_error(env.admin("adjust", "--account", a, "--amount", "0", "--reason", "x", check=False), 2)
    one_line_error(env.admin("grant", "--account", a, "--amount", "-1", "--reason", "x", check=False), 2)
    one_line_error(env.admin("topup", "--account", a, "--amount", "abc", "--payment-ref", "z", check=False), 2)
    # nothing moved by the failures
    assert env.admin_json("account", "show", a)["balance"]["paid_nanos"] == 98_500_000_000
    env.assert_books_sound()


def test_freeze_unfreeze_and_clawback(env):
    inviter = new_account(env, "adm-inviter")
    invitee = new_account(env, "adm-invitee")
    # the referral reward as promotions would record it: a grant to the inviter and a referrals row
    reward = env.admin_json("grant", "--account", inviter, "--amount", "14", "--reason", "referral reward")
    env.sql("INSERT INTO referrals (invitee_id, inviter_id, campaign, outcome, grant_id)"
            " VALUES (%s, %s, 'default', 'rewarded', %s)", (invitee, inviter, reward["grant_id"]))
    promo_before = env.admin_json("account", "show", invitee)["balance"]["promo_nanos"]
    one_line_error(env.admin("account", "freeze", invitee, check=False), 2)                # missing reason
    one_line_error(env.admin("account", "freeze", 99999999, "--reason", "x", check=False), 1)
    one_line_error(env.admin("account", "freeze", "--reason", "x", check=False), 2)
    r = env.admin_json("account", "freeze", invitee, "--reason", "farm", "--clawback")
    assert r["status"] == "frozen" and r["changed"] is True
    assert r["clawback"]["nanos"] == promo_before
    assert r["clawback"]["inviter_id"] == inviter and r["clawback"]["inviter_nanos"] == 14_000_000_000
    assert env.admin_json("account", "show", invitee)["balance"]["promo_nanos"] == 0
    assert env.admin_json("account", "show", invitee)["status"] == "frozen"
    inv = env.admin_json("account", "show", inviter)
    assert all(g["grant_id"] != reward["grant_id"] for g in inv["grants"])
    # by new entries, nothing deleted: the grant transaction is still there
    assert env.one("SELECT count(*) FROM journal WHERE kind = 'clawback' AND account_id IN (%s, %s)",
                   (invitee, inviter)) >= 2
    assert env.one("SELECT count(*) FROM grants WHERE grant_id = %s", (reward["grant_id"],)) == 1
    one_line_error(env.admin("account", "freeze", invitee, "--reason", "again", check=False), 1)
    env.admin("account", "unfreeze", invitee, "--reason", "appeal granted")
    assert env.admin_json("account", "show", invitee)["status"] == "active"
    acts = [r[0] for r in env.sql("SELECT action FROM audit_log WHERE target = %s ORDER BY audit_id", (str(invitee),))]
    # each CLI row follows the database's own row of the status change (trigger, migration 0007)
    assert acts[-4:] == ["db.customer.status", "account.freeze", "db.customer.status", "account.unfreeze"]
    assert env.one("SELECT reason FROM audit_log WHERE target = %s AND action = 'account.freeze'", (str(invitee),)) == "farm"
    env.assert_books_sound()


def test_refund_reverses_once(env, svc):
    a = new_account(env, "adm-refund-1")
    env.admin("topup", "--account", a, "--amount", "100", "--payment-ref", "adm-refund-pay")
    # 5M input + 1M output tokens at 2/8 per 1M: 18 CNY = 14 promotional + 4 paid
    u = usage(svc, a, "adm-rid-1", 5_000_000, 1_000_000)
    assert u["cost_nanos"] == 18_000_000_000
    before = env.admin_json("account", "show", a)["balance"]
    assert before["paid_nanos"] == 96_000_000_000 and before["promo_nanos"] == 0
    orig_txn = env.one("SELECT txn_id FROM usage_records WHERE request_id = 'adm-rid-1'")
    orig = env.sql("SELECT line, ledger_account_id, amount FROM postings WHERE txn_id = %s ORDER BY line", (orig_txn,))
    orig_hash = env.one("SELECT encode(hash, 'hex') FROM journal WHERE txn_id = %s", (orig_txn,))

    r = env.admin_json("refund", "--request-id", "adm-rid-1", "--reason", "model outage")
    assert r["original_txn_id"] == orig_txn and r["cost_nanos"] == 18_000_000_000
    assert r["paid_nanos"] == 4_000_000_000 and r["promo_nanos"] == 14_000_000_000
    rev = env.sql("SELECT ledger_account_id, amount FROM postings WHERE txn_id = %s ORDER BY line", (r["txn_id"],))
    assert sorted(rev) == sorted((la, -amt) for _, la, amt in orig if amt != 0)
    kind, key, actor, reason = env.one("SELECT kind, idempotency_key, actor, reason FROM journal WHERE txn_id = %s",
                                       (r["txn_id"],))
    assert (kind, key, actor, reason) == ("refund", "refund:adm-rid-1", "tester", "model outage")
    # the original stays as it was
    assert env.sql("SELECT line, ledger_account_id, amount FROM postings WHERE txn_id = %s ORDER BY line",
                   (orig_txn,)) == orig
    assert env.one("SELECT encode(hash, 'hex') FROM journal WHERE txn_id = %s", (orig_txn,)) == orig_hash
    assert env.one("SELECT count(*) FROM usage_records WHERE request_id = 'adm-rid-1'") == 1
    after = env.admin_json("account", "show", a)["balance"]
    assert after["paid_nanos"] == 100_000_000_000 and after["promo_nanos"] == 14_000_000_000
    # a second refund is refused, clearly, and changes nothing
    line = one_line_error(env.admin("refund", "--request-id", "adm-rid-1", "--reason", "again", check=False), 1)
    assert "already refunded" in line and str(r["txn_id"]) in line
    assert env.one("SELECT count(*) FROM journal WHERE idempotency_key LIKE 'refund:adm-rid-1%%'") == 1
    assert env.admin_json("account", "show", a)["balance"] == after
    # error paths
    assert "not_found" in one_line_error(env.admin("refund", "--request-id", "no-such", "--reason", "x", check=False), 1)
    assert "--reason" in one_line_error(env.admin("refund", "--request-id", "adm-rid-1", check=False), 2)
    one_line_error(env.admin("refund", "--reason", "x", check=False), 2)
    # a free call has nothing to refund
    usage(svc, a, "adm-rid-free", 0, 0)
    assert "nothing to refund" in one_line_error(
        env.admin("refund", "--request-id", "adm-rid-free", "--reason", "x", check=False), 1)
    env.assert_books_sound()


def test_refund_of_expired_promotional_credit_goes_to_breakage(env, svc):
    a = new_account(env, "adm-refund-exp")
    usage(svc, a, "adm-rid-exp", 1_000_000, 0)     # 2 CNY from the signup grant
    grant = env.one("SELECT grant_id FROM grants WHERE account_id = %s", (a,))
    # the grant expires (superuser: a test clock for one row; the ledger itself is untouched)
    env.sql("ALTER TABLE grants DISABLE TRIGGER grants_append_only;"
            " UPDATE grants SET expires_at = now() - interval '1 day' WHERE grant_id = %s;"
            " ALTER TABLE grants ENABLE ALWAYS TRIGGER grants_append_only", (grant,), user="postgres")
    r = env.admin_json("refund", "--request-id", "adm-rid-exp", "--reason", "late complaint")
    assert r["breakage_nanos"] == 2_000_000_000 and r["promo_nanos"] == 0
    assert env.admin_json("account", "show", a)["balance"]["promo_nanos"] == 0
    env.assert_books_sound()


def test_price_set_and_list(env):
    p = env.admin_json("price", "set", "--model", "adm-price-m", "--input", "1.5", "--cached-input", "0.25",
                       "--output", "6", "--effective", "2026-02-01T00:00:00Z", "--window", "16:30-00:30=5000",
                       "--reason", "launch")
    assert p["input_nanos"] == 1_500_000_000 and p["windows"] == "16:30-00:30=5000"
    lst = env.admin_json("price", "list")
    assert any(x["price_version"] == p["price_version"] and x["output_nanos"] == 6_000_000_000 for x in lst)
    assert "adm-price-m" in env.admin("price", "list").stdout
    assert env.one("SELECT reason FROM audit_log WHERE action = 'price.set' AND target = 'adm-price-m'") == "launch"
    one_line_error(env.admin("price", "set", "--model", "m", "--input", "1.0000000001", "--cached-input", "0",
                             "--output", "1", check=False), 2)
    one_line_error(env.admin("price", "set", "--model", "m", "--input", "-1", "--cached-input", "0",
                             "--output", "1", check=False), 2)
    one_line_error(env.admin("price", "set", "--model", "m", "--input", "1", "--cached-input", "0", "--output", "1",
                             "--window", "25:00-01:00=5000", check=False), 2)
    one_line_error(env.admin("price", "set", "--input", "1", "--cached-input", "0", "--output", "1", check=False), 2)


def test_limits_set_and_show(env):
    a = new_account(env, "adm-limits-1")
    r = env.admin_json("limits", "set", "--account", a, "--rpm", "60", "--tpm", "100000", "--reason", "pilot")
    assert r["account_id"] == a and r["rpm"] == 60 and r["tpm"] == 100000 and r["concurrency"] is None
    # unspecified limits keep their value; 'none' clears one
    r2 = env.admin_json("limits", "set", "--account", a, "--rpm", "120", "--concurrency", "4")
    assert r2["rpm"] == 120 and r2["tpm"] == 100000 and r2["concurrency"] == 4
    r3 = env.admin_json("limits", "set", "--account", a, "--tpm", "none")
    assert r3["tpm"] is None and r3["rpm"] == 120
    t = env.admin_json("limits", "set", "--tier", "free", "--model", MODEL, "--rpd", "1000", "--tpd", "5000000")
    assert t["tier"] == "free" and t["model"] == MODEL
    shown = env.admin_json("limits", "show", "--account", a)
    assert len(shown) == 1 and shown[0]["limit_id"] == r3["limit_id"]
    assert any(x["tier"] == "free" for x in env.admin_json("limits", "show"))
    # every change is a new row plus an audit row: nothing edited in place
    assert env.one("SELECT count(*) FROM limits WHERE account_id = %s", (a,)) == 3
    assert env.one("SELECT count(*) FROM audit_log WHERE action = 'limits.set' AND target = %s", (str(a),)) == 3
    assert "not found" in one_line_error(env.admin("limits", "set", "--account", 99999999, "--rpm", "1", check=False), 1)
    one_line_error(env.admin("limits", "set", "--rpm", "1", check=False), 2)
    one_line_error(env.admin("limits", "set", "--account", a, "--tier", "free", "--rpm", "1", check=False), 2)
    one_line_error(env.admin("limits", "set", "--account", a, check=False), 2)
    one_line_error(env.admin("limits", "set", "--account", a, "--rpm", "1.5", check=False), 2)
    one_line_error(env.admin("limits", "set", "--account", a, "--rpm", "-1", check=False), 2)


def test_promo_show_and_set(env):
    shown = env.admin_json("promo", "show")
    active = [c for c in shown if c["active"]]
    assert len(active) == 1
    r = env.admin_json("promo", "set", "--signup", "20", "--max-referrals", "10", "--reason", "holiday")
    assert r["name"] == active[0]["name"] and r["signup_nanos"] == 20_000_000_000 and r["max_referrals"] == 10
    # a new campaign becomes the active one, starting from the current settings
    n = env.admin_json("promo", "set", "--campaign", "adm-spring", "--budget", "1000", "--referral", "5",
                       "--reason", "spring")
    assert n["created"] is True and n["active"] is True and n["budget_nanos"] == 1_000_000_000_000
    assert n["signup_nanos"] == 20_000_000_000 and n["referral_nanos"] == 5_000_000_000
    shown = env.admin_json("promo", "show")
    assert [c["name"] for c in shown if c["active"]] == ["adm-spring"]
    # a signup now draws on the new campaign
    a = new_account(env, "adm-promo-signup")
    g = env.admin_json("account", "show", a)["grants"]
    assert g and g[0]["remaining_nanos"] == 20_000_000_000
    assert env.one("SELECT granted_nanos FROM campaigns WHERE name = 'adm-spring'") == 20_000_000_000
    # a budget below what was granted is refused
    line = one_line_error(env.admin("promo", "set", "--budget", "10", check=False), 1)
    assert "budget" in line
    env.admin("promo", "set", "--budget", "none")
    assert env.one("SELECT budget_nanos FROM campaigns WHERE name = 'adm-spring'") is None
    # history: who, why, before and after
    hist = env.sql("SELECT actor, action, reason, details FROM audit_log WHERE target = 'adm-spring' ORDER BY audit_id")
    assert hist[0][1] == "campaign.create" and all(h[0] == "tester" for h in hist)
    assert any(h[2] == "spring" and h[3]["after"]["referral_nanos"] == 5_000_000_000 for h in hist)
    # back to the default campaign, so other tests see the usual promotion
    env.admin("promo", "set", "--campaign", active[0]["name"], "--signup", "14", "--max-referrals", "50")
    one_line_error(env.admin("promo", "set", "--signup", "1.0000000001", check=False), 2)
    one_line_error(env.admin("promo", "set", "--expires-days", "0", check=False), 2)
    one_line_error(env.admin("promo", "set", check=False), 2)
    assert "signup credit" in env.admin("promo", "show").stdout


def test_expire_moves_expired_credit_to_breakage(env):
    a = new_account(env, "adm-expire-1")
    # a grant cannot be made already expired (422 / exit 2): one that expires in two seconds
    soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=2)
    g = env.admin_json("grant", "--account", a, "--amount", "3", "--reason", "trial", "--expires",
                       soon.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    next_year = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=365)).strftime("%Y-%m-%d")
    live = env.admin_json("grant", "--account", a, "--amount", "1", "--reason", "trial", "--expires", next_year)
    while datetime.datetime.now(datetime.timezone.utc) <= soon:
        time.sleep(0.1)
    r = env.admin_json("expire")
    assert r["grants"] >= 1 and r["breakage_nanos"] >= 3_000_000_000
    key = f"breakage:{g['grant_id']}"
    txn = env.one("SELECT txn_id FROM journal WHERE idempotency_key = %s", (key,))
    posts = env.sql("SELECT ledger_account_id, amount FROM postings WHERE txn_id = %s ORDER BY line", (txn,))
    bucket = env.one("SELECT ledger_account_id FROM grants WHERE grant_id = %s", (g["grant_id"],))
    assert posts == [(bucket, -3_000_000_000), (3, 3_000_000_000)]     # 3 = the breakage account
    assert env.one("SELECT balance FROM ledger_balances WHERE ledger_account_id = %s", (bucket,)) == 0
    # unexpired credit stays; a second run finds nothing
    assert any(x["grant_id"] == live["grant_id"] for x in env.admin_json("account", "show", a)["grants"])
    assert env.admin_json("expire")["grants"] == 0
    assert "moved to breakage" in env.admin("expire").stdout
    one_line_error(env.admin("expire", "--limit", "x", check=False), 2)
    env.assert_books_sound()


def test_operator_is_recorded(env):
    a = new_account(env, "adm-operator")
    e = env.cli_env(BILLING_OPERATOR="")
    e.pop("BILLING_OPERATOR")
    env.run("billing-admin", "grant", "--account", a, "--amount", "1", "--reason", "by flag", "--operator", "carol",
            env=e)
    assert env.one("SELECT actor FROM journal WHERE account_id = %s AND reason = 'by flag'", (a,)) == "carol"
    env.run("billing-admin", "grant", "--account", a, "--amount", "1", "--reason", "by login", env=dict(e, USER="dave"))
    assert env.one("SELECT actor FROM journal WHERE account_id = %s AND reason = 'by login'", (a,)) == "dave"


def test_errors_from_libpq_are_one_line_on_stderr(env):
    """libpq's messages span lines ("connection to server ... failed: ...\\n\\tIs
    the server running ...?", one block per address tried; "DETAIL:" and
    "CONTEXT:" lines): each CLI and billingd still prints one line."""
    import socket
    import subprocess
    from conftest import BIN, free_port
    port = free_port()  # nothing listens there
    down = f"host=localhost port={port} dbname=billing user=billing"
    e = env.cli_env(BILLING_PG=down, BILLING_PG_OWNER=down)
    for prog, args in (("billing-admin", ["account", "show", "1"]), ("billing-admin", ["migrate"]),
                       ("ledger", ["trial-balance"]), ("ledger", ["verify"])):
        p = env.run(prog, *args, check=False, env=e)
        assert p.returncode == 1, (prog, args, p.returncode, p.stderr)
        lines = p.stderr.strip("\n").split("\n")
        assert len(lines) == 1 and lines[0].startswith(prog + ": "), (prog, args, repr(p.stderr))
        assert "\t" not in lines[0] and "Is the server running" in lines[0], repr(p.stderr)
    cfg = os.path.join(env.tmp, "down.conf")
    with open(cfg, "w") as f:
        f.write(f"pg = {down}\nredis = {env.redis}\ngateway_tokens_file = {env.gw_tokens}\n"
                f"admin_tokens_file = {env.admin_tokens}\nkey_pepper_file = {env.stack.pepper}\n"
                f"listen = 127.0.0.1:{free_port()}\n")
    p = subprocess.run([os.path.join(BIN, "billingd"), "--config", cfg], capture_output=True, text=True, timeout=120)
    assert p.returncode == 1, (p.returncode, p.stderr[-2000:])
    lines = p.stderr.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith("billingd: ") and "\t" not in lines[0], repr(p.stderr)
    # a usage error carrying a newline of its own is one line too
    one_line_error(env.admin("grant", "--account", "1", "--amount", "1", "--reason", "x", "--expires", "2027\n01\n01",
                             check=False), 2)


def test_limits_set_refuses_a_zero_limit(env):
    """A limit of 0 used to be stored and then read by billingd as "no
    limit" (the authorize script's 0 = none): `--concurrency 0` meant to
    stop an account's calls let them all through, and an account row of 0
    even lifted its tier's limit, while `limits show` and GET
    /v1/accounts/{id} said 0.  0 is a usage error now ('none' clears a
    limit; freezing stops an account); nothing is written."""
    a = new_account(env, "adm-limits-zero")
    for name in ("rpm", "tpm", "rpd", "tpd", "concurrency"):
        err = one_line_error(env.admin("limits", "set", "--account", a, f"--{name}", "0", check=False), 2)
        assert f"--{name}" in err and "none" in err, err
        one_line_error(env.admin("limits", "set", "--tier", "zero-tier", "--model", MODEL, f"--{name}", "0",
                                 check=False), 2)
    assert env.one("SELECT count(*) FROM limits WHERE account_id = %s OR tier = 'zero-tier'", (a,)) == 0
    r = env.admin_json("limits", "set", "--account", a, "--rpm", "1", "--concurrency", "none")
    assert r["rpm"] == 1 and r["concurrency"] is None


def test_promotional_credit_above_the_grant_ceiling_is_never_granted(env):
    """CONTRACT.md §4a: a single grant above the configured ceiling
    (max_grant) is refused.  Signup and referral credit are grants, but
    `promo set` took any amount (a slip such as --signup 1400000 for 14 gave
    every new account 1.4 million in promotional credit): it is refused now
    (exit 1), and a campaign whose credit is above the ceiling of the
    program granting it (set before, or with a lower ceiling) creates the
    account without credit and says why."""
    before = env.admin_json("promo", "show")
    for opt in ("--signup", "--referral"):
        line = one_line_error(env.admin("promo", "set", opt, "1000000.000000001", check=False), 1)
        assert "max_grant" in line, line
    assert env.admin_json("promo", "show") == before
    assert env.admin_json("promo", "set", "--signup", "1000000")["signup_nanos"] == 1_000_000 * UNIT  # at it: fine
    env.admin("promo", "set", "--signup", "14")
    # the active campaign's 14 is above a ceiling of 10
    low = env.cli_env(BILLING_MAX_GRANT="10")
    r = json.loads(env.admin("account", "create", "--external-id", "adm-ceiling-1", "--json", env=low).stdout)
    assert r["promotion"]["applied"] is False and "max_grant" in r["promotion"]["note"], r
    assert r["balance"]["promo_nanos"] == 0
    assert env.one("SELECT count(*) FROM grants g JOIN customers c USING (account_id)"
                   " WHERE c.external_id = 'adm-ceiling-1'") == 0
    # the identity strings of a signup without credit stay free
    r = json.loads(env.admin("account", "create", "--external-id", "adm-ceiling-2", "--identity", "phone:ceil",
                             "--json", env=low).stdout)
    assert r["promotion"]["applied"] is False
    r = env.admin_json("account", "create", "--external-id", "adm-ceiling-3", "--identity", "phone:ceil")
    assert r["promotion"]["applied"] is True and r["balance"]["promo_nanos"] == 14 * UNIT, r
    env.assert_books_sound()


def test_account_create_holds_identity_strings_to_the_api_rule(env):
    """POST /v1/accounts takes at most 16 identity strings of 1 to 200
    characters; `account create --identity` took any, the empty string too,
    which the identity rule then claimed like a phone hash (a later signup
    with it got no credit).  Now the same rule: a usage error (exit 2),
    nothing created."""
    bad = [["--identity", ""], ["--identity", "x" * 201],
           [a for i in range(17) for a in ("--identity", f"phone:many-{i}")]]
    for i, extra in enumerate(bad):
        one_line_error(env.admin("account", "create", "--external-id", f"adm-ident-bad-{i}", *extra, check=False), 2)
    assert env.one("SELECT count(*) FROM customers WHERE external_id LIKE 'adm-ident-bad-%%'") == 0
    ok = [a for i in range(16) for a in ("--identity", f"phone:ok-{i}" if i else "y" * 200)]
    r = env.admin_json("account", "create", "--external-id", "adm-ident-ok", *ok)
    assert r["status"] == "active"


def test_adjust_is_held_to_the_top_up_ceiling(env):
    """CONTRACT.md §4a: a single top-up or grant above its ceiling is
    refused (422).  `adjust` moves the paid balance as a top-up does but had
    no ceiling: --amount 1000000000 (a slip for 100) credited a billion,
    and -1000000000 put an account that deep in arrears.  Its size, either
    way, is held to max_topup now: exit 1 with the top-up's error, nothing
    written.  At the ceiling it is fine."""
    a = new_account(env, "adm-adjust-ceiling")
    low = env.cli_env(BILLING_MAX_TOPUP="10")
    first = env.one("SELECT max(txn_id) FROM journal")
    for amt in ("10.000000001", "-10.000000001", "1000000000", "-1000000000"):
        line = one_line_error(env.admin("adjust", "--account", a, "--amount", amt, "--reason", "slip", env=low,
                                        check=False), 1)
        assert "above the ceiling" in line and "max_topup" in line, line
    assert env.one("SELECT count(*) FROM journal WHERE txn_id > %s AND account_id = %s", (first, a)) == 0
    r = json.loads(env.admin("adjust", "--account", a, "--amount", "10", "--reason", "at it", "--json", env=low).stdout)
    assert r["balance"]["paid_nanos"] == 10 * UNIT
    r = json.loads(env.admin("adjust", "--account", a, "--amount", "-10", "--reason", "at it", "--json", env=low).stdout)
    assert r["balance"]["paid_nanos"] == 0
    env.assert_books_sound()


def test_grant_and_adjust_idempotency_keys_include_the_operator(env, billingd):
    """Same idempotency key, same body: the same answer; a different body:
    409.  The operator is part of the body (a field of POST
    /v1/admin/grants, an option of the CLI), but was left out: bob's grant
    with alice's key answered alice's grant as his own, and the journal
    says alice did it.  Now another operator's reuse of a key is an
    idempotency conflict (exit 1 / 409); the same operator's replay is
    still a duplicate."""
    a = new_account(env, "adm-grant-operator")
    g = ["grant", "--account", a, "--amount", "1", "--reason", "support", "--idempotency-key", "op-key-1"]
    first = env.admin_json(*g, "--operator", "alice")
    assert first["duplicate"] is False
    assert env.admin_json(*g, "--operator", "alice") == dict(first, duplicate=True)
    line = one_line_error(env.admin(*g, "--operator", "bob", check=False), 1)
    assert "idempotency" in line, line
    adj = ["adjust", "--account", a, "--amount", "2", "--reason", "fix", "--idempotency-key", "op-key-2"]
    assert env.admin_json(*adj, "--operator", "alice")["duplicate"] is False
    assert env.admin_json(*adj, "--operator", "alice")["duplicate"] is True
    assert "idempotency" in one_line_error(env.admin(*adj, "--operator", "bob", check=False), 1)
    assert env.sql("SELECT kind, actor FROM journal WHERE account_id = %s AND idempotency_key LIKE '%%:op-key-%%'"
                   " ORDER BY txn_id", (a,)) == [("grant", "alice"), ("adjust", "alice")]
    # the same over HTTP
    body = {"account_id": a, "amount_nanos": UNIT, "reason": "api", "operator": "alice",
            "idempotency_key": "op-key-3"}
    r = billingd.post("/v1/admin/grants", body, ADMIN_TOKEN)
    assert r.status_code == 201, r.text
    again = billingd.post("/v1/admin/grants", body, ADMIN_TOKEN)
    assert again.status_code in (200, 201) and again.json()["grant_id"] == r.json()["grant_id"], again.text
    r = billingd.post("/v1/admin/grants", dict(body, operator="bob"), ADMIN_TOKEN)
    assert r.status_code == 409 and r.json()["error"]["code"] == "idempotency_conflict", r.text
    env.assert_books_sound()
