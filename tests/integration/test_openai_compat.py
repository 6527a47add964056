"""/internal/v1 with OpenAI's own Node SDK as the client
(pinned and sha256-checked, mk/clients.mk), and the same on the wire."""
import json
import os
import subprocess

import pytest
import requests

from conftest import ROOT, model_billingd, new_api_key

SDK = os.path.join(ROOT, "var", "cache", "node_modules", "openai")
CLIENT = os.path.join(ROOT, "tests", "integration", "openai_client.js")


@pytest.fixture(scope="module")
def bd(env):
    b = model_billingd(env, {"inference_threads": "1"})
    yield b
    b.stop()


@pytest.fixture(scope="module")
def key(env):
    return new_api_key(env, "oa-user")


def tokens(bd, messages):
    r = bd.post("/v1/tokenize", {"model": "internal-tiny", "messages": messages})
    assert r.status_code == 200, r.text
    return r.json()["tokens"]


def test_openai_node_sdk(env, bd, key):
    acct, k = key
    assert os.path.isfile(os.path.join(SDK, "package.json")), "make data fetches the OpenAI SDK"
    p = subprocess.run(["node", CLIENT, SDK, bd.url + "/internal/v1", k], capture_output=True, text=True,
                       timeout=300)
    out = json.loads(p.stdout.strip().splitlines()[-1]) if p.stdout.strip() else {}
    assert p.returncode == 0, (out, p.stderr)
    # 6: models.list()
    assert [m["id"] for m in out["models"]] == ["internal-tiny"]
    assert out["models"][0]["object"] == "model" and isinstance(out["models"][0]["created"], int)
    # 4: max_completion_tokens and max_tokens bound what is generated (and billed)
    prompt = tokens(bd, [{"role": "user", "content": "Say hello to the billing team."}])
    m = out["max_completion_tokens"]
    assert m["usage"]["completion_tokens"] <= 3 and m["usage"]["prompt_tokens"] == prompt
    assert m["finish_reason"] in ("length", "stop")
    assert out["max_tokens"]["usage"]["completion_tokens"] <= 4
    # 5: text parts are joined with "\n" and counted by the real tokenizer
    joined = tokens(bd, [{"role": "system", "content": "You are terse."},
                         {"role": "user", "content": "Say hello\nto the billing team."}])
    assert out["parts"]["usage"]["prompt_tokens"] == joined
    # 7: a usage chunk only when stream_options.include_usage asks for it
    plain, with_usage = out["stream_plain"], out["stream_usage"]
    assert all(ch["choices"] for ch in plain) and all("usage" not in ch for ch in plain)
    assert with_usage[-1]["choices"] == [] and with_usage[-1]["usage"]["completion_tokens"] <= 3
    assert all(ch["usage"] is None for ch in with_usage[:-1])
    # what was billed is what was generated: the ledger has each call's real counts
    rows = env.sql("SELECT output_tokens FROM usage_records WHERE account_id = %s ORDER BY started_at", (acct,))
    billed = [r[0] for r in rows]
    assert len(billed) == 5, billed
    assert billed[:3] == [m["usage"]["completion_tokens"], out["max_tokens"]["usage"]["completion_tokens"],
                          out["parts"]["usage"]["completion_tokens"]]
    assert 1 <= billed[3] <= 3 and billed[4] == with_usage[-1]["usage"]["completion_tokens"]


def chat(bd, k, body, **kw):
    return requests.post(bd.url + "/internal/v1/chat/completions", json=body,
                         headers={"Authorization": f"Bearer {k}"}, timeout=60, **kw)


def test_wire_details(bd, key):
    acct, k = key
    msgs = [{"role": "user", "content": "hi"}]
    # max_completion_tokens: 3 generates at most 3 even when the model would go on
    r = chat(bd, k, {"model": "internal-tiny", "messages": msgs, "max_completion_tokens": 3, "temperature": 0})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 3, r.text
    long = chat(bd, k, {"model": "internal-tiny", "messages": msgs, "temperature": 0}).json()
    assert long["usage"]["completion_tokens"] > 3  # without the bound the model goes on
    # both names given and different: refused, not guessed
    r = chat(bd, k, {"model": "internal-tiny", "messages": msgs, "max_tokens": 3, "max_completion_tokens": 5})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"
    for bad in (0, "3", 1.5):
        assert chat(bd, k, {"model": "internal-tiny", "messages": msgs, "max_completion_tokens": bad}).status_code == 400
    # content parts other than text are refused with a reason
    r = chat(bd, k, {"model": "internal-tiny", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://x"}}]}]})
    assert r.status_code == 400 and "text" in r.json()["error"]["message"]
    # stream_options needs stream
    r = chat(bd, k, {"model": "internal-tiny", "messages": msgs, "stream_options": {"include_usage": True}})
    assert r.status_code == 400
    # /models: the account's key, like chat
    r = requests.get(bd.url + "/internal/v1/models", headers={"Authorization": f"Bearer {k}"}, timeout=30)
    assert r.status_code == 200 and r.json()["object"] == "list"
    assert r.json()["data"][0]["id"] == "internal-tiny" and r.json()["data"][0]["owned_by"] == "internal"
    assert requests.get(bd.url + "/internal/v1/models", timeout=30).status_code == 401
    r = requests.get(bd.url + "/internal/v1/models", headers={"Authorization": "Bearer sk-nope"}, timeout=30)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
