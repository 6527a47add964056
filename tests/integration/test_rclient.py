"""The synchronous Redis client (common/rclient.c) of the usage writers, the
mirror loads and the CLIs keeps its connections between commands.  A server
that restarted meanwhile closed them: the next command must go over a new
connection, not fail on the old one (a usage writer's failed read of the
load generation drops the account's mirror; during a slot migration that
left the account's keys incomplete on the target and every decision of the
account answered 503 until the migration ended)."""
import os
import signal
import subprocess
import tempfile
import time

from conftest import ITEST, free_port, wait_gone


def start_redis(port, d):
    p = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                          "--appendonly", "no", "--dir", d], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while subprocess.run(["redis-cli", "-p", str(port), "PING"], capture_output=True,
                         text=True).stdout.strip() != "PONG":
        assert time.time() < deadline, "redis did not start"
        time.sleep(0.05)
    return p


def ask(probe, line):
    probe.stdin.write(line + "\n")
    probe.stdin.flush()
    return probe.stdout.readline().strip()


def test_a_kept_connection_the_server_closed_is_not_used():
    port = free_port()
    with tempfile.TemporaryDirectory() as d:
        srv = start_redis(port, d)
        probe = subprocess.Popen([os.path.join(ITEST, "rclient_probe"), f"127.0.0.1:{port}"], text=True,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            assert ask(probe, "SET probe:k v") == "status OK"
            assert ask(probe, "GET probe:k") == "str v"
            for kill in (signal.SIGKILL, signal.SIGTERM):
                srv.send_signal(kill)
                srv.wait(timeout=10)
                srv = start_redis(port, d)
                # the first command after the restart: a new connection (the
                # server kept nothing: no persistence)
                assert ask(probe, "GET probe:k") == "nil"
                assert ask(probe, "SET probe:k w") == "status OK"
                assert ask(probe, "GET probe:k") == "str w"
            # the server closing an idle client (its `timeout`) is the same case
            assert subprocess.run(["redis-cli", "-p", str(port), "CONFIG", "SET", "timeout", "1"],
                                  capture_output=True, text=True).stdout.strip() == "OK"
            assert ask(probe, "GET probe:k") == "str w"
            time.sleep(2.5)
            assert ask(probe, "GET probe:k") == "str w"
        finally:
            probe.stdin.close()
            probe.wait(timeout=10)
            srv.kill()
            wait_gone(srv.pid)
