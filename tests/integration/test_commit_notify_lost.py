"""db_pipeline_end after a queued COMMIT (the last review's suspect): the
usage writer queues its batch's COMMIT, then the NOTIFY, then the sync
point.  When libpq refuses to queue the NOTIFY (it does so only when out of
memory, or with the connection already lost, when no sync is sent), the
batch is given up and db_pipeline_end sends the sync point, so the COMMIT
runs: a committed batch answered as failed.  Simulated here by a preloaded
shim that makes PQsendQueryPrepared("u_notify") fail once.

What must hold: the answer is 503 (commit unknown, retry with the same id),
the retry is an idempotent replay (one charge), and no instance keeps a
mirror missing the charge: the batch's own NOTIFY never went out, so an
instance on another Redis learns of it only from the writer's instance
announcing the account (authz_forget_announce); before, it kept its mirror
the whole charge above the ledger until the mirror expired.  The second
test: the NOTIFY queued but failed by the server after the COMMIT."""
import functools
import json
import os
import subprocess
import time

import pytest

from conftest import (
    Billingd, CLUSTER, SANITIZED, UNIT, free_port, now_rfc3339, post_authorize, post_usage, set_price,
    wait_gone, wait_prices)

M = "cn-model"

SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <libpq-fe.h>

int PQsendQueryPrepared(PGconn *conn, const char *name, int n, const char *const *v, const int *l, const int *f,
			int rf)
{
	static int (*real)(PGconn *, const char *, int, const char *const *, const int *, const int *, int);
	const char *trigger = getenv("FAIL_NOTIFY_FILE");

	if (!real)
		real = (int (*)(PGconn *, const char *, int, const char *const *, const int *, const int *, int))dlsym(
			RTLD_NEXT, "PQsendQueryPrepared");
	if (name && strcmp(name, "u_notify") == 0 && trigger && unlink(trigger) == 0)
		return 0; /* as libpq does when it cannot allocate the message */
	trigger = getenv("FAIL_NOTIFY_SERVER_FILE");
	if (name && strcmp(name, "u_notify") == 0 && trigger && unlink(trigger) == 0)
		name = "u_notify_gone"; /* the server fails the NOTIFY, after the COMMIT */
	return real(conn, name, n, v, l, f, rf);
}
"""


class Shimmed(Billingd):
    shim = None
    trigger = None

    def start(self, wait=True):
        env_of = self.env.proc_env

        def proc_env():
            e = env_of()
            e["LD_PRELOAD"] = self.shim
            e["FAIL_NOTIFY_FILE"] = self.trigger
            e["FAIL_NOTIFY_SERVER_FILE"] = self.trigger + ".server"
            return e

        self.env.proc_env = proc_env
        try:
            super().start(wait)
        finally:
            self.env.proc_env = env_of


def usage(bd, acct, rid, tokens, started_at=None):
    return post_usage(bd, acct, rid, tokens, M, started_at)


authorize = functools.partial(post_authorize, model=M)


@pytest.mark.skipif(CLUSTER, reason="a second single Redis beside the suite's")
def test_a_batch_committed_but_answered_503_is_replayed_once_and_announced(env, tmp_path):
    if SANITIZED:
        pytest.skip("a preloaded shim ahead of the AddressSanitizer runtime")
    so = str(tmp_path / "fail_notify.so")
    inc = subprocess.run(["pg_config", "--includedir"], capture_output=True, text=True).stdout.strip()
    subprocess.run(["cc", "-shared", "-fPIC", "-O1", f"-I{inc}", "-x", "c", "-", "-o", so, "-ldl"], input=SHIM,
                   text=True, check=True)
    set_price(env, M, UNIT, UNIT, 0, effective="2026-01-01T00:00:00Z")
    r2 = free_port()
    pidfile = str(tmp_path / "r2.pid")
    subprocess.run(["redis-server", "--bind", "127.0.0.1", "--port", str(r2), "--save", "", "--appendonly", "no",
                    "--dir", str(tmp_path), "--daemonize", "yes", "--pidfile", pidfile,
                    "--logfile", str(tmp_path / "r2.log")], check=True)

    def lg2(acct):
        return subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(r2), "HGET", f"{{a:{acct}}}:bal", "lg"],
                              capture_output=True, text=True, check=True, timeout=30).stdout.strip()

    a = c = None
    trigger = str(tmp_path / "fail-next-notify")
    try:
        Shimmed.shim, Shimmed.trigger = so, trigger
        a = Shimmed(env, {"instance_id": "cn-a", "writer_threads": "1"})
        c = Billingd(env, {"instance_id": "cn-c", "redis": f"127.0.0.1:{r2}"})
        wait_prices()
        acct = json.loads(env.admin("account", "create", "--external-id", "cn-1", "--json").stdout)["account_id"]
        r = usage(a, acct, f"cn-warm-{acct}", 1_000_000)
        assert r.status_code == 200, r.text
        # C (another Redis) loads its mirror: 13 units, 1 held: 12 free
        assert authorize(c, acct, f"cn-hold-{acct}", 1_000_000).status_code == 200
        gen = lg2(acct)
        assert gen not in ("", "-")
        open(trigger, "w").close()
        at = now_rfc3339()
        r = usage(a, acct, f"cn-use-{acct}", 10_000_000, at)
        assert not os.path.exists(trigger), "the shim did not fire"
        assert r.status_code == 503, r.text
        assert env.one("SELECT count(*) FROM usage_records WHERE request_id = %s", (f"cn-use-{acct}",)) == 1, \
            "the COMMIT did not run: the suspect's path was not reached"
        # C must learn of it: 3 units by the ledger, 1 held: 2 free
        deadline = time.time() + 3
        while lg2(acct) == gen and time.time() < deadline:
            time.sleep(0.05)
        r = authorize(c, acct, f"cn-big-{acct}", 2_500_000)
        assert r.status_code == 402, f"C decided on a mirror without the committed charge: {r.text}"
        # the retry is a replay: one charge
        r = usage(a, acct, f"cn-use-{acct}", 10_000_000, at)
        assert r.status_code == 200 and r.json()["duplicate"] is True and r.json()["cost_nanos"] == 10 * UNIT, r.text
        assert env.one("SELECT count(*) FROM usage_records WHERE request_id = %s", (f"cn-use-{acct}",)) == 1
        assert env.one("SELECT count(*) FROM journal WHERE idempotency_key = %s", (f"usage:cn-use-{acct}",)) == 1
        bal = json.loads(env.admin("account", "show", acct, "--json").stdout)
        assert bal["balance"]["paid_nanos"] + bal["balance"]["promo_nanos"] == 3 * UNIT, bal
    finally:
        for x in (a, c):
            if x:
                x.stop()
        if os.path.exists(pidfile):
            pid = int(open(pidfile).read())
            os.kill(pid, 15)
            wait_gone(pid, 5.0)
        env.redis_flushall()
    env.assert_books_sound()


@pytest.mark.skipif(CLUSTER, reason="a second single Redis beside the suite's")
def test_a_batch_whose_notify_failed_after_its_commit_is_announced(env, tmp_path):
    """The NOTIFY (in its own transaction behind the COMMIT) fails on the
    server: the records are committed and answered 200, and the failure was
    only logged.  An instance on another Redis never heard of the charge and
    kept its mirror 10 units above the ledger (for as long as it was in
    use); now the writer's instance announces the account."""
    if SANITIZED:
        pytest.skip("a preloaded shim ahead of the AddressSanitizer runtime")
    so = str(tmp_path / "fail_notify.so")
    inc = subprocess.run(["pg_config", "--includedir"], capture_output=True, text=True).stdout.strip()
    subprocess.run(["cc", "-shared", "-fPIC", "-O1", f"-I{inc}", "-x", "c", "-", "-o", so, "-ldl"], input=SHIM,
                   text=True, check=True)
    set_price(env, M, UNIT, UNIT, 0, effective="2026-01-01T00:00:00Z")
    r2 = free_port()
    pidfile = str(tmp_path / "r2.pid")
    subprocess.run(["redis-server", "--bind", "127.0.0.1", "--port", str(r2), "--save", "", "--appendonly", "no",
                    "--dir", str(tmp_path), "--daemonize", "yes", "--pidfile", pidfile,
                    "--logfile", str(tmp_path / "r2.log")], check=True)

    def lg2(acct):
        return subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(r2), "HGET", f"{{a:{acct}}}:bal", "lg"],
                              capture_output=True, text=True, check=True, timeout=30).stdout.strip()

    a = c = None
    trigger = str(tmp_path / "fail-next-notify")
    try:
        Shimmed.shim, Shimmed.trigger = so, trigger
        a = Shimmed(env, {"instance_id": "cn-sa", "writer_threads": "1"})
        c = Billingd(env, {"instance_id": "cn-sc", "redis": f"127.0.0.1:{r2}"})
        wait_prices()
        acct = json.loads(env.admin("account", "create", "--external-id", "cn-s1", "--json").stdout)["account_id"]
        assert usage(a, acct, f"cn-s-warm-{acct}", 1_000_000).status_code == 200
        # C (another Redis) loads its mirror: 13 units, 1 held: 12 free
        assert authorize(c, acct, f"cn-s-hold-{acct}", 1_000_000).status_code == 200
        gen = lg2(acct)
        assert gen not in ("", "-")
        open(trigger + ".server", "w").close()
        r = usage(a, acct, f"cn-s-use-{acct}", 10_000_000)
        assert not os.path.exists(trigger + ".server"), "the shim did not fire"
        assert r.status_code == 200, r.text
        assert "balance notification not sent" in a.logs()
        deadline = time.time() + 3
        while lg2(acct) == gen and time.time() < deadline:
            time.sleep(0.05)
        # by the ledger: 3 units, 1 held: 2 free
        r = authorize(c, acct, f"cn-s-big-{acct}", 2_500_000)
        assert r.status_code == 402, f"C decided on a mirror without the committed charge: {r.text}"
        assert authorize(c, acct, f"cn-s-fit-{acct}", 2_000_000).status_code == 200
    finally:
        for x in (a, c):
            if x:
                x.stop()
        if os.path.exists(pidfile):
            pid = int(open(pidfile).read())
            os.kill(pid, 15)
            wait_gone(pid, 5.0)
        env.redis_flushall()
    env.assert_books_sound()
