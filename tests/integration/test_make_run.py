"""`make run` (scripts/run_local.sh): its own stack under a var folder, seeded,
billingd answering /healthz within 60 s; Ctrl-C stops everything it started.
The var folder is in a private (0700) folder, as a checkout under /root is:
PostgreSQL's files then live outside it, where the postgres user can reach them."""
import os
import signal
import subprocess
import time

import shutil
import tempfile

import requests

from conftest import ROOT, free_port, wait_gone


def test_make_run_serves_healthz_and_cleans_up(tmp_path):
    port = free_port()
    # a private folder (pytest's tmp folders are, and /root is): the postgres user cannot reach it
    top = tempfile.mkdtemp(prefix="billing-run-")
    os.chmod(top, 0o700)
    import pathlib
    var = pathlib.Path(top) / "var"
    env = dict(os.environ, VAR_DIR=str(var), BILLING_LISTEN=f"127.0.0.1:{port}")
    log = open(tmp_path / "run.log", "wb")
    p = subprocess.Popen([os.path.join(ROOT, "scripts", "run_local.sh")], env=env, stdout=log,
                         stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 60
        ok = False
        while time.time() < deadline and p.poll() is None:
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    ok = True
                    break
            except requests.RequestException:
                time.sleep(0.2)
        assert ok, open(tmp_path / "run.log").read()
        # seeded: demo keys and a gateway token exist, prices are listed
        keys = (var / "etc" / "demo.keys").read_text().split("\n")
        assert keys[0].startswith("demo-alice ") and keys[1].startswith("demo-bob ")
        token = [l for l in (var / "etc" / "gateway.tokens").read_text().split("\n") if l and not l.startswith("#")][0]
        alice = int(keys[0].split()[1])
        r = requests.get(f"http://127.0.0.1:{port}/v1/accounts/{alice}", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and r.json()["balance"]["paid_nanos"] == 100_000_000_000
        pg_pid = int((var / "stack" / "pg.pid").read_text())
        redis_pid = int((var / "stack" / "redis.pid").read_text())
        pg_home = (var / "stack" / "pg.home").read_text().strip()
        assert not pg_home.startswith(top) and os.path.isfile(os.path.join(pg_home, "data", "PG_VERSION")), pg_home
    finally:
        os.killpg(p.pid, signal.SIGINT)
        p.wait(timeout=60)
    # everything it started is gone
    for pid in (pg_pid, redis_pid):
        if not wait_gone(pid, 10.0):
            raise AssertionError(f"process {pid} still running after make run stopped")
    # the data outlives the run (the next `make run` finds it); removing the stack removes it
    assert os.path.isfile(os.path.join(pg_home, "data", "PG_VERSION"))
    subprocess.run([os.path.join(ROOT, "scripts", "stack.sh"), "remove", str(var / "stack")], check=True)
    assert not os.path.exists(pg_home)
    shutil.rmtree(top, ignore_errors=True)
