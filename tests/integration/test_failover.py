"""Lose nothing when the PostgreSQL machine dies.

Its own stack (scripts/ha_stack.sh: a pg_auto_failover monitor, node_1
primary, node_2 and node_3 synchronous standbys), billingd and the CLIs on
the multi-host string with target_session_attrs=read-write and
pg_standby_confirm_ms:

- the primary's machine dies (SIGKILL to its pg_autoctl, postmaster and
  backends) under usage load: a standby is promoted, billingd reconnects by
  itself, every acknowledged record is on the new primary exactly once, the
  hash chains continue (`ledger verify`), and billingd and both CLIs work
  with a connection string whose first host is the dead one;
- with no standby left, a write is answered 503 + Retry-After, never 200
  (the commit waits for a standby for ever: PostgreSQL's statement timeout
  does not cover it; without pg_standby_confirm_ms the request is never
  answered, and a cancelled wait is reported committed on one machine);
  once a standby is back the same request_id is charged exactly once."""
import datetime as dt
import json
import os
import shutil
import tempfile
import threading
import time

import psycopg2
import pytest
import requests

from conftest import UNIT, Billingd, Env, HAStack, expected_cost, new_account, rfc3339, set_price, wait_prices

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PRICE = (2 * UNIT, UNIT // 2, 8 * UNIT)


@pytest.fixture(scope="module")
def ha():
    d = tempfile.mkdtemp(prefix="billing-ha-")
    os.chmod(d, 0o755)  # PostgreSQL runs as the postgres user
    st = HAStack(os.path.join(d, "stack"))
    try:
        env = Env(st, "billing", d)
        env.admin("migrate", env=env.cli_env(BILLING_PG=st.conninfo("billing", "billing_owner")))
        env.admin("keygen", "--out", env.signing_key)
        os.environ["BILLING_PG_STANDBY_CONFIRM_MS"] = "1500"  # billingd and the CLIs
        set_price(env, "ha-m", *PRICE)
        bd = Billingd(env, {"pg_timeout_ms": 2000, "pg_standby_confirm_ms": 1500})
        yield st, env, bd
        bd.stop()
    finally:
        os.environ.pop("BILLING_PG_STANDBY_CONFIRM_MS", None)
        st.stop()
        shutil.rmtree(d, ignore_errors=True)


def body(rid, acct, tin):
    return {"request_id": rid, "account_id": acct, "model": "ha-m", "input_tokens": tin, "cached_input_tokens": 0,
            "output_tokens": 3, "started_at": rfc3339(dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=30))}


def post(bd, b):
    try:
        return requests.post(bd.url + "/v1/usage", json=b, headers=bd.h(), timeout=30)
    except requests.RequestException:
        return None


def wait_for(what, pred, timeout):
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            if pred():
                return time.time() - t0
        except Exception:  # noqa: BLE001  (the monitor is busy during a failover)
            pass
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout} s")


def journal_rows(env, rid):
    return env.one("SELECT count(*) FROM journal WHERE idempotency_key = %s", (f"usage:{rid}",))


def test_finance_reads_on_a_standby(ha):
    """ledger export, statement, trial-balance and verify with
    target_session_attrs=prefer-standby: they run on a standby and see what
    it has replayed."""
    st, env, bd = ha
    acct = new_account(env, "ha-finance")
    env.admin("topup", "--account", acct, "--amount", "3", "--payment-ref", f"ha-fin-{acct}")
    wait_prices()
    r = post(bd, body("ha-fin-1", acct, 4321))
    assert r is not None and r.status_code == 200, r and r.text
    standby = st.conninfo("billing", "billing", "prefer-standby")
    c = psycopg2.connect(standby)
    c.autocommit = True
    try:
        cur = c.cursor()
        cur.execute("SELECT pg_is_in_recovery()")
        assert cur.fetchone()[0] is True
        # synchronous replication waits for the flush, not the replay: wait for it
        wait_for("the record replayed on the standby", lambda: cur.execute(
            "SELECT count(*) FROM usage_records WHERE request_id = 'ha-fin-1'") or cur.fetchone()[0] == 1, 10)
    finally:
        c.close()
    month, start, end = env.one("""SELECT to_char(now(), 'YYYY-MM'), to_char(date_trunc('month', now()), 'YYYY-MM-DD'),
                                          to_char(date_trunc('month', now()) + interval '1 month', 'YYYY-MM-DD')""")
    ce = env.cli_env(BILLING_PG=standby)
    out = os.path.join(env.tmp, "ha-export.csv")
    env.ledger("export", "--from", start, "--to", end, "--account", acct, "--out", out, env=ce)
    with open(out) as f:
        assert "ha-fin-1" in f.read()
    st_json = json.loads(env.ledger("statement", "--account", acct, "--month", month, "--format", "json",
                                    env=ce).stdout)
    assert st_json
    env.ledger("trial-balance", env=ce)
    env.ledger("verify", env=ce)
    env.ledger("verify", "--export", out, env=ce)


def test_primary_dies_under_load_nothing_lost(ha):
    st, env, bd = ha
    accts = [new_account(env, f"ha-{i}") for i in range(2)]
    for a in accts:
        env.admin("topup", "--account", a, "--amount", "1000", "--payment-ref", f"ha-setup-{a}")
    wait_prices()
    old = st.primary()
    assert old == 1, st.states()  # the first host of the connection string
    acked, answered_503 = {}, []
    stop = threading.Event()

    bad = []   # what a writer thread saw that it must not (an assert in a thread fails nothing)

    def writer(w):
        n = 0
        while not stop.is_set() and not bad:
            n += 1
            rid, acct, tin = f"ha-{w}-{n}", accts[w % 2], 1000 + n
            b = body(rid, acct, tin)
            while not bad:  # the gateway retries the same body with the same request_id until answered
                r = post(bd, b)
                if r is not None and r.status_code == 200:
                    acked[rid] = (acct, r.json()["cost_nanos"], tin)
                    break
                if r is not None:
                    if r.status_code != 503 or not r.headers.get("Retry-After", "").isdigit():
                        bad.append((rid, r.status_code, r.text, dict(r.headers)))
                        break
                    answered_503.append(rid)
                time.sleep(0.05)

    ths = [threading.Thread(target=writer, args=(w,), daemon=True) for w in range(3)]
    for t in ths:
        t.start()
    time.sleep(2.0)
    n_before = len(acked)
    t_kill = time.time()
    st.kill_node(old)
    wait_for("a standby promoted", lambda: st.primary() not in (None, old), 90)
    wait_for("a write acknowledged after the kill", lambda: bad or len(acked) > n_before + 20, 90)
    first_after = time.time() - t_kill
    stop.set()
    for t in ths:
        t.join(120)
    assert not bad, bad
    assert n_before > 0 and answered_503, (n_before, len(answered_503))
    # every acknowledged record on the new primary, once, at the answered cost
    rows = dict((r[0], (r[1], r[2])) for r in env.sql("SELECT request_id, account_id, cost_nanos FROM usage_records"))
    for rid, (acct, cost, tin) in acked.items():
        assert rid in rows, f"{rid} acknowledged but not on the new primary"
        assert rows[rid] == (acct, cost) and cost == expected_cost(*PRICE, tin, 0, 3)
        assert journal_rows(env, rid) == 1, rid
    # the hash chains continue; billingd and both CLIs use a connection string
    # whose first host (node_1) is dead
    env.assert_books_sound()
    shown = json.loads(env.admin("account", "show", accts[0], "--json").stdout)
    assert shown["account_id"] == accts[0]
    r = post(bd, body("ha-after", accts[0], 77))
    assert r is not None and r.status_code == 200, r and r.text
    print(f"failover: {len(acked)} acknowledged, {len(answered_503)} answers 503, first writes "
          f"{first_after:.1f} s after the kill")


def test_no_standby_left_means_503_never_200(ha):
    st, env, bd = ha
    acct = new_account(env, "ha-alone")
    env.admin("topup", "--account", acct, "--amount", "10", "--payment-ref", f"ha-alone-{acct}")
    primary = st.primary()
    assert primary is not None, st.states()
    dead = [n for n, (rep, _) in st.states().items() if n != primary]
    for n in dead:
        st.kill_node(n)  # node_1 is already dead (the test above)
    # the primary keeps 'ANY 1 (...)': commits wait; billingd cancels the
    # wait after pg_standby_confirm_ms and must not answer 200
    b = body("ha-alone-1", acct, 5000)
    for _ in range(2):  # the retry finds the record committed on the primary alone: still not 200
        r = post(bd, b)
        assert r is not None and r.status_code == 503, r and (r.status_code, r.text)
        assert r.headers.get("Retry-After", "").isdigit()
    top = env.admin("topup", "--account", acct, "--amount", "5", "--payment-ref", "ha-alone-t", check=False)
    assert top.returncode != 0 and "unavailable" in top.stderr, (top.returncode, top.stdout, top.stderr)
    for n in dead:
        st.restart_node(n)
    wait_for("a standby back", lambda: any(st.states()[n] == ("secondary", "secondary") for n in dead), 240)
    r = None
    for _ in range(100):
        r = post(bd, b)
        if r is not None and r.status_code == 200:
            break
        time.sleep(0.1)
    assert r is not None and r.status_code == 200, r and r.text
    assert r.json()["cost_nanos"] == expected_cost(*PRICE, 5000, 0, 3)
    assert journal_rows(env, "ha-alone-1") == 1
    top = env.admin("topup", "--account", acct, "--amount", "5", "--payment-ref", "ha-alone-t")
    assert env.one("SELECT count(*) FROM journal WHERE idempotency_key = 'topup:ha-alone-t'") == 1
    env.assert_books_sound()
