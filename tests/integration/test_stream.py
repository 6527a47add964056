"""Usage from a Redis Stream: two consumers, one killed mid-stream; every
entry charged exactly once, none left pending; refused entries go to the
dead-letter stream."""
import json
import re
import signal
import socket
import time

from conftest import UNIT, Billingd, now_rfc3339, set_price

STREAM = "usage:in"


def resp(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def redis_cmds(port, cmds):
    """Sends RESP commands in one pipeline; returns the raw replies."""
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"".join(resp(*c) for c in cmds))
    data = b""
    # each reply here is one line (+OK, :n, $len...) or a bulk: read until quiet
    s.settimeout(2)
    try:
        while data.count(b"\r\n") < len(cmds):
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            data += chunk
        time.sleep(0.05)
        s.setblocking(False)
        try:
            data += s.recv(1 << 20)
        except BlockingIOError:
            pass
    finally:
        s.close()
    return data


def consumer_pending(port, name):
    """port: the Redis serving STREAM -> how many entries consumer name of
    the group holds unacknowledged (0 when it is not a consumer yet)."""
    raw = redis_cmds(port, [("XINFO", "CONSUMERS", STREAM, "billing")]).decode("latin1")
    m = re.search(r"\$%d\r\n%s\r\n\$7\r\npending\r\n:(\d+)" % (len(name), re.escape(name)), raw)
    return int(m.group(1)) if m else 0


def xpending_count(port):
    """port: the Redis serving STREAM."""
    data = redis_cmds(port, [("XPENDING", STREAM, "billing")])
    # *4 :count ... -> the first integer
    for line in data.split(b"\r\n"):
        if line.startswith(b":"):
            return int(line[1:])
    return -1


def test_stream_two_consumers_one_killed(env):
    set_price(env, "s-model", UNIT, UNIT, UNIT, effective="2026-01-01T00:00:00Z")
    acct = json.loads(env.admin("account", "create", "--external-id", "stream-1", "--json").stdout)["account_id"]
    # in a cluster the stream and its dead-letter stream live in their own slots
    port, dead_port = env.redis_port_for(STREAM), env.redis_port_for(STREAM + ":dead")
    redis_cmds(port, [("DEL", STREAM)])
    redis_cmds(dead_port, [("DEL", STREAM + ":dead")])
    cfg = {"usage_stream": STREAM, "usage_stream_claim_ms": "1500"}
    a = Billingd(env, dict(cfg, instance_id="stream-a"))
    b = Billingd(env, dict(cfg, instance_id="stream-b"))
    try:
        n = 3000
        cmds = []
        for i in range(n):
            body = {"request_id": f"st-{i}", "account_id": acct, "model": "s-model", "input_tokens": 1000 + i,
                    "cached_input_tokens": 0, "output_tokens": 5, "started_at": now_rfc3339()}
            cmds.append(("XADD", STREAM, "*", "body", json.dumps(body)))
        cmds.append(("XADD", STREAM, "*", "body", json.dumps({"request_id": "st-bad", "account_id": acct,
                                                                  "model": "s-model", "input_tokens": -1,
                                                                  "cached_input_tokens": 0, "output_tokens": 0,
                                                                  "started_at": now_rfc3339()})))
        redis_cmds(port, cmds[:2000])
        # kill one consumer while it works: wait until it holds unacknowledged
        # entries (its own: pending entries of the other consumer alone leave
        # nothing to take over)
        deadline = time.time() + 10
        while consumer_pending(port, "stream-a") == 0:
            assert time.time() < deadline
            time.sleep(0.002)
        a.kill(signal.SIGKILL)
        redis_cmds(port, cmds[2000:])
        deadline = time.time() + 60
        while env.one("SELECT count(*) FROM usage_records WHERE request_id LIKE 'st-%%'") < n:
            assert time.time() < deadline, b.logs()
            time.sleep(0.2)
        # the killed consumer's entries were taken over; nothing is left pending
        deadline = time.time() + 15
        while xpending_count(port) != 0:
            assert time.time() < deadline, (xpending_count(port), b.logs())
            time.sleep(0.2)
        assert "usage stream entries taken over" in b.logs()
        assert env.one("SELECT count(*) FROM usage_records WHERE request_id LIKE 'st-%%'") == n
        assert env.one("SELECT count(*) FROM journal WHERE idempotency_key LIKE 'usage:st-%%'") == n
        expected = sum(((1000 + i) * 1_000_000_000 + 5 * 1_000_000_000 + 500_000) // 1_000_000 for i in range(n))
        assert env.one("SELECT sum(cost_nanos) FROM usage_records WHERE request_id LIKE 'st-%%'") == expected
        dead = redis_cmds(dead_port, [("XLEN", STREAM + ":dead")])
        assert dead.startswith(b":1"), dead
        env.assert_books_sound()
    finally:
        a.kill()
        b.stop()
