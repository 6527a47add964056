"""A catalogue of bad requests to billingd's usage API.

Each case is answered with the contract's status and stable error code, in
the contract's error shape, and leaves the ledger exactly as it was (journal,
postings, usage_records, balances).  Then the requests that must succeed
despite hostile-looking content (SQL-shaped and odd request_ids, stored
verbatim), the 1 MiB boundary, and a batch mixing good and bad records."""
import datetime as dt
import json
import socket

import pytest
import requests

from conftest import ADMIN_TOKEN, GATEWAY_TOKEN, UNIT, expected_cost, ledger_counts, new_account, rfc3339, \
    set_price, wait_prices

UTC = dt.timezone.utc
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def ctx(env, billingd):
    a = new_account(env, "errors-active")
    f = new_account(env, "errors-frozen")
    f2 = new_account(env, "errors-frozen-2")
    env.admin("account", "freeze", f2, "--reason", "tests")
    r = billingd.post("/v1/keys", {"account_id": a, "name": "k"})
    assert r.status_code == 201, r.text
    key = r.json()["api_key"]
    r = billingd.post("/v1/keys", {"account_id": f, "name": "k"})
    fkey = r.json()["api_key"]
    env.admin("account", "freeze", f, "--reason", "tests")
    set_price(env, "err-m", 2 * UNIT, UNIT // 2, 8 * UNIT)
    set_price(env, "err-late", 2 * UNIT, UNIT // 2, 8 * UNIT, effective=rfc3339(dt.datetime.now(UTC) - dt.timedelta(days=1)))
    wait_prices()
    return {"acct": a, "frozen": f, "frozen2": f2, "key": key, "fkey": fkey}


def now(**delta):
    return rfc3339(dt.datetime.now(UTC) + dt.timedelta(**delta))


def good(c, rid="e-good", **over):
    b = {"request_id": rid, "account_id": c["acct"], "model": "err-m", "input_tokens": 100,
         "cached_input_tokens": 10, "output_tokens": 5, "started_at": now(minutes=-1)}
    b.update(over)
    return b


def without(c, field):
    b = good(c)
    del b[field]
    return b


def raw(s):
    return s.encode() if isinstance(s, str) else s


# id, request builder (ctx -> dict(path, body | data, token, method)), status, code
CASES = [
    ("malformed-json", lambda c: {"data": raw('{"request_id": "x", ')}, 400, "invalid_request"),
    ("not-json", lambda c: {"data": raw("hello")}, 400, "invalid_request"),
    ("empty-body", lambda c: {"data": b""}, 400, "invalid_request"),
    ("json-array", lambda c: {"data": raw("[1, 2]")}, 400, "invalid_request"),
    ("json-string", lambda c: {"data": raw('"usage"')}, 400, "invalid_request"),
    ("json-null", lambda c: {"data": raw("null")}, 400, "invalid_request"),
    ("invalid-utf8", lambda c: {"data": b'{"request_id": "\xff\xfe", "model": "err-m"}'}, 400, "invalid_request"),
    ("duplicate-keys", lambda c: {"data": raw(json.dumps(good(c))[:-1] + ', "input_tokens": 1}')}, 400,
     "invalid_request"),
    ("trailing-garbage", lambda c: {"data": raw(json.dumps(good(c)) + " {}")}, 400, "invalid_request"),
    ("missing-request_id", lambda c: {"body": without(c, "request_id")}, 400, "invalid_request"),
    ("missing-account-and-key", lambda c: {"body": without(c, "account_id")}, 400, "invalid_request"),
    ("missing-model", lambda c: {"body": without(c, "model")}, 400, "invalid_request"),
    ("missing-input_tokens", lambda c: {"body": without(c, "input_tokens")}, 400, "invalid_request"),
    # cached_input_tokens is optional (default 0); a wrong type is still refused
    ("cached_input_tokens-string", lambda c: {"body": good(c, cached_input_tokens="10")}, 400, "invalid_request"),
    ("status-unknown", lambda c: {"body": good(c, status="weird")}, 422, "invalid_status"),
    ("missing-output_tokens", lambda c: {"body": without(c, "output_tokens")}, 400, "invalid_request"),
    ("missing-started_at", lambda c: {"body": without(c, "started_at")}, 400, "invalid_request"),
    ("request_id-number", lambda c: {"body": good(c, rid=123)}, 400, "invalid_request"),
    ("request_id-empty", lambda c: {"body": good(c, rid="")}, 400, "invalid_request"),
    ("request_id-201-chars", lambda c: {"body": good(c, rid="r" * 201)}, 400, "invalid_request"),
    ("request_id-with-nul", lambda c: {"body": good(c, rid="a\u0000b")}, 400, "invalid_request"),
    ("account_id-string", lambda c: {"body": good(c, account_id=str(c["acct"]))}, 400, "invalid_request"),
    ("account_id-zero", lambda c: {"body": good(c, account_id=0)}, 400, "invalid_request"),
    ("account_id-negative", lambda c: {"body": good(c, account_id=-5)}, 400, "invalid_request"),
    ("account_id-real", lambda c: {"data": raw(json.dumps(good(c)).replace(f'"account_id": {c["acct"]}',
                                                                         f'"account_id": {c["acct"]}.0'))},
     400, "invalid_request"),
    ("model-number", lambda c: {"body": good(c, model=7)}, 400, "invalid_request"),
    ("model-null", lambda c: {"body": good(c, model=None)}, 400, "invalid_request"),
    ("tokens-string", lambda c: {"body": good(c, input_tokens="100")}, 400, "invalid_request"),
    ("tokens-1.5", lambda c: {"body": good(c, output_tokens=1.5)}, 400, "invalid_request"),
    ("tokens-100.0", lambda c: {"data": raw(json.dumps(good(c)).replace('"input_tokens": 100', '"input_tokens": 100.0'))},
     400, "invalid_request"),
    ("tokens-1e2", lambda c: {"data": raw(json.dumps(good(c)).replace('"input_tokens": 100', '"input_tokens": 1e2'))},
     400, "invalid_request"),
    ("tokens-bool", lambda c: {"body": good(c, cached_input_tokens=True)}, 400, "invalid_request"),
    ("tokens-null", lambda c: {"body": good(c, input_tokens=None)}, 400, "invalid_request"),
    ("tokens-array", lambda c: {"body": good(c, output_tokens=[5])}, 400, "invalid_request"),
    ("tokens-beyond-int64", lambda c: {"data": raw(json.dumps(good(c)).replace('"input_tokens": 100',
                                                                             '"input_tokens": 99999999999999999999'))},
     400, "invalid_request"),
    ("input-negative", lambda c: {"body": good(c, input_tokens=-1, cached_input_tokens=0)}, 422, "invalid_tokens"),
    ("output-negative", lambda c: {"body": good(c, output_tokens=-1)}, 422, "invalid_tokens"),
    ("cached-negative", lambda c: {"body": good(c, cached_input_tokens=-1)}, 422, "invalid_tokens"),
    ("input-1e9+1", lambda c: {"body": good(c, input_tokens=10 ** 9 + 1)}, 422, "invalid_tokens"),
    ("output-1e9+1", lambda c: {"body": good(c, output_tokens=10 ** 9 + 1)}, 422, "invalid_tokens"),
    ("cached-1e9+1", lambda c: {"body": good(c, input_tokens=10 ** 9, cached_input_tokens=10 ** 9 + 1)}, 422,
     "invalid_tokens"),
    ("cached-above-input", lambda c: {"body": good(c, input_tokens=10, cached_input_tokens=11)}, 422,
     "invalid_tokens"),
    ("started_at-garbage", lambda c: {"body": good(c, started_at="yesterday")}, 400, "invalid_request"),
    ("started_at-no-zone", lambda c: {"body": good(c, started_at=now(minutes=-1)[:-1])}, 400, "invalid_request"),
    ("started_at-feb-30", lambda c: {"body": good(c, started_at="2026-02-30T10:00:00Z")}, 400, "invalid_request"),
    ("started_at-number", lambda c: {"body": good(c, started_at=1795939200)}, 400, "invalid_request"),
    ("started_at-36-days-old", lambda c: {"body": good(c, started_at=now(days=-36))}, 422, "invalid_started_at"),
    ("started_at-10-min-ahead", lambda c: {"body": good(c, started_at=now(minutes=10))}, 422, "invalid_started_at"),
    ("unknown-model", lambda c: {"body": good(c, model="no-such-model")}, 422, "unknown_model"),
    ("sql-shaped-model", lambda c: {"body": good(c, model="err-m'; DROP TABLE prices; --")}, 422, "unknown_model"),
    ("before-first-price", lambda c: {"body": good(c, model="err-late", started_at=now(days=-2))}, 422,
     "no_price_in_effect"),
    ("unknown-account", lambda c: {"body": good(c, account_id=987654321)}, 404, "not_found"),
    ("unknown-api_key", lambda c: {"body": dict(without(c, "account_id"), api_key="sk-" + "0" * 40)}, 404,
     "not_found"),
    # usage of a frozen account is no error: a call that ran is billed (test_frozen_account_usage_is_billed)
    ("api_key-and-account_id", lambda c: {"body": good(c, api_key=c["key"])}, 400, "invalid_request"),
    ("api_key-empty", lambda c: {"body": dict(without(c, "account_id"), api_key="")}, 400, "invalid_request"),
    ("api_key-number", lambda c: {"body": dict(without(c, "account_id"), api_key=12345)}, 400, "invalid_request"),
    ("hold_id-number", lambda c: {"body": good(c, hold_id=5)}, 400, "invalid_request"),
    ("status-too-long", lambda c: {"body": good(c, status="s" * 33)}, 400, "invalid_request"),
    ("no-token", lambda c: {"body": good(c), "token": None}, 401, "unauthorized"),
    ("wrong-token", lambda c: {"body": good(c), "token": "gw-test-token-0123456788"}, 401, "unauthorized"),
    ("token-prefix", lambda c: {"body": good(c), "token": GATEWAY_TOKEN[:-1]}, 401, "unauthorized"),
    ("basic-auth", lambda c: {"body": good(c), "auth": "Basic Z3c6Z3c="}, 401, "unauthorized"),
    ("empty-bearer", lambda c: {"body": good(c), "auth": "Bearer "}, 401, "unauthorized"),
    ("gateway-token-on-admin-grants",
     lambda c: {"path": "/v1/admin/grants", "body": {"account_id": c["acct"], "amount_nanos": UNIT, "reason": "x",
                                                     "operator": "gw"}}, 403, "forbidden"),
    ("no-token-on-admin-grants",
     lambda c: {"path": "/v1/admin/grants", "token": None,
                "body": {"account_id": c["acct"], "amount_nanos": UNIT, "reason": "x", "operator": "gw"}}, 401,
     "unauthorized"),
    ("tokenize-unknown-model", lambda c: {"path": "/v1/tokenize", "body": {"model": "gpt-4", "text": "hello"}}, 422,
     "unknown_model"),
    ("tokenize-empty-model", lambda c: {"path": "/v1/tokenize", "body": {"model": "", "text": "hello"}}, 422,
     "unknown_model"),
    ("tokenize-sql-model", lambda c: {"path": "/v1/tokenize",
                                      "body": {"model": "internal-tiny'; --", "messages": [{"role": "user",
                                                                                           "content": "x"}]}},
     422, "unknown_model"),
    ("grant-expires_at-past", lambda c: {"path": "/v1/admin/grants", "token": ADMIN_TOKEN,
                                         "body": {"account_id": c["acct"], "amount_nanos": UNIT, "reason": "late",
                                                  "operator": "t", "expires_at": now(seconds=-1)}},
     422, "invalid_expires_at"),
    ("grant-expires_at-long-past", lambda c: {"path": "/v1/admin/grants", "token": ADMIN_TOKEN,
                                              "body": {"account_id": c["acct"], "amount_nanos": UNIT, "reason": "late",
                                                       "operator": "t", "expires_at": "2001-01-01T00:00:00Z"}},
     422, "invalid_expires_at"),
    ("body-over-1MiB", lambda c: {"data": raw(json.dumps(good(c, pad="x" * MIB)))}, 413, "body_too_large"),
    ("get-on-usage", lambda c: {"method": "GET"}, 405, "method_not_allowed"),
    ("batch-1001-records",
     lambda c: {"path": "/v1/usage/batch", "body": {"records": [good(c, rid=f"b{i}") for i in range(1001)]}}, 400,
     "invalid_request"),
    ("batch-empty", lambda c: {"path": "/v1/usage/batch", "body": {"records": []}}, 400, "invalid_request"),
    ("batch-not-array", lambda c: {"path": "/v1/usage/batch", "body": {"records": good(c)}}, 400, "invalid_request"),
    ("batch-missing-records", lambda c: {"path": "/v1/usage/batch", "body": {"record": [good(c)]}}, 400,
     "invalid_request"),
    ("batch-no-token", lambda c: {"path": "/v1/usage/batch", "body": {"records": [good(c)]}, "token": None}, 401,
     "unauthorized"),
    ("batch-malformed", lambda c: {"path": "/v1/usage/batch", "data": raw('{"records": [')}, 400, "invalid_request"),
]


def send(billingd, spec):
    path = spec.get("path", "/v1/usage")
    headers = {"Content-Type": "application/json"}
    if "auth" in spec:
        headers["Authorization"] = spec["auth"]
    elif spec.get("token", GATEWAY_TOKEN) is not None:
        headers["Authorization"] = "Bearer " + spec.get("token", GATEWAY_TOKEN)
    if "body" in spec:
        data = json.dumps(spec["body"]).encode()
    else:
        data = spec.get("data", b"")
    if spec.get("method") == "GET":
        return requests.get(billingd.url + path, headers=headers, timeout=30)
    return requests.post(billingd.url + path, data=data, headers=headers, timeout=30)


def test_catalogue_is_large_enough():
    assert len(CASES) >= 25
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_request_answered_and_ledger_unchanged(env, billingd, ctx, case):
    name, build, status, code = case
    before = ledger_counts(env)
    r = send(billingd, build(ctx))
    assert r.status_code == status, f"{name}: {r.status_code} {r.text[:300]}"
    ctype = r.headers.get("Content-Type", "")
    assert ctype.startswith("application/json"), \
        f"{name}: the answer is {ctype}, not the contract's JSON error: {r.text[:200]!r}"
    err = r.json()["error"]
    assert isinstance(err["message"], str) and err["message"]
    if code is not None:
        assert err["code"] == code, err
    else:
        assert isinstance(err["code"], str) and err["code"], err
    if status == 401:
        assert r.headers.get("WWW-Authenticate", "").startswith("Bearer")
    assert ledger_counts(env) == before, f"{name} changed the ledger"
    assert env.one("SELECT count(*) FROM usage_records WHERE account_id = %s", (ctx["frozen"],)) == 0


def test_body_of_exactly_1_mib_is_accepted(env, billingd, ctx):
    b = json.dumps(good(ctx, rid="e-1mib")).encode()
    data = b[:-1] + b" " * (MIB - len(b)) + b"}"
    assert len(data) == MIB
    r = requests.post(billingd.url + "/v1/usage", data=data, timeout=30,
                      headers={"Authorization": "Bearer " + GATEWAY_TOKEN, "Content-Type": "application/json"})
    assert r.status_code == 200, r.text[:300]
    assert r.json()["cost_nanos"] == expected_cost(2 * UNIT, UNIT // 2, 8 * UNIT, 100, 10, 5)


def test_body_over_1_mib_refused_before_it_is_read(billingd):
    """A client announcing 2 MiB gets 413 without sending it (no 2 MiB buffered)."""
    s = socket.create_connection(("127.0.0.1", billingd.port), timeout=10)
    try:
        s.sendall(f"POST /v1/usage HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {GATEWAY_TOKEN}\r\n"
                  f"Content-Type: application/json\r\nContent-Length: {2 * MIB}\r\n\r\n{{".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        assert data.startswith(b"HTTP/1.1 413"), data[:200]
    finally:
        s.close()


ODD_IDS = [
    "x'); DROP TABLE usage_records; --",
    "1; DELETE FROM journal WHERE true",
    "' OR '1'='1",
    'q"uote',
    "back\\slash",
    "comma,brace}{",
    "NULL",
    "  leading and trailing  ",
    "ünïcødé-€-😀",
    "line\nbreak\tand\u0007bell",
    "$1::text[]",
]


def test_sql_shaped_and_odd_request_ids_are_stored_verbatim(env, billingd, ctx):
    tables = env.one("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
    u0 = env.one("SELECT count(*) FROM usage_records")
    recs = [good(ctx, rid=rid, input_tokens=1000 + i, cached_input_tokens=0) for i, rid in enumerate(ODD_IDS)]
    for i, rid in enumerate(ODD_IDS):
        b = recs[i]
        r = billingd.post("/v1/usage", b)
        assert r.status_code == 200, (rid, r.text)
        j = r.json()
        assert j["request_id"] == rid and j["duplicate"] is False
        assert j["cost_nanos"] == expected_cost(2 * UNIT, UNIT // 2, 8 * UNIT, 1000 + i, 0, 5)
        assert env.one("SELECT count(*) FROM usage_records WHERE request_id = %s", (rid,)) == 1, rid
        assert env.one("SELECT count(*) FROM journal WHERE idempotency_key = %s", ("usage:" + rid,)) == 1, rid
        r2 = billingd.post("/v1/usage", b)
        assert r2.status_code == 200 and r2.json()["duplicate"] is True and r2.json()["request_id"] == rid
    # all in one batch again: replays, in order
    res = billingd.post("/v1/usage/batch", {"records": recs}).json()["results"]
    assert [x["request_id"] for x in res] == ODD_IDS and all(x["duplicate"] for x in res)
    assert env.one("SELECT count(*) FROM usage_records") == u0 + len(ODD_IDS)
    assert env.one("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == tables
    assert env.one("SELECT count(*) FROM prices") >= 2
    env.assert_books_sound()


def test_batch_mixes_good_and_bad_records_in_order(env, billingd, ctx):
    c = ctx
    mix1 = good(c, rid="mix-1", input_tokens=1000, cached_input_tokens=0, output_tokens=0)  # 2 000 000
    recs = [
        mix1,
        good(c, rid="mix-2", input_tokens=5, cached_input_tokens=6),                         # cached > input
        dict(without(c, "account_id"), request_id="mix-3", api_key=c["key"], input_tokens=0,
             cached_input_tokens=0, output_tokens=1000),                                     # 8 000 000 by key
        good(c, rid="mix-4", model="no-such-model"),
        good(c, rid="mix-5", account_id=c["frozen2"]),                                       # frozen: billed
        dict(mix1),                                                                          # same again: replay
        dict(mix1, input_tokens=1001),                                                       # same id, other body
        "not an object",
        good(c, rid="mix-9", account_id=987654321),
        good(c, rid="mix-10", started_at=now(days=-40)),
        good(c, rid="mix-11", output_tokens=2.5),
        good(c, rid="mix-12", input_tokens=0, cached_input_tokens=0, output_tokens=1),       # 8 000
    ]
    expect = [(200, None), (422, "invalid_tokens"), (200, None), (422, "unknown_model"), (200, None),
              (200, None), (409, "idempotency_conflict"), (400, "invalid_request"), (404, "not_found"),
              (422, "invalid_started_at"), (400, "invalid_request"), (200, None)]
    j0 = env.one("SELECT count(*) FROM journal")
    r = billingd.post("/v1/usage/batch", {"records": recs})
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert len(res) == len(recs)
    for i, (x, (st, code)) in enumerate(zip(res, expect)):
        if st == 200:
            assert "error" not in x, (i, x)
        else:
            assert x["error"]["status"] == st and x["error"]["code"] == code, (i, x)
    assert (res[0]["cost_nanos"], res[0]["duplicate"]) == (2000000, False)
    assert (res[2]["cost_nanos"], res[2]["account_id"], res[2]["request_id"]) == (8000000, c["acct"], "mix-3")
    assert res[5]["duplicate"] is True and {k: v for k, v in res[5].items() if k != "duplicate"} == \
        {k: v for k, v in res[0].items() if k != "duplicate"}
    assert res[11]["cost_nanos"] == 8000
    assert (res[4]["cost_nanos"], res[4]["account_id"]) == (expected_cost(2 * UNIT, UNIT // 2, 8 * UNIT, 100, 10, 5),
                                                            c["frozen2"])
    # the good ones charged once each, the bad ones nowhere
    assert env.one("SELECT count(*) FROM journal") == j0 + 4
    got = dict(env.sql("SELECT request_id, cost_nanos FROM usage_records WHERE request_id LIKE 'mix-%%'"))
    assert got == {"mix-1": 2000000, "mix-3": 8000000, "mix-5": res[4]["cost_nanos"], "mix-12": 8000}
    # and the batch again: every good one a replay, every bad one the same error
    res2 = billingd.post("/v1/usage/batch", {"records": recs}).json()["results"]
    for i, (x, (st, code)) in enumerate(zip(res2, expect)):
        if st == 200:
            assert x["duplicate"] is True and x["cost_nanos"] == res[i]["cost_nanos"], (i, x)
        else:
            assert x["error"]["code"] == code, (i, x)
    assert env.one("SELECT count(*) FROM journal") == j0 + 4
    env.assert_books_sound()


def test_admin_token_can_grant_where_gateway_cannot(env, billingd, ctx):
    """The positive control of the 403 case: the same body with an admin token is a 201."""
    r = billingd.post("/v1/admin/grants", {"account_id": ctx["acct"], "amount_nanos": UNIT, "reason": "control",
                                           "operator": "tester"}, token=ADMIN_TOKEN)
    assert r.status_code == 201, r.text
    assert r.json()["amount_nanos"] == UNIT
    # and the positive control of the past expires_at: a minute ahead is fine
    r = billingd.post("/v1/admin/grants", {"account_id": ctx["acct"], "amount_nanos": UNIT, "reason": "control",
                                           "operator": "tester", "expires_at": now(minutes=1)}, token=ADMIN_TOKEN)
    assert r.status_code == 201, r.text


def test_cli_grant_with_a_past_expiry_is_refused(env, billingd, ctx):
    grants = env.one("SELECT count(*) FROM grants")
    for when in (now(seconds=-1), "2001-01-01"):
        p = env.admin("grant", "--account", ctx["acct"], "--amount", "1", "--reason", "late", "--expires", when,
                      check=False)
        assert p.returncode == 2, (when, p.returncode, p.stdout, p.stderr)
        err = p.stderr.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("billing-admin") and "past" in err[0], p.stderr
    assert env.one("SELECT count(*) FROM grants") == grants
    p = env.admin("grant", "--account", ctx["acct"], "--amount", "1", "--reason", "ok", "--expires", now(minutes=5))
    assert env.one("SELECT count(*) FROM grants") == grants + 1


def test_frozen_account_usage_is_billed(env, billingd, ctx):
    """CONTRACT.md §3: a call that ran is always billed; freezing stops new
    authorizations and chat, not the bill.  Usage of a frozen account, by
    account_id or by its key, is recorded and charged; a replay is a
    duplicate; after unfreezing nothing changes for it."""
    a = new_account(env, "errors-freeze-later")
    b = good(ctx, rid="fr-1", account_id=a)
    r = billingd.post("/v1/usage", b)
    assert r.status_code == 200, r.text
    env.admin("account", "freeze", a, "--reason", "tests")
    before = ledger_counts(env)
    r2 = billingd.post("/v1/usage", b)  # what was recorded stays answerable
    assert r2.status_code == 200 and r2.json()["duplicate"] is True and r2.json()["cost_nanos"] == r.json()["cost_nanos"]
    assert ledger_counts(env) == before
    cost = expected_cost(2 * UNIT, UNIT // 2, 8 * UNIT, 100, 10, 5)
    b2 = good(ctx, rid="fr-2", account_id=a)
    r3 = billingd.post("/v1/usage", b2)
    assert r3.status_code == 200 and r3.json()["duplicate"] is False and r3.json()["cost_nanos"] == cost, r3.text
    r4 = billingd.post("/v1/usage", dict(without(ctx, "account_id"), request_id="fr-3", api_key=ctx["fkey"]))
    assert r4.status_code == 200 and r4.json()["account_id"] == ctx["frozen"] and r4.json()["cost_nanos"] == cost, \
        r4.text
    assert env.one("SELECT count(*) FROM usage_records WHERE request_id IN ('fr-2', 'fr-3')") == 2
    env.admin("account", "unfreeze", a, "--reason", "tests")
    r5 = billingd.post("/v1/usage", b2)
    assert r5.status_code == 200 and r5.json()["duplicate"] is True, r5.text
    env.assert_books_sound()


def test_tokenize_knows_the_embedded_model_and_the_priced_ones(billingd, ctx):
    """The positive control of the tokenize 422s: the embedded model and a
    model of the price list are counted."""
    for model in ("internal-tiny", "err-m"):
        r = billingd.post("/v1/tokenize", {"model": model, "text": "hello world"})
        assert r.status_code == 200 and r.json()["tokens"] > 0, (model, r.text)
