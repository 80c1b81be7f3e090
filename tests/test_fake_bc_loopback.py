"""The fake BC over real HTTPS on 127.0.0.1 (the loopback adapter), trusted through the run's CA."""

from __future__ import annotations

from pathlib import Path

import requests

from conformance.loopback import LoopbackServer
from conformance.tls import RunCA
from fake_authority import Authority
from fake_bc import BusinessCentral
from fake_bc.pytest_fixtures import shared_signing_key


def test_loopback_serves_a_get_over_https(tmp_path: Path) -> None:
    authority = Authority(key=shared_signing_key())
    bc = BusinessCentral.for_authority(authority)
    ca = RunCA(tmp_path)
    token = authority.issue_app_token()
    tid = authority.registry.tenant_id
    # Connection: close, so the server's graceful stop finds no idle keep-alive connection to wait for.
    auth = {"Authorization": f"Bearer {token}", "Connection": "close"}
    with LoopbackServer(bc.handle, ca.issue()) as server:
        url = f"{server.url}/v2.0/{tid}/Production/api/v2.0/companies({bc.company_id()})/customers"
        # verify= per request: REQUESTS_CA_BUNDLE in the environment would override a session's verify
        response = requests.get(url, params={"$top": "2"}, headers=auth, verify=str(ca.ca_file), timeout=10)
        assert response.status_code == 200
        body = response.json()
        assert len(body["value"]) == 2
        assert body["@odata.context"].startswith(f"{server.url}/v2.0/{tid}/Production/api/v2.0/$metadata#")
        paged = requests.get(url, headers={**auth, "Prefer": "odata.maxpagesize=5"},
                             verify=str(ca.ca_file), timeout=10).json()
        assert paged["@odata.nextLink"].startswith(f"{server.url}/v2.0/")
        nxt = requests.get(paged["@odata.nextLink"], headers=auth,
                           verify=str(ca.ca_file), timeout=10)
        assert nxt.status_code == 200 and nxt.json()["value"][0]["number"] == "10050"
        unauthenticated = requests.get(url, headers={"Connection": "close"}, verify=str(ca.ca_file),
                                       timeout=10)
        assert unauthenticated.status_code == 401
        assert unauthenticated.headers["WWW-Authenticate"].startswith("Bearer authorization_uri=")
    assert [e.status for e in authority.trace.where(server="bc")] == [200, 200, 200, 401]
