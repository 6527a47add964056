#!/usr/bin/python3
"""valgrind.py: billingd under valgrind (`make valgrind-short`).

Starts its own PostgreSQL and Redis (scripts/stack.sh), migrates, runs
bin/billingd under

    valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite

sends a few requests of every kind (health, metrics, signups with replay and
conflict, account, verify, keys, top-ups, admin grants, authorize by account
and by key, usage with replay, conflict and hold, a batch, tokenize, chat
plain and streamed, and the usual refusals: 400, 401, 403, 404, 405, 409,
413, 422), then SIGTERM, and reads valgrind's report.  Exit 0 when billingd
exited 0 with no valgrind error and nothing definitely lost; else 1, with the
report's first errors printed.  "Possibly lost" and "still reachable" blocks
are listed but not counted: at exit they are libraries' own (libpq, libsodium,
the model's and tokenizer's tables)."""
import datetime as dt
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import requests

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import conftest  # noqa: E402
from conftest import ADMIN_TOKEN, GATEWAY_TOKEN, UNIT  # noqa: E402


def log(msg):
    sys.stdout.write(f"[{time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stdout.flush()


class VgBillingd(conftest.Billingd):
    """conftest's Billingd, started under valgrind."""

    vg_log = None

    def start(self, wait=True):
        self.vg_log = os.path.join(self.env.tmp, "valgrind.log")
        self.log = open(self.log_path, "ab")
        cmd = ["valgrind", "--error-exitcode=99", "--leak-check=full", "--errors-for-leak-kinds=definite",
               "--show-leak-kinds=definite,possible", "--num-callers=30", f"--log-file={self.vg_log}",
               os.path.join(conftest.BIN, "billingd"), "--config", self.cfg_path]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT)
        if wait:
            self.wait_ready(timeout=600)

    def wait_ready(self, timeout=600):
        return conftest.Billingd.wait_ready(self, timeout)


def now(minutes=0):
    t = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=minutes)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def exercise(bd, env):
    """A few requests of each kind; asserts only the status (the behaviour
    has its own tests).  Returns the number of requests."""
    gw, adm = {"Authorization": "Bearer " + GATEWAY_TOKEN}, {"Authorization": "Bearer " + ADMIN_TOKEN}
    n = 0
    T = 120  # valgrind is slow

    def p(path, body, status, headers=gw, data=None):
        nonlocal n
        n += 1
        r = requests.post(bd.url + path, data=data if data is not None else json.dumps(body).encode(),
                          headers=headers, timeout=T)
        assert r.status_code in (status if isinstance(status, tuple) else (status,)), (path, r.status_code, r.text)
        return r

    def g(path, status, headers=gw):
        nonlocal n
        n += 1
        r = requests.get(bd.url + path, headers=headers, timeout=T)
        assert r.status_code == status, (path, r.status_code, r.text)
        return r

    g("/healthz", 200)
    g("/readyz", 200)
    g("/metrics", 200)
    a = p("/v1/accounts", {"external_id": "vg-1", "identity": ["phone:1"]}, 201).json()
    acct, code = a["account_id"], a["referral_code"]
    p("/v1/accounts", {"external_id": "vg-1", "identity": ["phone:1"]}, 200)
    p("/v1/accounts", {"external_id": "vg-1"}, 409)
    b = p("/v1/accounts", {"external_id": "vg-2", "referral_code": code, "identity": ["phone:2"]}, 201).json()
    p("/v1/accounts", {"external_id": "vg-3", "referral_code": "NOPE"}, 422)
    g(f"/v1/accounts/{acct}", 200)
    g("/v1/accounts/999999", 404)
    p(f"/v1/accounts/{b['account_id']}/verify", {}, 200)
    key = p("/v1/keys", {"account_id": acct, "name": "vg"}, 201).json()["api_key"]
    p("/v1/topups", {"account_id": acct, "amount_nanos": 100 * UNIT, "payment_ref": "vg-pay-1"}, 201)
    p("/v1/topups", {"account_id": acct, "amount_nanos": 100 * UNIT, "payment_ref": "vg-pay-1"}, 200)
    p("/v1/topups", {"account_id": acct, "amount_nanos": 5, "payment_ref": "vg-pay-1"}, 409)
    grant = {"account_id": acct, "amount_nanos": UNIT, "reason": "vg", "operator": "vg", "idempotency_key": "vg-g1",
             "expires_at": (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=365)).strftime("%Y-%m-%dT%H:%M:%SZ"),
             "priority": 5}
    p("/v1/admin/grants", grant, 201, headers=adm)
    p("/v1/admin/grants", grant, 200, headers=adm)
    p("/v1/admin/grants", grant, 403)
    az = {"request_id": "vg-az-1", "account_id": acct, "model": "vg-model", "input_tokens": 1000,
          "max_output_tokens": 100}
    p("/v1/authorize", az, 200)
    p("/v1/authorize", az, 200)
    p("/v1/authorize", dict(az, request_id="vg-az-2", account_id=None, api_key=key), 200)
    p("/v1/authorize", dict(az, request_id="vg-az-3", input_tokens=10 ** 9, max_output_tokens=10 ** 9), 402)
    p("/v1/authorize", dict(az, request_id="vg-az-4", model="nope"), 422)
    p("/v1/authorize", dict(az, request_id="vg-az-5", account_id=None, api_key="sk-wrong"), (401, 404))
    u = {"request_id": "vg-az-1", "account_id": acct, "model": "vg-model", "input_tokens": 900,
         "cached_input_tokens": 100, "output_tokens": 50, "started_at": now(-1), "hold_id": "vg-az-1"}
    p("/v1/usage", u, 200)
    p("/v1/usage", u, 200)
    p("/v1/usage", dict(u, output_tokens=51), 409)
    p("/v1/usage", dict(u, request_id="vg-u-2", account_id=None, api_key=key, hold_id="vg-az-2"), 200)
    p("/v1/usage", dict(u, request_id="vg-u-3", cached_input_tokens=901), 422)
    p("/v1/usage", dict(u, request_id="vg-u-4", model="nope"), 422)
    recs = [dict(u, request_id=f"vg-b-{i}", hold_id=None) for i in range(20)] + [dict(u, request_id="vg-b-bad",
                                                                                       started_at="bad")]
    r = p("/v1/usage/batch", {"records": recs}, 200)
    assert len(r.json()["results"]) == 21
    p("/v1/usage/batch", {"records": recs}, 200)
    p("/v1/tokenize", {"model": "internal-tiny", "text": "Hello, world! 你好"}, 200)
    p("/v1/tokenize", {"model": "internal-tiny", "messages": [{"role": "user", "content": "hi"}],
                       "return_ids": True}, 200)
    chat = {"model": "internal-tiny", "max_tokens": 3, "temperature": 0, "seed": 1,
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]}
    p("/internal/v1/chat/completions", chat, 200, headers={"Authorization": "Bearer " + key})
    r = p("/internal/v1/chat/completions", dict(chat, stream=True, temperature=0.7), 200,
          headers={"Authorization": "Bearer " + key})
    assert "data:" in r.text
    p("/internal/v1/chat/completions", chat, 401, headers={})
    # refusals
    p("/v1/usage", u, 401, headers={})
    p("/v1/usage", u, 401, headers={"Authorization": "Bearer nope"})
    p("/v1/usage", None, 400, data=b"{nope")
    p("/v1/usage", None, 413, data=b" " * (2 << 20))
    g("/v1/usage", 405)
    g("/v1/nothing", 404)
    # token reload, Redis losing its data, PostgreSQL away and back: the error paths
    bd.proc.send_signal(signal.SIGHUP)
    time.sleep(1.0)
    g("/readyz", 200)
    subprocess.run(["redis-cli", "-p", str(env.stack.redis_port), "FLUSHALL"], check=True, capture_output=True)
    p("/v1/authorize", dict(az, request_id="vg-az-6"), 200)
    env.stack.stop_pg()
    try:
        p("/v1/usage", dict(u, request_id="vg-u-down"), 503)
        p("/v1/accounts", {"external_id": "vg-down"}, 503)
        g("/readyz", 503)
    finally:
        env.stack.start_pg()
    deadline = time.time() + 120
    while requests.get(bd.url + "/readyz", timeout=T).status_code != 200:
        assert time.time() < deadline, "not ready again"
        time.sleep(0.5)
    # each pool thread replaces its dead connection before the first job
    p("/v1/usage", dict(u, request_id="vg-u-down"), 200)
    p("/v1/accounts", {"external_id": "vg-down"}, 201)
    # connection accounting (billing/http/conns.c): the one over max_connections
    # (8) is closed at once; a request trickling for longer than
    # request_timeout_s (3) is dropped
    idle = [socket.create_connection(("127.0.0.1", bd.port), timeout=T) for _ in range(8)]
    time.sleep(1.0)
    extra = socket.create_connection(("127.0.0.1", bd.port), timeout=T)
    extra.settimeout(T)
    assert extra.recv(1) == b"", "the 9th connection was kept open with max_connections=8"
    extra.close()
    for s in idle:
        s.close()
    time.sleep(1.0)
    slow = socket.create_connection(("127.0.0.1", bd.port), timeout=T)
    slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    t0 = time.time()
    closed = False
    while time.time() - t0 < 20 and not closed:
        try:
            slow.sendall(b"X: y\r\n")
            slow.settimeout(0.5)
            closed = slow.recv(1) == b""
        except socket.timeout:
            pass
        except (BrokenPipeError, ConnectionResetError):
            closed = True
    slow.close()
    assert closed, "a trickling request outlived request_timeout_s"
    g("/healthz", 200)
    return n + 4


def report(path):
    with open(path) as f:
        text = f.read()
    m = re.search(r"ERROR SUMMARY: (\d+) errors", text)
    errors = int(m.group(1)) if m else -1
    def kind(k):
        m = re.search(rf"{k}: ([\d,]+) bytes in ([\d,]+) blocks", text)
        return int(m.group(1).replace(",", "")) if m else 0
    return errors, kind("definitely lost"), kind("indirectly lost"), kind("possibly lost"), kind("still reachable"), text


def main():
    if not shutil.which("valgrind"):
        print("valgrind-short: valgrind is missing (apt-get install -y valgrind)", file=sys.stderr)
        return 1
    tmp = tempfile.mkdtemp(prefix="billing-valgrind-")
    os.chmod(tmp, 0o755)
    stack = bd = None
    ok = False
    keep = "--keep" in sys.argv
    try:
        stack = conftest.Stack(os.path.join(tmp, "stack"))
        env = dict(os.environ, BILLING_PG_OWNER=stack.conninfo("billing", "billing_owner"),
                   BILLING_MIGRATIONS_DIR=os.path.join(ROOT, "migrations"))
        subprocess.run([os.path.join(conftest.BIN, "billing-admin"), "migrate"], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        etc = os.path.join(tmp, "etc")
        os.makedirs(etc)
        e = conftest.Env(stack, "billing", etc)
        for model in ("vg-model", "internal-tiny"):
            conftest.set_price(e, model, 2 * conftest.UNIT, conftest.UNIT // 2, 8 * conftest.UNIT)
        t0 = time.time()
        bd = VgBillingd(e, {"pg_timeout_ms": "30000", "redis_timeout_ms": "10000", "inference_threads": "1",
                                "max_connections": "8", "request_timeout_s": "3"})
        log(f"billingd under valgrind ready after {time.time() - t0:.0f} s")
        time.sleep(1.5)  # prices
        t0 = time.time()
        n = exercise(bd, e)
        log(f"{n} requests in {time.time() - t0:.0f} s")
        bd.proc.send_signal(signal.SIGTERM)
        rc = bd.proc.wait(timeout=600)
        bd.log.close()
        errors, definite, indirect, possible, reachable, text = report(bd.vg_log)
        log(f"billingd exit {rc}; valgrind: {errors} errors, definitely lost {definite} B, indirectly lost "
            f"{indirect} B, possibly lost {possible} B, still reachable {reachable} B")
        ok = rc == 0 and errors == 0 and definite == 0
        if not ok:
            blocks = [b for b in text.split("\n==") if "Invalid" in b or "uninitialised" in b or
                      "definitely lost in" in b or "Syscall param" in b]
            sys.stdout.write("---- valgrind report (first errors) ----\n")
            sys.stdout.write("\n".join(text.splitlines()[:0]))
            out = []
            for line in text.splitlines():
                out.append(line)
            # print the error records: from the first "Invalid"/"definitely" line, 40 lines each, 5 at most
            idx = [i for i, line in enumerate(out) if re.search(r"Invalid|uninitialised|definitely lost in|"
                                                                r"Syscall param|Mismatched|overlap", line)]
            for i in idx[:6]:
                sys.stdout.write("\n".join(out[i:i + 30]) + "\n...\n")
            if not blocks and not idx:
                sys.stdout.write("\n".join(out[-60:]) + "\n")
    except Exception as ex:  # noqa: BLE001
        import traceback
        traceback.print_exc()
        log(f"valgrind-short: driver error: {ex!r}")
        if bd:
            sys.stdout.write("---- billingd log ----\n" + bd.logs()[-4000:] + "\n")
    finally:
        if bd and bd.proc and bd.proc.poll() is None:
            bd.proc.kill()
            bd.proc.wait()
        if stack:
            stack.stop()
        if ok and not keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log(f"kept {tmp}")
    print(f"valgrind-short: {'ok' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
