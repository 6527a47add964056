"""Every method a route does not take gets the contract's
JSON 405 with Allow (never libevent's HTML 501), whatever the method."""
import json
import socket

import pytest

from conftest import GATEWAY_TOKEN

ROUTES = {  # path: what Allow says
    "/healthz": "GET", "/readyz": "GET", "/metrics": "GET",
    "/v1/accounts": "POST", "/v1/accounts/1": "GET", "/v1/accounts/1/verify": "POST",
    "/v1/keys": "POST", "/v1/topups": "POST", "/v1/authorize": "POST", "/v1/usage": "POST",
    "/v1/usage/batch": "POST", "/v1/tokenize": "POST", "/v1/admin/grants": "POST",
    "/internal/v1/chat/completions": "POST", "/internal/v1/models": "GET",
}
METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"]


def raw(port, method, path):
    """One request on its own connection: (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {GATEWAY_TOKEN}\r\n"
                  f"Content-Length: 0\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize("path", sorted(ROUTES))
def test_every_other_method_is_a_json_405_with_allow(billingd, path):
    allow = ROUTES[path]
    for m in METHODS:
        if m in allow.split(", "):
            continue
        status, h, body = raw(billingd.port, m, path)
        assert status == 405, (m, path, status, body[:200])
        assert h["allow"] == allow, (m, path, h)
        assert h["content-type"] == "application/json"
        if m != "HEAD":  # HEAD: no body
            assert json.loads(body)["error"]["code"] == "method_not_allowed"


def test_unknown_path_is_404_whatever_the_method(billingd):
    for m in METHODS:
        status, h, body = raw(billingd.port, m, "/v1/nothing-here")
        assert status == 404, (m, status, body[:200])
        if m != "HEAD":
            assert json.loads(body)["error"]["code"] == "not_found", (m, body[:200])


# methods libevent does not know (WebDAV's, made-up ones, a lower-case
# "get": methods are case-sensitive) are methods too: "whatever the method"
UNKNOWN_METHODS = ["PROPFIND", "MKCOL", "BREW", "get", "post", "X-CUSTOM"]


@pytest.mark.parametrize("path", sorted(ROUTES))
def test_an_unknown_method_is_a_json_405_with_allow_too(billingd, path):
    for m in UNKNOWN_METHODS:
        status, h, body = raw(billingd.port, m, path)
        assert status == 405, (m, path, status, body[:200])
        assert h["allow"] == ROUTES[path], (m, path, h)
        assert h["content-type"] == "application/json"
        assert json.loads(body)["error"]["code"] == "method_not_allowed"


def test_an_unknown_method_on_an_unknown_path_is_a_json_404(billingd):
    for m in UNKNOWN_METHODS:
        status, h, body = raw(billingd.port, m, "/v1/nothing-here")
        assert status == 404, (m, status, body[:200])
        assert json.loads(body)["error"]["code"] == "not_found", (m, body[:200])


def test_a_body_billingd_would_not_read_is_ambiguous_framing(env, billingd):
    """libevent reads no body for HEAD, TRACE or a method it does not know:
    the bytes a Content-Length (or chunked encoding) announces were read as
    the next request on the connection, while a proxy in front sends them as
    this request's body (request smuggling: a signup ran from the body of a
    HEAD).  Such a request is ambiguous framing (CONTRACT.md §3): 400 and the
    connection is closed.  The methods whose body is read are unaffected,
    and no body (or Content-Length: 0) is a plain 405 as before."""
    for m in METHODS + UNKNOWN_METHODS:
        ext = f"smuggled-{m}"
        inner = json.dumps({"external_id": ext}).encode()
        inner = (b"POST /v1/accounts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + GATEWAY_TOKEN.encode() +
                 b"\r\nContent-Length: " + str(len(inner)).encode() + b"\r\n\r\n" + inner)
        for te in (False, True):
            with socket.create_connection(("127.0.0.1", billingd.port), timeout=0.7) as s:
                framing = b"Transfer-Encoding: chunked\r\n" if te else b"Content-Length: %d\r\n" % len(inner)
                s.sendall(f"{m} /healthz HTTP/1.1\r\nHost: x\r\n".encode() + framing + b"\r\n")
                got = b""
                try:
                    got += s.recv(65536)  # a method whose body is not read is answered at once
                except socket.timeout:
                    pass
                try:
                    s.sendall(b"%x\r\n" % len(inner) + inner + b"\r\n0\r\n\r\n" if te else inner)
                    while True:
                        b = s.recv(65536)
                        if not b:
                            break
                        got += b
                except (socket.timeout, ConnectionResetError, BrokenPipeError):
                    pass
            assert got.count(b"HTTP/1.1 ") <= 1, (m, te, got[:600])
            if m not in ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
                assert got.startswith(b"HTTP/1.1 400 "), (m, te, got[:300])
                assert b"connection: close" in got.lower(), (m, te, got[:300])
        assert env.one("SELECT count(*) FROM customers WHERE external_id = %s", (ext,)) == 0, m
