"""Two billingd instances on one PostgreSQL and one Redis share each account's
balance mirror.  A usage commit on one instance is settled into that mirror
by the instance itself; the other, told by NOTIFY billing_balance 'ACCOUNT
WRITER REDIS_ID' that the writer settles into the Redis it uses too, keeps
the mirror instead of dropping it (a drop made the next decision of the
account, on every instance, load it again from PostgreSQL).  A change
announced without that Redis's id (the CLI, another Redis) still drops it."""
import json
import os
import select
import signal
import subprocess
import threading
import time

import psycopg2
import pytest

from conftest import CLUSTER, Billingd, UNIT, free_port, now_rfc3339, set_price, wait_gone, wait_prices

M = "sm-model"


def new_account(env, name):
    return json.loads(env.admin("account", "create", "--external-id", name, "--json").stdout)["account_id"]


def authorize(bd, acct, rid, tokens):
    return bd.post("/v1/authorize", {"request_id": rid, "account_id": acct, "model": M,
                                     "input_tokens": tokens, "max_output_tokens": 0})


def hold(bd, acct, rid, tokens):
    """An authorize that must be admitted; on failure the answer and the
    instance's last log lines say why."""
    r = authorize(bd, acct, rid, tokens)
    assert r.status_code == 200, f"{r.status_code} {r.text}\n{bd.logs()[-4000:]}"


def usage(bd, acct, rid, tokens):
    r = bd.post("/v1/usage", {"request_id": rid, "account_id": acct, "model": M, "input_tokens": tokens,
                              "cached_input_tokens": 0, "output_tokens": 0, "started_at": now_rfc3339()})
    assert r.status_code == 200, r.text
    return r.json()


def load_generation(env, acct):
    """The mirror's load generation (bal.lg), "" when there is no mirror."""
    return env.redis_cli("HGET", f"{{a:{acct}}}:bal", "lg")


def test_usage_on_one_instance_keeps_the_mirror_the_other_uses(env):
    set_price(env, M, UNIT, UNIT, 0, effective="2026-01-01T00:00:00Z")
    a = Billingd(env, {"instance_id": "sm-a"})
    b = Billingd(env, {"instance_id": "sm-b"})
    lc = psycopg2.connect(env.pg)
    lc.autocommit = True
    lc.cursor().execute("LISTEN billing_balance")
    try:
        wait_prices()
        accts = [new_account(env, f"sm-{i}") for i in range(4)]
        rid = env.redis_cli("GET", "billing:redis_id")
        assert len(rid) == 32, rid
        gens = {}
        for acct in accts:
            # B loads the mirror (14 units of signup credit) and holds 1 unit
            hold(b, acct, f"sm-hold-{acct}", 1_000_000)
            gens[acct] = load_generation(env, acct)
            assert gens[acct] not in ("", "-"), gens[acct]
        for acct in accts:
            # A charges 10 units without a hold: 4 left, 1 of them held
            assert usage(a, acct, f"sm-use-{acct}", 10_000_000)["cost_nanos"] == 10 * UNIT
        # A's writer announces each account with the Redis's id
        seen = {}
        deadline = time.time() + 10
        while len(seen) < len(accts) and time.time() < deadline:
            if select.select([lc], [], [], 0.2)[0]:
                lc.poll()
                while lc.notifies:
                    n = lc.notifies.pop(0)
                    f = n.payload.split(" ")
                    if f[1].startswith("sm-a") and int(f[0]) in accts:
                        seen[int(f[0])] = f
        assert sorted(seen) == sorted(accts), seen
        assert all(len(f) == 3 and f[2] == rid for f in seen.values()), seen
        time.sleep(1.0)  # B has had the notifications (it polls every 200 ms)
        for acct in accts:
            # the mirror B loaded is still there, settled by A: not reloaded
            assert load_generation(env, acct) == gens[acct], f"account {acct}: mirror dropped or reloaded"
            # and B's decisions see the charge: 3 units free, 3.5 refused, 3 admitted
            r = authorize(b, acct, f"sm-big-{acct}", 3_500_000)
            assert r.status_code == 402, r.text
            assert authorize(b, acct, f"sm-fit-{acct}", 3_000_000).status_code == 200
            assert load_generation(env, acct) == gens[acct]
    finally:
        a.stop()
        b.stop()
        lc.close()
        env.redis_flushall()
    env.assert_books_sound()


def test_a_change_announced_without_this_redis_drops_the_mirror(env):
    """Kept: a writer naming this Redis, and this instance's own writers
    (sm-c, sm-c.tN).  Dropped: a writer naming another Redis, or none (the
    CLI), and another instance whose id merely starts with "sm-c.t"
    (sm-c.tokyo: it was taken for one of ours)."""
    set_price(env, M, UNIT, UNIT, 0, effective="2026-01-01T00:00:00Z")
    b = Billingd(env, {"instance_id": "sm-c"})
    try:
        wait_prices()
        acct = [new_account(env, f"sm-x-{i}") for i in range(6)]
        for x in acct:
            assert authorize(b, x, f"sm-x-hold-{x}", 1_000_000).status_code == 200
            assert load_generation(env, x) not in ("", "-")
        rid = env.redis_cli("GET", "billing:redis_id")
        other = "0" * 32 if rid != "0" * 32 else "1" * 32
        # a writer on this Redis or our own: kept; one naming another Redis, or none: dropped
        announced = [f"elsewhere.t0 {rid}", f"elsewhere.t0 {other}", "cli", "sm-c.t1", "sm-c.tokyo", "sm-c.t"]
        for x, writer in zip(acct, announced):
            env.sql("SELECT pg_notify('billing_balance', %s)", (f"{x} {writer}",))
        gone = [acct[1], acct[2], acct[4], acct[5]]
        deadline = time.time() + 5
        while time.time() < deadline and any(load_generation(env, x) for x in gone):
            time.sleep(0.05)
        assert load_generation(env, acct[1]) == "", "a writer on another Redis: mirror kept"
        assert load_generation(env, acct[2]) == "", "the CLI's change: mirror kept"
        assert load_generation(env, acct[4]) == "", "instance sm-c.tokyo's change: mirror kept"
        assert load_generation(env, acct[5]) == "", "writer sm-c.t (no number): mirror kept"
        assert load_generation(env, acct[0]) not in ("", "-"), "a writer on this Redis: mirror dropped"
        assert load_generation(env, acct[3]) not in ("", "-"), "our own writer sm-c.t1: mirror dropped"
    finally:
        b.stop()
        env.redis_flushall()


class Unready(Billingd):
    """Started without waiting for /readyz (which needs Redis)."""

    def start(self, wait=True):
        super().start(wait=False)


def test_instances_started_while_redis_was_down_learn_its_id(env, tmp_path):
    """Both instances start, and their listeners' first resync runs, before
    their Redis does: neither can read the Redis's id then.  The writer reads
    it at its first batch after, the other instance when its connection
    comes up; then the mirror is kept."""
    set_price(env, M, UNIT, UNIT, 0, effective="2026-01-01T00:00:00Z")
    port = free_port()
    pidfile = str(tmp_path / "redis.pid")

    def cli(*args):
        return subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port)] + [str(x) for x in args],
                              capture_output=True, text=True, check=True, timeout=30).stdout.strip()

    a = b = None
    try:
        a, b = (Unready(env, {"instance_id": i, "redis": f"127.0.0.1:{port}"}) for i in ("sm-la", "sm-lb"))
        deadline = time.time() + 30
        while not all("redis unreachable at start" in x.logs() for x in (a, b)):
            assert time.time() < deadline, a.logs() + b.logs()
            time.sleep(0.1)
        time.sleep(3)  # the listeners' first resync (LISTEN, then a drop of every mirror) fails too
        subprocess.run(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
                        "--dir", str(tmp_path), "--daemonize", "yes", "--pidfile", pidfile,
                        "--logfile", str(tmp_path / "redis.log")], check=True)
        a.wait_ready()
        b.wait_ready()
        wait_prices()
        acct = new_account(env, "sm-late")
        hold(b, acct, f"sm-late-hold-{acct}", 1_000_000)
        gen = cli("HGET", f"{{a:{acct}}}:bal", "lg")
        assert gen not in ("", "-")
        assert usage(a, acct, f"sm-late-use-{acct}", 10_000_000)["cost_nanos"] == 10 * UNIT
        time.sleep(1.5)  # the NOTIFY has reached B
        assert cli("HGET", f"{{a:{acct}}}:bal", "lg") == gen, "mirror dropped: an instance never learnt the id"
        assert authorize(b, acct, f"sm-late-big-{acct}", 3_500_000).status_code == 402
        assert authorize(b, acct, f"sm-late-fit-{acct}", 3_000_000).status_code == 200
    finally:
        for x in (a, b):
            if x:
                x.stop()
        if os.path.exists(pidfile):
            pid = int(open(pidfile).read())
            os.kill(pid, 15)
            wait_gone(pid, 5.0)


PROXY = r"""
import socket, sys, threading
up = int(sys.argv[2])
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", int(sys.argv[1])))
ls.listen(64)
def pump(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
    except OSError:
        pass
    for s in (a, b):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
print("ready", flush=True)
while True:
    c, _ = ls.accept()
    u = socket.create_connection(("127.0.0.1", up))
    threading.Thread(target=pump, args=(c, u), daemon=True).start()
    threading.Thread(target=pump, args=(u, c), daemon=True).start()
"""


@pytest.mark.skipif(CLUSTER, reason="one proxy in front of one Redis (a cluster's nodes name their own ports)")
def test_a_writer_cut_off_from_redis_does_not_name_it(env):
    """B reaches the Redis through a proxy, A directly: one Redis, one id.
    The proxy stops (SIGSTOP: B's path to Redis hangs, A's works) and B
    commits a charge without a hold.  B's settle cannot land in the mirror
    A decides on, so B's NOTIFY must not name the Redis (which tells A the
    settle will update that mirror): A drops the mirror and its next
    decision sees the charge.  Named anyway, A kept a mirror 10 units above
    the ledger for as long as B's path was down."""
    set_price(env, M, UNIT, UNIT, 0, effective="2026-01-01T00:00:00Z")
    pport = free_port()
    proxy = subprocess.Popen(["/usr/bin/python3", "-c", PROXY, str(pport), str(env.stack.redis_port)],
                             stdout=subprocess.PIPE, text=True)
    a = b = None
    stopped = False
    try:
        assert proxy.stdout.readline().strip() == "ready"
        a = Billingd(env, {"instance_id": "sm-pa"})
        b = Billingd(env, {"instance_id": "sm-pb", "redis": f"127.0.0.1:{pport}"})
        wait_prices()
        acct = new_account(env, "sm-cut")
        # B's writer of this account learns the id and settles 1 unit: 13 left
        assert usage(b, acct, f"sm-cut-warm-{acct}", 1_000_000)["cost_nanos"] == UNIT
        # A loads the mirror and holds 1 unit: 12 free
        hold(a, acct, f"sm-cut-hold-{acct}", 1_000_000)
        assert load_generation(env, acct) not in ("", "-")
        os.kill(proxy.pid, signal.SIGSTOP)
        stopped = True
        # B charges 10 units (its answer waits for Redis: not awaited)
        t = threading.Thread(target=lambda: _quiet_usage(b, acct, f"sm-cut-use-{acct}", 10_000_000), daemon=True)
        t.start()
        deadline = time.time() + 20
        while env.sql("SELECT count(*) FROM usage_records WHERE request_id = %s",
                      (f"sm-cut-use-{acct}",))[0][0] == 0:
            assert time.time() < deadline, b.logs()
            time.sleep(0.05)
        # the NOTIFY reaches A (it polls every 200 ms): a drop shows within 5 s
        deadline = time.time() + 5
        while load_generation(env, acct) != "" and time.time() < deadline:
            time.sleep(0.05)
        # the ledger: 3 units, 1 held: 2 free; 2.5 must be refused
        r = authorize(a, acct, f"sm-cut-big-{acct}", 2_500_000)
        assert r.status_code == 402, f"admitted above the ledger: {r.text}"
        assert authorize(a, acct, f"sm-cut-fit-{acct}", 2_000_000).status_code == 200
    finally:
        if stopped:
            os.kill(proxy.pid, signal.SIGCONT)
        for x in (a, b):
            if x:
                x.stop()
        proxy.kill()
        proxy.wait(timeout=10)
        env.redis_flushall()
    env.assert_books_sound()


def _quiet_usage(bd, acct, rid, tokens):
    try:
        bd.post("/v1/usage", {"request_id": rid, "account_id": acct, "model": M, "input_tokens": tokens,
                              "cached_input_tokens": 0, "output_tokens": 0, "started_at": now_rfc3339()})
    except Exception:  # noqa: BLE001 (its answer is not what the test is about)
        pass



PG_PROXY = r"""
import signal, socket, sys, threading, time
up = int(sys.argv[2])
armed = threading.Event()
signal.signal(signal.SIGUSR1, lambda *a: armed.set())
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", int(sys.argv[1])))
ls.listen(64)
def close(*ss):
    for s in ss:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
def pair(c, u):
    cut = threading.Event()
    def down():
        try:
            while True:
                d = u.recv(65536)
                if not d:
                    break
                if not cut.is_set():
                    c.sendall(d)
        except OSError:
            pass
        close(c, u)
    threading.Thread(target=down, daemon=True).start()
    try:
        while True:
            d = c.recv(65536)
            if not d:
                break
            u.sendall(d)
            if armed.is_set() and b"COMMIT\x00" in d:
                # the server runs the COMMIT (and what follows it); the
                # client never hears of it: its connection is lost
                armed.clear()
                cut.set()
                print("cut", flush=True)
                time.sleep(0.5)
                close(c, u)
                break
    except OSError:
        pass
    close(c, u)
print("ready", flush=True)
while True:
    c, _ = ls.accept()
    u = socket.create_connection(("127.0.0.1", up))
    threading.Thread(target=pair, args=(c, u), daemon=True).start()
"""


def a_refuses_above_the_ledger(env, a, acct, gen, prefix):
    """The account: 3 units by the ledger, 1 held (2 free); A's mirror was
    gen.  Once it is dropped (up to 5 s), A refuses 2.5 units and admits 2."""
    deadline = time.time() + 5
    while load_generation(env, acct) == gen and time.time() < deadline:
        time.sleep(0.05)
    r = authorize(a, acct, f"{prefix}-big-{acct}", 2_500_000)
    assert r.status_code == 402, f"admitted above the ledger: {r.text}"
    assert authorize(a, acct, f"{prefix}-fit-{acct}", 2_000_000).status_code == 200


def stop_all(env, proxy, *instances):
    for x in instances:
        if x:
            x.stop()
    proxy.kill()
    proxy.wait(timeout=10)
    env.redis_flushall()


def test_a_commit_whose_answer_was_lost_drops_the_mirror(env):
    """B's writer loses its PostgreSQL connection after sending a batch's
    COMMIT and NOTIFY, which the server runs: the records are committed and
    A is told (with this Redis's id) that B settles them into the mirror.
    B answers 503 (commit unknown) and settles nothing, so B drops the
    account's mirror itself (server.c, usage_single_done); A's next decision
    sees the charge.  (Passes on main too: a guard for the shared mirror.)"""
    set_price(env, M, UNIT, UNIT, 0, effective="2026-01-01T00:00:00Z")
    pport = free_port()
    proxy = subprocess.Popen(["/usr/bin/python3", "-c", PG_PROXY, str(pport), str(env.stack.pgport)],
                             stdout=subprocess.PIPE, text=True)
    a = b = None
    try:
        assert proxy.stdout.readline().strip() == "ready"
        a = Billingd(env, {"instance_id": "sm-qa"})
        b = Billingd(env, {"instance_id": "sm-qb", "pg": env.pg.replace(f"port={env.stack.pgport}", f"port={pport}"),
                           "writer_threads": "1"})
        wait_prices()
        acct = new_account(env, "sm-lost")
        # B's writer learns the id and settles 1 unit: 13 left
        assert usage(b, acct, f"sm-lost-warm-{acct}", 1_000_000)["cost_nanos"] == UNIT
        # A loads the mirror and holds 1 unit: 12 free
        hold(a, acct, f"sm-lost-hold-{acct}", 1_000_000)
        gen = load_generation(env, acct)
        assert gen not in ("", "-")
        os.kill(proxy.pid, signal.SIGUSR1)
        r = b.post("/v1/usage", {"request_id": f"sm-lost-use-{acct}", "account_id": acct, "model": M,
                                 "input_tokens": 10_000_000, "cached_input_tokens": 0, "output_tokens": 0,
                                 "started_at": now_rfc3339()})
        assert proxy.stdout.readline().strip() == "cut"
        assert r.status_code == 503, r.text
        assert env.sql("SELECT count(*) FROM usage_records WHERE request_id = %s",
                       (f"sm-lost-use-{acct}",))[0][0] == 1, "the COMMIT did not run"
        a_refuses_above_the_ledger(env, a, acct, gen, "sm-lost")
    finally:
        stop_all(env, proxy, a, b)
    env.assert_books_sound()


def test_a_stream_entry_whose_commit_answer_was_lost_drops_the_mirror(env):
    """The same loss for a record of the usage stream: B's consumer gets 503
    (commit unknown) and leaves the entry pending; read again it is a replay,
    which applies nothing and, without a hold, does not touch the mirror.  So
    B drops the account's mirror on the 503, as the HTTP path does; without
    that, the mirror (B's and A's: one Redis) stayed 10 units above the
    ledger until it expired."""
    set_price(env, M, UNIT, UNIT, 0, effective="2026-01-01T00:00:00Z")
    key = "usage:sm-lost"
    port = env.redis_port_for(key)
    pport = free_port()
    proxy = subprocess.Popen(["/usr/bin/python3", "-c", PG_PROXY, str(pport), str(env.stack.pgport)],
                             stdout=subprocess.PIPE, text=True)
    a = b = None

    def xadd(rid, tokens):
        body = {"request_id": rid, "account_id": acct, "model": M, "input_tokens": tokens,
                "cached_input_tokens": 0, "output_tokens": 0, "started_at": now_rfc3339()}
        subprocess.run(["redis-cli", "-p", str(port), "XADD", key, "*", "body", json.dumps(body)],
                       check=True, capture_output=True, timeout=30)

    def recorded(rid):
        deadline = time.time() + 20
        while env.sql("SELECT count(*) FROM usage_records WHERE request_id = %s", (rid,))[0][0] == 0:
            assert time.time() < deadline, b.logs()
            time.sleep(0.05)

    try:
        assert proxy.stdout.readline().strip() == "ready"
        a = Billingd(env, {"instance_id": "sm-ra"})
        b = Billingd(env, {"instance_id": "sm-rb", "usage_stream": key, "writer_threads": "1",
                           "pg": env.pg.replace(f"port={env.stack.pgport}", f"port={pport}")})
        wait_prices()
        acct = new_account(env, "sm-lost-stream")
        # B's writer learns the id and charges 1 unit: 13 left
        xadd(f"sm-ls-warm-{acct}", 1_000_000)
        recorded(f"sm-ls-warm-{acct}")
        # A loads the mirror and holds 1 unit: 12 free
        hold(a, acct, f"sm-ls-hold-{acct}", 1_000_000)
        gen = load_generation(env, acct)
        assert gen not in ("", "-")
        os.kill(proxy.pid, signal.SIGUSR1)
        xadd(f"sm-ls-use-{acct}", 10_000_000)
        assert proxy.stdout.readline().strip() == "cut"
        recorded(f"sm-ls-use-{acct}")
        a_refuses_above_the_ledger(env, a, acct, gen, "sm-ls")
    finally:
        stop_all(env, proxy, a, b)
    env.assert_books_sound()
