"""A NOTIFY billing_balance that tells an instance to drop a mirror while its
connection to Redis is down (or loses the drop's reply) must not be
forgotten: the drop goes to the dirty list and is sent once Redis answers.
Before, it was logged and dropped, and the instance went on deciding on the
old mirror after its connection came back, for as long as the mirror was in
use: here a debit of 12 units made by the CLI while the instance's path to
Redis was down (the paid balance in arrears: nothing may be admitted), and
the next authorize admitted 5 units."""
import functools
import json
import subprocess
import time

import pytest

from conftest import Billingd, CLUSTER, UNIT, free_port, post_authorize, set_price, wait_prices

M = "nd-model"

# SIGUSR1: drop every connection and refuse new ones; SIGUSR2: accept again
GATE_PROXY = r"""
import signal, socket, sys, threading, time
up = int(sys.argv[2])
state = {"down": False, "changed": False}
lock = threading.Lock()
socks = []
def close(*ss):
    for s in ss:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
def cut(*a):
    state["down"] = True
    state["changed"] = True
def back(*a):
    state["down"] = False
    state["changed"] = True
signal.signal(signal.SIGUSR1, cut)
signal.signal(signal.SIGUSR2, back)
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
    if state["changed"]:
        state["changed"] = False
        if state["down"]:
            ls.close()
            ls = None
            with lock:
                close(*socks)
                socks.clear()
            print("down", flush=True)
        else:
            ls = listen()
            print("up", flush=True)
    if ls is None:
        time.sleep(0.05)
        continue
    try:
        c, _ = ls.accept()
    except (socket.timeout, InterruptedError):
        continue
    c.settimeout(None)
    try:
        u = socket.create_connection(("127.0.0.1", up))
    except OSError:
        c.close()
        continue
    with lock:
        socks.extend([c, u])
    threading.Thread(target=pump, args=(c, u), daemon=True).start()
    threading.Thread(target=pump, args=(u, c), daemon=True).start()
"""


authorize = functools.partial(post_authorize, model=M)


@pytest.mark.skipif(CLUSTER, reason="one proxy in front of one Redis (a cluster's nodes name their own ports)")
def test_a_drop_announced_while_redis_was_away_is_sent_when_it_is_back(env):
    set_price(env, M, UNIT, UNIT, 0, effective="2026-01-01T00:00:00Z")
    pport = free_port()
    proxy = subprocess.Popen(["/usr/bin/python3", "-c", GATE_PROXY, str(pport), str(env.stack.redis_port)],
                             stdout=subprocess.PIPE, text=True)
    b = None
    try:
        assert proxy.stdout.readline().strip() == "ready"
        b = Billingd(env, {"instance_id": "nd-b", "redis": f"127.0.0.1:{pport}"})
        wait_prices()
        acct = json.loads(env.admin("account", "create", "--external-id", "nd-1", "--json").stdout)["account_id"]
        # B loads the mirror (14 units) and holds 1
        assert authorize(b, acct, f"nd-hold-{acct}", 1_000_000).status_code == 200
        assert env.redis_cli("HGET", f"{{a:{acct}}}:bal", "lg") not in ("", "-")
        proxy.send_signal(10)  # SIGUSR1: B's path to Redis goes down
        assert proxy.stdout.readline().strip() == "down"
        # the CLI debits 12 units of the paid balance (-12 paid, 14 promo, 1 held); its NOTIFY reaches B now
        env.admin("adjust", "--account", acct, "--amount", "-12", "--reason", "nd test")
        time.sleep(1.5)  # B's listener polls every 200 ms
        proxy.send_signal(12)  # SIGUSR2: back
        assert proxy.stdout.readline().strip() == "up"
        deadline = time.time() + 10
        while True:
            r = authorize(b, acct, f"nd-big-{acct}", 5_000_000)
            if r.status_code != 503 or time.time() > deadline:
                break
            time.sleep(0.1)
        assert r.status_code == 402, f"decided on the mirror from before the debit: {r.text}"
        # the mirror now is the ledger's: 2 units, 1 held (the paid balance in arrears refuses any call)
        assert r.json()["error"]["available_nanos"] == UNIT, r.text
    finally:
        if b:
            b.stop()
        proxy.kill()
        proxy.wait(timeout=10)
        env.redis_flushall()
    env.assert_books_sound()
