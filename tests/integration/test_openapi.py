"""docs/openapi.yaml describes every route billingd
serves, and the check every answer of this suite goes through
(openapi_check.py) does refuse what the document does not say."""
import os
import re

import requests

import openapi_check
from conftest import ROOT


def served_routes():
    """(method, path) of every line of the route table of billing/http/server.c."""
    text = open(os.path.join(ROOT, "billing", "http", "server.c")).read()
    routes = {(m.lower(), p) for m, p in re.findall(r'^\t\{EVHTTP_REQ_(\w+), "([^"]+)", AUTH_', text, re.M)}
    assert len(routes) >= 15, routes
    return routes


def test_every_served_route_is_documented_and_nothing_else():
    documented = {(m, p) for p, item in openapi_check.DOC["paths"].items() for m in item
                  if m in ("get", "post", "put", "delete", "patch")}
    assert served_routes() == documented


def test_the_check_refuses_what_the_document_does_not_say():
    v = openapi_check.violation
    ok = b'{"status":"ok"}'
    assert v("GET", "http://127.0.0.1:1/healthz", 200, "application/json", ok, False) is None
    assert "not documented" in v("GET", "http://127.0.0.1:1/healthz", 201, "application/json", ok, False)
    assert "Additional properties" in v("GET", "http://127.0.0.1:1/healthz", 200, "application/json",
                                        b'{"status":"ok","extra":1}', False)
    bal = b'{"paid_nanos":0,"promo_nanos":0,"held_nanos":0,"available_nanos":0}'  # held_known missing
    ans = (b'{"account_id":1,"payment_ref":"r","amount_nanos":1,"duplicate":false,"balance":' + bal + b'}')
    assert "held_known" in v("POST", "http://127.0.0.1:1/v1/topups", 201, "application/json", ans, False)
    assert "content type" in v("GET", "http://127.0.0.1:1/metrics", 200, "application/json", b"{}", False)
    assert v("GET", "http://127.0.0.1:1/v1/accounts/7", 200, "application/json", b'{"account_id":7}', False)


def test_answers_were_checked(billingd):
    before = openapi_check.checked["answers"]
    r = requests.get(billingd.url + "/healthz", timeout=30)
    assert r.status_code == 200 and openapi_check.checked["answers"] == before + 1
