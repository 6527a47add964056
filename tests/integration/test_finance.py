"""Signed exports and their verification, statements, reconcile,
finance views.  One mixed workload per module: ledger_load (random grants,
top-ups, adjustments, usage-like transfers) over 100 accounts, a month of
history before it (export_load), usage through billingd (promotional credit
burns first), refunds, expiries and a clawback."""
import calendar
import datetime
import hashlib
import json
import os
import pty
import random
import shutil
import subprocess
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from conftest import BIN, ROOT, UNIT, journal_hash, now_rfc3339, set_price

ITEST = os.environ.get("BILLING_ITEST_BIN", os.path.join(ROOT, "build", "itest"))
MODEL = "fin-model"
ZERO = bytes(32)
REDIS_DB = 9   # the mirror of this module's database lives in its own Redis db


def us_of(ts):
    d = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ")
    return calendar.timegm(d.timetuple()) * 1_000_000 + d.microsecond


MO = None   # the Months of this module's fixture (set by `work`)


class Months:
    """The calendar of one test run, derived from the clock of the stack under
    test (PostgreSQL's now()), never from the date the test was written on:
    `prev` holds export_load's history, `cur` the fixture's live writes, `next`
    is the empty month after them.  Each is "YYYY-MM"; `*_start` are the first
    days ("YYYY-MM-DD") of prev, cur, next and the month after next."""

    def __init__(self, now):
        def shift(y, m, k):
            i = y * 12 + (m - 1) + k
            return i // 12, i % 12 + 1
        self.now = now
        months = [shift(now.year, now.month, k) for k in (-2, -1, 0, 1, 2)]
        self.prev, self.cur, self.next = (f"{y:04d}-{m:02d}" for y, m in months[1:4])
        starts = [f"{y:04d}-{m:02d}-01" for y, m in months]
        self.prev_start, self.cur_start, self.next_start = starts[1:4]
        # every row the fixture writes: export_load's history reaches one day before prev
        self.all_from, self.all_to = starts[0], starts[4]

        def last_us(y, m):
            return (datetime.datetime(y, m, 1, tzinfo=datetime.timezone.utc)
                    - datetime.timedelta(microseconds=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        # the last microsecond before prev and of prev (trial balances "at")
        self.before_prev_end, self.prev_end = last_us(*months[1]), last_us(*months[2])


# The fixture's live writes must all fall in one month: in the last minutes of
# a month, wait for the next one rather than straddle the boundary.
MONTH_MARGIN_S = 15 * 60


def stack_months(env):
    now = env.one("SELECT now()")
    y, m = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    left = (datetime.datetime(y, m, 1, tzinfo=datetime.timezone.utc) - now).total_seconds()
    if left < MONTH_MARGIN_S:
        time.sleep(left + 1)
        now = env.one("SELECT now()")
    return Months(now.astimezone(datetime.timezone.utc))


def one_line_error(p, code, prog="ledger"):
    assert p.returncode == code, f"exit {p.returncode}, wanted {code}:\n{p.stdout}\n{p.stderr}"
    lines = p.stderr.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith(prog + ": "), repr(p.stderr)
    return lines[0]


@pytest.fixture(scope="module")
def work(env, request):
    global MO
    MO = mo = stack_months(env)
    env.admin("keygen", "--out", env.signing_key)
    set_price(env, MODEL, 2 * UNIT, UNIT // 2, 8 * UNIT, effective=f"{mo.prev_start}T00:00:00Z")
    p = subprocess.run([os.path.join(ITEST, "ledger_load"), env.pg, "100", "3000", "11"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    # last month's history for the same accounts (opening balances of this month)
    p = subprocess.run([os.path.join(ITEST, "export_load"), env.pg, "0", "5000", "12", mo.prev_start, mo.cur_start],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    accounts = [r[0] for r in env.sql("SELECT account_id FROM customers ORDER BY account_id")]
    # usage through billingd: small and large records (large ones spill from promotional into paid)
    b = request.getfixturevalue("billingd")
    promo_only = env.admin_json("account", "create", "--external-id", "fin-promo-only")["account_id"]
    spill = env.admin_json("account", "create", "--external-id", "fin-spill")["account_id"]
    env.admin("topup", "--account", spill, "--amount", "50", "--payment-ref", "fin-spill-pay")
    rnd = random.Random(5)
    records = []
    for i, a in enumerate(accounts):
        for k in range(3):
            big = rnd.random() < 0.3
            inp = rnd.randrange(3_000_000, 8_000_000) if big else rnd.randrange(0, 50_000)
            records.append({"request_id": f"fin-{a}-{k}", "account_id": a, "model": f"{MODEL}" if k else MODEL,
                            "input_tokens": inp, "cached_input_tokens": inp // 4,
                            "output_tokens": rnd.randrange(0, 20_000), "started_at": now_rfc3339()})
    records.append({"request_id": "fin-promo-only", "account_id": promo_only, "model": MODEL, "input_tokens": 1000,
                    "cached_input_tokens": 0, "output_tokens": 500, "started_at": now_rfc3339()})
    records.append({"request_id": "fin-spill", "account_id": spill, "model": MODEL, "input_tokens": 5_000_000,
                    "cached_input_tokens": 0, "output_tokens": 1_000_000, "started_at": now_rfc3339()})
    r = b.post("/v1/usage/batch", {"records": records}, timeout=120)
    assert r.status_code == 200, r.text
    assert all("cost_nanos" in x for x in r.json()["results"]), r.text
    # refunds, expiries, a clawback
    for a in accounts[:5]:
        env.admin("refund", "--request-id", f"fin-{a}-0", "--reason", "outage")
    # grants that expire two seconds from now, then the expiry job after they did
    soon = env.one("SELECT now() + interval '2 seconds'")
    for a in accounts[5:10]:
        env.admin("grant", "--account", a, "--amount", "1.25", "--reason", "expired trial",
                  "--expires", soon.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    while env.one("SELECT now() <= %s", (soon,)):
        time.sleep(0.2)
    env.admin("expire")
    assert env.one("SELECT count(*) FROM journal WHERE kind = 'breakage'") >= 5
    env.admin("account", "freeze", accounts[10], "--reason", "abuse", "--clawback")
    env.assert_books_sound()
    # every live write of the fixture fell in the month it started in
    assert env.one("SELECT to_char(max(created_at) AT TIME ZONE 'UTC', 'YYYY-MM') FROM journal") == mo.cur
    return {"accounts": accounts, "promo_only": promo_only, "spill": spill, "billingd": b, "months": mo}


def export(env, path, *extra, fmt="csv", check=True):
    """Everything the fixture wrote (its months are in MO)."""
    return env.ledger("export", "--from", MO.all_from, "--to", MO.all_to, "--format", fmt, "--out", path, *extra,
                      check=check)


def manifest_of(path):
    with open(str(path) + ".manifest.json") as f:
        return json.load(f)


# ---- exports ----

def test_export_is_checkable_by_an_auditor_without_our_code(env, work, tmp_path):
    """Recompute everything the manifest claims with Python's hashlib, csv and
    cryptography: signature, file hash, row hashes, every transaction's hash,
    prev_hash links, totals."""
    import csv
    path = tmp_path / "all.csv"
    export(env, path)
    m = manifest_of(path)
    sig = bytes.fromhex(m.pop("signature"))
    canonical = json.dumps(m, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    Ed25519PublicKey.from_public_bytes(bytes.fromhex(m["public_key"])).verify(sig, canonical)
    assert m["public_key"] == open(env.signing_key + ".pub").read().strip()
    data = path.read_bytes()
    assert hashlib.blake2b(data, digest_size=32).hexdigest() == m["blake2b_256"] and len(data) == m["bytes"]
    lines = data.split(b"\r\n")
    assert lines[-1] == b"" and lines[0].decode() == ",".join(m["columns"])
    h = hashlib.blake2b(b"billing-ledger-export-v1\0csv" + lines[0], digest_size=32).digest()
    for ln in lines[1:-1]:
        body, _, rh = ln.rpartition(b",")
        h = hashlib.blake2b(h + body, digest_size=32).digest()
        assert rh.decode() == h.hex()
    assert h.hex() == m["row_hash"]["last"]
    rows = list(csv.DictReader(open(path, newline="", encoding="utf-8")))
    assert len(rows) == m["rows"] == env.one("SELECT count(*) FROM postings")
    txns, totals, heads = {}, {}, {}
    for r in rows:
        txns.setdefault(int(r["txn_id"]), []).append(r)
        t = totals.setdefault(r["ledger_account_type"], {"debits_nanos": 0, "credits_nanos": 0})
        a = int(r["amount_nanos"])
        t["debits_nanos" if a < 0 else "credits_nanos"] += abs(a)
        assert r["currency"] == "CNY"
    assert m["totals"]["by_type"] == totals and m["transactions"] == len(txns)
    for txn_id in sorted(txns):
        ps = txns[txn_id]
        f = ps[0]
        assert [int(p["line"]) for p in ps] == list(range(1, len(ps) + 1))
        prev = bytes.fromhex(f["prev_hash"])
        got = journal_hash(prev, f["writer"], int(f["seq"]), f["kind"], f["idempotency_key"],
                           int(f["account_id"] or 0), f["actor"], f["reason"], f["details"], us_of(f["created_at"]),
                           [(int(p["ledger_account_id"]), int(p["amount_nanos"])) for p in ps])
        assert got.hex() == f["hash"], f"transaction {txn_id}"
        seq = int(f["seq"])
        if f["writer"] in heads and heads[f["writer"]][0] == seq - 1:
            assert prev.hex() == heads[f["writer"]][1]
        elif seq == 1:
            assert prev == ZERO
        heads[f["writer"]] = (seq, f["hash"])
        if f["kind"] == "usage" and f["request_id"]:
            d = json.loads(f["details"])
            assert f["model"] == d["model"] and int(f["input_tokens"]) == d["input_tokens"]
            assert int(f["price_version"]) == d["price_version"]
    assert {w: (c["last_seq"], c["last_hash"]) for w, c in m["chains"].items()} == heads
    # the chain heads are the database's (whole range exported)
    for w, c in m["chains"].items():
        assert env.one("SELECT encode(hash, 'hex') FROM journal WHERE writer = %s ORDER BY seq DESC LIMIT 1", (w,)) == \
            c["last_hash"]


def test_manifest_totals_equal_trial_balance(env, work, tmp_path):
    def tb(at):
        t = json.loads(env.ledger("trial-balance", "--at", at, "--json").stdout)
        return {a["type"]: (a["debits_nanos"], a["credits_nanos"]) for a in t["accounts"]}

    # October, a range with entries before and after it
    path = tmp_path / "oct.csv"
    env.ledger("export", "--from", MO.prev_start, "--to", MO.cur_start, "--out", path)
    m = manifest_of(path)
    end, start = tb(MO.prev_end), tb(MO.before_prev_end)
    diff = {k: (v[0] - start.get(k, (0, 0))[0], v[1] - start.get(k, (0, 0))[1]) for k, v in end.items()}
    diff = {k: v for k, v in diff.items() if v != (0, 0)}
    assert {k: (v["debits_nanos"], v["credits_nanos"]) for k, v in m["totals"]["by_type"].items()} == diff
    assert m["totals"]["debits_nanos"] == m["totals"]["credits_nanos"] == sum(v[0] for v in diff.values())
    assert m["rows"] == 2 * 5000 and m["first"]["created_at"] == f"{MO.prev_start}T00:00:00.000000Z"
    assert env.ledger("verify", "--export", path).returncode == 0
    # everything: the trial balance itself
    path = tmp_path / "all.csv"
    export(env, path)
    whole = json.loads(env.ledger("trial-balance", "--json").stdout)
    assert {a["type"]: {"debits_nanos": a["debits_nanos"], "credits_nanos": a["credits_nanos"]}
            for a in whole["accounts"]} == manifest_of(path)["totals"]["by_type"]


def test_verify_needs_only_the_public_key(env, work, tmp_path):
    for fmt in ("csv", "ndjson"):
        path = tmp_path / f"e.{fmt}"
        export(env, path, fmt=fmt)
        audit = tmp_path / f"auditor-{fmt}"
        audit.mkdir()
        shutil.copy(path, audit / path.name)
        shutil.copy(str(path) + ".manifest.json", audit / (path.name + ".manifest.json"))
        shutil.copy(env.signing_key + ".pub", audit / "ledger.key.pub")
        # no database (nothing listens on port 1), no secret key (only ledger.key.pub exists)
        e = env.cli_env(BILLING_PG="host=127.0.0.1 port=1 dbname=none user=none connect_timeout=1",
                        BILLING_SIGNING_KEY_FILE=str(audit / "ledger.key"))
        p = env.run("ledger", "verify", "--export", audit / path.name, env=e)
        assert p.stdout.startswith("ok: ") and "the trusted key" in p.stdout
        p = env.run("ledger", "verify", "--export", audit / path.name, "--pubkey", audit / "ledger.key.pub", "--json",
                    env=e)
        v = json.loads(p.stdout)
        assert v["ok"] is True and v["rows"] == manifest_of(path)["rows"] and v["trusted_key"]
        # without any trusted key it still checks, and says so
        os.unlink(audit / "ledger.key.pub")
        p = env.run("ledger", "verify", "--export", audit / path.name, env=e)
        assert "its own key only" in p.stdout
        # a different trusted key is refused
        env.admin("keygen", "--out", audit / "other.key")
        p = env.run("ledger", "verify", "--export", audit / path.name, "--pubkey", audit / "other.key.pub", env=e,
                    check=False)
        assert "not by the trusted key" in one_line_error(p, 1)


def test_a_signature_checked_against_the_files_own_key_only_is_said_and_can_be_refused(env, work, tmp_path):
    """A manifest checked against the public key embedded in it proves
    nothing: whoever rewrote the file re-signs with a key of their own.
    With no trusted key found, `ledger verify --export` still checks
    integrity, now with a warning line on stderr; with require_trusted_key
    (a config key, so finance's configuration can make it the rule, or
    --require-trusted-key true) it exits 1 naming why.  A forged export,
    re-signed by mallory and checked without a trusted key, is therefore
    refused under that setting."""
    path = tmp_path / "forged.csv"
    mallory = tmp_path / "mallory.key"
    env.admin("keygen", "--out", mallory)
    e = env.cli_env(BILLING_SIGNING_KEY_FILE=str(mallory))
    env.run("ledger", "export", "--from", MO.all_from, "--to", MO.all_to, "--out", path, env=e)
    os.unlink(str(mallory) + ".pub")      # the auditor has no trusted key at hand
    p = env.run("ledger", "verify", "--export", path, env=e)
    assert "its own key only" in p.stdout
    line = p.stderr.strip()
    assert line.startswith("ledger: warning: ") and "\n" not in line and "--pubkey" in line, repr(p.stderr)
    for how in (dict(env=env.cli_env(BILLING_SIGNING_KEY_FILE=str(mallory), BILLING_REQUIRE_TRUSTED_KEY="true")),
                dict(flag=["--require-trusted-key", "true"])):
        p = env.run("ledger", "verify", "--export", path, *how.get("flag", []), env=how.get("env", e), check=False)
        err = one_line_error(p, 1)
        assert "no trusted public key" in err and "require_trusted_key" in err, err
        assert not p.stdout.startswith("ok")
    # with the trusted key it passes, and then the setting changes nothing
    p = env.run("ledger", "verify", "--export", path, "--pubkey", str(env.signing_key) + ".pub",
                "--require-trusted-key", "true", env=e, check=False)
    assert "not by the trusted key" in one_line_error(p, 1)
    good = tmp_path / "good.csv"
    export(env, good)
    p = env.ledger("verify", "--export", good, "--require-trusted-key", "true")
    assert p.stdout.startswith("ok: ") and "the trusted key" in p.stdout and p.stderr == ""


def line_of(data, pos):
    return data[:pos].count(b"\n") + 1


@pytest.mark.parametrize("fmt", ["csv", "ndjson"])
def test_one_changed_byte_fails_naming_its_line(env, work, tmp_path, fmt):
    path = tmp_path / f"small.{fmt}"
    acct = work["accounts"][0]
    env.ledger("export", "--from", MO.all_from, "--to", MO.all_to, "--account", acct, "--format", fmt,
               "--out", path)
    data = path.read_bytes()
    manifest = str(path) + ".manifest.json"
    assert env.ledger("verify", "--export", path).returncode == 0
    rnd = random.Random(7)
    positions = set(rnd.sample(range(len(data)), 60))
    positions |= {0, 1, len(data) - 1, len(data) - 2, data.index(b"\n"), data.index(b"\n") + 1}
    positions |= {data.index(b'"'), data.index(b","), data.rindex(b","), data.index(b"\n", len(data) // 2)}
    t = tmp_path / f"t.{fmt}"
    shutil.copy(manifest, str(t) + ".manifest.json")
    for pos in sorted(positions):
        d = bytearray(data)
        d[pos] ^= 0x01 if d[pos] != 0x21 else 0x02
        t.write_bytes(bytes(d))
        p = env.ledger("verify", "--export", t, check=False)
        line = one_line_error(p, 1)
        assert f"line {line_of(data, pos)}:" in line, (pos, line)
        assert f"line {line_of(data, pos)}:" in p.stdout


def test_moved_removed_added_lines_and_manifest_edits_fail(env, work, tmp_path):
    path = tmp_path / "s.csv"
    env.ledger("export", "--from", MO.all_from, "--to", MO.all_to, "--account", work["accounts"][1], "--out", path)
    lines = path.read_bytes().split(b"\r\n")[:-1]
    manifest = str(path) + ".manifest.json"
    t = tmp_path / "t.csv"
    shutil.copy(manifest, str(t) + ".manifest.json")

    def check(ls, want_line, words):
        t.write_bytes(b"".join(x + b"\r\n" for x in ls))
        p = env.ledger("verify", "--export", t, check=False)
        msg = one_line_error(p, 1)
        assert f"line {want_line}:" in msg and words in msg, msg

    check(lines[:5] + lines[6:], 6, "row hash")                                   # a line removed
    check(lines[:5] + [lines[6], lines[5]] + lines[7:], 6, "row hash")            # two lines swapped
    check(lines + [lines[-1]], len(lines) + 1, "row hash")                        # a line repeated
    last_txn = lines[-1].split(b",")[0]
    whole = [x for x in lines if x.split(b",")[0] != last_txn]
    check(whole, len(whole) + 1, "ends after")                                    # the last transaction cut off
    check(lines[:-1], len(whole) + 1, "hash does not match")                      # half of it: named by its first line
    # the manifest is signed: one changed value, and the signature fails
    m = manifest_of(path)
    m["rows"] += 1
    with open(str(t) + ".manifest.json", "w") as f:
        json.dump(m, f)
    t.write_bytes(path.read_bytes())
    assert "signature" in one_line_error(env.ledger("verify", "--export", t, check=False), 1)
    # re-signed by someone else's key: refused by the trusted key
    other = tmp_path / "mallory.key"
    env.admin("keygen", "--out", other)
    e = env.cli_env(BILLING_SIGNING_KEY_FILE=str(other))
    env.run("ledger", "export", "--from", MO.all_from, "--to", MO.all_to, "--account", work["accounts"][1],
            "--out", t, "--force", env=e)
    assert "not by the trusted key" in one_line_error(env.ledger("verify", "--export", t, check=False), 1)
    # no manifest at all
    os.unlink(str(t) + ".manifest.json")
    one_line_error(env.ledger("verify", "--export", t, check=False), 1)


def test_export_of_one_account(env, work, tmp_path):
    a = work["spill"]
    for fmt in ("csv", "ndjson"):
        path = tmp_path / f"acct.{fmt}"
        p = env.ledger("export", "--from", MO.cur_start, "--to", MO.next_start, "--account", a, "--format", fmt,
                       "--out", path, "--json")
        s = json.loads(p.stdout)
        assert s["rows"] == env.one("SELECT count(*) FROM postings p JOIN journal j USING (txn_id)"
                                    " WHERE j.account_id = %s", (a,))
        assert env.ledger("verify", "--export", path).returncode == 0
    rows = [json.loads(x) for x in open(tmp_path / "acct.ndjson")]
    assert {r["account_id"] for r in rows} == {a}
    use = [r for r in rows if r["kind"] == "usage"]
    assert use and all(r["request_id"] == "fin-spill" and r["model"] == MODEL and r["input_tokens"] == 5_000_000
                       and r["price_version"] for r in use)
    assert sum(r["amount_nanos"] for r in use if r["ledger_account_type"] == "revenue") == 18_000_000_000
    grants = [r for r in rows if r["ledger_account_type"] == "customer_promo"]
    assert all(r["grant_id"] for r in grants)


def test_export_progress_line_on_a_terminal(env, work, tmp_path):
    master, slave = pty.openpty()
    p = subprocess.Popen([os.path.join(BIN, "ledger"), "export", "--from", MO.all_from, "--to", MO.all_to,
                          "--out", str(tmp_path / "tty.csv")], stdout=subprocess.PIPE, stderr=slave,
                         env=env.cli_env())
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    assert p.wait() == 0
    os.close(master)
    assert b"export: " in out and b"rows/s" in out
    # not a terminal: no progress line
    q = env.ledger("export", "--from", MO.all_from, "--to", MO.all_to, "--out", tmp_path / "notty.csv")
    assert q.stderr == ""


def test_export_errors(env, work, tmp_path):
    one_line_error(env.ledger("export", "--from", MO.all_from, "--to", MO.all_to, check=False), 2)
    one_line_error(env.ledger("export", "--to", MO.all_to, "--out", tmp_path / "x", check=False), 2)
    one_line_error(env.ledger("export", "--from", "2026-13-01", "--to", MO.all_to, "--out", tmp_path / "x",
                              check=False), 2)
    one_line_error(env.ledger("export", "--from", "2027-01-01", "--to", "2026-01-01", "--out", tmp_path / "x",
                              check=False), 2)
    one_line_error(export(env, tmp_path / "x", fmt="xml", check=False), 2)
    one_line_error(export(env, tmp_path / "x", "--account", "abc", check=False), 2)
    export(env, tmp_path / "y")
    assert "--force" in one_line_error(export(env, tmp_path / "y", check=False), 1)
    export(env, tmp_path / "y", "--force")
    e = env.cli_env(BILLING_SIGNING_KEY_FILE=str(tmp_path / "missing.key"))
    p = env.run("ledger", "export", "--from", MO.all_from, "--to", MO.all_to, "--out", tmp_path / "z", env=e,
                check=False)
    assert "keygen" in one_line_error(p, 1) and not (tmp_path / "z").exists()
    assert "exported 0 rows" in env.ledger("export", "--from", "2020-01-01", "--to", "2020-02-01",
                                           "--out", tmp_path / "empty.csv").stdout
    assert env.ledger("verify", "--export", tmp_path / "empty.csv").returncode == 0


# ---- statements ----

def sides(x):
    return x["paid_nanos"], x["promo_nanos"]


def test_statement_arithmetic_holds_for_100_random_accounts(env, work):
    accounts = random.Random(3).sample(work["accounts"], 100)
    for a in accounts:
        sts = {m: json.loads(env.ledger("statement", "--account", a, "--month", m, "--json").stdout)
               for m in (MO.prev, MO.cur, MO.next)}
        for m, st in sts.items():
            assert st["balanced"] is True
            for side in ("paid_nanos", "promo_nanos"):
                assert st["opening"][side] + sum(mv[side] for mv in st["movements"]) == st["closing"][side], (a, m)
            # usage by model adds up to the usage movement
            use = next(mv for mv in st["movements"] if mv["kind"] == "usage")
            assert -sum(x["paid_nanos"] for x in st["usage_by_model"]) == use["paid_nanos"]
            assert -sum(x["promo_nanos"] for x in st["usage_by_model"]) == use["promo_nanos"]
            refund = next(mv for mv in st["movements"] if mv["kind"] == "refund")
            assert st["paid_consumed_nanos"] == -(use["paid_nanos"] + refund["paid_nanos"])
        assert sides(sts[MO.prev]["closing"]) == sides(sts[MO.cur]["opening"])
        assert sides(sts[MO.cur]["closing"]) == sides(sts[MO.next]["opening"]) == sides(sts[MO.next]["closing"])
        # November's movements by kind, independently from the postings
        got = {(mv["kind"], "customer_paid"): mv["paid_nanos"] for mv in sts[MO.cur]["movements"]}
        got.update({(mv["kind"], "customer_promo"): mv["promo_nanos"] for mv in sts[MO.cur]["movements"]})
        got = {k: v for k, v in got.items() if v}
        want = {(k, t): int(s) for k, t, s in env.sql(
            "SELECT j.kind, la.type, sum(p.amount) FROM postings p JOIN ledger_accounts la USING (ledger_account_id)"
            " JOIN journal j USING (txn_id) WHERE la.account_id = %s AND j.created_at >= %s"
            " AND j.created_at < %s GROUP BY 1, 2", (a, MO.cur_start, MO.next_start)) if int(s)}
        assert got == want, a
        # the closing balance is the ledger's balance now
        paid = env.one("SELECT b.balance FROM ledger_accounts la JOIN ledger_balances b USING (ledger_account_id)"
                       " WHERE la.account_id = %s AND la.type = 'customer_paid'", (a,))
        promo = env.one("SELECT coalesce(sum(b.balance), 0) FROM grants g JOIN ledger_balances b USING"
                        " (ledger_account_id) WHERE g.account_id = %s", (a,))
        assert sides(sts[MO.next]["closing"]) == (paid, promo)
    # the workload did reach every kind of movement
    kinds = {r[0] for r in env.sql("SELECT DISTINCT kind FROM journal")}
    assert {"topup", "grant", "usage", "adjust", "refund", "breakage", "clawback"} <= kinds


def test_paid_consumed_excludes_promotional_credit(env, work):
    st = json.loads(env.ledger("statement", "--account", work["promo_only"], "--month", MO.cur, "--json").stdout)
    assert st["usage_by_model"] == [{"model": MODEL, "records": 1, "input_tokens": 1000, "cached_input_tokens": 0,
                                     "output_tokens": 500, "cost_nanos": 6_000_000, "paid_nanos": 0,
                                     "promo_nanos": 6_000_000}]
    assert st["paid_consumed_nanos"] == 0 and st["promo_consumed_nanos"] == 6_000_000
    st = json.loads(env.ledger("statement", "--account", work["spill"], "--month", MO.cur, "--json").stdout)
    assert st["paid_consumed_nanos"] == 4_000_000_000 and st["promo_consumed_nanos"] == 14_000_000_000
    txt = env.ledger("statement", "--account", work["spill"], "--month", MO.cur).stdout
    assert "paid amount consumed (invoiceable): 4.000000000 CNY" in txt
    # over all accounts: invoiceable = paid usage net of paid refunds, never the promotional part
    total_paid = total_promo = 0
    for a in work["accounts"]:
        st = json.loads(env.ledger("statement", "--account", a, "--month", MO.cur, "--json").stdout)
        total_paid += st["paid_consumed_nanos"]
        total_promo += st["promo_consumed_nanos"]
    usage_cost = env.one("SELECT sum(u.cost_nanos) FROM usage_records u WHERE u.account_id = ANY(%s)"
                         " AND NOT EXISTS (SELECT 1 FROM journal r WHERE r.idempotency_key = 'refund:' || u.request_id)",
                         (work["accounts"],))
    loadlike = env.one("SELECT coalesce(sum(-p.amount), 0) FROM journal j JOIN postings p USING (txn_id)"
                       " JOIN ledger_accounts la USING (ledger_account_id) WHERE j.kind = 'usage'"
                       " AND NOT EXISTS (SELECT 1 FROM usage_records u WHERE u.txn_id = j.txn_id)"
                       " AND la.type IN ('customer_paid', 'customer_promo') AND j.created_at >= %s"
                       " AND j.account_id = ANY(%s)", (MO.cur_start, work["accounts"]))
    assert total_paid + total_promo == usage_cost + loadlike
    assert total_promo > 0


def test_statement_formats_and_errors(env, work):
    a = work["spill"]
    j = json.loads(env.ledger("statement", "--account", a, "--month", MO.cur, "--format", "json").stdout)
    csv_rows = [r.split(",") for r in env.ledger("statement", "--account", a, "--month", MO.cur, "--format",
                                                 "csv").stdout.splitlines()[1:]]
    by = {(r[0], r[1]): (int(r[7]), int(r[8])) for r in csv_rows}
    assert by[("balance", "opening")] == sides(j["opening"]) and by[("balance", "closing")] == sides(j["closing"])
    assert by[("movement", "topup")] == (50_000_000_000, 0)
    txt = env.ledger("statement", "--account", a, "--month", MO.cur).stdout
    for label in ("opening balance", "top-ups", "grants", "usage", "expiries (breakage)", "adjustments", "refunds",
                  "closing balance", "usage by model", MODEL):
        assert label in txt
    one_line_error(env.ledger("statement", "--account", a, check=False), 2)
    one_line_error(env.ledger("statement", "--month", MO.cur, check=False), 2)
    one_line_error(env.ledger("statement", "--account", a, "--month", "2026-13", check=False), 2)
    one_line_error(env.ledger("statement", "--account", a, "--month", "11-2026", check=False), 2)
    one_line_error(env.ledger("statement", "--account", a, "--month", MO.cur, "--format", "pdf", check=False), 2)
    assert "not found" in one_line_error(env.ledger("statement", "--account", 99999999, "--month", MO.cur,
                                                    check=False), 1)


# ---- reconcile ----

def redis(env, *args):
    host, port = env.redis.split(":")
    p = subprocess.run(["redis-cli", "-h", host, "-p", port, "-n", str(REDIS_DB)] + [str(a) for a in args],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def test_reconcile_reports_and_repairs(env, work):
    e = env.cli_env(BILLING_REDIS=f"{env.redis}/{REDIS_DB}")

    def rec(*args, code=0):
        p = env.run("ledger", "reconcile", "--settle-ms", "0", "--json", *args, env=e, check=False)
        assert p.returncode == code, p.stdout + p.stderr
        return json.loads(p.stdout)

    redis(env, "FLUSHDB")
    n = env.one("SELECT count(*) FROM customers")
    r = rec()
    assert r["accounts"] == n and r["not_loaded"] == n and r["differences"] == 0
    # the mirror as billingd loads it (billing/authz/quota.lua.h): the ledger's balances and status, a version key
    rows = env.sql("SELECT f.account_id, f.paid_nanos, f.promo_nanos, c.status FROM finance_account_balances f"
                   " JOIN customers c USING (account_id)")
    host, port = env.redis.split(":")
    cmds = "".join(f"HSET {{a:{a}}}:bal paid {paid} promo {promo} status {st}\nHSET {{a:{a}}}:st ver 7\n"
                   for a, paid, promo, st in rows)
    subprocess.run(["redis-cli", "-h", host, "-p", port, "-n", str(REDIS_DB)], input=cmds, text=True, check=True,
                   capture_output=True)
    r = rec()
    assert r["matching"] == n and r["not_loaded"] == 0 and r["differences"] == 0
    # drift: a wrong paid balance, a lost promo field, a frozen account mirrored as active
    a, b, c = work["accounts"][20], work["accounts"][21], work["accounts"][10]
    assert env.one("SELECT status FROM customers WHERE account_id = %s", (c,)) == "frozen"
    redis(env, "HSET", f"{{a:{a}}}:bal", "paid", "123")
    redis(env, "HDEL", f"{{a:{b}}}:bal", "promo")
    redis(env, "HSET", f"{{a:{c}}}:bal", "status", "active")
    r = rec(code=1)
    assert sorted(d["account_id"] for d in r["diffs"]) == sorted([a, b, c])
    d = next(d for d in r["diffs"] if d["account_id"] == a)
    assert d["mirror"]["paid_nanos"] == 123 and d["ledger"]["paid_nanos"] != 123 and d["mirror"]["version"] == "7"
    p = env.run("ledger", "reconcile", "--settle-ms", "0", env=e, check=False)
    assert p.returncode == 1 and f"account {a}:" in p.stdout
    one_line_error(p, 1)
    r = rec("--repair")
    assert r["repaired"] == 3 and r["repair_skipped"] == 0
    assert redis(env, "HGET", f"{{a:{a}}}:bal", "paid") == str(d["ledger"]["paid_nanos"])
    assert redis(env, "HGET", f"{{a:{c}}}:bal", "status") == "frozen"
    assert redis(env, "HGET", f"{{a:{a}}}:st", "ver") == "8"   # bumped: a load racing the repair retries
    assert redis(env, "HGET", f"{{a:{work['accounts'][30]}}}:st", "ver") == "7"
    assert rec()["differences"] == 0
    # Redis unreachable, or a malformed address
    bad = env.cli_env(BILLING_REDIS="127.0.0.1:1")
    assert "redis" in one_line_error(env.run("ledger", "reconcile", env=bad, check=False), 1)
    bad = env.cli_env(BILLING_REDIS="nonsense")
    one_line_error(env.run("ledger", "reconcile", env=bad, check=False), 1)
    redis(env, "FLUSHDB")


# ---- views ----

def test_finance_views(env, work):
    bal = {r[0]: r[1:] for r in env.sql("SELECT account_id, paid_nanos, promo_nanos, promo_expired_nanos, total_nanos"
                                        " FROM finance_account_balances")}
    for a in work["accounts"][:10] + [work["spill"], work["promo_only"]]:
        s = env.admin_json("account", "show", a)["balance"]
        paid, promo, expired, total = bal[a]
        assert (paid, promo, total) == (s["paid_nanos"], s["promo_nanos"], s["paid_nanos"] + s["promo_nanos"])
        assert expired == 0
    # usage per model per day
    d = env.sql("SELECT sum(records), sum(cost_nanos), sum(paid_nanos), sum(promo_nanos), sum(refunded_records),"
                " sum(net_cost_nanos) FROM finance_usage_daily")[0]
    records, cost, paid, promo, refunded, net = (int(x) for x in d)
    assert records == env.one("SELECT count(*) FROM usage_records")
    assert cost == env.one("SELECT sum(cost_nanos) FROM usage_records") == paid + promo
    assert refunded == env.one("SELECT count(*) FROM journal WHERE kind = 'refund'")
    assert net == cost - env.one("SELECT sum(u.cost_nanos) FROM usage_records u JOIN journal r"
                                 " ON r.idempotency_key = 'refund:' || u.request_id")
    assert env.sql("SELECT DISTINCT day FROM finance_usage_daily") == [(datetime.datetime.now(datetime.timezone.utc).date(),)]
    # outstanding promotional liability = unexpired, unused grant balances
    liab = env.one("SELECT sum(remaining_nanos) FROM finance_promo_liability")
    assert liab == env.one("SELECT sum(b.balance) FROM grants g JOIN ledger_balances b USING (ledger_account_id)"
                           " WHERE b.balance > 0 AND (g.expires_at IS NULL OR g.expires_at > now())")
    assert liab == env.one("SELECT sum(remaining_nanos) FROM finance_promo_liability_summary")
    assert liab == sum(v[1] for v in bal.values())


def test_ledger_cli_help_and_usage(env):
    for cmd in ("export", "verify", "statement", "trial-balance", "reconcile"):
        p = env.ledger(cmd, "--help")
        assert p.stdout.startswith(f"usage: ledger {cmd} ") and "options:" in p.stdout
    one_line_error(env.ledger("frobnicate", check=False), 2)
    one_line_error(env.ledger("statement", "--bogus", check=False), 2)
    assert env.ledger(check=False).returncode == 2
