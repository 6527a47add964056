#!/usr/bin/python3
"""faults.py: the fault suite (`make faults`, `make faults-short`).

Starts its own PostgreSQL and Redis (scripts/stack.sh, free loopback ports),
migrates, starts bin/billingd, drives a mixed load (authorize, usage,
signups, admin grants, top-ups) and injects faults:

  1. kill   SIGKILL billingd at >= 10 random moments, restart it each time;
            every acknowledged usage record is in the ledger exactly once and
            the generator's retries of unanswered records are charged once;
  2. redis  FLUSHALL and a Redis restart under authorize load: nothing is
            admitted beyond the ledger balance, decisions are exact again
            within 2 s of each fault;
  3. pg     PostgreSQL stopped for 10 s under load: 503 with Retry-After,
            billingd's RSS bounded, recovery without a restart, nothing lost;
  4. burst  one request_id (and one external_id, idempotency_key,
            payment_ref) sent 50 times at once over 50 connections: one
            effect.
  5. failover  (`--only failover`, `make faults-failover`; its own stack:
            scripts/ha_stack.sh, a pg_auto_failover monitor, a primary and
            two synchronous standbys) under mixed load (usage single and
            batch, authorize, signups, grants, top-ups) the primary's
            machine dies (SIGKILL to its pg_autoctl, postmaster and
            backends); the monitor promotes a standby; billingd reconnects
            by itself; the old primary rejoins as a standby; then the new
            primary dies too.  Prints
            `failover: rounds=2 first_write_s=A,B ... lost=0 duplicated=0`.

Then: `ledger trial-balance` balanced, `ledger verify` passing, `ledger
reconcile` finding nothing (when the CLI has it), every account's balance
equal to what the generator expects, and one line

    faults: injected=N requests=N acknowledged=N lost=0 duplicated=0

Exit 0 when every check passed, 1 otherwise (each failure is printed).
Everything it starts is stopped by PID at the end, also on Ctrl-C.

The generator is a gateway that behaves: every mutating call carries its
idempotency id (request_id, external_id, idempotency_key, payment_ref) and is
retried with the same body until it gets an answer that is not a 5xx and not
a lost connection."""
import argparse
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import conftest  # noqa: E402  (Stack, Env, Billingd: the integration suite's own harness)
from conftest import ADMIN_TOKEN, GATEWAY_TOKEN, UNIT, expected_cost, now_rfc3339  # noqa: E402

MODEL = "f-model"          # 2 / 0.5 / 8 units per 1M tokens
QMODEL = "f-quota"         # 1 unit per 1M input tokens, output free: easy arithmetic
PRICE = (2 * UNIT, UNIT // 2, 8 * UNIT)
QPRICE = (UNIT, UNIT, 0)
RETRY_DEADLINE = 120.0     # a mutating call must be answered within this, else the run fails


def log(msg):
    sys.stdout.write(f"[{time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stdout.flush()



def ledger_balance(bal):
    """paid + promo of a balance answer (the ledger's), checking that the live
    part agrees with it: available = paid + promo - held, or both unknown
    (held_known false, Redis away) and said so.  None when it does not (the
    caller's comparison then fails, naming the balance)."""
    total = bal["paid_nanos"] + bal["promo_nanos"]
    if bal["held_known"]:
        ok = bal["available_nanos"] == total - bal["held_nanos"]
    else:
        ok = bal["held_nanos"] is None and bal["available_nanos"] is None and bool(bal.get("note"))
    return total if ok else None

class Failures:
    def __init__(self):
        self.lock = threading.Lock()
        self.items = []

    def add(self, msg):
        with self.lock:
            if len(self.items) < 200:
                self.items.append(msg)
            log("FAIL " + msg)

    def __bool__(self):
        return bool(self.items)


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = 0
        self.unanswered = 0
        self.by_status = {}
        self.injected = 0
        self.no_retry_after = 0

    def count(self, status, retry_after_ok=True):
        with self.lock:
            self.requests += 1
            self.by_status[status] = self.by_status.get(status, 0) + 1
            if status == 0:
                self.unanswered += 1
            if status == 503 and not retry_after_ok:
                self.no_retry_after += 1


class Client:
    """One keep-alive HTTP/1.1 connection to billingd; reconnects after any error.
    once() returns (status, headers, json or None); status 0 means no answer
    (refused, reset, timeout: the call may or may not have been processed)."""

    def __init__(self, run, timeout=15.0):
        self.run = run
        self.timeout = timeout
        self.conn = None

    def close(self):
        if self.conn:
            self.conn.close()
            self.conn = None

    def once(self, method, path, body=None, token=GATEWAY_TOKEN):
        hdrs = {"Authorization": f"Bearer {token}"}
        data = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode()
            hdrs["Content-Type"] = "application/json"
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.run.port, timeout=self.timeout)
            self.conn.request(method, path, body=data, headers=hdrs)
            r = self.conn.getresponse()
            raw = r.read()
            headers = {k.lower(): v for k, v in r.getheaders()}
            if headers.get("connection", "").lower() == "close":
                self.close()
        except (OSError, http.client.HTTPException):
            self.close()
            self.run.stats.count(0)
            return 0, {}, None
        try:
            j = json.loads(raw) if raw else None
        except ValueError:
            j = {"_raw": raw[:200].decode("utf-8", "replace")}
        ra = headers.get("retry-after", "")
        ra_ok = ra.isdigit() and int(ra) >= 1
        self.run.stats.count(r.status, ra_ok or path == "/readyz")
        if r.status == 503 and not ra_ok and path != "/readyz":
            self.run.fail.add(f"{method} {path}: 503 without a valid Retry-After ({ra!r})")
        return r.status, headers, j

    def until_answered(self, method, path, body=None, token=GATEWAY_TOKEN, pause=0.03):
        """Retries the same call until an answer that is not 5xx/none.
        Returns (status, json, attempts, saw_failure)."""
        deadline = time.time() + RETRY_DEADLINE
        attempts = 0
        failed = False
        while True:
            attempts += 1
            st, _, j = self.once(method, path, body, token)
            if st != 0 and st < 500:
                return st, j, attempts, failed
            failed = True
            if st not in (0, 503):
                self.run.fail.add(f"{method} {path}: unexpected {st} {j}")
            if time.time() > deadline:
                self.run.fail.add(f"{method} {path}: no answer within {RETRY_DEADLINE:.0f} s ({st})")
                return st, j, attempts, failed
            time.sleep(pause + random.random() * pause)


class Run:
    def __init__(self, args):
        self.args = args
        self.fail = Failures()
        self.stats = Stats()
        self.lock = threading.Lock()
        # ledger effects the generator expects
        self.usage = {}     # request_id -> dict(body, expected, acked_cost, account, retried, dup_seen)
        self.signups = {}   # external_id -> account_id
        self.grants = {}    # idempotency_key -> (account, amount, grant_id)
        self.topups = {}    # payment_ref -> (account, amount)
        self.accounts = {}  # account_id -> dict(initial=nanos, key=api_key or None)
        self.burst_ids = []
        self.verify_ok = False
        self.stack = self.env = self.bd = None
        self.tmp = None

    @property
    def port(self):
        return self.bd.port

    # ---------------------------------------------------------------- set-up

    def setup(self):
        self.tmp = tempfile.mkdtemp(prefix="billing-faults-")
        os.chmod(self.tmp, 0o755)  # PostgreSQL runs as the postgres user
        log(f"work folder {self.tmp}")
        if "failover" in self.args.only.split(","):
            # commits count once a standby has them (pg_standby_confirm_ms):
            # billingd and the CLIs read BILLING_<KEY> from the environment
            os.environ["BILLING_PG_STANDBY_CONFIRM_MS"] = "2000"
            self.stack = conftest.HAStack(os.path.join(self.tmp, "stack"))
        else:
            self.stack = conftest.Stack(os.path.join(self.tmp, "stack"))
        env = dict(os.environ, BILLING_PG_OWNER=self.stack.conninfo("billing", "billing_owner"),
                   BILLING_MIGRATIONS_DIR=os.path.join(ROOT, "migrations"))
        subprocess.run([os.path.join(conftest.BIN, "billing-admin"), "migrate"], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        etc = os.path.join(self.tmp, "etc")
        os.makedirs(etc)
        self.env = conftest.Env(self.stack, "billing", etc)
        self.env.admin("keygen", "--out", self.env.signing_key, check=False)
        for model, (pin, pc, pout) in ((MODEL, PRICE), (QMODEL, QPRICE)):
            conftest.set_price(self.env, model, pin, pc, pout)
        self.bd = conftest.Billingd(self.env, {"log_level": "info"})
        time.sleep(1.2)  # prices are refreshed every second
        c = Client(self)
        # accounts of the kill and pg scenarios: signup credit, a top-up, an API key
        for i in range(16):
            acct = self.signup(c, f"f-acct-{i}", identity=[f"phone:{i:04d}"])
            st, j, _, _ = c.until_answered("POST", "/v1/keys", {"account_id": acct, "name": "faults"})
            assert st == 201, (st, j)
            self.accounts[acct]["key"] = j["api_key"]
            self.topup(c, acct, 1000 * UNIT, f"f-setup-{acct}")
        c.close()
        log(f"billingd {self.bd.url} pid {self.bd.proc.pid}; {len(self.accounts)} accounts")

    def signup(self, c, ext, identity=None):
        body = {"external_id": ext}
        if identity:
            body["identity"] = identity
        st, j, _, _ = c.until_answered("POST", "/v1/accounts", body)
        if st not in (200, 201):
            self.fail.add(f"signup {ext}: {st} {j}")
            return None
        acct = j["account_id"]
        with self.lock:
            if ext in self.signups and self.signups[ext] != acct:
                self.fail.add(f"signup {ext}: answered account {acct}, earlier {self.signups[ext]}")
            self.signups[ext] = acct
            if st == 201:
                self.accounts.setdefault(acct, {"initial": ledger_balance(j["balance"]), "key": None})
        return acct

    def topup(self, c, acct, amount, ref):
        st, j, _, _ = c.until_answered("POST", "/v1/topups", {"account_id": acct, "amount_nanos": amount,
                                                              "payment_ref": ref})
        if st not in (200, 201) or j.get("amount_nanos") != amount:
            self.fail.add(f"topup {ref}: {st} {j}")
            return False
        with self.lock:
            self.topups[ref] = (acct, amount)
        return True

    def grant(self, c, acct, amount, key):
        body = {"account_id": acct, "amount_nanos": amount, "reason": "faults", "operator": "faults",
                "idempotency_key": key}
        st, j, _, _ = c.until_answered("POST", "/v1/admin/grants", body, token=ADMIN_TOKEN)
        if st not in (200, 201) or j.get("amount_nanos") != amount:
            self.fail.add(f"grant {key}: {st} {j}")
            return False
        with self.lock:
            if key in self.grants and self.grants[key][2] != j["grant_id"]:
                self.fail.add(f"grant {key}: grant {j['grant_id']}, earlier {self.grants[key][2]}")
            self.grants[key] = (acct, amount, j["grant_id"])
        return True

    def usage_body(self, rid, acct, tin, tcached, tout, model=MODEL, hold=None, by_key=False):
        b = {"request_id": rid, "model": model, "input_tokens": tin, "cached_input_tokens": tcached,
             "output_tokens": tout, "started_at": now_rfc3339(-30)}
        if by_key and self.accounts[acct]["key"]:
            b["api_key"] = self.accounts[acct]["key"]
        else:
            b["account_id"] = acct
        if hold:
            b["hold_id"] = hold
        return b

    def send_usage(self, c, body, acct):
        """One usage record, retried until answered; records what the ledger must hold."""
        price = QPRICE if body["model"] == QMODEL else PRICE
        exp = expected_cost(*price, body["input_tokens"], body["cached_input_tokens"], body["output_tokens"])
        rid = body["request_id"]
        with self.lock:
            self.usage[rid] = {"expected": exp, "acked": None, "account": acct, "retried": False, "dup": False}
        st, j, attempts, failed = c.until_answered("POST", "/v1/usage", body)
        if st != 200:
            self.fail.add(f"usage {rid}: {st} {j}")
            return None
        with self.lock:
            u = self.usage[rid]
            u["acked"] = j["cost_nanos"]
            u["retried"] = failed
            u["dup"] = j.get("duplicate") is True
        if j["cost_nanos"] != exp:
            self.fail.add(f"usage {rid}: cost {j['cost_nanos']}, expected {exp}")
        if j.get("duplicate") and not failed:
            self.fail.add(f"usage {rid}: first answer says duplicate")
        return j

    def send_batch(self, c, bodies, acct):
        """One /v1/usage/batch, retried whole until answered (each record is idempotent)."""
        with self.lock:
            for b in bodies:
                self.usage[b["request_id"]] = {"expected": expected_cost(*PRICE, b["input_tokens"],
                                                                         b["cached_input_tokens"], b["output_tokens"]),
                                               "acked": None, "account": acct, "retried": False, "dup": False}
        while True:
            st, j, _, failed = c.until_answered("POST", "/v1/usage/batch", {"records": bodies})
            if st != 200:
                self.fail.add(f"batch: {st} {j}")
                return
            retry = False
            with self.lock:
                for b, res in zip(bodies, j["results"]):
                    u = self.usage[b["request_id"]]
                    if "error" in res:
                        if res["error"].get("status") != 503:
                            self.fail.add(f"batch record {b['request_id']}: {res}")
                        retry = True
                        continue
                    u["acked"] = res["cost_nanos"]
                    u["retried"] = u["retried"] or failed
                    u["dup"] = res.get("duplicate") is True
                    if res["cost_nanos"] != u["expected"]:
                        self.fail.add(f"batch record {b['request_id']}: cost {res['cost_nanos']}, expected "
                                      f"{u['expected']}")
            if not retry:
                return
            time.sleep(0.05)

    # ---------------------------------------------------------------- workers

    def worker_usage(self, wid, stop):
        c = Client(self)
        rnd = random.Random(self.args.seed * 1000 + wid)
        accts = sorted(self.accounts)[:16]
        n = 0
        while not stop.is_set():
            n += 1
            acct = rnd.choice(accts)
            tin = rnd.randint(1, 200000)
            body = self.usage_body(f"u-{stop.tag}-{wid}-{n}", acct, tin, rnd.randint(0, tin), rnd.randint(0, 4000),
                                   by_key=rnd.random() < 0.5)
            self.send_usage(c, body, acct)
        c.close()

    def worker_pair(self, wid, stop):
        """authorize (by API key), then usage settling the hold."""
        c = Client(self)
        rnd = random.Random(self.args.seed * 2000 + wid)
        accts = sorted(self.accounts)[:16]
        n = 0
        while not stop.is_set():
            n += 1
            acct = rnd.choice(accts)
            rid = f"p-{stop.tag}-{wid}-{n}"
            tin, tout = rnd.randint(1, 50000), rnd.randint(1, 2000)
            az = {"request_id": rid, "api_key": self.accounts[acct]["key"], "model": MODEL, "input_tokens": tin,
                  "max_output_tokens": tout}
            st, j, _, _ = c.until_answered("POST", "/v1/authorize", az)
            if st != 200:
                if st not in (402, 429):
                    self.fail.add(f"authorize {rid}: {st} {j}")
                continue
            if j.get("hold_id") != rid or j.get("account_id") != acct:
                self.fail.add(f"authorize {rid}: {j}")
            body = self.usage_body(rid, acct, tin, rnd.randint(0, tin), rnd.randint(0, tout), hold=rid, by_key=True)
            self.send_usage(c, body, acct)
        c.close()

    def worker_admin(self, wid, stop):
        """signups, admin grants and top-ups, each with its idempotency id."""
        c = Client(self)
        rnd = random.Random(self.args.seed * 3000 + wid)
        accts = sorted(self.accounts)[:16]
        n = 0
        while not stop.is_set():
            n += 1
            k = n % 3
            if k == 0:
                self.signup(c, f"s-{stop.tag}-{wid}-{n}", identity=[f"dev:{stop.tag}-{wid}-{n}"])
            elif k == 1:
                self.grant(c, rnd.choice(accts), rnd.randint(1, 10 ** 6), f"g-{stop.tag}-{wid}-{n}")
            else:
                self.topup(c, rnd.choice(accts), rnd.randint(1, 10 ** 9), f"t-{stop.tag}-{wid}-{n}")
        c.close()

    def worker_batch(self, wid, stop):
        """/v1/usage/batch of 2..8 records, one account per batch."""
        c = Client(self)
        rnd = random.Random(self.args.seed * 4000 + wid)
        accts = sorted(self.accounts)[:16]
        n = 0
        while not stop.is_set():
            n += 1
            acct = rnd.choice(accts)
            bodies = []
            for k in range(rnd.randint(2, 8)):
                tin = rnd.randint(1, 100000)
                bodies.append(self.usage_body(f"b-{stop.tag}-{wid}-{n}-{k}", acct, tin, rnd.randint(0, tin),
                                              rnd.randint(0, 4000)))
            self.send_batch(c, bodies, acct)
        c.close()

    def start_load(self, tag, usage=4, pair=2, admin=1, batch=0):
        stop = threading.Event()
        stop.tag = tag
        ths = [threading.Thread(target=self.worker_batch, args=(i, stop), daemon=True) for i in range(batch)]
        for i in range(usage):
            ths.append(threading.Thread(target=self.worker_usage, args=(i, stop), daemon=True))
        for i in range(pair):
            ths.append(threading.Thread(target=self.worker_pair, args=(i, stop), daemon=True))
        for i in range(admin):
            ths.append(threading.Thread(target=self.worker_admin, args=(i, stop), daemon=True))
        for t in ths:
            t.start()
        return stop, ths

    def stop_load(self, load):
        stop, ths = load
        stop.set()
        for t in ths:
            t.join(RETRY_DEADLINE + 30)
            if t.is_alive():
                self.fail.add("a load worker did not finish")

    # ---------------------------------------------------------------- 1. kill -9

    def scenario_kill(self):
        kills = self.args.kills
        rnd = random.Random(self.args.seed)
        n_before = len(self.usage)
        load = self.start_load("k")
        time.sleep(0.5)
        restart_times = []
        for i in range(kills):
            time.sleep(rnd.uniform(0.2, 1.5))
            self.bd.kill(signal.SIGKILL)
            self.stats.injected += 1
            t0 = time.time()
            self.bd.start(wait=False)
            self.bd.wait_ready(timeout=60)
            restart_times.append(time.time() - t0)
        time.sleep(0.5)
        self.stop_load(load)
        recs = [u for rid, u in self.usage.items() if rid.startswith(("u-k-", "p-k-"))]
        retried = sum(1 for u in recs if u["retried"])
        dups = sum(1 for u in recs if u["dup"])
        log(f"kill: {kills} x SIGKILL, restart {max(restart_times):.2f} s at most; {len(self.usage) - n_before} "
            f"usage records, {retried} needed a retry ({dups} of them had been committed before the kill)")
        if retried == 0:
            self.fail.add("kill: no kill hit a usage call in flight (no retries)")

    # ---------------------------------------------------------------- 2. redis

    def redis_cli(self, *args):
        return subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(self.stack.redis_port)] + list(args),
                              capture_output=True, text=True, timeout=30).stdout.strip()

    def restart_redis(self):
        pidfile = os.path.join(self.stack.dir, "redis.pid")
        with open(pidfile) as f:
            pid = int(f.read())
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            try:
                os.kill(pid, 0)
                time.sleep(0.05)
            except ProcessLookupError:
                break
        time.sleep(self.args.redis_down)
        subprocess.run(["redis-server", "--bind", "127.0.0.1", "--port", str(self.stack.redis_port), "--save", "",
                        "--appendonly", "no", "--dir", os.path.join(self.stack.dir, "redis"), "--daemonize", "yes",
                        "--pidfile", pidfile, "--logfile", os.path.join(self.stack.dir, "redis", "redis.log")],
                       check=True, stdout=subprocess.DEVNULL)
        for _ in range(100):
            if self.redis_cli("ping") == "PONG":
                return
            time.sleep(0.05)
        raise RuntimeError("redis did not come back")

    def quota_worker(self, acct, wid, stop, windows, report):
        """One account, strictly sequential: authorize, then usage settling the
        hold; a top-up when refused.  B is the ledger balance, known exactly."""
        c = Client(self)
        rnd = random.Random(self.args.seed * 5000 + wid)
        B = self.accounts[acct]["initial"]
        # spend down to about 0.1 unit, so the balance hovers around zero
        drain = (B - UNIT // 10) // 1000
        if drain > 0:
            j = self.send_usage(c, self.usage_body(f"q-drain-{acct}", acct, drain, 0, 0, model=QMODEL), acct)
            if j:
                B -= j["cost_nanos"]
                if ledger_balance(j["balance"]) != B:
                    self.fail.add(f"quota {acct}: after the drain the ledger says {j['balance']}, expected {B}")
        n = 0
        topups = []  # (time acknowledged, amount) of this worker's recent top-ups
        while not stop.is_set():
            n += 1
            tokens = rnd.randint(5000, 30000)
            a = tokens * 1000
            rid = f"q-{acct}-{n}"
            t0 = time.time()
            st, h, j = c.once("POST", "/v1/authorize", {"request_id": rid, "account_id": acct, "model": QMODEL,
                                                        "input_tokens": tokens, "max_output_tokens": 0})
            t1 = time.time()
            # a decision is excused from being exact if its call overlaps a
            # fault or the 2 s after it
            in_fault = any(s <= t1 and t0 <= (e if e is not None else time.time()) + 2.0
                           for s, e in list(windows))
            topups = [(t, amt) for t, amt in topups if t0 - t < 1.0]
            report["decisions"] += 1

            def stale(seen, what):
                """The mirror showed `seen` where the ledger has B: excused inside
                a fault window only.  A top-up drops the account's mirror before
                it is answered, so outside faults even the newest top-up must
                show (a gap explained by recent top-ups is counted apart, to say
                so, but fails all the same)."""
                missing = B - seen
                if in_fault:
                    report["stale"] += 1
                    return
                acc = 0
                for t, amt in reversed(topups):
                    acc += amt
                    if acc == missing:
                        report["stale_topup"] += 1
                        report["topup_lag"] = max(report["topup_lag"], t1 - t)
                        break
                self.fail.add(f"quota {acct}: {rid} {what}: the mirror shows {seen}, the ledger {B} "
                              f"(recent top-ups {[amt for _, amt in topups]})")

            if st == 200:
                avail = j["available_nanos"]
                if a > B:
                    self.fail.add(f"quota {acct}: {rid} admitted {a} with a ledger balance of {B} (avail {avail})")
                    report["overadmit"] += 1
                elif avail > B - a:
                    self.fail.add(f"quota {acct}: {rid} available_nanos {avail} above the ledger's {B - a}")
                    report["overadmit"] += 1
                elif avail != B - a:
                    stale(avail + a, f"admitted {a}")
                # settle: actual tokens at most the estimate
                used = rnd.randint(tokens // 2, tokens)
                u = self.send_usage(c, self.usage_body(rid, acct, used, 0, 0, model=QMODEL, hold=rid), acct)
                if u:
                    B -= u["cost_nanos"]
                    if ledger_balance(u["balance"]) != B and not u.get("duplicate"):
                        self.fail.add(f"quota {acct}: usage {rid} says balance {u['balance']}, expected {B}")
                report["admitted"] += 1
            elif st == 402:
                report["refused"] += 1
                seen = j["error"].get("available_nanos")
                if a <= B or seen != B:
                    stale(seen if isinstance(seen, int) else -1, f"refused {a}")
                if self.topup(c, acct, UNIT // 20, f"q-top-{acct}-{n}"):
                    B += UNIT // 20
                    topups.append((time.time(), UNIT // 20))
            elif st in (0, 503):
                report["unavailable"] += 1
                if not in_fault:
                    self.fail.add(f"quota {acct}: {rid} got {st} outside a fault window")
                time.sleep(0.02)
            else:
                self.fail.add(f"quota {acct}: {rid} unexpected {st} {j}")
        report["final"][acct] = B
        c.close()

    def scenario_redis(self):
        c = Client(self)
        accts = [self.signup(c, f"q-acct-{i}") for i in range(self.args.quota_accounts)]
        c.close()
        windows = []   # (start, end) of each fault; end None while it lasts
        report = {"decisions": 0, "admitted": 0, "refused": 0, "unavailable": 0, "stale": 0, "stale_topup": 0, "topup_lag": 0.0, "overadmit": 0,
                  "final": {}}
        stop = threading.Event()
        ths = [threading.Thread(target=self.quota_worker, args=(a, i, stop, windows, report), daemon=True)
               for i, a in enumerate(accts)]
        for t in ths:
            t.start()
        phase = self.args.redis_phase
        faults = ["flushall", "restart", "flushall"] if not self.args.short else ["flushall", "restart"]
        recov = []
        for f in faults:
            time.sleep(phase)
            t0 = time.time()
            windows.append([t0, None])
            if f == "flushall":
                self.redis_cli("FLUSHALL")
            else:
                self.restart_redis()
            windows[-1][1] = time.time()
            self.stats.injected += 1
            # how long until an exact decision again, seen from a fresh account
            recov.append((f, self.time_to_exact(windows[-1][1])))
        time.sleep(phase)
        stop.set()
        for t in ths:
            t.join(RETRY_DEADLINE + 30)
        # the ledger agrees with every worker's B, and nobody is in arrears
        for acct, B in report["final"].items():
            paid, promo = self.ledger_balance(acct)
            if paid + promo != B:
                self.fail.add(f"quota {acct}: ledger {paid + promo}, generator {B}")
            if paid < 0:
                self.fail.add(f"quota {acct}: in arrears ({paid}): admitted beyond the balance")
        log(f"redis: {len(faults)} faults ({', '.join(faults)}); {report['decisions']} decisions, "
            f"{report['admitted']} admitted, {report['refused']} refused, {report['unavailable']} unavailable, "
            f"{report['stale']} conservative within 2 s of a fault, {report['stale_topup']} within 1 s of a "
            f"top-up (a top-up missing from the mirror {report['topup_lag'] * 1000:.0f} ms after its answer at most), {report['overadmit']} over-admissions; exact "
            "again after " + ", ".join(f"{f} {t:.2f} s" for f, t in recov))
        for f, t in recov:
            if t > 2.0:
                self.fail.add(f"redis: decisions exact only {t:.2f} s after {f} (limit 2 s)")
        self.mirror_race(self.args.mirror_race_s)

    def mirror_race(self, seconds):
        """Balance mirrors dropped (as a TTL or an eviction would) every 30 ms
        while large usage batches and authorizations hit the same accounts:
        each reload must agree with the ledger, checked by `ledger reconcile`
        right after."""
        c = Client(self)
        accts = [self.signup(c, f"mr-acct-{i}") for i in range(self.args.mirror_race_accounts)]
        for a in accts:
            self.topup(c, a, 1000 * UNIT, f"mr-top-{a}")
        c.close()
        stop = threading.Event()

        def batches(w):
            cl = Client(self)
            rnd = random.Random(self.args.seed * 7000 + w)
            n = 0
            while not stop.is_set():
                n += 1
                acct = rnd.choice(accts)
                bodies = [self.usage_body(f"mr-{w}-{n}-{k}", acct, rnd.randint(1, 5000), 0, rnd.randint(0, 100))
                          for k in range(100)]
                self.send_batch(cl, bodies, acct)
            cl.close()

        def authorizer(w):
            cl = Client(self)
            rnd = random.Random(self.args.seed * 8000 + w)
            n = 0
            while not stop.is_set():
                n += 1
                st, _, j = cl.once("POST", "/v1/authorize", {"request_id": f"mra-{w}-{n}", "account_id":
                                                             rnd.choice(accts), "model": MODEL, "input_tokens": 1,
                                                             "max_output_tokens": 0})
                if st != 200:
                    self.fail.add(f"mirror race: authorize {st} {j}")
            cl.close()

        def dropper():
            while not stop.is_set():
                self.redis_cli("DEL", *[f"{{a:{a}}}:bal" for a in accts])
                time.sleep(0.03)

        ths = [threading.Thread(target=batches, args=(i,), daemon=True) for i in range(6)] + \
              [threading.Thread(target=authorizer, args=(i,), daemon=True) for i in range(3)] + \
              [threading.Thread(target=dropper, daemon=True)]
        for t in ths:
            t.start()
        time.sleep(seconds)
        stop.set()
        for t in ths:
            t.join(RETRY_DEADLINE + 30)
        self.stats.injected += 1
        time.sleep(0.3)
        r = self.env.ledger("reconcile", check=False)
        diffs = [ln for ln in (r.stdout + r.stderr).splitlines() if "differs" in ln]
        log(f"mirror race: {seconds:.0f} s of mirror drops under batches of usage and authorizations; reconcile "
            f"exit {r.returncode}, {len(diffs)} accounts differ")
        if r.returncode != 0:
            self.fail.add("mirror race: the Redis mirror no longer matches the ledger (a mirror load raced a "
                          "committed charge's settle):\n" + "\n".join(diffs[:5]))
            self.env.ledger("reconcile", "--repair", check=False)  # so the final check looks at the rest

    def time_to_exact(self, t_end):
        """Polls authorize for a probe account (balance known from the ledger)
        until the answer is exact; seconds since t_end."""
        c = Client(self, timeout=5)
        acct = sorted(self.accounts)[0]
        i = 0
        while time.time() - t_end < 10:
            i += 1
            paid, promo = self.ledger_balance(acct)
            held = self.redis_held(acct)
            st, _, j = c.once("POST", "/v1/authorize", {"request_id": f"probe-{t_end}-{i}", "account_id": acct,
                                                        "model": QMODEL, "input_tokens": 1, "max_output_tokens": 0})
            if st == 200 and j["available_nanos"] == paid + promo - held - 1000:
                c.close()
                return time.time() - t_end
            time.sleep(0.02)
        c.close()
        return 99.0

    def redis_held(self, acct):
        v = self.redis_cli("HGET", f"{{a:{acct}}}:st", "held")
        return int(v) if v.lstrip("-").isdigit() else 0

    def ledger_balance(self, acct):
        rows = self.env.sql("""SELECT la.type, coalesce(sum(b.balance), 0) FROM ledger_accounts la
                               JOIN ledger_balances b USING (ledger_account_id)
                               WHERE la.account_id = %s GROUP BY la.type""", (acct,))
        d = dict(rows)
        return int(d.get("customer_paid", 0)), int(d.get("customer_promo", 0))

    # ---------------------------------------------------------------- 3. postgresql

    def rss_kb(self):
        try:
            with open(f"/proc/{self.bd.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def scenario_pg(self):
        pid = self.bd.proc.pid
        samples = []
        sampling = threading.Event()

        def sampler():
            while not sampling.is_set():
                samples.append((time.time(), self.rss_kb()))
                time.sleep(0.1)

        sth = threading.Thread(target=sampler, daemon=True)
        sth.start()
        load = self.start_load("pg", usage=6, pair=2, admin=1)
        # a flood: many connections posting usage as fast as they are answered
        flood_stop = threading.Event()
        flood_stop.tag = "pgf"
        flood = [threading.Thread(target=self.worker_usage, args=(100 + i, flood_stop), daemon=True)
                 for i in range(self.args.flood)]
        for t in flood:
            t.start()
        time.sleep(2.0)
        base = max(kb for _, kb in samples[-15:])
        statuses_before = dict(self.stats.by_status)
        self.stack.stop_pg()
        self.stats.injected += 1
        t_down = time.time()
        # while it is down: healthz 200, readyz 503, a probe gets 503 + Retry-After
        time.sleep(1.0)
        c = Client(self, timeout=30)
        st, h, j = c.once("GET", "/healthz")
        if st != 200:
            self.fail.add(f"pg: healthz {st} while PostgreSQL is down")
        st, h, j = c.once("GET", "/readyz")
        if st != 503:
            self.fail.add(f"pg: readyz {st} while PostgreSQL is down")
        probe = self.usage_body("pg-probe", sorted(self.accounts)[0], 1000, 0, 10)
        st, h, j = c.once("POST", "/v1/usage", probe)
        if st != 503 or not h.get("retry-after", "").isdigit() or (j or {}).get("error", {}).get("code") != \
                "unavailable":
            self.fail.add(f"pg: usage while down got {st} {h.get('retry-after')} {j}")
        while time.time() - t_down < self.args.pg_down:
            time.sleep(0.1)
        self.stack.start_pg()
        t_up = time.time()
        during = [kb for t, kb in samples if t_down <= t <= t_up]
        # ready again without a restart
        ready_after = None
        while time.time() - t_up < 30:
            st, _, _ = c.once("GET", "/readyz")
            if st == 200:
                ready_after = time.time() - t_up
                break
            time.sleep(0.1)
        # calls right after /readyz said 200: each should be answered at once
        first_503 = 0
        for i in range(8):
            acct = sorted(self.accounts)[i % 4]
            self.send_usage(c, self.usage_body(f"pg-after-{i}", acct, 100 + i, 0, 1), acct)
            first_503 += self.usage[f"pg-after-{i}"]["retried"]
        st, j, _, _ = c.until_answered("POST", "/v1/usage", probe)
        if st != 200:
            self.fail.add(f"pg: the probe after recovery: {st} {j}")
        else:
            with self.lock:
                self.usage["pg-probe"] = {"expected": expected_cost(*PRICE, 1000, 0, 10), "acked": j["cost_nanos"],
                                          "account": probe["account_id"], "retried": True, "dup": False}
        c.close()
        time.sleep(2.0)
        flood_stop.set()
        self.stop_load(load)
        for t in flood:
            t.join(RETRY_DEADLINE + 30)
        sampling.set()
        sth.join()
        if self.bd.proc.poll() is not None or self.bd.proc.pid != pid:
            self.fail.add("pg: billingd died or was restarted")
        if ready_after is None:
            self.fail.add("pg: /readyz not 200 within 30 s of PostgreSQL's return")
        peak = max(during) if during else 0
        after = [kb for t, kb in samples if t > t_up]
        n503 = self.stats.by_status.get(503, 0) - statuses_before.get(503, 0)
        log(f"pg: down {t_up - t_down:.1f} s; {n503} answers 503 (all with Retry-After: "
            f"{self.stats.no_retry_after == 0}); RSS before {base // 1024} MiB, peak while down "
            f"{peak // 1024} MiB, after {max(after) // 1024 if after else 0} MiB; ready {ready_after or -1:.2f} s "
            f"after PostgreSQL came back, same pid; {first_503} of 8 usage calls right after /readyz=200 "
            "needed a retry")
        if first_503:
            log("pg: WARN billingd said ready but answered 503 (a pool thread's dead connection) before it "
                "reconnected: retry-safe")
        if n503 == 0:
            self.fail.add("pg: the outage produced no 503")
        if peak - base > self.args.rss_slack_mb * 1024:
            self.fail.add(f"pg: RSS grew {(peak - base) // 1024} MiB during the outage (limit "
                          f"{self.args.rss_slack_mb} MiB)")

    # ---------------------------------------------------------------- 5. failover

    def wait_state(self, what, pred, timeout):
        t0 = time.time()
        while time.time() - t0 < timeout:
            try:
                if pred():
                    return time.time() - t0
            except Exception:  # noqa: BLE001  (the monitor may be busy: ask again)
                pass
            time.sleep(0.2)
        self.fail.add(f"failover: {what} not within {timeout} s (states {self.stack.states()})")
        return None

    def scenario_failover(self):
        st = self.stack
        self.failover_first_write = []
        for rnd_i in (1, 2):
            old = st.primary()
            if old is None:
                self.fail.add(f"failover {rnd_i}: no primary ({st.states()})")
                return
            load = self.start_load(f"fo{rnd_i}", usage=3, pair=1, admin=1, batch=1)
            time.sleep(3.0)
            before = dict(self.stats.by_status)
            t_kill = time.time()
            st.kill_node(old)
            self.stats.injected += 1
            # the first write acknowledged after the kill: one probe record, sent
            # with the same request_id until it gets its 200
            c = Client(self, timeout=30)
            acct = sorted(self.accounts)[0]
            probe = self.usage_body(f"fo-probe-{rnd_i}", acct, 1000, 0, 10)
            with self.lock:
                self.usage[probe["request_id"]] = {"expected": expected_cost(*PRICE, 1000, 0, 10), "acked": None,
                                                   "account": acct, "retried": True, "dup": False}
            first = None
            while time.time() - t_kill < RETRY_DEADLINE:
                code, _, j = c.once("POST", "/v1/usage", probe)
                if code == 200:
                    first = time.time() - t_kill
                    with self.lock:
                        self.usage[probe["request_id"]]["acked"] = j["cost_nanos"]
                    break
                if code not in (0, 503):
                    self.fail.add(f"failover {rnd_i}: probe got {code} {j}")
                time.sleep(0.05)
            c.close()
            new = None
            if self.wait_state("a new primary", lambda: st.primary() not in (None, old), 60) is not None:
                new = st.primary()
            time.sleep(2.0)  # load against the new primary
            self.stop_load(load)
            n503 = self.stats.by_status.get(503, 0) - before.get(503, 0)
            n0 = self.stats.by_status.get(0, 0) - before.get(0, 0)
            if first is None:
                self.fail.add(f"failover {rnd_i}: no write acknowledged within {RETRY_DEADLINE:.0f} s of the kill")
            self.failover_first_write.append(first if first is not None else -1.0)
            log(f"failover {rnd_i}: node_{old} (primary) killed, node_{new} promoted; first write acknowledged "
                f"{first or -1:.1f} s after the kill; {n503} answers 503 (Retry-After on all: "
                f"{self.stats.no_retry_after == 0}), {n0} unanswered")
            # the old primary's machine comes back: it rejoins as a standby
            st.restart_node(old)
            back = self.wait_state(f"node_{old} back as a standby", lambda: st.states()[old] ==
                                   ("secondary", "secondary"), 240)
            log(f"failover {rnd_i}: node_{old} rejoined as a standby in {back or -1:.1f} s")
            if back is None:
                return
        if self.bd.proc.poll() is not None:
            self.fail.add("failover: billingd died")

    # ---------------------------------------------------------------- 4. burst

    def burst(self, n, method, path, body, token=GATEWAY_TOKEN):
        barrier = threading.Barrier(n)
        out = [None] * n

        def one(i):
            c = Client(self)
            c.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            c.conn.connect()
            barrier.wait()
            out[i] = c.once(method, path, body, token)
            c.close()

        ths = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in ths:
            t.start()
        for t in ths:
            t.join(120)
        return out

    def scenario_burst(self):
        n = 50
        acct = sorted(self.accounts)[1]
        c = Client(self)
        # usage
        body = self.usage_body("burst-usage-1", acct, 12345, 345, 678)
        with self.lock:
            self.usage["burst-usage-1"] = {"expected": expected_cost(*PRICE, 12345, 345, 678), "acked": None,
                                           "account": acct, "retried": False, "dup": False}
        out = self.burst(n, "POST", "/v1/usage", body)
        ok = [j for st, _, j in out if st == 200]
        fresh = [j for j in ok if j.get("duplicate") is False]
        other = [(st, j) for st, _, j in out if st != 200]
        if len(fresh) != 1 or len(ok) + len([1 for st, _ in other if st == 503]) != n:
            self.fail.add(f"burst usage: {len(fresh)} first answers, {len(ok)} x 200, others {other[:3]}")
        costs = {j["cost_nanos"] for j in ok}
        if len(costs) != 1:
            self.fail.add(f"burst usage: different costs {costs}")
        self.usage["burst-usage-1"]["acked"] = ok[0]["cost_nanos"] if ok else None
        if len(ok) < n:  # retry the 503s: still one charge
            c.until_answered("POST", "/v1/usage", body)
        # authorize: one hold
        az = {"request_id": "burst-az-1", "account_id": acct, "model": MODEL, "input_tokens": 1000,
              "max_output_tokens": 100}
        held_before = self.redis_held(acct)
        out = self.burst(n, "POST", "/v1/authorize", az)
        ok = [j for st, _, j in out if st == 200]
        held = {j["held_nanos"] for j in ok}
        if len(ok) != n or len(held) != 1:
            self.fail.add(f"burst authorize: {len(ok)} x 200, held {held}, others "
                          f"{[(st, j) for st, _, j in out if st != 200][:3]}")
        elif self.redis_held(acct) - held_before != held.pop():
            self.fail.add(f"burst authorize: redis holds {self.redis_held(acct) - held_before} instead of one hold")
        self.send_usage(c, self.usage_body("burst-az-1", acct, 1000, 0, 50, hold="burst-az-1"), acct)
        # signup, grant, top-up
        out = self.burst(n, "POST", "/v1/accounts", {"external_id": "burst-signup-1"})
        ids = {j["account_id"] for st, _, j in out if st in (200, 201)}
        created = sum(1 for st, _, _ in out if st == 201)
        if len(ids) != 1 or created != 1 or any(st not in (200, 201, 503) for st, _, _ in out):
            odd = [(st, j) for st, _, j in out if st not in (200, 201)]
            self.fail.add(f"burst signup: accounts {ids}, {created} x 201, statuses "
                          f"{ {st: sum(1 for x, _, _ in out if x == st) for st, _, _ in out} }, others {odd[:2]}")
        else:
            self.signups["burst-signup-1"] = ids.pop()
        g = {"account_id": acct, "amount_nanos": 777, "reason": "burst", "operator": "faults",
             "idempotency_key": "burst-grant-1"}
        out = self.burst(n, "POST", "/v1/admin/grants", g, token=ADMIN_TOKEN)
        gids = {j["grant_id"] for st, _, j in out if st in (200, 201)}
        if len(gids) != 1 or sum(1 for st, _, _ in out if st == 201) != 1:
            self.fail.add(f"burst grant: grants {gids}, statuses {sorted(st for st, _, _ in out)}")
        else:
            self.grants["burst-grant-1"] = (acct, 777, gids.pop())
        t = {"account_id": acct, "amount_nanos": 999, "payment_ref": "burst-topup-1"}
        out = self.burst(n, "POST", "/v1/topups", t)
        if sum(1 for st, _, _ in out if st == 201) != 1 or any(st not in (200, 201) for st, _, _ in out):
            self.fail.add(f"burst topup: statuses {sorted(st for st, _, _ in out)}")
        self.topups["burst-topup-1"] = (acct, 999)
        c.close()
        log(f"burst: 5 x {n} identical calls at once (usage, authorize, signup, grant, top-up)")

    # ---------------------------------------------------------------- the books

    def check_books(self):
        env = self.env
        # usage: every acknowledged record once, with the answered cost
        rows = env.sql("SELECT request_id, cost_nanos, account_id FROM usage_records")
        stored = {r[0]: (r[1], r[2]) for r in rows}
        jcount = dict(env.sql("SELECT idempotency_key, count(*) FROM journal GROUP BY idempotency_key"))
        lost = dup = acked = 0
        for rid, u in self.usage.items():
            if u["acked"] is None:
                self.fail.add(f"usage {rid}: never acknowledged")
                continue
            acked += 1
            if rid not in stored or jcount.get(f"usage:{rid}", 0) == 0:
                lost += 1
                self.fail.add(f"usage {rid}: acknowledged ({u['acked']}) but not in the ledger")
                continue
            if jcount.get(f"usage:{rid}", 0) > 1:
                dup += 1
                self.fail.add(f"usage {rid}: {jcount[f'usage:{rid}']} journal rows")
            if stored[rid][0] != u["acked"] or stored[rid][1] != u["account"]:
                self.fail.add(f"usage {rid}: ledger {stored[rid]}, answered {u['acked']} for {u['account']}")
        extra = [rid for rid in stored if rid not in self.usage and not rid.startswith("probe-")]
        if extra:
            self.fail.add(f"usage in the ledger that nobody sent: {extra[:5]}")
        # signups, grants, top-ups: once each
        per_ext = dict(env.sql("SELECT external_id, count(*) FROM customers GROUP BY external_id"))
        for ext, acct in self.signups.items():
            acked += 1
            if per_ext.get(ext, 0) == 0:
                lost += 1
                self.fail.add(f"signup {ext}: not in customers")
            elif per_ext[ext] > 1:
                dup += 1
        for key, (acct, amount, gid) in self.grants.items():
            acked += 1
            n = jcount.get(f"grant:{key}", 0)
            if n == 0:
                lost += 1
                self.fail.add(f"grant {key}: not in the journal")
            elif n > 1:
                dup += 1
        for ref, (acct, amount) in self.topups.items():
            acked += 1
            n = jcount.get(f"topup:{ref}", 0)
            if n == 0:
                lost += 1
                self.fail.add(f"topup {ref}: not in the journal")
            elif n > 1:
                dup += 1
        gcount = env.one("SELECT count(*) FROM grants WHERE kind = 'admin'")
        if gcount != len(self.grants):
            dup += max(0, gcount - len(self.grants))
            self.fail.add(f"{gcount} admin grants in the ledger, {len(self.grants)} sent")
        # every account's balance is what the generator expects
        delta = {}
        for ac, amount in self.topups.values():
            delta[ac] = delta.get(ac, 0) + amount
        for ac, amount, _ in self.grants.values():
            delta[ac] = delta.get(ac, 0) + amount
        for u in self.usage.values():
            delta[u["account"]] = delta.get(u["account"], 0) - (u["acked"] or 0)
        for acct, a in self.accounts.items():
            exp = a["initial"] + delta.get(acct, 0)
            paid, promo = self.ledger_balance(acct)
            if paid + promo != exp:
                self.fail.add(f"account {acct}: ledger {paid + promo} (paid {paid}, promo {promo}), expected {exp}")
        rev = env.one("""SELECT coalesce(sum(p.amount), 0) FROM postings p JOIN journal j USING (txn_id)
                         WHERE j.kind = 'usage' AND p.ledger_account_id = 1""")
        want = sum(stored[rid][0] for rid in stored)
        if rev != want:
            self.fail.add(f"revenue from usage {rev}, usage records say {want}")
        # the ledger's own checks
        tb = env.ledger("trial-balance", "--json", check=False)
        try:
            t = json.loads(tb.stdout)
            balanced = tb.returncode == 0 and t["balanced"] and t["total_debits_nanos"] == t["total_credits_nanos"]
        except (ValueError, KeyError):
            balanced = False
        if not balanced:
            self.fail.add(f"trial-balance: exit {tb.returncode}\n{tb.stdout}{tb.stderr}")
        mism = env.sql("SELECT * FROM ledger_balance_mismatches()")
        if mism:
            self.fail.add(f"ledger_balance_mismatches(): {mism[:5]}")
        v = env.ledger("verify", check=False)
        self.verify_ok = v.returncode == 0 and balanced
        if v.returncode != 0:
            self.fail.add(f"ledger verify: exit {v.returncode}\n{v.stdout}{v.stderr}")
        rec = "skipped (no such command yet)"
        helptext = env.ledger("--help", check=False)
        if "reconcile" in helptext.stdout + helptext.stderr:
            r = env.ledger("reconcile", check=False)
            rec = f"exit {r.returncode}"
            if r.returncode != 0:
                self.fail.add(f"ledger reconcile: exit {r.returncode}\n{r.stdout}{r.stderr}")
        log(f"books: trial balance {'balanced' if balanced else 'NOT balanced'}, verify exit {v.returncode}, "
            f"reconcile {rec}, {len(stored)} usage records")
        return acked, lost, dup

    # ---------------------------------------------------------------- life cycle

    def teardown(self):
        if self.bd and self.bd.proc and self.bd.proc.poll() is None:
            self.bd.stop()
        if self.stack and isinstance(self.stack, conftest.HAStack):
            self.stack.stop()
        elif self.stack:
            # a stopped PostgreSQL (outage scenario interrupted) is started again so stack.sh can stop it
            try:
                if not os.path.exists(os.path.join(self.stack.pg_home, "data", "postmaster.pid")) and \
                        getattr(self.stack, "_pg_opts", None):
                    self.stack.start_pg()
            except Exception as e:  # noqa: BLE001
                log(f"could not restart PostgreSQL for the stop: {e}")
            self.stack.stop()
        if self.tmp and not self.args.keep and not self.fail:
            shutil.rmtree(self.tmp, ignore_errors=True)
        elif self.tmp:
            log(f"kept {self.tmp} (billingd log: {self.bd.log_path if self.bd else '-'})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--short", action="store_true", help="the variant of `make test` (under 2 minutes)")
    ap.add_argument("--seed", type=int, default=int(os.environ.get("FAULTS_SEED", "0")) or int(time.time()) % 100000)
    ap.add_argument("--kills", type=int, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--only", default="kill,redis,pg,burst", help="comma-separated scenarios")
    args = ap.parse_args()
    args.kills = args.kills or (10 if args.short else 25)
    args.redis_phase = 2.5 if args.short else 4.0
    args.redis_down = 1.0
    args.quota_accounts = 6
    args.mirror_race_s = 8.0 if args.short else 15.0
    args.mirror_race_accounts = 1
    args.pg_down = 10.0
    args.flood = 16 if args.short else 32
    args.rss_slack_mb = 256
    random.seed(args.seed)
    log(f"faults: seed {args.seed} ({'short' if args.short else 'full'}); reproduce with FAULTS_SEED={args.seed}")
    run = Run(args)
    t_start = time.time()

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    acked = lost = dup = 0
    try:
        run.setup()
        only = set(args.only.split(","))
        if "failover" in only and "pg" in only:
            raise SystemExit("faults: failover runs on its own stack: not with pg")
        for name in ("kill", "redis", "pg", "burst", "failover"):
            if name in only:
                t0 = time.time()
                getattr(run, f"scenario_{name}")()
                log(f"{name}: {time.time() - t0:.1f} s")
        acked, lost, dup = run.check_books()
    except KeyboardInterrupt:
        run.fail.add("interrupted")
    except Exception as e:  # noqa: BLE001
        import traceback
        traceback.print_exc()
        run.fail.add(f"driver error: {e!r}")
    finally:
        if run.fail and run.bd:
            sys.stdout.write("---- billingd log (tail) ----\n" + run.bd.logs()[-6000:] + "\n")
        run.teardown()
    log(f"statuses: {dict(sorted(run.stats.by_status.items()))}; {time.time() - t_start:.0f} s")
    print(f"faults: injected={run.stats.injected} requests={run.stats.requests} acknowledged={acked} "
          f"lost={lost} duplicated={dup}")
    if getattr(run, "failover_first_write", None) is not None:
        fw = ",".join(f"{t:.1f}" for t in run.failover_first_write)
        print(f"failover: rounds={len(run.failover_first_write)} first_write_after_kill_s={fw} "
              f"acknowledged={acked} lost={lost} duplicated={dup} verify={'ok' if run.verify_ok else 'FAILED'}")
    if run.fail:
        print(f"faults: FAILED ({len(run.fail.items)} failures; first: {run.fail.items[0]})")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
