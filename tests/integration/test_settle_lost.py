"""A settle lost after a good load-generation read.  Two instances share one
Redis (one id).  A's writer reads every charged account's lgen from it,
COMMITs and names the Redis in the batch's NOTIFY ("I settle into the mirror
you use"), then A's path to Redis goes down before the settle: the settle
never lands.  B, which reaches the same Redis directly, kept the mirror on
the strength of that NOTIFY, and A cannot drop it while its own path is down.
A announces such an account again through PostgreSQL, naming no Redis, so B
drops it at once; before, B decided on a mirror the whole charge above the
ledger for as long as A's path stayed down (here 6 s; in production, the
outage's length, up to the mirror's lifetime)."""
import functools
import subprocess
import time

import pytest

from conftest import (
    Billingd, CLUSTER, UNIT, free_port, load_generation, new_account, post_authorize, post_usage, set_price,
    wait_prices)

M = "sl-model"

# A Redis proxy that, once armed (SIGUSR1), lets a writer's load-generation
# read (an HGET of lgen) through with its answer, then drops every
# connection and refuses new ones for DOWN seconds (argv[3]).
REDIS_CUT_PROXY = r"""
import signal, socket, sys, threading, time
up, down_s = int(sys.argv[2]), float(sys.argv[3])
armed = threading.Event()
cut = threading.Event()
signal.signal(signal.SIGUSR1, lambda *a: armed.set())
lock = threading.Lock()
socks = []
def close(*ss):
    for s in ss:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
def pair(c, u):
    trigger = threading.Event()
    def down():
        try:
            while True:
                d = u.recv(65536)
                if not d:
                    break
                c.sendall(d)
                if trigger.is_set():
                    cut.set()
                    with lock:
                        close(*socks)
                    print("cut", flush=True)
                    break
        except OSError:
            pass
        close(c, u)
    threading.Thread(target=down, daemon=True).start()
    try:
        while True:
            d = c.recv(65536)
            if not d:
                break
            if armed.is_set() and b"\r\nlgen\r\n" in d:
                armed.clear()
                trigger.set()
            u.sendall(d)
    except OSError:
        pass
    close(c, u)
def listen():
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", int(sys.argv[1])))
    ls.listen(64)
    ls.settimeout(0.05)
    return ls
ls = listen()
print("ready", flush=True)
while True:
    if cut.is_set():
        ls.close()
        time.sleep(down_s)
        cut.clear()
        ls = listen()
        print("back", flush=True)
    try:
        c, _ = ls.accept()
    except socket.timeout:
        continue
    c.settimeout(None)
    try:
        u = socket.create_connection(("127.0.0.1", up))
    except OSError:
        c.close()
        continue
    with lock:
        socks.extend([c, u])
    threading.Thread(target=pair, args=(c, u), daemon=True).start()
"""


authorize = functools.partial(post_authorize, model=M)


usage = functools.partial(post_usage, model=M)


@pytest.mark.skipif(CLUSTER, reason="one proxy in front of one Redis (a cluster's nodes name their own ports)")
def test_a_settle_lost_after_the_lgen_read_does_not_leave_the_other_instance_a_stale_mirror(env):
    set_price(env, M, UNIT, UNIT, 0, effective="2026-01-01T00:00:00Z")
    pport = free_port()
    proxy = subprocess.Popen(["/usr/bin/python3", "-c", REDIS_CUT_PROXY, str(pport), str(env.stack.redis_port), "6"],
                             stdout=subprocess.PIPE, text=True)
    a = b = None
    try:
        assert proxy.stdout.readline().strip() == "ready"
        a = Billingd(env, {"instance_id": "sl-a", "redis": f"127.0.0.1:{pport}", "writer_threads": "1"})
        b = Billingd(env, {"instance_id": "sl-b"})
        wait_prices()
        acct = new_account(env, "sl-1")
        # A's writer learns the Redis's id and settles 1 unit: 13 left
        r = usage(a, acct, f"sl-warm-{acct}", 1_000_000)
        assert r.status_code == 200 and r.json()["cost_nanos"] == UNIT, r.text
        # B loads the mirror and holds 1 unit: 12 free
        assert authorize(b, acct, f"sl-hold-{acct}", 1_000_000).status_code == 200
        gen = load_generation(env, acct)
        assert gen not in ("", "-")
        proxy.send_signal(10)  # SIGUSR1: arm
        # A charges 10 units without a hold; its lgen read works, its settle cannot land
        r = usage(a, acct, f"sl-use-{acct}", 10_000_000)
        assert r.status_code == 200, r.text
        assert proxy.stdout.readline().strip() == "cut"
        t_cut = time.time()
        assert env.sql("SELECT count(*) FROM usage_records WHERE request_id = %s", (f"sl-use-{acct}",))[0][0] == 1
        # by the ledger: 3 units, 1 held: 2 free.  B must learn of the charge
        # within the NOTIFY's delay (it polls every 200 ms), not when A's path is back
        deadline = t_cut + 2
        while load_generation(env, acct) == gen and time.time() < deadline:
            time.sleep(0.05)
        r = authorize(b, acct, f"sl-big-{acct}", 2_500_000)
        assert time.time() < t_cut + 5, "too slow to tell: A's path comes back after 6 s"
        assert r.status_code == 402, f"B admitted above the ledger while A's path to Redis was down: {r.text}"
        assert authorize(b, acct, f"sl-fit-{acct}", 2_000_000).status_code == 200
        assert proxy.stdout.readline().strip() == "back"
    finally:
        for x in (a, b):
            if x:
                x.stop()
        proxy.kill()
        proxy.wait(timeout=10)
        env.redis_flushall()
    env.assert_books_sound()
