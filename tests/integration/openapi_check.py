"""Every answer the integration suite receives from billingd is checked
against docs/openapi.yaml (conftest.py wraps requests.Session.send), so the
document cannot drift from the code: an undocumented status, content type or
field (answers are additionalProperties: false) fails the test that got it.
JSON Schema 2020-12 by python3-jsonschema (Debian)."""
import json
import os
import re
from urllib.parse import urlsplit

import jsonschema
import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DOC_PATH = os.path.join(ROOT, "docs", "openapi.yaml")

with open(DOC_PATH) as f:
    DOC = yaml.safe_load(f)

_RESOLVER = jsonschema.RefResolver.from_schema(DOC)
_ROUTES = []
for _path, _item in DOC["paths"].items():
    _rx = re.compile("^" + re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(_path)) + "$")
    _ROUTES.append((_rx, _path, _item))
# libevent answers these itself, before billingd sees the request (docs/http-api.md,
# "HTTP API"): its own HTML page
_LIBEVENT_PAGES = {400, 413}
checked = {"answers": 0}


def _deref(obj):
    while isinstance(obj, dict) and "$ref" in obj:
        _, obj = _RESOLVER.resolve(obj["$ref"])
    return obj


def _schema_error(schema, body):
    v = jsonschema.Draft202012Validator(schema, resolver=_RESOLVER, format_checker=None)
    errs = sorted(v.iter_errors(body), key=lambda e: list(e.absolute_path))
    if not errs:
        return None
    e = errs[0]
    return f"{e.message} at {'/'.join(map(str, e.absolute_path)) or '(top)'}"


def violation(method, url, status, content_type, body_bytes, streamed):
    """None when the answer is what docs/openapi.yaml says, else why not."""
    path = urlsplit(url).path
    for rx, tmpl, item in _ROUTES:
        if rx.match(path):
            break
    else:
        tmpl, item = None, None
    if item is None or method.lower() not in item:
        # an unknown path (404) or a method the route does not take (405)
        want = {404: "Error", 405: "Error", 401: "Error", 403: "Error"}.get(status)
        if want is None:
            return f"{method} {path}: {status} for an undocumented route or method"
        if content_type.startswith("text/html") and status in _LIBEVENT_PAGES:
            return None
        try:
            body = json.loads(body_bytes)
        except ValueError:
            return f"{method} {path}: {status} answer is not JSON"
        return _schema_error(DOC["components"]["schemas"]["Error"], body)
    op = item[method.lower()]
    resp = op["responses"].get(str(status))
    if resp is None:
        if content_type.startswith("text/html") and status in _LIBEVENT_PAGES:
            return None
        return f"{method} {tmpl}: status {status} is not documented"
    resp = _deref(resp)
    content = resp.get("content", {})
    ctype = content_type.split(";")[0].strip()
    if ctype not in content:
        if ctype == "text/html" and status in _LIBEVENT_PAGES:
            return None
        return f"{method} {tmpl} {status}: content type {ctype!r} is not documented ({sorted(content)})"
    if ctype != "application/json" or streamed:
        return None
    try:
        body = json.loads(body_bytes)
    except ValueError:
        return f"{method} {tmpl} {status}: answer is not JSON: {body_bytes[:200]!r}"
    err = _schema_error(content[ctype]["schema"], body)
    checked["answers"] += 1
    return f"{method} {tmpl} {status}: {err}: {json.dumps(body)[:600]}" if err else None


def install(requests_module):
    """Wraps requests.Session.send: every answer from a loopback billingd is
    checked; a violation raises AssertionError in the test that got it."""
    orig = requests_module.Session.send
    if getattr(orig, "_openapi_checked", False):
        return

    def send(self, request, **kw):
        r = orig(self, request, **kw)
        host = urlsplit(request.url).hostname
        if host not in ("127.0.0.1", "localhost"):
            return r
        streamed = kw.get("stream", False)
        body = b"" if streamed else r.content
        why = violation(request.method, request.url, r.status_code, r.headers.get("Content-Type", ""), body,
                        streamed)
        if why:
            raise AssertionError(f"answer does not match docs/openapi.yaml: {why}")
        return r

    send._openapi_checked = True
    requests_module.Session.send = send
