"""Inputs of `ledger` that gave a report of something else than what was
asked: a --month with a sign or a space in it (sscanf's %u takes both) was
read as another month and printed under the label given; `trial-balance
--at 1970-01-01T00:00:00Z` (the epoch: microsecond 0) was read as "no --at"
and summed every entry instead of none."""
import json

import pytest

from conftest import new_account


def one_line_error(p, code):
    assert p.returncode == code, f"exit {p.returncode}, wanted {code}:\n{p.stdout}\n{p.stderr}"
    lines = p.stderr.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith("ledger: "), repr(p.stderr)
    return lines[0]


@pytest.mark.parametrize("month", ["2026-+1", "2026- 1", "-202-11", "+202-11", " 202-11", "2026-1 "])
def test_a_month_that_is_not_yyyy_mm_is_a_usage_error(env, month):
    a = new_account(env, "cli-edge-month")
    p = env.ledger("statement", "--account", a, "--month", month, check=False)
    assert "is not YYYY-MM" in one_line_error(p, 2)
    assert p.stdout == ""


def test_trial_balance_at_the_epoch_holds_nothing(env):
    a = new_account(env, "cli-edge-epoch")
    env.admin("topup", "--account", a, "--amount", "5", "--payment-ref", "cli-edge-epoch-pay")
    everything = json.loads(env.ledger("trial-balance", "--json").stdout)
    assert everything["total_debits_nanos"] >= 5_000_000_000
    for at in ("1970-01-01T00:00:00Z", "1970-01-01", "1969-12-31T23:59:59.999999Z"):
        t = json.loads(env.ledger("trial-balance", "--at", at, "--json").stdout)
        assert t == {"accounts": [], "total_debits_nanos": 0, "total_credits_nanos": 0, "balanced": True}, (at, t)
    # an instant after every entry gives what no --at gives, to the year 9999
    for at in ("9999-12-31T23:59:59.999999Z", "2200-01-01"):
        assert json.loads(env.ledger("trial-balance", "--at", at, "--json").stdout) == everything
