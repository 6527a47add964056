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


def resp_commands(buf):
    """buf: bytes a client sent (RESP arrays of bulk strings) -> (commands
    complete in it, the rest)."""
    cmds = []
    while buf.startswith(b"*"):
        end = buf.find(b"\r\n")
        if end < 0:
            break
        n, pos, words = int(buf[1:end]), end + 2, []
        for _ in range(n):
            end = buf.find(b"\r\n", pos)
            if end < 0:
                return cmds, buf
            ln = int(buf[pos + 1:end])
            if len(buf) < end + 2 + ln + 2:
                return cmds, buf
            words.append(buf[end + 2:end + 2 + ln].decode())
            pos = end + 2 + ln + 2
        cmds.append(words)
        buf = buf[pos:]
    return cmds, buf


def test_a_connection_closed_while_lent_to_a_scan_is_not_freed_under_it():
    """billingd's start-up drop of every mirror (quota_invalidate_all_sync)
    SCANs each master on the connection rclient lends it and routes the
    drops through rclient.  A server that closes that connection after a
    SCAN answer: rclient's next use of the node finds it closed and connects
    again; the connection lent to the SCAN loop must not be freed under it
    (it was: the loop's next SCAN, or the error check after it, read freed
    memory; valgrind: Invalid read).  A fake server: the first connection
    answers SCAN with cursor 7 and one mirror, then closes; later ones answer
    everything, SCAN with cursor 0."""
    import socket
    import threading

    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)
    port = ls.getsockname()[1]
    seen = []

    def serve(conn, first):
        buf = b""
        with conn:
            while True:
                try:
                    d = conn.recv(65536)
                except OSError:
                    return
                if not d:
                    return
                cmds, buf = resp_commands(buf + d)
                for c in cmds:
                    seen.append((first, c[0].upper()))
                    if c[0].upper() == "CLUSTER":
                        conn.sendall(b"-ERR This instance has cluster support disabled\r\n")
                    elif c[0].upper() == "SCAN" and first:
                        conn.sendall(b"*2\r\n$1\r\n7\r\n*1\r\n$9\r\n{a:1}:bal\r\n")
                        conn.shutdown(socket.SHUT_RDWR)
                        return
                    elif c[0].upper() == "SCAN":
                        conn.sendall(b"*2\r\n$1\r\n0\r\n*0\r\n")
                    else:
                        conn.sendall(b":1\r\n")

    def accept():
        first = True
        while True:
            try:
                conn, _ = ls.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn, first), daemon=True).start()
            first = False

    threading.Thread(target=accept, daemon=True).start()
    exe = os.path.join(ITEST, "rclient_probe")
    with open(exe, "rb") as f:
        asan = b"__asan_init" in f.read()
    # valgrind finds the invalid read in a plain build; an AddressSanitizer
    # build (make asan) cannot run under valgrind and finds it itself
    probe = subprocess.Popen(([] if asan else ["valgrind", "-q", "--error-exitcode=99"]) + [exe, f"127.0.0.1:{port}"],
                             text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        answer = ask(probe, "@invalidate")
        probe.stdin.close()
        rc = probe.wait(timeout=60)
        errs = probe.stderr.read()
    finally:
        if probe.poll() is None:
            probe.kill()
            probe.wait(timeout=10)
        ls.close()
    assert (True, "SCAN") in seen, seen
    assert rc == 0 and "Invalid" not in errs and "Sanitizer" not in errs, f"rc={rc} answer={answer!r}\n{errs}"
    # the node's connection was lost in the middle of the SCAN: not a count
    assert answer == "fail", answer
