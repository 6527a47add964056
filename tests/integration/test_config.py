"""billingd's configuration keys: the key table (common/config.c) holds every
value at start, before anything is connected or served."""
import os
import subprocess

from conftest import BIN

# (key, value, the one line billingd prints); no database is needed: the
# values are checked before billingd connects to anything
CASES = [
    ("batch_max", "0", "config key 'batch_max': expected an integer in [1, 10000]"),
    ("batch_max", "ten", "config key 'batch_max': expected an integer in [1, 10000]"),
    ("usage_stream_claim_ms", "99", "config key 'usage_stream_claim_ms': expected an integer in [100, 86400000]"),
    ("redis_fail_open", "maybe", "config key 'redis_fail_open': expected true or false"),
    ("referral_trigger", "signup", "config key 'referral_trigger': expected one of verify|topup"),
    ("max_topup", "-1", "config key 'max_topup': expected a positive amount in currency units"),
    ("log_level", "loud", "log_level must be debug, info, warn or error"),
]


def run_billingd(*args):
    env = {"PATH": os.environ["PATH"], "BILLING_CONFIG": ""}
    return subprocess.run([os.path.join(BIN, "billingd"), *args], capture_output=True, text=True, timeout=20,
                          env=env)


def test_a_bad_value_stops_billingd_at_start_with_one_line_naming_its_key():
    for key, value, line in CASES:
        p = run_billingd(f"--{key}", value, "--pg", "host=127.0.0.1 port=1 connect_timeout=1")
        assert (p.returncode, p.stderr) == (2, f"billingd: {line}\n"), (key, value, p.returncode, p.stderr)


def test_help_prints_every_key_with_its_type_and_default():
    out = run_billingd("--help").stdout
    lines = [l for l in out.splitlines() if l.startswith("  ")]
    assert len(lines) >= 37, out
    assert "  batch_max              [integer 1..10000] " in out and out.count("(default: ") == len(lines), out
    assert "gateway_tokens_file    [path, re-read on SIGHUP]" in out, out


def test_the_clis_refuse_a_bad_value_as_billingd_does():
    """billing-admin and ledger check every key with billingd's table before
    they connect: a misspelled referral_trigger used to read as the default
    (`billing-admin topup` then gave no referral reward, silently)."""
    for key, value, line in CASES:
        if key == "log_level":  # billingd's logger says it first, in its own words
            line = "config key 'log_level': expected one of debug|info|warn|error"
        for tool, args in (("billing-admin", ("price", "list")), ("ledger", ("trial-balance",))):
            env = {"PATH": os.environ["PATH"], "BILLING_CONFIG": "", "BILLING_" + key.upper(): value,
                   "BILLING_PG": "host=127.0.0.1 port=1 connect_timeout=1"}
            p = subprocess.run([os.path.join(BIN, tool), *args], capture_output=True, text=True, timeout=20, env=env)
            assert (p.returncode, p.stderr) == (1, f"{tool}: {line}\n"), (tool, key, value, p.returncode, p.stderr)
