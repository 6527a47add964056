#!/usr/bin/env python3
"""report.py: the summaries and the table of `make bench` (scripts/bench.sh).

  report.py pgbench DIR WARMUP SECONDS CLIENTS
      reads pgbench's per-transaction logs (DIR/pgb.*) and prints one JSON
      object shaped like loadgen's: the transactions completed in
      [start + WARMUP, start + WARMUP + SECONDS], their latency percentiles.

  report.py wrk FILE LABEL CONNS
      reads wrk's output (run with --latency) and prints one JSON object
      shaped like loadgen's: answered-with-2xx requests a second, p50/p99.

  report.py table RUNDIR OUT.json
      reads the scenario files of one run (RUNDIR/*.json), prints the table
      (scenario, throughput, p50/p99/p99.9, baseline, ratio, goal, holds?) and
      writes OUT.json: the rows, the raw scenario results and the machine.

Standard library only (Debian's python3)."""
import glob
import json
import os
import platform
import subprocess
import sys


def pct(sorted_vals, q):
    if not sorted_vals:
        return 0.0
    i = min(int(q * len(sorted_vals)), len(sorted_vals) - 1)
    return sorted_vals[i]


def cmd_pgbench(d, warm, secs, clients):
    warm, secs = float(warm), float(secs)
    done = []  # (completion time s, latency us)
    for path in glob.glob(os.path.join(d, "pgb.*")):
        with open(path) as f:
            for line in f:
                p = line.split()
                if len(p) < 6 or not p[2].lstrip("-").isdigit():
                    continue
                lat = int(p[2])
                if lat < 0:  # skipped or failed transaction
                    continue
                done.append((int(p[4]) + int(p[5]) / 1e6, lat))
    if not done:
        print(json.dumps({"label": "pgbench", "requests": 0, "ok": 0, "rps": 0, "ok_rps": 0, "items_per_s": 0,
                          "error_sample": "no pgbench log"}))
        return
    start = min(t - lat / 1e6 for t, lat in done)
    lo, hi = start + warm, start + warm + secs
    lats = sorted(lat / 1000.0 for t, lat in done if lo <= t <= hi)
    n = len(lats)
    out = {"label": "pgbench", "conns": int(clients), "batch": 0, "window_s": secs, "requests": n, "ok": n,
           "errors": 0, "rps": n / secs, "ok_rps": n / secs, "items_per_s": n / secs,
           "mean_ms": sum(lats) / n if n else 0, "p50_ms": pct(lats, 0.5), "p90_ms": pct(lats, 0.9),
           "p99_ms": pct(lats, 0.99), "p999_ms": pct(lats, 0.999), "max_ms": lats[-1] if lats else 0,
           "total_transactions": len(done)}
    print(json.dumps(out))


def wrk_ms(v):
    """wrk's latency text (812.00us, 1.23ms, 2.00s) in milliseconds."""
    for unit, f in (("us", 1e-3), ("ms", 1.0), ("s", 1e3), ("m", 6e4)):
        if v.endswith(unit):
            try:
                return float(v[:-len(unit)]) * f
            except ValueError:
                return None
    return None


def cmd_wrk(path, label, conns):
    out = {"label": label, "conns": int(conns), "generator": "wrk"}
    try:
        text = open(path).read()
    except OSError as e:
        text, out["error_sample"] = "", str(e)
    reqs = secs = None
    bad = 0
    for line in text.splitlines():
        p = line.split()
        if len(p) >= 4 and p[1] == "requests" and p[2] == "in":  # "N requests in 12.00s, 3.1MB read"
            reqs, secs = int(p[0]), wrk_ms(p[3].rstrip(",")) / 1e3
        elif line.strip().startswith("Non-2xx or 3xx responses:"):
            bad += int(p[-1])
        elif line.strip().startswith("Socket errors:"):
            bad += sum(int(x.rstrip(",")) for x in p[3::2])
        elif len(p) == 2 and p[0] in ("50%", "99%"):
            out["p50_ms" if p[0] == "50%" else "p99_ms"] = wrk_ms(p[1])
    if reqs is None or not secs:
        out.update(ok_rps=None, rps=None, errors=1, error_sample=out.get("error_sample") or text.strip()[-200:])
    else:
        out.update(rps=reqs / secs, ok_rps=(reqs - bad) / secs, requests=reqs, errors=bad)
        if bad:
            out["error_sample"] = "non-2xx or socket errors (wrk counts them, not their status)"
    print(json.dumps(out))


def load(run, name):
    try:
        with open(os.path.join(run, name + ".json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def sh(*args):
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine():
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
            "postgres": sh("pg_config", "--version"), "redis": sh("redis-server", "--version"),
            "commit": sh("git", "rev-parse", "--short", "HEAD"),
            "dirty": bool(sh("git", "status", "--porcelain", "--untracked-files=no")),
            "binaries_from": os.environ.get("BENCH_BINARIES_FROM", "")}


def fmt_num(v):
    if v is None:
        return "n/a"
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def fmt_ms(v):
    return "-" if v is None else f"{v:.2f}"


def grouping(run):
    """The authorize decisions and the Redis calls that carried them (billingd's
    /metrics right after the authorize scenario, warm-up included)."""
    got = {}
    try:
        with open(os.path.join(run, "authorize_metrics.txt")) as f:
            for line in f:
                p = line.split()
                if len(p) == 2 and p[0] in ("billing_authorize_decisions_total", "billing_authorize_redis_calls_total"):
                    got[p[0]] = float(p[1])
    except OSError:
        return ""
    d, c = got.get("billing_authorize_decisions_total"), got.get("billing_authorize_redis_calls_total")
    if not d or not c:
        return ""
    return f"{d:,.0f} decisions in {c:,.0f} Redis calls ({d / c:.1f} a call)"


def metric(run, name, fname):
    """One sample of billingd's /metrics as saved in the run folder, or None."""
    try:
        with open(os.path.join(run, fname)) as f:
            for line in f:
                p = line.split()
                if len(p) == 2 and p[0] == name:
                    return float(p[1])
    except OSError:
        pass
    return None


def yielded(run):
    """The seconds the model's workers paused for billing during the
    during-chat scenario (billing_inference_yield_seconds_total, inference_busy_share)."""
    name = "billing_inference_yield_seconds_total"
    a, b = metric(run, name, "authorize_metrics.txt"), metric(run, name, "authorize_chat_metrics.txt")
    return "" if a is None or b is None else f"model workers paused {b - a:.1f} s"


def cpu_budgets(au, ba, us, bu, pg, bt, cp):
    """What each goal leaves a request of the machine's CPU, against what the
    request costs and what its baselines cost (machine-wide, quiet machine)."""
    n = os.cpu_count() or 1
    c = lambda r: (r or {}).get("cpu_us_per_item")
    out = []
    if c(au) and c(ba) and ba.get("ok_rps"):
        out.append(f"authorize {c(au):.1f} us, bare evhttp {c(ba):.1f} us; 0.7x of bare leaves "
                   f"{n * 1e6 / (0.7 * ba['ok_rps']):.1f} us")
    if c(us) and c(bu) and bu.get("ok_rps"):
        line = (f"single usage {c(us):.1f} us; its HTTP round trip alone (bare) {c(bu):.1f} us"
                + (f" + COPY of its rows {c(cp):.1f} us = {c(bu) + c(cp):.1f} us at least" if c(cp) else "")
                + f"; 0.5x of bare leaves {n * 1e6 / (0.5 * bu['ok_rps']):.1f} us")
        if pg and pg.get("ok_rps"):
            line += f", 4x pgbench {n * 1e6 / (4 * pg['ok_rps']):.1f} us"
        out.append(line)
    if c(bt) and c(cp) and cp.get("items_per_s"):
        out.append(f"batch {c(bt):.1f} us a record, COPY {c(cp):.1f} us; 0.5x of COPY leaves "
                   f"{n * 1e6 / (0.5 * cp['items_per_s']):.1f} us")
    return out


def cmd_table(run, out_path):
    meta = load(run, "meta") or {}
    rows = []

    def notes_of(*results):
        n = []
        for r in results:
            if not r:
                continue
            bad = r.get("errors", 0) + r.get("item_errors", 0)
            if bad:
                n.append(f"{r.get('label')}: {bad} errors ({r.get('error_sample', '')[:80]})")
        return "; ".join(n)

    def add(scenario, unit, value, lat, base_name, base_value, goal=None, op=None, notes="", ratio=None, base=None):
        if ratio is None and value is not None and base_value:
            ratio = value / base_value
        holds = None
        if goal is not None:
            if op == ">=" and ratio is not None:
                holds = ratio >= goal
            elif op == "<=" and value is not None:
                holds = value <= goal
        rows.append({"scenario": scenario, "unit": unit, "value": value,
                     "p50_ms": lat.get("p50_ms") if lat else None, "p99_ms": lat.get("p99_ms") if lat else None,
                     "p999_ms": lat.get("p999_ms") if lat else None, "baseline": base_name,
                     "baseline_value": base_value, "ratio": ratio,
                     "goal": (f"{op} {goal}x" if op == ">=" else f"{op} {goal:g} MB") if goal is not None else "info",
                     "holds": holds, "notes": notes,
                     "cpu_us": (lat or {}).get("cpu_us_per_item"), "base_cpu_us": (base or {}).get("cpu_us_per_item")})

    ba, au, ac, ch = load(run, "bare_authorize"), load(run, "authorize"), load(run, "authorize_chat"), load(run, "chat")
    bu, us, pg = load(run, "bare_usage"), load(run, "usage"), load(run, "pgbench")
    bt, cp = load(run, "batch"), load(run, "copy")
    ex, ct = load(run, "export"), load(run, "copy_to")
    kn, idl, bidl = load(run, "kernels"), load(run, "idle"), load(run, "bare_idle")

    if au:
        add(f"authorize (c={au.get('conns')})", "req/s", au["ok_rps"], au, "bare evhttp",
            ba["ok_rps"] if ba else None, 0.7, ">=", "; ".join(n for n in (notes_of(au, ba), grouping(run)) if n), base=ba)
    wb, wh, wa = load(run, "wrk-bare"), load(run, "wrk-hot"), load(run, "wrk-accounts")
    for r, what in ((wh, "1 hot account"), (wa, "accounts in turn")):
        if r:
            add(f"authorize under wrk, {what} (c={r.get('conns')})", "req/s", r["ok_rps"], r,
                "bare evhttp under wrk", wb["ok_rps"] if wb else None, 0.7, ">=",
                "; ".join(n for n in (notes_of(r, wb), (f"p99 {r['p99_ms']:.2f} ms vs bare {wb['p99_ms']:.2f} ms"
                                                         if wb and r.get("p99_ms") and wb.get("p99_ms") else "")) if n))
    cl, cs = load(run, "cluster"), load(run, "cluster_single")
    if cl:
        add(f"authorize, 3-master Redis Cluster (c={cl.get('conns')})", "req/s", cl["ok_rps"], cl,
            "single Redis, same run", cs["ok_rps"] if cs else None, 0.8, ">=",
            notes_of(cl, cs) or (f"single Redis p99 {cs['p99_ms']:.2f} ms" if cs else ""), base=cs)
    if us:
        add(f"usage, 1 record, durable (c={us.get('conns')})", "req/s", us["ok_rps"], us, "bare evhttp",
            bu["ok_rps"] if bu else None, 0.5, ">=", notes_of(us, bu), base=bu)
        add(f"usage, 1 record, durable (c={us.get('conns')})", "req/s", us["ok_rps"], us,
            "pgbench 1 tx/record", pg["ok_rps"] if pg else None, 4, ">=",
            (f"pgbench p50 {pg['p50_ms']:.2f} p99 {pg['p99_ms']:.2f} ms" if pg else ""))
    hu = load(run, "ha_usage")
    if hu:
        add(f"usage, durable, sync standby (c={hu.get('conns')})", "req/s", hu["ok_rps"], hu,
            "single server, same run", us["ok_rps"] if us else None,
            notes=notes_of(hu) or "pg_auto_failover: primary + 2 standbys, number_sync_standbys 1, "
            "pg_standby_confirm_ms; all on this machine")
    if bt:
        add(f"usage batch, 1000/request (c={bt.get('conns')})", "rec/s", bt["items_per_s"], bt,
            "COPY same rows", cp["items_per_s"] if cp else None, 0.5, ">=", notes_of(bt, cp), base=cp)
    def pair(name):
        """Two load generators of one figure, merged: throughput adds up;
        latency percentiles are the worse of the two (an upper bound)."""
        a, b = load(run, name + "-a"), load(run, name + "-b")
        if not a or not b:
            return None
        m = {"label": name, "conns": a.get("conns", 0) + b.get("conns", 0),
             "errors": a.get("errors", 0) + b.get("errors", 0), "error_sample": a.get("error_sample") or b.get("error_sample", "")}
        for k in ("ok_rps", "rps", "items_per_s"):
            m[k] = a.get(k, 0) + b.get(k, 0)
        for k in ("p50_ms", "p99_ms", "p999_ms"):
            m[k] = max(a.get(k, 0), b.get(k, 0))
        return m

    for kind, unit in (("authorize", "req/s"), ("usage", "req/s")):
        one, two = pair(f"two1-{kind}"), pair(f"two2-{kind}")
        if two:
            add(f"{kind}, 2 instances (c={two['conns']})", unit, two["ok_rps"], two, "1 instance, same load",
                one["ok_rps"] if one else None, notes=notes_of(one, two) or
                f"{os.cpu_count()} CPUs shared by PostgreSQL, Redis, billingd and the load generators")
    m1a, m2a = load(run, "mix1-authorize"), load(run, "mix2-authorize")
    m1u, m2u = load(run, "mix1-usage"), load(run, "mix2-usage")
    if m2a:
        add(f"authorize, usage on the other instance (c={m2a.get('conns')})", "req/s", m2a["ok_rps"], m2a,
            "both on 1 instance", m1a["ok_rps"] if m1a else None,
            notes=notes_of(m1a, m2a) or (f"usage alongside: {m1u['ok_rps']:,.0f} req/s on 1, {m2u['ok_rps']:,.0f} on 2"
                                         if m1u and m2u else ""))
    if ex is not None or ct is not None:
        ev = ex["rows"] / ex["seconds"] if ex and ex.get("available") and ex.get("seconds") else None
        cv = ct["rows"] / ct["seconds"] if ct and ct.get("seconds") else None
        note = f"{ex['rows']:,} rows" if ev else (ex or {}).get("reason", "")
        add("ledger export csv", "rows/s", ev, None, "COPY (SELECT) TO", cv, 0.5, ">=", note)
    if kn:
        add("tokenizer, 1 thread", "MB/s", kn["tokenizer_mb_s"], None, "-", None,
            notes=f"{kn['tokenizer_ids_s'] / 1e6:.2f} M ids/s")
        add("model decode, 1 thread", "tok/s", kn["model_tokens_s"], None, "-", None,
            notes=f"prefill {kn['model_prefill_tokens_s']:,.0f} tok/s, ctx {kn['model_ctx']}")
    if ch:
        add(f"chat via HTTP (c={ch.get('conns')}, 64 tok)", "tok/s", ch.get("sum_per_s"), ch, "-", None,
            notes=f"{ch['ok_rps']:.1f} calls/s" + ("; " + notes_of(ch) if notes_of(ch) else ""))
    if ac:
        add(f"authorize during chat (c={ac.get('conns')})", "req/s", ac["ok_rps"], ac, "authorize alone",
            au["ok_rps"] if au else None, 0.9, ">=",
            notes="; ".join(n for n in ((f"p99 {au['p99_ms']:.2f} -> {ac['p99_ms']:.2f} ms" if au else ""),
                                        yielded(run), notes_of(ac)) if n), base=au)
    if idl:
        mb = idl["rss_kb"] / 1024 if idl.get("rss_kb", -1) > 0 else None
        bmb = bidl["rss_kb"] / 1024 if bidl and bidl.get("rss_kb", -1) > 0 else None
        add(f"billingd RSS, {idl.get('idle_reached')} idle conns", "MB", mb, None, "bare evhttp", bmb, 64, "<=",
            f"before {idl['rss_before_kb'] / 1024:.1f} MB; peak since start (VmHWM) {idl.get('hwm_kb', 0) / 1024:.1f} MB; "
            f"{idl.get('open_at_end')} open at end")

    head = ["scenario", "throughput", "p50 ms", "p99 ms", "p99.9 ms", "CPU us", "baseline", "baseline thr",
            "base CPU us", "ratio", "goal", "holds?"]
    cpu = lambda v: f"{v:,.1f}" if v is not None else "-"
    table = []
    for r in rows:
        table.append([r["scenario"], f"{fmt_num(r['value'])} {r['unit']}", fmt_ms(r["p50_ms"]), fmt_ms(r["p99_ms"]),
                      fmt_ms(r["p999_ms"]), cpu(r["cpu_us"]), r["baseline"],
                      (f"{fmt_num(r['baseline_value'])} {r['unit']}" if r["baseline_value"] is not None else "-"),
                      cpu(r["base_cpu_us"]), (f"{r['ratio']:.2f}x" if r["ratio"] is not None else "-"), r["goal"],
                      {True: "yes", False: "NO", None: "-" if r["goal"] == "info" else "n/a"}[r["holds"]]])
    w = [max(len(head[i]), *(len(t[i]) for t in table)) if table else len(head[i]) for i in range(len(head))]
    line = lambda cells: "  ".join(c.ljust(w[i]) if i in (0, 6, 10) else c.rjust(w[i]) for i, c in enumerate(cells))
    print()
    print(line(head))
    print("  ".join("-" * x for x in w))
    for t in table:
        print(line(t))
    notes = [(r["scenario"], r["notes"]) for r in rows if r["notes"]]
    if notes:
        print()
        for s, n in notes:
            print(f"  {s}: {n}")
    budget = cpu_budgets(au, ba, us, bu, pg, bt, cp)
    if budget:
        print(f"\n  CPU us: the whole machine's busy CPU time (every process, /proc/stat) over the scenario's window,"
              f" per request (batch: per record).\n  What a goal's rate leaves a request ({os.cpu_count()} CPUs / rate),"
              f" against what it costs (on a quiet machine):")
        for b in budget:
            print(f"  {b}")
    m = machine()
    print(f"\n  {m['cpus']} CPUs ({m['cpu']}), {m['postgres']}, commit {m['commit']}{' (dirty)' if m['dirty'] else ''}"
          f"{'; binaries from ' + m['binaries_from'] + ', not this commit' if m['binaries_from'] else ''}; "
          f"{meta.get('seconds')} s per scenario after {meta.get('warmup')} s warm-up, {meta.get('accounts')} accounts; "
          f"load average {meta.get('loadavg_start')} before, {meta.get('loadavg_end')} after (other work on the machine skews all numbers)")
    held = [r for r in rows if r["holds"] is not None]
    print(f"  goals holding: {sum(1 for r in held if r['holds'])} of {len(held)}"
          f" (plus {sum(1 for r in rows if r['goal'] != 'info' and r['holds'] is None)} n/a)")
    raw = {}
    for path in sorted(glob.glob(os.path.join(run, "*.json"))):
        name = os.path.basename(path)[:-5]
        raw[name] = load(run, name)
    with open(out_path, "w") as f:
        json.dump({"stamp": meta.get("stamp"), "machine": m, "meta": meta, "rows": rows, "raw": raw}, f, indent=1)
    print(f"  results: {out_path}")


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "pgbench" and len(sys.argv) == 6:
        cmd_pgbench(*sys.argv[2:])
    elif len(sys.argv) >= 2 and sys.argv[1] == "wrk" and len(sys.argv) == 5:
        cmd_wrk(*sys.argv[2:])
    elif len(sys.argv) >= 2 and sys.argv[1] == "table" and len(sys.argv) == 4:
        cmd_table(sys.argv[2], sys.argv[3])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
