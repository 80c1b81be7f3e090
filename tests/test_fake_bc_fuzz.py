"""Hypothesis: whatever a client sends — paths, query strings, headers, bodies — the fake BC never answers 5xx,
always answers a well-formed body, and its headers can be sent on the wire (latin-1)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from functools import lru_cache
from urllib.parse import quote, urlencode

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conformance.clock import FakeClock
from conformance.trace import Trace
from conformance.wire import Request, Response
from fake_authority import Authority
from fake_bc import BusinessCentral
from fake_bc.pytest_fixtures import shared_signing_key


@lru_cache(maxsize=1)
def fakes() -> tuple[Authority, BusinessCentral, str]:
    clock, trace = FakeClock(), Trace()
    authority = Authority(clock=clock, trace=trace, key=shared_signing_key())
    bc = BusinessCentral.for_authority(authority)
    bc.set_limits(requests_per_window=10**9)
    bc.register_custom_api("contoso", "portal", "v1.0", "projects", [{"code": "P-1", "budget": 1.5, "on": True}])
    return authority, bc, authority.issue_app_token(lifetime=10**8)


_authority, _bc, _token = fakes()
TID = _authority.registry.tenant_id
CID = _bc.company_id()
CUSTOMER = _bc.rows("customers")[0]["id"]
ORDER = _bc.rows("salesOrders")[0]["id"]
GUIDS = [CID, CUSTOMER, ORDER, "00000000-0000-0000-0000-000000000000"]

text = st.text(max_size=30)
prefixes = st.sampled_from([
    f"/v2.0/{TID}/Production/api/v2.0", "/v2.0/Production/api/v2.0", f"/v2.0/{TID}/Sandbox/api/v2.0",
    "/v2.0/Nowhere/api/v2.0", "/v2.0/contoso.onmicrosoft.com/Production/api/v2.0",
    f"/v2.0/{TID}/Production/api/contoso/portal/v1.0", "/v2.0/Production/api/microsoft/automation/v2.0", "/v2.0",
    "", "/v2.0/a/b/c/d",
])
segments = st.one_of(
    st.sampled_from(["companies", "customers", "vendors", "items", "salesOrders", "salesOrderLines", "$metadata",
                     "projects", "", "companies()", "(", ")"]),
    st.builds(lambda name, key: f"{name}({key})",
              st.sampled_from(["companies", "customers", "items", "salesOrders", "salesOrderLines", "projects"]),
              st.one_of(st.sampled_from(GUIDS), text)),
    text.map(lambda t: quote(t, safe="()$'")),
)
paths = st.one_of(
    st.builds(lambda prefix, parts: "/".join([prefix, *parts]), prefixes, st.lists(segments, max_size=5)),
    text.map(lambda t: "/" + t),
)
filter_words = st.sampled_from([
    "city", "displayName", "balanceDue", "taxLiable", "customerId", "orderDate", "number", "nosuch", "eq", "ne", "gt",
    "ge", "lt", "le", "and", "or", "not", "(", ")", ",", "contains(", "startswith(", "endswith(", "'Chicago'",
    "'it''s'", "'", "1", "-2.5", "1e400", "true", "null", "2025-01-05", "2025-01-05T10:00:00Z", CUSTOMER,
    "99999999999999999999",
])
filters = st.one_of(st.lists(filter_words, max_size=12).map(" ".join), text)
query_values = st.one_of(filters, text, st.integers(-5, 10**13).map(str), st.sampled_from([
    "number,displayName", "number desc,city asc", "salesOrderLines", "*", "true", "FALSE", CUSTOMER]))
query_keys = st.one_of(st.sampled_from(["$filter", "$select", "$orderby", "$top", "$skip", "$expand", "$count",
                                        "$skiptoken", "$search", "$format", "aid", "access_token", "company"]), text)
queries = st.one_of(st.lists(st.tuples(query_keys, query_values), max_size=5).map(urlencode), text)
authorizations = st.one_of(
    st.just(f"Bearer {_token}"), st.just(f"Bearer {_token}"), st.just(""), st.just("Basic dXNlcjpwYXNz"),
    text.map(lambda t: f"Bearer {t}"), st.just("Bearer a.b.c"), st.just("Bearer eyJ0eXAiOiJKV1QifQ.e30.x"),
    text,
)
header_values = st.dictionaries(
    st.sampled_from(["if-match", "prefer", "content-type", "data-access-intent", "accept"]),
    st.one_of(text, st.sampled_from(["*", 'W/"abc"', "odata.maxpagesize=3", "odata.maxpagesize=999999",
                                     "maxpagesize=0", "application/json", "ReadOnly"])),
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), text),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(
        st.one_of(text, st.sampled_from(["displayName", "number", "creditLimit", "id", "taxLiable", "quantity",
                                         "@odata.etag", "orderDate", "customerId"])), inner, max_size=5)),
    max_leaves=12,
)
bodies = st.one_of(st.binary(max_size=64), json_values.map(lambda v: json.dumps(v).encode()),
                   st.just(b'{"displayName": "x"}'))
methods = st.sampled_from(["GET", "GET", "POST", "PATCH", "DELETE", "PUT", "HEAD", "OPTIONS"])


def check(response: Response) -> None:
    assert 200 <= response.status < 500, (response.status, response.body[:300])
    for name, value in response.headers:
        name.encode("latin-1")
        value.encode("latin-1")
    content_type = response.header("content-type")
    if content_type.startswith("application/json"):
        json.loads(response.body)
    elif content_type.startswith("application/xml"):
        ET.fromstring(response.body)
    else:
        assert response.status == 204 and response.body == b""
    event = _bc.trace.events[-1]
    assert event.status == response.status


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(method=methods, path=paths, query=queries, authorization=authorizations, headers=header_values, body=bodies)
def test_no_request_gets_a_5xx(method: str, path: str, query: str, authorization: str, headers: dict[str, str],
                               body: bytes) -> None:
    all_headers = {**headers, "authorization": authorization} if authorization else dict(headers)
    check(_bc.handle(Request(method, path or "/", query, all_headers, body, "https://api.businesscentral.dynamics.com")))


@settings(max_examples=300, deadline=None)
@given(query=queries, prefer=st.one_of(st.none(), st.integers(1, 400).map(lambda n: f"odata.maxpagesize={n}")))
def test_queries_on_a_valid_collection_never_get_a_5xx(query: str, prefer: str | None) -> None:
    headers = {"authorization": f"Bearer {_token}", **({"prefer": prefer} if prefer else {})}
    path = f"/v2.0/{TID}/Production/api/v2.0/companies({CID})/customers"
    check(_bc.handle(Request("GET", path, query, headers)))


@settings(max_examples=300, deadline=None)
@given(method=st.sampled_from(["POST", "PATCH"]), body=bodies,
       if_match=st.sampled_from(["*", "", 'W/"x"', "garbage"]))
def test_writes_never_get_a_5xx(method: str, body: bytes, if_match: str) -> None:
    headers = {"authorization": f"Bearer {_token}", "if-match": if_match, "content-type": "application/json"}
    base = f"/v2.0/{TID}/Production/api/v2.0/companies({CID})/"
    path = base + ("customers" if method == "POST" else f"salesOrders({ORDER})")
    check(_bc.handle(Request(method, path, "", headers, body)))
