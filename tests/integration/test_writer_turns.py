"""Single records and commit batches (docs/billingd.md, "Writers take
turns"): every single record of an instance goes to its first writer, so
its batches are as large as the single records in flight, while a batch
request still goes by account over every writer; and a writer holding
fewer than batch_max records takes them only once it holds the turn, a
PostgreSQL advisory lock that every instance on the database takes the
same way.  A writer holding a full batch does not wait for the turn, and a
turn held longer than the statement timeout is skipped, not waited for."""
import datetime as dt
import threading
import time

import psycopg2

from conftest import Billingd, new_account, rfc3339, set_price, wait_prices

STARTED = rfc3339(dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1))
TURN_KEY = 727002  # billing/http/server.c SERVER_TURN_KEY


def usage(rid, account):
    return {"request_id": rid, "account_id": account, "model": "turn-m", "input_tokens": 10,
            "cached_input_tokens": 0, "output_tokens": 1, "started_at": STARTED}


def accounts(env, prefix, n):
    set_price(env, "turn-m", 10 ** 9, 10 ** 9, 10 ** 9)
    accts = [new_account(env, f"{prefix}-{i}") for i in range(n)]
    for i, a in enumerate(accts):
        env.admin("topup", "--account", a, "--amount", "5", "--payment-ref", f"{prefix}-{i}")
    return accts


def chains(env, instance, prefix):
    return env.sql("SELECT DISTINCT writer FROM journal j JOIN usage_records u USING (txn_id)"
                   " WHERE j.writer LIKE %s AND u.request_id LIKE %s ORDER BY 1", (instance + "%", prefix + "%"))


def hold_turn(env):
    c = psycopg2.connect(env.pg)
    c.autocommit = True
    c.cursor().execute("SELECT pg_advisory_lock(%s)", (TURN_KEY,))
    return c


def turn_holders(env):
    return env.one("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s AND granted",
                   (TURN_KEY,))


def wait_until(cond, secs=20):
    deadline = time.time() + secs
    while not cond() and time.time() < deadline:
        time.sleep(0.05)


def wait_no_turn_holder(env, secs=10):
    wait_until(lambda: not turn_holders(env), secs)


def post_in_thread(bd, path, body):
    out = {}

    def run():
        out["r"] = bd.post(path, body, timeout=60)

    t = threading.Thread(target=run)
    t.start()
    return t, out


def test_single_records_go_to_one_writer_and_batches_by_account(env):
    accts = accounts(env, "one-w", 6)
    bd = Billingd(env, {"writer_threads": "2", "instance_id": "onew"})
    try:
        wait_prices()
        threads = [post_in_thread(bd, "/v1/usage", usage(f"onew-s{i}", accts[i % 6])) for i in range(24)]
        for t, out in threads:
            t.join()
            assert out["r"].status_code == 200, out["r"].text
        r = bd.post("/v1/usage/batch", {"records": [usage(f"onew-b{i}", accts[i % 6]) for i in range(60)]})
        assert r.status_code == 200 and all("cost_nanos" in x for x in r.json()["results"])
    finally:
        bd.stop()
    # the accounts' ids have both parities: by account, singles would use both chains
    assert len({a % 2 for a in accts}) == 2
    assert chains(env, "onew", "onew-s") == [("onew",)]
    assert chains(env, "onew", "onew-b") == [("onew",), ("onew.t1",)]
    env.assert_books_sound()


def test_a_writer_waits_for_its_turn_unless_it_holds_a_full_batch(env):
    accts = accounts(env, "turn", 4)
    bd = Billingd(env, {"writer_threads": "2", "instance_id": "turn", "batch_max": "4", "pg_timeout_ms": "60000"})
    held = None
    try:
        wait_prices()
        assert bd.post("/v1/usage", usage("turn-warm", accts[0])).status_code == 200
        held = hold_turn(env)
        # 48 records, 12 an account: every writer's share is whole batches of 4, written while the turn is held
        r = bd.post("/v1/usage/batch", {"records": [usage(f"turn-b{i}", accts[i % 4]) for i in range(48)]})
        assert r.status_code == 200 and all("cost_nanos" in x for x in r.json()["results"])
        # one record: its writer waits for the turn
        t, out = post_in_thread(bd, "/v1/usage", usage("turn-s", accts[1]))
        t.join(1.5)
        assert t.is_alive() and "r" not in out
        assert env.one("SELECT count(*) FROM usage_records WHERE request_id = 'turn-s'") == 0
        held.close()
        held = None
        t.join(30)
        assert out["r"].status_code == 200, out["r"].text
        # and gives it back
        wait_no_turn_holder(env)
        assert turn_holders(env) == 0
    finally:
        if held:
            held.close()
        bd.stop()
    env.assert_books_sound()


def test_a_surge_of_single_records_spreads_over_the_writers(env):
    """The first writer takes single records while it holds fewer than
    batch_max or its share of queue_max; past that they go to the writer
    holding the fewest, so a surge is refused only when all of queue_max
    waits, as by account, not at the first writer's share."""
    accts = accounts(env, "qmax", 4)
    bd = Billingd(env, {"writer_threads": "2", "instance_id": "qmax", "queue_max": "20", "pg_timeout_ms": "60000"})
    held = None
    try:
        wait_prices()
        held = hold_turn(env)
        # 16 single records wait for the turn: more than a share (10), within queue_max
        threads = [post_in_thread(bd, "/v1/usage", usage(f"qmax-{i}", accts[i % 4])) for i in range(16)]
        deadline = time.time() + 20
        while bd.metric("billing_usage_queue_depth") < 16 and time.time() < deadline:
            time.sleep(0.1)
        assert bd.metric("billing_usage_queue_depth") == 16
        assert env.one("SELECT count(*) FROM usage_records WHERE request_id LIKE 'qmax-%%'") == 0
        held.close()
        held = None
        for t, out in threads:
            t.join(30)
            assert out["r"].status_code == 200, out["r"].text
    finally:
        if held:
            held.close()
        bd.stop()
    assert chains(env, "qmax", "qmax-") == [("qmax",), ("qmax.t1",)]
    env.assert_books_sound()


def test_a_turn_held_past_the_statement_timeout_is_skipped(env):
    accts = accounts(env, "skip", 1)
    bd = Billingd(env, {"instance_id": "skip", "pg_timeout_ms": "3000"})
    held = None
    try:
        wait_prices()
        held = hold_turn(env)
        r = bd.post("/v1/usage", usage("skip-s", accts[0]))
        assert r.status_code == 200, r.text
        assert turn_holders(env) == 1  # still the test's
        held.close()
        held = None
        # no writer keeps a turn its timed-out wait was granted
        assert bd.post("/v1/usage", usage("skip-t", accts[0])).status_code == 200
        wait_no_turn_holder(env)
        assert turn_holders(env) == 0
    finally:
        if held:
            held.close()
        bd.stop()
    assert "writer's turn not taken" in bd.logs()
    env.assert_books_sound()


def test_one_request_id_as_a_single_record_and_in_a_batch_at_once(env):
    """An account's single records and its batch records may meet in two
    writers: the same request_id sent both ways at once is charged once and
    both answers are the charge (with and without turns: without them the
    two writers' transactions race for the key)."""
    accts = accounts(env, "both", 2)
    odd = [a for a in accts if a % 2 == 1] or accts  # writer .t1's accounts (by account, two writers)
    for turns in ("true", "false"):
        bd = Billingd(env, {"writer_threads": "2", "instance_id": f"both-{turns}", "writer_turns": turns})
        try:
            wait_prices()
            for i in range(10):
                rec = usage(f"both-{turns}-{i}", odd[0])
                ts, single = post_in_thread(bd, "/v1/usage", rec)
                tb, batch = post_in_thread(bd, "/v1/usage/batch", {"records": [rec]})
                ts.join(60)
                tb.join(60)
                assert single["r"].status_code == 200, single["r"].text
                assert batch["r"].status_code == 200, batch["r"].text
                assert single["r"].json()["cost_nanos"] == batch["r"].json()["results"][0]["cost_nanos"]
        finally:
            bd.stop()
        assert env.one("SELECT count(*) FROM usage_records WHERE request_id LIKE %s", (f"both-{turns}-%",)) == 10
    env.assert_books_sound()


def standby_names(env, names):
    """synchronous_standby_names for the whole server ('' resets it)."""
    if names:
        env.sql(f"ALTER SYSTEM SET synchronous_standby_names = '{names}'", user="postgres")
    else:
        env.sql("ALTER SYSTEM RESET synchronous_standby_names", user="postgres")
    env.sql("SELECT pg_reload_conf()", user="postgres")


def wait_sync_rep_in_force(env, secs=20):
    """Until a commit waits for the (absent) synchronous standby: a probe
    session commits a row; its wait is then cancelled (the commit stays,
    with a warning).  The table sync_probe exists already (its CREATE would
    wait too)."""
    deadline = time.time() + secs

    def probe(c):
        try:
            c.cursor().execute("INSERT INTO sync_probe VALUES (1)")
        except psycopg2.Error:
            pass  # cancelled before its commit waited

    while time.time() < deadline:
        c = psycopg2.connect(env.pg_super)
        c.autocommit = True
        pid = c.get_backend_pid()
        t = threading.Thread(target=probe, args=(c,))
        t.start()
        t.join(1)
        waiting = t.is_alive() and env.one("SELECT count(*) FROM pg_stat_activity WHERE pid = %s"
                                           " AND wait_event = 'SyncRep'", (pid,), user="postgres") == 1
        if t.is_alive():
            env.sql("SELECT pg_cancel_backend(%s)", (pid,), user="postgres")
            t.join(10)
        c.close()
        if waiting:
            return
    raise AssertionError("synchronous_standby_names not in force")


def writers_waiting(env, event):
    """This database's usage writers waiting: 'SyncRep' (a COMMIT for the
    standby), 'advisory' (for the turn) or 'row' (for another transaction's
    row lock)."""
    q = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND usename = 'billing'"
    if event == "SyncRep":
        q += " AND wait_event = 'SyncRep' AND query = 'COMMIT'"
    elif event == "advisory":
        q += " AND wait_event = 'advisory' AND query LIKE 'SELECT pg_advisory_lock(%'"
    else:
        q += " AND wait_event_type = 'Lock' AND wait_event IN ('transactionid', 'tuple')"
    return env.one(q)


def test_the_turn_goes_back_before_the_commit(env):
    """A batch takes the turn before it writes and gives it back once its
    statements have run, before its COMMIT: the next writer, here another
    instance's, writes while this COMMIT waits for its WAL flush and its
    answers are posted.  Here each COMMIT waits for a synchronous standby
    that never answers: with the turn held through the COMMIT (the old
    binary), the second instance's writer would wait for the turn instead."""
    accts = accounts(env, "early", 2)
    bd = bd2 = held = None
    posts = []
    try:
        bd = Billingd(env, {"instance_id": "early", "pg_timeout_ms": "60000"})
        bd2 = Billingd(env, {"instance_id": "early2", "pg_timeout_ms": "60000"})
        wait_prices()
        assert bd.post("/v1/usage", usage("early-warm1", accts[0])).status_code == 200
        assert bd2.post("/v1/usage", usage("early-warm2", accts[1])).status_code == 200
        env.sql("CREATE TABLE IF NOT EXISTS sync_probe (x int)", user="postgres")
        held = hold_turn(env)
        try:
            standby_names(env, "nosuch")
            wait_sync_rep_in_force(env)
            # the batch waits for the turn before it writes
            posts.append(post_in_thread(bd, "/v1/usage", usage("early-s1", accts[0])))
            wait_until(lambda: writers_waiting(env, "advisory") == 1)
            assert writers_waiting(env, "advisory") == 1
            assert "r" not in posts[0][1]
            held.close()
            held = None
            # it writes, its COMMIT waits for the standby, and the turn is free
            wait_until(lambda: writers_waiting(env, "SyncRep") == 1)
            assert writers_waiting(env, "SyncRep") == 1
            assert turn_holders(env) == 0
            # the other instance's writer takes the turn and writes meanwhile:
            # its COMMIT waits for the standby too, or (when the two sessions
            # share a part of the revenue balance, pg_backend_pid() % 64) its
            # postings wait for the first COMMIT's row lock, turn in hand
            posts.append(post_in_thread(bd2, "/v1/usage", usage("early-s2", accts[1])))
            wait_until(lambda: writers_waiting(env, "SyncRep") == 2 or writers_waiting(env, "row") == 1)
            assert (writers_waiting(env, "SyncRep"), writers_waiting(env, "row")) in ((2, 0), (1, 1))
            assert writers_waiting(env, "advisory") == 0
            assert all("r" not in out for _, out in posts)
        finally:
            standby_names(env, "")
    finally:
        try:
            if held:
                held.close()
            for t, _ in posts:
                t.join(30)
        finally:
            try:
                if bd:
                    bd.stop()
            finally:
                if bd2:
                    bd2.stop()
    for (_, out), rid in zip(posts, ("early-s1", "early-s2")):
        assert "r" in out, rid
        assert out["r"].status_code == 200, out["r"].text
        assert env.one("SELECT count(*) FROM usage_records WHERE request_id = %s", (rid,)) == 1
    for b in (bd, bd2):
        assert "turn not given back" not in b.logs()
    env.assert_books_sound()
