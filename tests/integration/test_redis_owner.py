"""One Redis per billing database.  Account ids start at 1 in every
database, so a Redis holding another database's mirrors would have that
database's balances, holds and limits trusted as this one's (the suite's
own env fixture empties Redis per module for that reason: test_quota's race
for 14 holds once admitted 28).  billingd claims the Redis for its database
at start (billing:owner) and refuses to start on a Redis another database
claimed; `ledger reconcile` refuses to compare with, or repair, another
database's mirrors."""
import os
import subprocess
import time

from conftest import (BIN, ROOT, Billingd, Env, new_account, post_authorize, post_usage, set_price,
                      wait_prices)

OWNER = "billing:owner"


def owner(env):
    return env.redis_cli("GET", OWNER)


def identity(env):
    """What billingd stores for env's database (ledger/db.c db_identity)."""
    return env.one("SELECT 'pg:' || s.system_identifier || '/' || d.oid || '/' || d.datname"
                   " FROM pg_control_system() s, pg_database d WHERE d.datname = current_database()")


def books(env, acct):
    """The account's spendable balance by the books (paid and unexpired promotional), nanos."""
    return int(env.one("SELECT total_nanos FROM finance_account_balances WHERE account_id = %s", (acct,)))


def start_fails(env, tmp):
    """billingd on env's database, expected to refuse to start: its exit code and output."""
    cfg = os.path.join(tmp, "refused.conf")
    with open(cfg, "w") as f:
        f.write(f"listen = 127.0.0.1:0\npg = {env.pg}\nredis = {env.redis}\n"
                f"gateway_tokens_file = {env.gw_tokens}\nadmin_tokens_file = {env.admin_tokens}\n"
                f"key_pepper_file = {env.stack.pepper}\nmigrations_dir = {os.path.join(ROOT, 'migrations')}\n")
    p = subprocess.run([os.path.join(BIN, "billingd"), "--config", cfg], capture_output=True, text=True,
                       timeout=60, env=env.proc_env(), cwd=ROOT)
    return p.returncode, p.stdout + p.stderr


def test_the_first_database_claims_the_redis_and_a_second_is_refused(env, stack, tmp_path):
    env.redis_flushall()
    assert owner(env) == ""
    a = Billingd(env)
    try:
        mine = identity(env)
        assert mine.startswith("pg:") and mine.endswith("/" + env.db)
        assert owner(env) == mine
        other = Env(stack, stack.new_database(), str(tmp_path))
        code, out = start_fails(other, str(tmp_path))
        assert code == 1, out
        assert "holds the mirrors of another billing database" in out, out
        assert mine in out and identity(other) in out, out
        assert owner(env) == mine  # the refused one changed nothing
        # the first instance still serves, and a restart on its own database is welcome
        assert a.get("/readyz").status_code == 200
        a.stop()
        a.start()
        assert owner(env) == mine
        # ledger reconcile: refused against another database's mirrors, with or without --repair
        for args in (["reconcile"], ["reconcile", "--repair"]):
            r = other.ledger(*args, check=False)
            assert r.returncode != 0, r.stdout + r.stderr
            assert "holds the mirrors of another billing database" in r.stdout + r.stderr
        assert owner(env) == mine
        assert env.ledger("reconcile").returncode == 0
    finally:
        a.stop()


def test_an_emptied_redis_can_serve_another_database(env, stack, tmp_path):
    """Mirrors are a cache of the books: once the Redis is emptied (the way the
    error message names when the other database is gone), another database
    may claim it, and a read-only reconcile does not claim it."""
    env.redis_flushall()
    other = Env(stack, stack.new_database(), str(tmp_path))
    assert other.ledger("reconcile").returncode == 0
    assert owner(env) == ""  # a reconcile without --repair only reads
    b = Billingd(other)
    try:
        assert owner(env) == identity(other)
        code, out = start_fails(env, str(tmp_path))
        assert code == 1 and "holds the mirrors of another billing database" in out, out
    finally:
        b.stop()
        env.redis_flushall()


def test_a_redis_claimed_by_another_database_while_running_is_not_used(env, tmp_path):
    """Emptied and claimed by another database while billingd runs: found on
    the next connection, and from then on no decision, settle or mirror
    write goes to it (authorize 503, /readyz 503), while usage still goes to
    the books; a restart on the emptied Redis serves again, the balance
    loaded from the books."""
    env.redis_flushall()
    set_price(env, "owner-model", 10 ** 9, 10 ** 9, 10 ** 9)
    bd = Billingd(env)
    try:
        wait_prices()
        acct = new_account(env, "owner-acct")
        env.admin("topup", "--account", acct, "--amount", "100", "--payment-ref", "owner-pay-1")
        books0 = books(env, acct)
        assert post_authorize(bd, acct, "own-1", 10, "owner-model").status_code == 200
        env.redis_flushall()
        env.redis_cli("SET", OWNER, "pg:0/1/elsewhere")
        env.redis_cli("CLIENT", "KILL", "TYPE", "normal")  # every client connects again
        found = "redis holds the mirrors of another billing database"
        deadline = time.time() + 15
        while time.time() < deadline and found not in bd.logs():
            time.sleep(0.1)
        assert found in bd.logs()
        assert bd.get("/readyz").status_code == 503, bd.logs()
        r = post_authorize(bd, acct, "own-2", 10, "owner-model")
        assert r.status_code == 503 and "another billing database" in r.json()["error"]["message"], r.text
        u = post_usage(bd, acct, "own-1", 10, "owner-model")
        assert u.status_code == 200, u.text  # the books take it
        time.sleep(1.5)  # the instance's own drop of the account's mirror would have gone out by now
        assert env.redis_cli("KEYS", "{a:*") == ""  # nothing written to the other database's Redis
        bd.stop()
        assert start_fails(env, str(tmp_path))[0] == 1
        env.redis_flushall()
        bd.start()
        r = post_authorize(bd, acct, "own-3", 10, "owner-model")
        assert r.status_code == 200, r.text
        after = books(env, acct)
        assert after == books0 - 10_000  # the usage answered while the Redis was another's is charged
        assert int(r.json()["available_nanos"]) == after - int(r.json()["held_nanos"]), r.text
    finally:
        bd.stop()
        env.redis_flushall()
