"""PostgreSQL stopped in the middle of usage load.

billingd answers 503 with Retry-After while the database is gone, does not
crash, and once PostgreSQL is back (same port, same options) it serves usage
again by itself, without a restart.  Nothing acknowledged is lost and a
replay of everything charges each request_id exactly once.

This module stops the PostgreSQL that the whole run shares; it always starts
it again (finally), and checks that it answers before leaving."""
import datetime as dt
import os
import time

import psycopg2
import requests

from conftest import UNIT, expected_cost, ledger_counts, new_account, result_lines, rfc3339, run_load, set_price, \
    wait_prices

UTC = dt.timezone.utc


def body(rid, acct, tin, started):
    return {"request_id": rid, "account_id": acct, "model": "outage-m", "input_tokens": tin,
            "cached_input_tokens": tin // 3, "output_tokens": 7, "started_at": started}


def pg_up(stack):
    try:
        psycopg2.connect(stack.conninfo("postgres", "postgres"), connect_timeout=2).close()
        return True
    except psycopg2.Error:
        return False


def test_postgresql_stopped_mid_load_503_then_recovers_without_restart(env, billingd, tmp_path):
    stack = env.stack
    accts = [new_account(env, f"outage-{i}") for i in range(4)]
    set_price(env, "outage-m", 2 * UNIT, UNIT // 2, 8 * UNIT)
    wait_prices()
    started = rfc3339(dt.datetime.now(UTC) - dt.timedelta(minutes=5))
    plan = []
    for c in range(20):
        for k in range(400):
            plan.append((f"c{c}", "/v1/usage", body(f"out-{c}-{k}", accts[c % 4], 100 + c * 400 + k, started)))
    out_path = os.path.join(str(tmp_path), "outage.out")
    proc, collect = run_load(billingd, plan, str(tmp_path), "outage", error_sleep_ms=20, gap_ms=5, background=True)
    pid = billingd.proc.pid
    stopped = False
    try:
        deadline = time.time() + 30
        while result_lines(out_path) < 1500 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.01)
        assert result_lines(out_path) >= 1500, "the load never got going"
        stack.stop_pg()
        stopped = True
        assert not pg_up(stack)
        # while it is down: 503 with Retry-After, the process alive, health yes, ready no
        time.sleep(0.5)
        probe = body("out-probe", accts[0], 12345, started)
        r = billingd.post("/v1/usage", probe, timeout=15)
        assert r.status_code == 503, r.text
        assert r.headers.get("Retry-After", "").isdigit() and int(r.headers["Retry-After"]) >= 1, r.headers
        assert r.json()["error"]["code"] == "unavailable"
        r = billingd.post("/v1/usage/batch", {"records": [probe]}, timeout=15)
        assert r.status_code == 200 and r.json()["results"][0]["error"]["status"] == 503, r.text
        assert requests.get(billingd.url + "/healthz", timeout=5).status_code == 200
        assert requests.get(billingd.url + "/readyz", timeout=15).status_code == 503
        time.sleep(1.0)
        assert billingd.proc.poll() is None and billingd.proc.pid == pid, "billingd died without PostgreSQL"
        stack.start_pg()
        stopped = False
        assert pg_up(stack)
        # recovers by itself within ~10 s: the same request_id retried is safe
        t_back = time.time()
        got = None
        while time.time() - t_back < 10:
            r = billingd.post("/v1/usage", probe, timeout=15)
            if r.status_code == 200:
                got = r.json()
                break
            assert r.status_code == 503, r.text
            time.sleep(0.1)
        recovery = time.time() - t_back
        assert got is not None, "billingd did not recover within 10 s:\n" + billingd.logs()
        assert got["cost_nanos"] == expected_cost(2 * UNIT, UNIT // 2, 8 * UNIT, 12345, 12345 // 3, 7)
        deadline = time.time() + 10
        while requests.get(billingd.url + "/readyz", timeout=15).status_code != 200:
            assert time.time() < deadline, "readyz stays 503 after PostgreSQL came back"
            time.sleep(0.1)
        print(f"usage served again {recovery:.2f} s after PostgreSQL came back")
        res = collect()
    finally:
        if stopped:
            stack.start_pg()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert pg_up(stack)
    assert billingd.proc.poll() is None and billingd.proc.pid == pid, "billingd was restarted or died"
    statuses = {}
    for st, ra, _ in res.values():
        statuses[st] = statuses.get(st, 0) + 1
    print("statuses during the outage run:", statuses)
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.get(503, 0) > 0, "the outage produced no 503"
    assert statuses.get(200, 0) > 1500
    for i, (st, ra, j) in res.items():
        if st == 503:
            assert ra is not None and ra.isdigit(), (i, ra)
            assert j["error"]["code"] == "unavailable", j
    # every 200 is in the ledger with its answer
    stored = {r[0]: r[1] for r in env.sql("SELECT request_id, cost_nanos FROM usage_records WHERE model = 'outage-m'")}
    acked = {i for i, (st, _, _) in res.items() if st == 200}
    for i in acked:
        rid = plan[i][2]["request_id"]
        assert stored.get(rid) == res[i][2]["cost_nanos"], rid
    n_usage = env.one("SELECT count(*) FROM journal WHERE kind = 'usage'")
    assert env.one("SELECT count(*) FROM usage_records") == n_usage
    # replay everything: each request_id is charged exactly once in the end
    res2 = run_load(billingd, plan, str(tmp_path), "outage-replay")
    newly = 0
    for i, (st, _, j) in res2.items():
        rid = plan[i][2]["request_id"]
        assert st == 200, (rid, st, j)
        if rid in stored:
            assert j["duplicate"] is True and j["cost_nanos"] == stored[rid]
        else:
            assert j["duplicate"] is False
            newly += 1
        b = plan[i][2]
        assert j["cost_nanos"] == expected_cost(2 * UNIT, UNIT // 2, 8 * UNIT, b["input_tokens"],
                                                b["cached_input_tokens"], b["output_tokens"])
    assert env.one("SELECT count(*) FROM journal WHERE kind = 'usage'") == n_usage + newly
    assert env.one("SELECT count(*) FROM usage_records WHERE model = 'outage-m'") == len(plan) + 1
    before = ledger_counts(env)
    res3 = run_load(billingd, plan, str(tmp_path), "outage-replay2")
    assert all(st == 200 and j["duplicate"] is True for st, _, j in res3.values())
    assert ledger_counts(env) == before
    env.assert_books_sound()


def test_after_a_postgresql_restart_the_first_calls_are_served_not_503(env, billingd):
    """The pools' connections died with the old server while billingd was
    idle.  Once PostgreSQL is back, the very first calls must be answered
    (each pool thread notices its dead connection before using it), not
    refused once per thread with a 503."""
    from concurrent.futures import ThreadPoolExecutor
    stack = env.stack
    acct = new_account(env, "restart-first")
    set_price(env, "outage-m", 2 * UNIT, UNIT // 2, 8 * UNIT)
    wait_prices()
    started = rfc3339(dt.datetime.now(UTC) - dt.timedelta(minutes=1))
    assert billingd.post("/v1/usage", body("rf-warm", acct, 100, started)).status_code == 200
    stack.stop_pg()
    try:
        time.sleep(0.3)
    finally:
        stack.start_pg()
    assert pg_up(stack)

    def use(i):
        return billingd.post("/v1/usage", body(f"rf-{i}", acct, 100 + i, started), timeout=15)

    def get(i):
        return requests.get(f"{billingd.url}/v1/accounts/{acct}", headers=billingd.h(), timeout=15)

    with ThreadPoolExecutor(8) as ex:
        got = list(ex.map(use, range(8))) + list(ex.map(get, range(8)))
    bad = [(i, r.status_code, r.text) for i, r in enumerate(got) if r.status_code != 200]
    assert not bad, f"first calls after a PostgreSQL restart were refused: {bad}"


def test_every_log_record_is_one_line(env, billingd):
    """Through an outage of its own (and those above): every record billingd
    logged, libpq's multi-line messages included, is one line."""
    acct = new_account(env, "log-lines")
    started = rfc3339(dt.datetime.now(UTC) - dt.timedelta(minutes=1))
    env.stack.stop_pg()
    try:
        r = billingd.post("/v1/usage", body("ll-1", acct, 100, started), timeout=30)
        assert r.status_code == 503, r.text
        time.sleep(1.5)
    finally:
        env.stack.start_pg()
    assert pg_up(env.stack)
    with open(billingd.log_path, "rb") as f:
        lines = f.read().decode("utf-8", "replace").splitlines()
    assert any("postgresql" in ln.lower() or "database" in ln.lower() for ln in lines), lines[-20:]
    bad = [ln for ln in lines if ln and not ln.startswith("ts=")]
    assert not bad, f"{len(bad)} log lines are not records of their own: {bad[:5]}"
