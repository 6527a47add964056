"""The model's workers back off while billing is busy (inference_busy_share,
inference_busy_requests; common/backoff.h): under an authorize load they
pause between tokens (billing_inference_yield_seconds_total grows) and a
chat call still completes; with billing quiet they never pause.  Only
answers that were billing's work count as load (status < 400, and 402 and
429), not a flood of refused requests; and a non-streamed call, whose caller
sees nothing until the end, pauses at most BACKOFF_MAX_CALL_PAUSE_US (1 s)
in all."""
import re
import threading
import time

import pytest
import requests

from conftest import GATEWAY_TOKEN, model_billingd, new_api_key, new_account

CHAT = {"model": "internal-tiny", "messages": [{"role": "user", "content": "count to ten"}],
        "max_tokens": 48, "temperature": 0}


@pytest.fixture(scope="module")
def bd(env):
    # 50 billing answers a second count as busy: a few Python threads are load enough
    b = model_billingd(env, {"inference_threads": "1", "inference_busy_share": "10",
                             "inference_busy_requests": "50"})
    yield b
    b.stop()


def yielded(bd):
    text = requests.get(bd.url + "/metrics", timeout=10).text
    m = re.search(r"^billing_inference_yield_seconds_total (\S+)$", text, re.M)
    assert m, "no billing_inference_yield_seconds_total in /metrics"
    return float(m.group(1))


def chat(bd, key, body=CHAT):
    r = requests.post(bd.url + "/internal/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {key}"}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


class AuthorizeLoad:
    """Threads posting /v1/authorize back to back until stopped."""

    def __init__(self, bd, acct, threads=3):
        self.bd, self.acct, self.stop_ev, self.count = bd, acct, threading.Event(), 0
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(threads)]

    def run(self, i):
        s = requests.Session()
        h = {"Authorization": f"Bearer {GATEWAY_TOKEN}"}
        n = 0
        while not self.stop_ev.is_set():
            n += 1
            s.post(self.bd.url + "/v1/authorize", headers=h, timeout=10,
                   json={"request_id": f"bo-{self.acct}-{i}-{n}", "account_id": self.acct,
                         "model": "internal-tiny", "input_tokens": 10, "max_output_tokens": 0})
        self.count += n

    def __enter__(self):
        for t in self.threads:
            t.start()
        time.sleep(0.5)  # a few of the meter's windows
        return self

    def __exit__(self, *exc):
        self.stop_ev.set()
        for t in self.threads:
            t.join()


def test_quiet_billing_no_pause(env, bd):
    _, key = new_api_key(env, "bo-quiet")
    before = yielded(bd)
    out = chat(bd, key)
    assert out["usage"]["completion_tokens"] >= 1
    assert yielded(bd) == before == 0.0


def test_busy_billing_workers_pause_and_chat_completes(env, bd):
    _, key = new_api_key(env, "bo-busy")
    acct = new_account(env, "bo-load")
    quiet = chat(bd, key)
    before = yielded(bd)
    with AuthorizeLoad(bd, acct) as load:
        busy = chat(bd, key)
        stream = requests.post(bd.url + "/internal/v1/chat/completions", json=dict(CHAT, stream=True),
                               headers={"Authorization": f"Bearer {key}"}, timeout=60, stream=True)
        events = [l for l in stream.iter_lines(decode_unicode=True) if l.startswith("data: ")]
        during = yielded(bd)
    assert load.count > 0
    # the same greedy answer, only slower
    assert busy["choices"][0]["message"]["content"] == quiet["choices"][0]["message"]["content"]
    assert busy["usage"] == quiet["usage"]
    assert stream.status_code == 200 and events[-1] == "data: [DONE]"
    assert during > before, (before, during)
    # billing quiet again (the meter's hold is 0.2 s): full speed, no pause
    time.sleep(0.5)
    after = yielded(bd)
    chat(bd, key)
    assert yielded(bd) == after


class RefusedLoad(AuthorizeLoad):
    """Threads sending requests that billing refuses before any work, back to
    back: no bearer token (401), an admin route with the gateway's (403), the
    wrong method (405), a body that is not JSON (400)."""

    statuses = None

    def run(self, i):
        s = requests.Session()
        gw = {"Authorization": f"Bearer {GATEWAY_TOKEN}"}
        url = self.bd.url
        calls = [lambda: s.post(url + "/v1/authorize", json={}, timeout=10),
                 lambda: s.get(url + "/v1/admin/accounts/1", headers=gw, timeout=10),
                 lambda: s.get(url + "/v1/authorize", headers=gw, timeout=10),
                 lambda: s.post(url + "/v1/authorize", headers=gw, data=b"{", timeout=10)]
        n, statuses = 0, set()
        while not self.stop_ev.is_set():
            statuses.add(calls[n % len(calls)]().status_code)
            n += 1
        self.statuses = statuses | (self.statuses or set())
        self.count += n


def test_refused_requests_are_not_billing_load(env, bd):
    _, key = new_api_key(env, "bo-refused")
    time.sleep(0.5)  # the hold of an earlier test's load has run out
    before = yielded(bd)
    t0 = time.monotonic()
    with RefusedLoad(bd, None) as load:
        chat(bd, key)
        chat(bd, key)
        during = yielded(bd)
    # the flood was at least twice inference_busy_requests (50 a second), all of it refused
    assert load.count / (time.monotonic() - t0) > 100, load.count
    assert load.statuses == {400, 401, 403, 405}, load.statuses
    assert during == before, (before, during)


@pytest.fixture
def bd1(env):
    # a share of 1 %: every token is followed by the longest pause, 50 ms
    b = model_billingd(env, {"inference_threads": "1", "inference_busy_share": "1",
                             "inference_busy_requests": "50"})
    yield b
    b.stop()


def test_non_streamed_call_pauses_at_most_a_second(env, bd1):
    _, key = new_api_key(env, "bo-nonstream")
    # seeded sampling: runs to its max_tokens (test_inference.py), the same tokens each time
    long = {"model": "internal-tiny", "messages": [{"role": "user", "content": "a b c d e f g"}],
            "max_tokens": 120, "temperature": 1.5, "seed": 0}
    quiet = chat(bd1, key, long)
    assert quiet["usage"]["completion_tokens"] == 120
    before = yielded(bd1)
    with AuthorizeLoad(bd1, new_account(env, "bo-load-1")):
        busy = chat(bd1, key, long)
    paused = yielded(bd1) - before
    assert busy["choices"][0]["message"]["content"] == quiet["choices"][0]["message"]["content"]
    # backed off, but 1 s in all, not up to 50 ms for each of its 120 tokens
    # (the slack: each pause may oversleep a little)
    assert 0 < paused <= 1.2, paused
