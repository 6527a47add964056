"""/metrics passes `promtool check metrics` (Debian's
prometheus package), and every family is there from start, at 0."""
import shutil
import subprocess
import time

import pytest
import requests

FAMILIES = {  # name: type
    "billing_http_connections_rejected_total": "counter",
    "billing_http_request_timeouts_total": "counter",
    "billing_usage_queue_depth": "gauge",
    "billing_db_queue_depth": "gauge",
    "billing_inflight_requests": "gauge",
    "billing_http_connections": "gauge",
    "billing_http_requests_total": "counter",
    "billing_http_request_duration_seconds": "histogram",
    "billing_commit_batch_records": "histogram",
    "billing_commit_duration_seconds": "histogram",
    "billing_usage_records_total": "counter",
    "billing_usage_nanos_total": "counter",
    "billing_memory_trims_total": "counter",
}


def promtool(text):
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: scripts/deps.sh installs Debian's prometheus package"
    return subprocess.run([tool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)


def families(text):
    help_, type_ = {}, {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, h = line[7:].partition(" ")
            help_[name] = h
        elif line.startswith("# TYPE "):
            name, _, t = line[7:].partition(" ")
            type_[name] = t
    return help_, type_


def test_metrics_pass_promtool_from_start(billingd):
    text = requests.get(billingd.url + "/metrics", timeout=30).text
    p = promtool(text)
    assert p.returncode == 0, p.stdout + p.stderr
    help_, type_ = families(text)
    for name, t in FAMILIES.items():
        assert type_.get(name) == t, (name, type_.get(name))
        assert help_.get(name), name
    # counters an alert takes rate() of exist before their first event
    samples = dict(l.rsplit(" ", 1) for l in text.splitlines() if l and not l.startswith("#"))
    assert samples["billing_http_connections_rejected_total"] == "0"
    assert samples["billing_http_request_timeouts_total"] == "0"
    # every TYPE has a HELP and the other way round
    assert set(help_) == set(type_)


def test_metrics_pass_promtool_after_traffic(billingd):
    requests.get(billingd.url + "/healthz", timeout=30)
    requests.get(billingd.url + "/v1/nothing", headers=billingd.h(), timeout=30)
    requests.post(billingd.url + "/v1/accounts", json={"external_id": "metrics-1"}, headers=billingd.h(), timeout=30)
    text = requests.get(billingd.url + "/metrics", timeout=30).text
    p = promtool(text)
    assert p.returncode == 0, p.stdout + p.stderr
    assert 'billing_http_requests_total{route="/v1/accounts",status="201"} 1' in text


def test_memory_goes_back_after_a_surge(billingd):
    """common/memtrim.h: a surge (here about a thousand requests a second),
    then two quiet seconds: billingd calls malloc_trim once and counts it."""
    def trims():
        text = requests.get(billingd.url + "/metrics", timeout=30).text
        return int(dict(l.rsplit(" ", 1) for l in text.splitlines() if l and not l.startswith("#"))
                   ["billing_memory_trims_total"])
    before = trims()
    s = requests.Session()
    t0 = time.monotonic()
    n = 0
    while time.monotonic() - t0 < 2.5:  # two or three ticks of the surge
        assert s.get(billingd.url + "/healthz", timeout=30).status_code == 200
        n += 1
    assert n / 2.5 >= 300, f"{n} requests in 2.5 s: too few for a surge (MEMTRIM_SURGE is 200 a second)"
    deadline = time.monotonic() + 10
    while trims() == before and time.monotonic() < deadline:
        time.sleep(0.25)
    assert trims() == before + 1, "no trim after the surge"
    time.sleep(3)
    assert trims() == before + 1, "trimmed again without a new surge"
