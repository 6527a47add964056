"""The suite's own guard (conftest.Env.sql): a statement that runs past
SQL_WATCHDOG_S is cancelled and fails its test, naming the statement,
instead of hanging the suite (under libfaketime PostgreSQL's lock_timeout
and deadlock detection never fire)."""
import time

import pytest

import conftest


def test_a_statement_past_the_watchdog_fails_naming_it(env, monkeypatch):
    monkeypatch.setattr(conftest, "SQL_WATCHDOG_S", 1)
    t0 = time.monotonic()
    with pytest.raises(AssertionError, match=r"still running after 1 s, cancelled: SELECT pg_sleep\(30\)"):
        env.sql("SELECT pg_sleep(30)")
    assert time.monotonic() - t0 < 15


def test_a_statement_within_the_watchdog_answers(env, monkeypatch):
    monkeypatch.setattr(conftest, "SQL_WATCHDOG_S", 5)
    assert env.one("SELECT 41 + 1") == 42
    time.sleep(5.5)  # the timer of the statement above is gone: nothing cancels later work
    assert env.one("SELECT pg_sleep(0.2)::text || 'ok'") == "ok"
