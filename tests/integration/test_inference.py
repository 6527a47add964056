"""The embedded model and tokenizer through the whole metering path."""
import json
import socket
import time

import pytest
import requests

from conftest import Billingd, model_billingd, new_api_key

PRICE_IN, PRICE_OUT = 100_000_000, 200_000_000  # nanos per 1M tokens (0.1 and 0.2 CNY)


@pytest.fixture(scope="module")
def bd(env):
    b = model_billingd(env, {"inference_threads": "1", "inference_queue": "1", "inference_min_token_us": "20000"})
    yield b
    b.stop()


@pytest.fixture(scope="module")
def key(env):
    return new_api_key(env, "chat-user")


def chat(bd, key, body, **kw):
    return requests.post(bd.url + "/internal/v1/chat/completions", json=body,
                         headers={"Authorization": f"Bearer {key}"}, timeout=60, **kw)


MSGS = [{"role": "system", "content": "You are terse."},
        {"role": "user", "content": "计费 test: say hi 👋"},
        {"role": "assistant", "content": "hi"},
        {"role": "user", "content": "again"}]


def test_tokenize_counts_and_ids(bd):
    r = bd.post("/v1/tokenize", {"model": "internal-tiny", "text": "Hello, 世界! 12345", "return_ids": True})
    assert r.status_code == 200
    assert r.json() == {"tokens": 8, "ids": [19923, 14, 223, 3427, 3, 223, 6895, 1883]}
    r = bd.post("/v1/tokenize", {"model": "internal-tiny", "messages": MSGS, "return_ids": True})
    ids = r.json()["ids"]
    assert ids[0] == 0  # <｜begin▁of▁sentence｜>
    assert r.json()["tokens"] == len(ids)
    assert bd.post("/v1/tokenize", {"model": "internal-tiny"}).status_code == 400
    assert bd.post("/v1/tokenize", {"model": "internal-tiny", "text": "x"}, token="nope").status_code == 401


def test_chat_greedy_is_deterministic_and_billed_exactly(env, bd, key):
    acct, k = key
    body = {"model": "internal-tiny", "messages": MSGS, "max_tokens": 12, "temperature": 0}
    a = chat(bd, k, body)
    b = chat(bd, k, body)
    assert a.status_code == 200 and b.status_code == 200, a.text
    ja, jb = a.json(), b.json()
    assert ja["choices"][0]["message"]["content"] == jb["choices"][0]["message"]["content"]
    prompt = bd.post("/v1/tokenize", {"model": "internal-tiny", "messages": MSGS}).json()["tokens"]
    u = ja["usage"]
    assert u["prompt_tokens"] == prompt
    assert 1 <= u["completion_tokens"] <= 12 and u["total_tokens"] == prompt + u["completion_tokens"]
    rows = env.sql("SELECT input_tokens, cached_input_tokens, output_tokens, cost_nanos, status FROM usage_records"
                   " WHERE request_id = %s", (ja["id"],))
    cost = (prompt * PRICE_IN + u["completion_tokens"] * PRICE_OUT + 500_000) // 1_000_000
    assert rows == [(prompt, 0, u["completion_tokens"], cost, "ok")]
    assert ja["billing"]["cost_nanos"] == cost
    assert env.one("SELECT count(*) FROM journal WHERE idempotency_key = %s", ("usage:" + ja["id"],)) == 1
    # seeded sampling: same seed same text
    s1 = chat(bd, k, dict(body, temperature=0.9, seed=7)).json()["choices"][0]["message"]["content"]
    s2 = chat(bd, k, dict(body, temperature=0.9, seed=7)).json()["choices"][0]["message"]["content"]
    assert s1 == s2
    env.assert_books_sound()


def test_stream_cut_off_is_billed_for_generated_tokens(env, bd, key):
    acct, k = key
    before = env.one("SELECT count(*) FROM usage_records")
    body = json.dumps({"model": "internal-tiny", "messages": [{"role": "user", "content": "stream please"}],
                       "max_tokens": 400, "temperature": 0, "stream": True}).encode()
    s = socket.create_connection(("127.0.0.1", bd.port))
    s.sendall(b"POST /internal/v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Authorization: Bearer " + k.encode() + b"\r\nContent-Length: " + str(len(body)).encode() +
              b"\r\n\r\n" + body)
    got = b""
    while got.count(b"data: ") < 4:  # the role chunk and 3 content chunks
        chunk = s.recv(65536)
        assert chunk, got
        got += chunk
    assert b"text/event-stream" in got
    s.close()
    deadline = time.time() + 15
    while env.one("SELECT count(*) FROM usage_records") == before:
        assert time.time() < deadline, bd.logs()
        time.sleep(0.1)
    out, status = env.one("SELECT output_tokens, status FROM usage_records ORDER BY created_at DESC LIMIT 1")
    assert status == "cancelled"
    assert 3 <= out < 400, out  # what was generated: never zero, never the full max_tokens
    env.assert_books_sound()


def test_non_streamed_call_whose_client_leaves_stops_and_is_billed_for_what_was_generated(env, bd, key):
    """CONTRACT.md §3: a client that goes away stops generation, streamed or
    not, and is billed for what was generated.  400 tokens at 20 ms each take
    8 s; the client leaves after about 0.6 s."""
    acct, k = key
    # seeded sampling: this request runs to its 400 tokens when nobody leaves (same tokens on the same build)
    full = {"model": "internal-tiny", "messages": [{"role": "user", "content": "a b c d e f g"}],
            "max_tokens": 400, "temperature": 1.5, "seed": 0}
    probe = dict(full, max_tokens=60)
    assert chat(bd, k, probe).json()["usage"]["completion_tokens"] == 60
    before = env.one("SELECT count(*) FROM usage_records")
    body = json.dumps(full).encode()
    s = socket.create_connection(("127.0.0.1", bd.port))
    s.sendall(b"POST /internal/v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Authorization: Bearer " + k.encode() + b"\r\nContent-Length: " + str(len(body)).encode() +
              b"\r\n\r\n" + body)
    time.sleep(0.6)
    t0 = time.time()
    s.close()
    deadline = time.time() + 15
    while env.one("SELECT count(*) FROM usage_records") == before:
        assert time.time() < deadline, bd.logs()
        time.sleep(0.05)
    took = time.time() - t0
    out, status, rid = env.one("SELECT output_tokens, status, request_id FROM usage_records"
                               " ORDER BY created_at DESC LIMIT 1")
    assert status == "cancelled", (status, out)
    assert 1 <= out < 200, out  # what was generated: never zero, far from the full max_tokens
    assert took < 4, f"generation went on {took:.1f} s after the client left"
    assert env.one("SELECT cost_nanos FROM usage_records WHERE request_id = %s", (rid,)) > 0
    assert "chat client went away" in bd.logs()
    env.assert_books_sound()


def test_stream_complete_has_usage_chunk_when_asked(bd, key):
    acct, k = key
    r = chat(bd, k, {"model": "internal-tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5,
                     "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}, stream=True)
    events = [l[6:] for l in r.iter_lines(decode_unicode=True) if l.startswith("data: ")]
    assert events[-1] == "[DONE]"
    last = json.loads(events[-2])
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 5
    assert json.loads(events[-3])["choices"][0]["finish_reason"] == "length"
    # not asked: no usage chunk (OpenAI's default)
    r = chat(bd, k, {"model": "internal-tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5,
                     "temperature": 0, "stream": True}, stream=True)
    events = [l[6:] for l in r.iter_lines(decode_unicode=True) if l.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["choices"][0]["finish_reason"] == "length"
    assert all(json.loads(e)["choices"] and "usage" not in json.loads(e) for e in events[:-1])


def test_chat_errors(bd, key):
    acct, k = key
    assert chat(bd, "sk-unknown", {"model": "internal-tiny", "messages": MSGS}).status_code == 401
    assert chat(bd, k, {"model": "gpt-9", "messages": MSGS}).json()["error"]["code"] == "unknown_model"
    assert chat(bd, k, {"model": "internal-tiny", "messages": []}).status_code == 400
    assert chat(bd, k, {"model": "internal-tiny", "messages": MSGS, "max_tokens": 0}).status_code == 400
    long = [{"role": "user", "content": "word " * 2000}]
    assert chat(bd, k, {"model": "internal-tiny", "messages": long}).json()["error"]["code"] == "context_length_exceeded"


def test_pool_full_answers_503_with_retry_after(bd, key):
    """CONTRACT.md section 3: 503 `unavailable` (with Retry-After) when
    queues are full; 429 is `rate_limited`, an account's limit (this answered
    429 `model_busy` before, which the contract does not have)."""
    acct, k = key
    body = {"model": "internal-tiny", "messages": [{"role": "user", "content": "slow"}], "max_tokens": 100,
            "temperature": 0, "stream": True}
    # one worker and one queue slot: two long calls fill it, the third is refused
    a = chat(bd, k, body, stream=True)
    b = chat(bd, k, body, stream=True)
    time.sleep(0.3)
    c = chat(bd, k, dict(body, stream=False))
    assert c.status_code == 503 and c.headers["Retry-After"] == "1"
    assert c.json()["error"]["code"] == "unavailable"
    assert c.json()["error"]["retry_after_ms"] == 1000
    for r in (a, b):
        list(r.iter_lines())


def test_streamed_calls_give_their_connection_slot_back(env, bd, key):
    """A streamed chat watches its client through billingd's connection
    records (conns_on_close), not evhttp's one close callback: after streamed
    calls, completed or cut off, every connection is accounted closed, so
    with max_connections=3 new connections are still served."""
    acct, k = key
    b = Billingd(env, {"inference_threads": "1", "max_connections": "3"})
    try:
        time.sleep(1.2)
        body = {"model": "internal-tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3,
                "temperature": 0, "stream": True}
        for i in range(6):
            with requests.Session() as sess:  # one connection per call, closed after it
                r = sess.post(b.url + "/internal/v1/chat/completions", json=body,
                              headers={"Authorization": f"Bearer {k}"}, timeout=60, stream=True)
                assert r.status_code == 200, r.text
                events = [l for l in r.iter_lines(decode_unicode=True) if l.startswith("data: ")]
                assert events[-1] == "data: [DONE]", events
        # and cut off mid-stream, twice
        raw = json.dumps(dict(body, max_tokens=200)).encode()
        for i in range(2):
            s = socket.create_connection(("127.0.0.1", b.port))
            s.sendall(b"POST /internal/v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Authorization: Bearer " + k.encode() + b"\r\nContent-Length: " + str(len(raw)).encode() +
                      b"\r\n\r\n" + raw)
            got = b""
            while got.count(b"data: ") < 2:
                chunk = s.recv(65536)
                assert chunk, got
                got += chunk
            s.close()
        deadline = time.time() + 15
        while True:
            text = requests.get(b.url + "/metrics", timeout=5).text
            open_ = [float(l.split()[1]) for l in text.splitlines() if l.startswith("billing_http_connections ")]
            if open_ and open_[0] <= 1:  # the metrics call itself
                break
            assert time.time() < deadline, f"connections still counted open after streamed calls: {open_}"
            time.sleep(0.2)
        for i in range(5):
            assert requests.get(b.url + "/healthz", timeout=5).status_code == 200
    finally:
        b.stop()


def test_chat_reads_its_bearer_as_the_gateway_routes_do(bd, key):
    """One bearer parser for every route: the scheme in any case and spaces
    after it, as /v1/* accept them, so a key that works there works here."""
    acct, k = key
    for header in (f"Bearer   {k}", f"bearer {k}"):
        r = requests.get(bd.url + "/internal/v1/models", headers={"Authorization": header}, timeout=10)
        assert r.status_code == 200, (header, r.text)
    r = requests.get(bd.url + "/internal/v1/models", headers={"Authorization": "Bearer    "}, timeout=10)
    assert r.status_code == 401, r.text
