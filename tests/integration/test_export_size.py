"""Exporting a range of at least 1,000,000 postings keeps
the exporter's peak RSS under 64 MB, and the manifest's totals equal the
trial balance for that range.  Minutes long, so it runs by itself:
`make export-size-test` (BILLING_EXPORT_SIZE_TEST=1); skipped otherwise."""
import json
import os
import subprocess
import time

import pytest

from conftest import BIN, ROOT

ITEST = os.environ.get("BILLING_ITEST_BIN", os.path.join(ROOT, "build", "itest"))
RSS_LIMIT_KB = 64 * 1024

pytestmark = pytest.mark.skipif(not os.environ.get("BILLING_EXPORT_SIZE_TEST"),
                                reason="the 1M-posting export test runs with `make export-size-test`")


def run_rss(env, *args):
    """Runs `ledger ARGS` under rss_run; (exit code, its own peak RSS in kB, seconds)."""
    t0 = time.time()
    p = subprocess.run([os.path.join(ITEST, "rss_run"), os.path.join(BIN, "ledger")] + [str(a) for a in args],
                       env=env.cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=900)
    last = p.stderr.strip().split("\n")[-1]
    assert last.startswith("rss_run: maxrss_kb="), p.stderr
    return p.returncode, int(last.split("=")[1]), time.time() - t0


def test_one_million_postings_in_constant_memory(env, tmp_path):
    env.admin("keygen", "--out", env.signing_key)
    t0 = time.time()
    # two writers in parallel, 250,000 two-posting transactions each inside October 2026, 1% before and after
    loaders = [subprocess.Popen([os.path.join(ITEST, "export_load"), env.pg, "50", "250000", str(seed),
                                 "2026-10-01", "2026-11-01"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for seed in (101, 102)]
    for p in loaders:
        out, err = p.communicate(timeout=900)
        assert p.returncode == 0, err.decode()
    load_s = time.time() - t0
    in_range = env.one("SELECT count(*) FROM postings p JOIN journal j USING (txn_id)"
                       " WHERE j.created_at >= '2026-10-01' AND j.created_at < '2026-11-01'")
    assert in_range >= 1_000_000

    path = tmp_path / "october.csv"
    rc, rss, secs = run_rss(env, "export", "--from", "2026-10-01", "--to", "2026-11-01", "--out", path)
    assert rc == 0
    with open(str(path) + ".manifest.json") as f:
        m = json.load(f)
    assert m["rows"] == in_range >= 1_000_000
    print(f"\nload {load_s:.1f} s; export of {m['rows']} postings ({m['bytes']} bytes): {secs:.1f} s, "
          f"peak RSS {rss} kB")
    assert rss < RSS_LIMIT_KB, f"peak RSS {rss} kB"

    def tb(at):
        t = json.loads(env.ledger("trial-balance", "--at", at, "--json").stdout)
        return {a["type"]: (a["debits_nanos"], a["credits_nanos"]) for a in t["accounts"]}
    end, start = tb("2026-10-31T23:59:59.999999Z"), tb("2026-09-30T23:59:59.999999Z")
    diff = {k: (v[0] - start.get(k, (0, 0))[0], v[1] - start.get(k, (0, 0))[1]) for k, v in end.items()}
    diff = {k: v for k, v in diff.items() if v != (0, 0)}
    assert {k: (v["debits_nanos"], v["credits_nanos"]) for k, v in m["totals"]["by_type"].items()} == diff
    assert m["totals"]["debits_nanos"] == m["totals"]["credits_nanos"]
    assert set(m["chains"]) == {"bulk-101", "bulk-102"}

    # the verifier streams too
    rc, rss, secs = run_rss(env, "verify", "--export", path)
    print(f"verify: {secs:.1f} s, peak RSS {rss} kB")
    assert rc == 0 and rss < RSS_LIMIT_KB
    path.unlink()
