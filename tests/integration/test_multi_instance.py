"""Two billingd instances on one PostgreSQL and one Redis: each its own chain;
one request_id sent to both at once is charged once; verify checks every chain."""
import concurrent.futures as cf
import json
import time

import requests

from conftest import Billingd, UNIT, now_rfc3339, set_price


def test_two_instances_charge_each_request_once(env):
    set_price(env, "m2", UNIT, UNIT, UNIT, effective="2026-01-01T00:00:00Z")
    accts = [json.loads(env.admin("account", "create", "--external-id", f"mi-{i}", "--json").stdout)["account_id"]
             for i in range(5)]
    a = Billingd(env, {"instance_id": "billingd-a"})
    b = Billingd(env, {"instance_id": "billingd-b"})
    try:
        bodies = [{"request_id": f"mi-req-{i}", "account_id": accts[i % 5], "model": "m2", "input_tokens": 1000 + i,
                   "cached_input_tokens": 0, "output_tokens": 10, "started_at": now_rfc3339()} for i in range(200)]

        def send(args):
            inst, body = args
            return requests.post(inst.url + "/v1/usage", json=body, headers=inst.h(), timeout=60)

        jobs = [(inst, body) for body in bodies for inst in (a, b)]
        with cf.ThreadPoolExecutor(32) as ex:
            res = list(ex.map(send, jobs))
        assert all(r.status_code == 200 for r in res), {r.status_code for r in res}
        for i in range(200):
            ra, rb = res[2 * i].json(), res[2 * i + 1].json()
            assert ra["cost_nanos"] == rb["cost_nanos"]
            assert [ra["duplicate"], rb["duplicate"]].count(False) == 1, (ra, rb)
        assert env.one("SELECT count(*) FROM usage_records WHERE request_id LIKE 'mi-req-%%'") == 200
        assert env.one("SELECT count(*) FROM journal WHERE idempotency_key LIKE 'usage:mi-req-%%'") == 200
        writers = {r[0] for r in env.sql("SELECT DISTINCT writer FROM journal WHERE kind = 'usage'")}
        assert {"billingd-a", "billingd-b"} <= writers
        v = env.ledger("verify")
        assert "chains verified" in v.stdout
        env.assert_books_sound()
        # a top-up through instance A reaches authorize decisions on instance B at once
        acct = accts[0]
        spent = b.get(f"/v1/accounts/{acct}").json()["balance"]
        assert spent["paid_nanos"] == 0
    finally:
        a.stop()
        b.stop()
