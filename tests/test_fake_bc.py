"""The fake Business Central's API surface: routes, OData query options, paging, writes and errors.

Requests go through ``requests`` to the real host name, served in-process by ``responses`` (``bc_fakes``).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest
import requests

from conformance.wire import Request
from fake_bc import DEMO_COMPANY, BusinessCentral
from fake_bc.pytest_fixtures import BcFakes, open_bc_fakes

EDM = "{http://docs.oasis-open.org/odata/ns/edm}"


def call(fakes: BcFakes, method: str, url: str, token: str | None = None, **kwargs: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {token or fakes.app_token()}", **kwargs.pop("headers", {})}
    return requests.request(method, url, headers=headers, timeout=5, **kwargs)


def get(fakes: BcFakes, url: str, **kwargs: Any) -> requests.Response:
    return call(fakes, "GET", url, **kwargs)


def error_code(response: requests.Response) -> str:
    return response.json()["error"]["code"]


# ---------------------------------------------------------------- companies, routes


def test_companies_are_listed_with_context_and_weak_etags(bc_fakes: BcFakes) -> None:
    response = get(bc_fakes, bc_fakes.api_url("companies"))
    assert response.status_code == 200
    body = response.json()
    assert [c["name"] for c in body["value"]] == [DEMO_COMPANY, "My Company"]
    assert body["@odata.context"] == (f"https://api.businesscentral.dynamics.com/v2.0/{bc_fakes.tenant_id}/Production"
                                      "/api/v2.0/$metadata#companies")
    assert all(c["@odata.etag"].startswith('W/"JzE5O') for c in body["value"])
    assert response.headers["Content-Type"].startswith("application/json")


def test_a_company_is_addressed_by_id_and_the_tenant_may_come_from_the_token(bc_fakes: BcFakes) -> None:
    cid = bc_fakes.bc.company_id()
    by_id = get(bc_fakes, bc_fakes.api_url(f"companies({cid})"))
    assert by_id.status_code == 200
    assert by_id.json()["name"] == DEMO_COMPANY
    assert by_id.json()["@odata.context"].endswith("$metadata#companies/$entity")
    tenantless = get(bc_fakes, bc_fakes.api_url(f"companies({cid})/customers", tenant=False), params={"$top": "1"})
    assert tenantless.status_code == 200
    assert tenantless.json()["@odata.context"].startswith(
        "https://api.businesscentral.dynamics.com/v2.0/Production/api/v2.0/$metadata#companies(")


def test_sandbox_is_known_and_other_environments_are_not(bc_fakes: BcFakes) -> None:
    assert get(bc_fakes, bc_fakes.api_url("companies", environment="Sandbox")).status_code == 200
    assert get(bc_fakes, bc_fakes.api_url("companies", environment="production")).status_code == 200
    missing = get(bc_fakes, bc_fakes.api_url("companies", environment="Staging"))
    assert missing.status_code == 404
    assert missing.headers["Content-Type"].startswith("application/xml")
    root = ET.fromstring(missing.content)
    assert root.tag == "{http://docs.oasis-open.org/odata/ns/metadata}error"
    assert root.find("{http://docs.oasis-open.org/odata/ns/metadata}code").text == "NoEnvironment"
    bc_fakes.bc.add_environment("Staging")
    assert get(bc_fakes, bc_fakes.api_url("companies", environment="Staging")).status_code == 200


def test_environments_are_configurable() -> None:
    with open_bc_fakes(environments=("Test",)) as fakes:
        assert get(fakes, fakes.api_url("companies", environment="Test")).status_code == 200
        assert get(fakes, fakes.api_url("companies", environment="Production")).status_code == 404


# ---------------------------------------------------------------- paging


def test_paging_with_maxpagesize_returns_every_customer_exactly_once(bc_fakes: BcFakes) -> None:
    url: str | None = bc_fakes.company_url("customers")
    seen: list[str] = []
    pages = 0
    while url:
        response = get(bc_fakes, url, headers={"Prefer": "odata.maxpagesize=40"})
        assert response.status_code == 200
        assert response.headers["Preference-Applied"] == "odata.maxpagesize=40"
        body = response.json()
        assert len(body["value"]) <= 40
        seen += [row["id"] for row in body["value"]]
        url = body.get("@odata.nextLink")
        if url:
            assert "aid=FIN" in url and f"$skiptoken={body['value'][-1]['id']}" in url
        pages += 1
    assert len(seen) == len(set(seen)) == 250
    assert pages == 7
    numbers = [row["number"] for row in bc_fakes.bc.rows("customers")]
    assert numbers == sorted(numbers)


def test_paging_keeps_filter_order_and_top_across_pages(bc_fakes: BcFakes) -> None:
    params = "$filter=taxLiable eq true&$orderby=displayName desc&$top=45&$select=id,displayName"
    url: str | None = f"{bc_fakes.company_url('customers')}?{params}"
    names: list[str] = []
    while url:
        body = get(bc_fakes, url, headers={"Prefer": "odata.maxpagesize=20"}).json()
        names += [row["displayName"] for row in body["value"]]
        assert all(set(row) == {"@odata.etag", "id", "displayName"} for row in body["value"])
        url = body.get("@odata.nextLink")
    expected = sorted((r["displayName"] for r in bc_fakes.bc.rows("customers") if r["taxLiable"]), reverse=True)
    assert names == expected[:45]


def test_paging_continues_after_the_last_row_was_deleted(bc_fakes: BcFakes) -> None:
    first = get(bc_fakes, bc_fakes.company_url("items"), headers={"Prefer": "odata.maxpagesize=10"}).json()
    last = first["value"][-1]
    deleted = call(bc_fakes, "DELETE", bc_fakes.company_url(f"items({last['id']})"),
                   headers={"If-Match": last["@odata.etag"]})
    assert deleted.status_code == 204
    second = get(bc_fakes, first["@odata.nextLink"], headers={"Prefer": "odata.maxpagesize=10"}).json()
    assert second["value"][0]["number"] == "1010"


def test_server_pages_at_its_maximum_and_refuses_larger_pages() -> None:
    with open_bc_fakes(max_page_size=100) as fakes:
        body = get(fakes, fakes.company_url("customers")).json()
        assert len(body["value"]) == 100 and "@odata.nextLink" in body
        too_large = get(fakes, fakes.company_url("customers"), headers={"Prefer": "odata.maxpagesize=101"})
        assert too_large.status_code == 413
    with open_bc_fakes() as fakes:
        assert len(get(fakes, fakes.company_url("customers")).json()["value"]) == 250
        assert get(fakes, fakes.company_url("customers"),
                   headers={"Prefer": "odata.maxpagesize=20001"}).status_code == 413


def test_top_skip_count_and_read_only_intent(bc_fakes: BcFakes) -> None:
    body = get(bc_fakes, bc_fakes.company_url("items"), params={"$top": "5", "$skip": "10", "$count": "true"},
               headers={"Data-Access-Intent": "ReadOnly"}).json()
    assert [row["number"] for row in body["value"]] == ["1010", "1011", "1012", "1013", "1014"]
    assert body["@odata.count"] == 300
    assert "@odata.nextLink" not in body


# ---------------------------------------------------------------- $filter, $select, $orderby, $expand


@pytest.mark.parametrize(("expression", "expected"), [
    ("number eq '10000'", lambda r: r["number"] == "10000"),
    ("number ne '10000'", lambda r: r["number"] != "10000"),
    ("balanceDue gt 4000", lambda r: r["balanceDue"] > 4000),
    ("balanceDue ge 4000.5 and balanceDue le 4500", lambda r: 4000.5 <= r["balanceDue"] <= 4500),
    ("creditLimit lt 5000", lambda r: r["creditLimit"] < 5000),
    ("city eq 'Chicago' or city eq 'Miami'", lambda r: r["city"] in ("Chicago", "Miami")),
    ("(city eq 'Chicago' or city eq 'Miami') and taxLiable eq false",
     lambda r: r["city"] in ("Chicago", "Miami") and not r["taxLiable"]),
    ("contains(displayName,'Coffee')", lambda r: "Coffee" in r["displayName"]),
    ("startswith(displayName, 'Lamna')", lambda r: r["displayName"].startswith("Lamna")),
    ("endswith(email,'inc.example.com')", lambda r: r["email"].endswith("inc.example.com")),
    ("type eq 'Person' and taxLiable eq true", lambda r: r["type"] == "Person" and r["taxLiable"]),
    ("lastModifiedDateTime lt 2025-01-06T10:00:00Z", lambda r: r["lastModifiedDateTime"] < "2025-01-06T10:00"),
])
def test_filters(bc_fakes: BcFakes, expression: str, expected: Any) -> None:
    response = get(bc_fakes, bc_fakes.company_url("customers"), params={"$filter": expression})
    assert response.status_code == 200, response.text
    got = [row["id"] for row in response.json()["value"]]
    want = [row["id"] for row in bc_fakes.bc.rows("customers") if expected(row)]
    assert got == want
    assert want, "the expression should match some rows"


def test_filter_on_guids_dates_and_null(bc_fakes: BcFakes) -> None:
    customer = bc_fakes.bc.rows("customers")[0]
    orders = get(bc_fakes, bc_fakes.company_url("salesOrders"),
                 params={"$filter": f"customerId eq {customer['id']}"}).json()["value"]
    assert orders and all(o["customerId"] == customer["id"] for o in orders)
    dated = get(bc_fakes, bc_fakes.company_url("salesOrders"),
                params={"$filter": "orderDate ge 2025-01-05 and orderDate le 2025-01-07"}).json()["value"]
    assert [o["orderDate"] for o in dated] == ["2025-01-05", "2025-01-06", "2025-01-07"]
    none = get(bc_fakes, bc_fakes.company_url("customers"), params={"$filter": "city eq null"}).json()["value"]
    assert none == []


@pytest.mark.parametrize(("params", "fragment"), [
    ({"$filter": "city eq 'Chicago' or displayName eq 'Relecloud'"}, "'or' operator"),
    ({"$filter": "nosuch eq 1"}, "Could not find a property named 'nosuch'"),
    ({"$filter": "city eq"}, "literal value expected"),
    ({"$filter": "city eq 'unterminated"}, "Syntax error"),
    ({"$filter": "balanceDue eq 'ten'"}, "incompatible types"),
    ({"$filter": "tolower(city) eq 'x'"}, "'tolower' is not supported"),
    ({"$filter": "contains(balanceDue,'1')"}, "contains() needs a string property"),
    ({"$select": "number,nosuch"}, "Could not find a property named 'nosuch'"),
    ({"$orderby": "nosuch desc"}, "Could not find a property named 'nosuch'"),
    ({"$orderby": "number sideways"}, "Invalid $orderby clause"),
    ({"$top": "-1"}, "requires a non-negative integer"),
    ({"$skip": "x"}, "requires a non-negative integer"),
    ({"$search": "x"}, "'$search' is not supported"),
    ({"$expand": "salesOrderLines"}, "navigation property named 'salesOrderLines'"),
])
def test_bad_queries_are_400_naming_the_problem(bc_fakes: BcFakes, params: dict[str, str], fragment: str) -> None:
    response = get(bc_fakes, bc_fakes.company_url("customers"), params=params)
    assert response.status_code == 400
    assert error_code(response) == "BadRequest"
    assert fragment in response.json()["error"]["message"]


def test_select_and_orderby(bc_fakes: BcFakes) -> None:
    body = get(bc_fakes, bc_fakes.company_url("items"),
               params={"$select": "number,unitPrice", "$orderby": "unitPrice desc,number", "$top": "4"}).json()
    assert body["@odata.context"].endswith("/items(number,unitPrice)")
    rows = body["value"]
    assert all(set(r) == {"@odata.etag", "number", "unitPrice"} for r in rows)
    everything = sorted(bc_fakes.bc.rows("items"), key=lambda r: (-r["unitPrice"], r["number"]))
    assert [r["number"] for r in rows] == [r["number"] for r in everything[:4]]
    ascending = get(bc_fakes, bc_fakes.company_url("items"), params={"$orderby": "unitPrice asc", "$top": "3"})
    prices = [r["unitPrice"] for r in ascending.json()["value"]]
    assert prices == sorted(r["unitPrice"] for r in bc_fakes.bc.rows("items"))[:3]


def test_sales_orders_expand_their_lines(bc_fakes: BcFakes) -> None:
    orders = get(bc_fakes, bc_fakes.company_url("salesOrders"), params={"$expand": "salesOrderLines"}).json()
    assert len(orders["value"]) == 12
    order = orders["value"][3]
    assert len(order["salesOrderLines"]) == 4
    assert all(line["documentId"] == order["id"] for line in order["salesOrderLines"])
    assert order["totalAmountExcludingTax"] == round(sum(line["netAmount"] for line in order["salesOrderLines"]), 2)
    nested = get(bc_fakes, bc_fakes.company_url(f"salesOrders({order['id']})/salesOrderLines")).json()
    assert [line["id"] for line in nested["value"]] == [line["id"] for line in order["salesOrderLines"]]
    line = order["salesOrderLines"][1]
    one = get(bc_fakes, bc_fakes.company_url(f"salesOrders({order['id']})/salesOrderLines({line['id']})"))
    assert one.status_code == 200 and one.json()["sequence"] == 20000
    single = get(bc_fakes, bc_fakes.company_url(f"salesOrders({order['id']})"),
                 params={"$expand": "salesOrderLines"}).json()
    assert len(single["salesOrderLines"]) == 4


def test_metadata_is_csdl_for_the_served_entities(bc_fakes: BcFakes) -> None:
    response = get(bc_fakes, bc_fakes.api_url("$metadata"))
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/xml")
    root = ET.fromstring(response.content)
    types = {t.get("Name"): t for t in root.iter(f"{EDM}EntityType")}
    assert {"company", "customer", "vendor", "item", "salesOrder", "salesOrderLine"} <= set(types)
    properties = {p.get("Name") for p in types["customer"].iter(f"{EDM}Property")}
    row = get(bc_fakes, bc_fakes.company_url("customers"), params={"$top": "1"}).json()["value"][0]
    assert properties == set(row) - {"@odata.etag"}
    sets = {s.get("Name") for s in root.iter(f"{EDM}EntitySet")}
    assert {"companies", "customers", "vendors", "items", "salesOrders"} <= sets


# ---------------------------------------------------------------- writes


def test_create_patch_with_etag_stale_etag_and_delete(bc_fakes: BcFakes) -> None:
    customers = bc_fakes.company_url("customers")
    created = call(bc_fakes, "POST", customers, json={"displayName": "Kit Test Ltd.", "city": "Boston"})
    assert created.status_code == 201, created.text
    row = created.json()
    assert row["number"] == "12500" and row["displayName"] == "Kit Test Ltd." and row["balanceDue"] == 0
    assert created.headers["Location"] == f"{customers}({row['id']})"
    assert created.headers["ETag"] == row["@odata.etag"]
    url = f"{customers}({row['id']})"
    assert get(bc_fakes, url).json()["displayName"] == "Kit Test Ltd."

    patched = call(bc_fakes, "PATCH", url, json={"city": "Denver"}, headers={"If-Match": row["@odata.etag"]})
    assert patched.status_code == 200
    assert patched.json()["city"] == "Denver" and patched.json()["displayName"] == "Kit Test Ltd."
    assert patched.json()["@odata.etag"] != row["@odata.etag"]
    assert patched.json()["@odata.context"].endswith("/customers/$entity")

    stale = call(bc_fakes, "PATCH", url, json={"city": "Austin"}, headers={"If-Match": row["@odata.etag"]})
    assert stale.status_code == 409 and error_code(stale) == "Request_EntityChanged"
    assert "Another user has already changed the record." in stale.json()["error"]["message"]

    no_match = call(bc_fakes, "PATCH", url, json={"city": "Austin"})
    assert no_match.status_code == 400 and error_code(no_match) == "BadRequest_InvalidToken"
    escaped = call(bc_fakes, "PATCH", url, json={"city": "Austin"},
                   headers={"If-Match": patched.json()["@odata.etag"].replace('"', '\\"')})
    assert escaped.status_code == 400 and error_code(escaped) == "BadRequest_InvalidToken"
    star = call(bc_fakes, "PATCH", url, json={"city": "Austin"}, headers={"If-Match": "*"})
    assert star.status_code == 200 and star.json()["city"] == "Austin"

    stale_delete = call(bc_fakes, "DELETE", url, headers={"If-Match": row["@odata.etag"]})
    assert stale_delete.status_code == 409
    deleted = call(bc_fakes, "DELETE", url, headers={"If-Match": star.json()["@odata.etag"]})
    assert deleted.status_code == 204 and deleted.content == b""
    gone = get(bc_fakes, url)
    assert gone.status_code == 404 and error_code(gone) == "Internal_RecordNotFound"


def test_writes_persist_per_environment_and_per_fake(bc_fakes: BcFakes) -> None:
    first = bc_fakes.bc.rows("customers")[0]
    patched = call(bc_fakes, "PATCH", bc_fakes.company_url(f"customers({first['id']})"),
                   json={"displayName": "Renamed"}, headers={"If-Match": first["@odata.etag"]})
    assert patched.status_code == 200
    assert get(bc_fakes, bc_fakes.company_url(f"customers({first['id']})")).json()["displayName"] == "Renamed"
    sandbox = get(bc_fakes, bc_fakes.company_url(f"customers({first['id']})", environment="Sandbox"))
    assert sandbox.json()["displayName"] == "Adatum Corporation"
    other_company = bc_fakes.bc.rows("customers", company="My Company")[0]
    assert other_company["displayName"] == "Adatum Corporation"
    with open_bc_fakes() as fresh:
        assert fresh.bc.rows("customers")[0]["displayName"] == "Adatum Corporation"


def test_deleting_a_sales_order_deletes_its_lines(bc_fakes: BcFakes) -> None:
    order = bc_fakes.bc.rows("salesOrders")[1]
    assert len([line for line in bc_fakes.bc.rows("salesOrderLines") if line["documentId"] == order["id"]]) == 2
    response = call(bc_fakes, "DELETE", bc_fakes.company_url(f"salesOrders({order['id']})"),
                    headers={"If-Match": "*"})
    assert response.status_code == 204
    assert not [line for line in bc_fakes.bc.rows("salesOrderLines") if line["documentId"] == order["id"]]


def test_lines_are_created_under_their_order(bc_fakes: BcFakes) -> None:
    order = bc_fakes.bc.rows("salesOrders")[0]
    item = bc_fakes.bc.rows("items")[5]
    url = bc_fakes.company_url(f"salesOrders({order['id']})/salesOrderLines")
    created = call(bc_fakes, "POST", url, json={"itemId": item["id"], "quantity": 3, "sequence": 20000})
    assert created.status_code == 201, created.text
    assert created.json()["documentId"] == order["id"]
    assert len(get(bc_fakes, url).json()["value"]) == 2


@pytest.mark.parametrize(("body", "fragment"), [
    (b"{not json", "not valid JSON"),
    (b"", "body is empty"),
    (b"[1, 2]", "must be a JSON object"),
    (b'{"nosuch": 1}', "The property 'nosuch' does not exist"),
    (b'{"creditLimit": "lots"}', "Cannot convert the literal 'lots' to the expected type 'Edm.Decimal'"),
    (b'{"taxLiable": 1}', "expected type 'Edm.Boolean'"),
    (b'{"number": "10000"}', "already exists"),
    (b"\xff\xfe\x00", "not valid JSON"),
])
def test_bad_bodies_are_400(bc_fakes: BcFakes, body: bytes, fragment: str) -> None:
    response = call(bc_fakes, "POST", bc_fakes.company_url("customers"), data=body,
                    headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert fragment in response.json()["error"]["message"]


def test_read_only_properties_in_a_body_are_ignored(bc_fakes: BcFakes) -> None:
    first = bc_fakes.bc.rows("customers")[0]
    response = call(bc_fakes, "PATCH", bc_fakes.company_url(f"customers({first['id']})"),
                    json={**first, "balanceDue": 1, "phoneNumber": "555-9999"}, headers={"If-Match": "*"})
    assert response.status_code == 200
    assert response.json()["balanceDue"] == first["balanceDue"] and response.json()["phoneNumber"] == "555-9999"


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "companies"), ("PATCH", "companies({cid})"), ("DELETE", "companies({cid})"),
    ("POST", "companies({cid})/customers({first})"), ("PUT", "companies({cid})/customers({first})"),
    ("DELETE", "companies({cid})/customers"), ("POST", "$metadata"),
])
def test_methods_a_resource_does_not_allow_are_405(bc_fakes: BcFakes, method: str, path: str) -> None:
    path = path.format(cid=bc_fakes.bc.company_id(), first=bc_fakes.bc.rows("customers")[0]["id"])
    response = call(bc_fakes, method, bc_fakes.api_url(path), json={}, headers={"If-Match": "*"})
    assert response.status_code == 405
    assert error_code(response) == "BadRequest_MethodNotAllowed"


@pytest.mark.parametrize(("path", "status", "code"), [
    ("companies(00000000-0000-0000-0000-000000000001)/customers", 404, "Internal_CompanyNotFound"),
    ("companies(not-a-guid)/customers", 400, "BadRequest"),
    ("companies({cid})/widgets", 404, "BadRequest_ResourceNotFound"),
    ("companies({cid})/customers(00000000-0000-0000-0000-000000000001)", 404, "Internal_RecordNotFound"),
    ("companies({cid})/customers({first})/displayName", 404, "BadRequest_ResourceNotFound"),
    ("companies({cid})/salesOrders(00000000-0000-0000-0000-000000000001)/salesOrderLines", 404,
     "Internal_RecordNotFound"),
    ("widgets", 404, "BadRequest_ResourceNotFound"),
    ("companies/customers", 404, "BadRequest_ResourceNotFound"),
])
def test_unknown_resources(bc_fakes: BcFakes, path: str, status: int, code: str) -> None:
    path = path.format(cid=bc_fakes.bc.company_id(), first=bc_fakes.bc.rows("customers")[0]["id"])
    response = get(bc_fakes, bc_fakes.api_url(path))
    assert response.status_code == status
    assert error_code(response) == code
    assert "  CorrelationId:  " in response.json()["error"]["message"]


def test_a_path_outside_the_api_is_404_without_authentication(bc_fakes: BcFakes) -> None:
    response = requests.get("https://api.businesscentral.dynamics.com/nothing/here", timeout=5)
    assert response.status_code == 404 and error_code(response) == "BadRequest_ResourceNotFound"


def test_service_document(bc_fakes: BcFakes) -> None:
    body = get(bc_fakes, bc_fakes.api_url("")).json()
    assert {s["name"] for s in body["value"]} == {"companies", "customers", "vendors", "items", "salesOrders"}


# ---------------------------------------------------------------- custom APIs


def test_custom_api_rows_are_served_and_filtered(bc_fakes: BcFakes) -> None:
    bc_fakes.bc.register_custom_api("contoso", "portal", "v1.0", "projects", [
        {"code": "P-1", "title": "Roof", "budget": 1200.5, "active": True},
        {"code": "P-2", "title": "Garden", "budget": 300, "active": False},
    ])
    cid = bc_fakes.bc.company_id()
    base = f"https://api.businesscentral.dynamics.com/v2.0/{bc_fakes.tenant_id}/Production/api/contoso/portal/v1.0"
    listed = get(bc_fakes, f"{base}/companies({cid})/projects")
    assert listed.status_code == 200
    assert [p["code"] for p in listed.json()["value"]] == ["P-1", "P-2"]
    assert listed.json()["@odata.context"] == f"{base}/$metadata#companies({cid})/projects"
    active = get(bc_fakes, f"{base}/companies({cid})/projects", params={"$filter": "active eq true"}).json()
    assert [p["title"] for p in active["value"]] == ["Roof"]
    companies = get(bc_fakes, f"{base}/companies").json()
    assert len(companies["value"]) == 2
    metadata = ET.fromstring(get(bc_fakes, f"{base}/$metadata").content)
    assert {t.get("Name") for t in metadata.iter(f"{EDM}EntityType")} == {"company", "project"}
    created = call(bc_fakes, "POST", f"{base}/companies({cid})/projects", json={"code": "P-3", "budget": 1})
    assert created.status_code == 201
    unknown = get(bc_fakes, base.replace("contoso", "fabrikam") + f"/companies({cid})/projects")
    assert unknown.status_code == 404 and error_code(unknown) == "BadRequest_ResourceNotFound"


def test_read_only_custom_api_refuses_writes(bc_fakes: BcFakes) -> None:
    bc_fakes.bc.register_custom_api("contoso", "portal", "v1.0", "rates", [{"currency": "EUR", "rate": 1.1}],
                                    read_only=True)
    cid = bc_fakes.bc.company_id()
    url = (f"https://api.businesscentral.dynamics.com/v2.0/{bc_fakes.tenant_id}/Production/api/contoso/portal/v1.0/"
           f"companies({cid})/rates")
    assert get(bc_fakes, url).status_code == 200
    assert call(bc_fakes, "POST", url, json={"currency": "USD"}).status_code == 405


def test_the_core_is_sans_io(bc_fakes: BcFakes) -> None:
    """The same answer straight from ``handle``, with the base the request names."""
    bc: BusinessCentral = bc_fakes.bc
    path = f"/v2.0/{bc_fakes.tenant_id}/Production/api/v2.0/companies"
    response = bc.handle(Request("GET", path, "", {"authorization": f"Bearer {bc_fakes.app_token()}"}, b"",
                                 "https://127.0.0.1:8443"))
    assert response.status == 200
    assert response.json_body()["@odata.context"].startswith("https://127.0.0.1:8443/v2.0/")
