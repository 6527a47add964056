"""The Redis behind an address is replaced by another server (a new one with
a new id, e.g. a restart without persistence behind a proxy or a moved DNS
name) while another instance still uses the old one.  Instance A reaches
Redis through a proxy that is switched from R1 to R2; instance B uses R1
directly.  A's writers had read R1's id (billing:redis_id) at their first
batch and never again, so after the switch they named R1 in the NOTIFY of
charges they settle into R2: B kept its R1 mirror, the whole charge above
the ledger.  And A's own instance kept the id it read at start: a charge of
B's writer (naming R1, settled into R1) left A's R2 mirror as it was.  Both
read the id again on every new connection, so each names (and compares)
the server its connection reaches."""
import functools
import os
import subprocess
import time

import pytest

from conftest import (
    Billingd, CLUSTER, UNIT, free_port, new_account, post_authorize, post_usage, set_price, wait_gone,
    wait_prices)

M = "rr-model"

# forwards to the port in argv[2]; SIGUSR1 switches to argv[3] and drops every connection
SWITCH_PROXY = r"""
import signal, socket, sys, threading
ports = [int(sys.argv[2]), int(sys.argv[3])]
cur = [0]
lock = threading.Lock()
socks = []
def close(*ss):
    for s in ss:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
def switch(*a):
    cur[0] = 1
    with lock:
        close(*socks)
        socks.clear()
    print("switched", flush=True)
signal.signal(signal.SIGUSR1, switch)
def pump(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
    except OSError:
        pass
    close(a, b)
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", int(sys.argv[1])))
ls.listen(64)
print("ready", flush=True)
while True:
    try:
        c, _ = ls.accept()
    except InterruptedError:
        continue
    try:
        u = socket.create_connection(("127.0.0.1", ports[cur[0]]))
    except OSError:
        c.close()
        continue
    with lock:
        socks.extend([c, u])
    threading.Thread(target=pump, args=(c, u), daemon=True).start()
    threading.Thread(target=pump, args=(u, c), daemon=True).start()
"""


authorize = functools.partial(post_authorize, model=M)


def usage(bd, acct, rid, tokens):
    r = post_usage(bd, acct, rid, tokens, M)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.skipif(CLUSTER, reason="one proxy in front of one Redis (a cluster's nodes name their own ports)")
def test_after_the_redis_behind_an_address_is_replaced_no_instance_keeps_a_mirror_it_should_drop(env, tmp_path):
    set_price(env, M, UNIT, UNIT, 0, effective="2026-01-01T00:00:00Z")
    r1 = env.stack.redis_port
    r2 = free_port()
    pidfile = str(tmp_path / "r2.pid")
    subprocess.run(["redis-server", "--bind", "127.0.0.1", "--port", str(r2), "--save", "", "--appendonly", "no",
                    "--dir", str(tmp_path), "--daemonize", "yes", "--pidfile", pidfile,
                    "--logfile", str(tmp_path / "r2.log")], check=True)

    def cli(port, *args):
        return subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port)] + [str(x) for x in args],
                              capture_output=True, text=True, check=True, timeout=30).stdout.strip()

    def lg(port, acct):
        return cli(port, "HGET", f"{{a:{acct}}}:bal", "lg")

    pport = free_port()
    proxy = subprocess.Popen(["/usr/bin/python3", "-c", SWITCH_PROXY, str(pport), str(r1), str(r2)],
                             stdout=subprocess.PIPE, text=True)
    a = b = None
    try:
        assert proxy.stdout.readline().strip() == "ready"
        deadline = time.time() + 10
        while cli(r2, "PING") != "PONG":
            assert time.time() < deadline
            time.sleep(0.05)
        a = Billingd(env, {"instance_id": "rr-a", "redis": f"127.0.0.1:{pport}", "writer_threads": "1"})
        b = Billingd(env, {"instance_id": "rr-b", "writer_threads": "1"})
        wait_prices()
        x, y = new_account(env, "rr-x"), new_account(env, "rr-y")
        for acct in (x, y):
            # both writers learn R1's id and settle 1 unit each: 12 left
            assert usage(a, acct, f"rr-warm-a-{acct}", 1_000_000)["cost_nanos"] == UNIT
            assert usage(b, acct, f"rr-warm-b-{acct}", 1_000_000)["cost_nanos"] == UNIT
        id1 = cli(r1, "GET", "billing:redis_id")
        assert len(id1) == 32
        # B loads x's mirror in R1 and holds 1 unit: 11 free
        assert authorize(b, x, f"rr-hold-{x}", 1_000_000).status_code == 200
        gen_x = lg(r1, x)
        assert gen_x not in ("", "-")

        proxy.send_signal(10)  # SIGUSR1: A's Redis is now R2
        assert proxy.stdout.readline().strip() == "switched"
        deadline = time.time() + 10
        while requests_ready(a) is False:
            assert time.time() < deadline, a.logs()
            time.sleep(0.05)

        # 1. A charges x 10 units, settled into R2: B's mirror in R1 must go
        assert usage(a, x, f"rr-use-{x}", 10_000_000)["cost_nanos"] == 10 * UNIT
        deadline = time.time() + 3
        while lg(r1, x) == gen_x and time.time() < deadline:
            time.sleep(0.05)
        # by the ledger: 2 units, 1 held in R1: 1 free
        r = authorize(b, x, f"rr-big-{x}", 1_500_000)
        assert r.status_code == 402, f"B decided on an R1 mirror A's R2 settles never reach: {r.text}"
        assert authorize(b, x, f"rr-fit-{x}", 1_000_000).status_code == 200

        # 2. A loads y's mirror in R2 (12 units, 1 held: 11 free); B charges y
        #    10 units, settled into R1: A's mirror in R2 must go
        time.sleep(1.0)
        assert authorize(a, y, f"rr-hold-{y}", 1_000_000).status_code == 200
        gen_y = lg(r2, y)
        assert gen_y not in ("", "-")
        assert usage(b, y, f"rr-use-{y}", 10_000_000)["cost_nanos"] == 10 * UNIT
        deadline = time.time() + 3
        while lg(r2, y) == gen_y and time.time() < deadline:
            time.sleep(0.05)
        r = authorize(a, y, f"rr-big-{y}", 1_500_000)
        assert r.status_code == 402, f"A decided on an R2 mirror B's R1 settles never reach: {r.text}"
        assert authorize(a, y, f"rr-fit-{y}", 1_000_000).status_code == 200
    finally:
        for i in (a, b):
            if i:
                i.stop()
        proxy.kill()
        proxy.wait(timeout=10)
        if os.path.exists(pidfile):
            pid = int(open(pidfile).read())
            os.kill(pid, 15)
            wait_gone(pid, 5.0)
        env.redis_flushall()
    env.assert_books_sound()


def requests_ready(bd):
    import requests
    try:
        return requests.get(bd.url + "/readyz", timeout=1).status_code == 200
    except requests.RequestException:
        return False
