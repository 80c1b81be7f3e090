"""The fake BC's authentication table, token cache, limits, faults, trace, and a token from MSAL Python."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import msal
import pytest
import requests

from conformance.wire import Request
from fake_authority.jwt import SigningKey
from fake_bc.pytest_fixtures import BcFakes

INCORRECT = "The credentials provided are incorrect"
REJECTED = "The server has rejected the client credentials."
NOT_AUTHORIZED = "Web service call failed because user could not be authenticated or authorized."
OTHER_TENANT = "0b0b0b0b-1111-2222-3333-444455556666"


def companies(fakes: BcFakes, headers: dict[str, str] | None = None, tenant: bool = True,
              **kwargs: Any) -> requests.Response:
    return requests.get(fakes.api_url("companies", tenant=tenant), headers=headers or {}, timeout=5, **kwargs)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def last_bc_event(fakes: BcFakes) -> Any:
    return fakes.trace.where(server="bc")[-1]


# ---------------------------------------------------------------- the authentication table


def _expired(f: BcFakes) -> dict[str, str]:
    token = f.app_token(lifetime=600)
    f.clock.advance(600 + f.bc.clock_skew)
    return bearer(token)


def _signed_by_another_key(f: BcFakes) -> dict[str, str]:
    claims = {"aud": "https://api.businesscentral.dynamics.com", "iss": f"https://sts.windows.net/{f.tenant_id}/",
              "tid": f.tenant_id, "appid": f.client_id, "oid": "x", "roles": ["API.ReadWrite.All"],
              "idtyp": "app", "iat": int(f.clock.now()), "nbf": int(f.clock.now()), "exp": int(f.clock.now()) + 600,
              "uti": "forged"}
    return bearer(SigningKey().sign(claims))


def _same_kid_other_key(f: BcFakes) -> dict[str, str]:
    genuine = f.app_token()
    header, payload, _ = genuine.split(".")
    forger = SigningKey(kid=f.authority.key.kid)
    signature = forger.sign({}).split(".")[2]  # a signature by another key over other bytes
    return bearer(f"{header}.{payload}.{signature}")


def _unregistered(f: BcFakes) -> dict[str, str]:
    f.bc.entra_apps.unregister(f.client_id)
    return bearer(f.app_token())


def _disabled(f: BcFakes) -> dict[str, str]:
    f.bc.entra_apps.disable(f.client_id)
    return bearer(f.app_token())


def _revoked_token(f: BcFakes) -> dict[str, str]:
    token = f.app_token()
    assert companies(f, bearer(token)).status_code == 200  # cached as verified, then revoked
    f.bc.revoke_token(token)
    return bearer(token)


def _revoked_principal(f: BcFakes) -> dict[str, str]:
    token = f.app_token()
    f.bc.revoke_principal(f.client_id)
    return bearer(token)


CASES: list[tuple[str, Callable[[BcFakes], dict[str, str]], str, str]] = [
    # (name, request headers, failure reason in the trace, message)
    ("missing header", lambda f: {}, "missing", INCORRECT),
    ("not a bearer token", lambda f: {"Authorization": "Basic dXNlcjpwYXNz"}, "not_bearer", INCORRECT),
    ("not a JWT", lambda f: bearer("not-a-jwt"), "malformed", INCORRECT),
    ("expired", _expired, "expired", INCORRECT),
    ("not yet valid", lambda f: bearer(f.app_token(nbf=int(f.clock.now()) + 3600)), "not_yet_valid", INCORRECT),
    ("wrong audience", lambda f: bearer(f.app_token(aud="https://graph.microsoft.com")), "wrong_audience",
     INCORRECT),
    ("other tenant", lambda f: bearer(f.app_token(tid=OTHER_TENANT, iss=f"https://sts.windows.net/{OTHER_TENANT}/")),
     "other_tenant", INCORRECT),
    ("issuer of another tenant", lambda f: bearer(f.app_token(iss=f"https://sts.windows.net/{OTHER_TENANT}/")),
     "wrong_issuer", INCORRECT),
    ("signed by another key", _signed_by_another_key, "bad_signature", INCORRECT),
    ("same kid, another key", _same_kid_other_key, "bad_signature", INCORRECT),
    ("app token without roles", lambda f: bearer(f.app_token(roles=None)), "no_roles", NOT_AUTHORIZED),
    ("app token with other roles", lambda f: bearer(f.app_token(roles=["User.Read.All"])), "no_roles",
     NOT_AUTHORIZED),
    ("user token without BC scopes", lambda f: bearer(f.authority.issue_user_token(
        "alice@contoso.onmicrosoft.com", scp="User.Read")), "no_scope", NOT_AUTHORIZED),
    ("app not on the Entra applications page", _unregistered, "app_unregistered", REJECTED),
    ("app disabled on the Entra applications page", _disabled, "app_disabled", REJECTED),
    ("revoked token", _revoked_token, "revoked", INCORRECT),
    ("revoked principal", _revoked_principal, "revoked", INCORRECT),
]


@pytest.mark.parametrize(("name", "make_headers", "reason", "message"), CASES, ids=[c[0] for c in CASES])
def test_authentication_failures_are_401_with_bc_body_and_challenge(
    bc_fakes: BcFakes, name: str, make_headers: Callable[[BcFakes], dict[str, str]], reason: str, message: str
) -> None:
    response = companies(bc_fakes, make_headers(bc_fakes))
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "Authentication_InvalidCredentials"
    assert error["message"].startswith(f"{message}  CorrelationId:  ")
    assert error["message"].endswith(".")
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith(f'Bearer authorization_uri="https://login.microsoftonline.com/{bc_fakes.tenant_id}'
                                '/oauth2/authorize"')
    if reason == "missing" or reason == "not_bearer":
        assert "error=" not in challenge  # RFC 6750 §3.1: no error code without credentials
    else:
        assert 'error="invalid_token", error_description="' in challenge
    event = last_bc_event(bc_fakes)
    assert (event.status, event.error, event.detail["auth_failure"]) == (401, "Authentication_InvalidCredentials",
                                                                         reason)


def test_a_valid_token_passes_and_tenantless_urls_take_the_tenant_from_it(bc_fakes: BcFakes) -> None:
    token = bc_fakes.app_token()
    assert companies(bc_fakes, bearer(token)).status_code == 200
    assert companies(bc_fakes, bearer(token), tenant=False).status_code == 200
    by_domain = bc_fakes.api_url("companies").replace(bc_fakes.tenant_id, "contoso.onmicrosoft.com")
    assert requests.get(by_domain, headers=bearer(token), timeout=5).status_code == 200
    other = companies(bc_fakes, bearer(bc_fakes.app_token(tid=OTHER_TENANT,
                                                           iss=f"https://sts.windows.net/{OTHER_TENANT}/")),
                      tenant=False)
    assert other.status_code == 401
    assert f"login.microsoftonline.com/{OTHER_TENANT}/oauth2" in other.headers["WWW-Authenticate"]


def test_missing_header_on_a_tenantless_url_points_at_common(bc_fakes: BcFakes) -> None:
    response = companies(bc_fakes, tenant=False)
    assert response.headers["WWW-Authenticate"] == (
        'Bearer authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize"')


def test_the_bc_app_id_is_an_accepted_audience(bc_fakes: BcFakes) -> None:
    token = bc_fakes.app_token(aud="996def3d-b36c-4153-8607-a6fd3c01b89f")
    assert companies(bc_fakes, bearer(token)).status_code == 200


def test_expiry_is_checked_on_every_use_with_the_configured_skew(bc_fakes: BcFakes) -> None:
    token = bc_fakes.app_token(lifetime=600)
    assert companies(bc_fakes, bearer(token)).status_code == 200
    bc_fakes.clock.advance(600 + bc_fakes.bc.clock_skew - 1)
    assert companies(bc_fakes, bearer(token)).status_code == 200
    bc_fakes.clock.advance(1)
    response = companies(bc_fakes, bearer(token))
    assert response.status_code == 401
    assert "expired" in response.headers["WWW-Authenticate"]


def test_a_reused_token_costs_one_signature_verification(bc_fakes: BcFakes) -> None:
    token = bc_fakes.app_token()
    before = bc_fakes.bc.verifier.verifications
    for _ in range(5):
        assert companies(bc_fakes, bearer(token)).status_code == 200
    assert bc_fakes.bc.verifier.verifications == before + 1


def test_revoking_a_principal_spares_tokens_issued_later(bc_fakes: BcFakes) -> None:
    old = bc_fakes.app_token()
    bc_fakes.bc.revoke_principal(bc_fakes.authority.registry.default_client.sp_object_id)
    assert companies(bc_fakes, bearer(old)).status_code == 401
    bc_fakes.clock.advance(1)
    assert companies(bc_fakes, bearer(bc_fakes.app_token())).status_code == 200


def test_delegated_tokens_need_no_app_registration(bc_fakes: BcFakes) -> None:
    bc_fakes.bc.entra_apps.unregister(bc_fakes.client_id)
    token = bc_fakes.authority.issue_user_token("alice@contoso.onmicrosoft.com")
    assert companies(bc_fakes, bearer(token)).status_code == 200
    event = last_bc_event(bc_fakes)
    assert event.user == "alice@contoso.onmicrosoft.com"
    assert event.detail["idtyp"] == "user"
    assert companies(bc_fakes, bearer(bc_fakes.app_token())).status_code == 401


def test_a_token_in_the_query_string_is_not_accepted_and_is_flagged(bc_fakes: BcFakes) -> None:
    token = bc_fakes.app_token()
    response = companies(bc_fakes, params={"access_token": token})
    assert response.status_code == 401
    event = last_bc_event(bc_fakes)
    assert event.detail["token_in_query"] is True
    assert event.detail["auth_failure"] == "missing"
    assert token not in json.dumps([e.as_dict() for e in bc_fakes.trace.events])


def test_permission_sets_missing_gives_403(bc_fakes: BcFakes) -> None:
    bc_fakes.bc.faults.deny_permissions()
    response = companies(bc_fakes, bearer(bc_fakes.app_token()))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "Internal_ServerError"


# ---------------------------------------------------------------- trace


def test_the_trace_names_the_token_by_uti_and_never_holds_it(bc_fakes: BcFakes) -> None:
    token = bc_fakes.app_token()
    uti = json.loads(__import__("base64").urlsafe_b64decode(token.split(".")[1] + "==="))["uti"]
    requests.get(bc_fakes.company_url("customers"), params={"$top": "1"}, headers=bearer(token), timeout=5)
    event = last_bc_event(bc_fakes)
    assert event.endpoint == "customers"
    assert event.redeemed == (f"at:{uti}",)
    assert event.client_id == bc_fakes.client_id and event.user == ""
    assert event.detail["idtyp"] == "app" and event.detail["token_in_query"] is False
    assert event.detail["oid"] == bc_fakes.authority.registry.default_client.sp_object_id
    assert event.time == bc_fakes.clock.now()
    assert event.detail["query"] == {"$top": "1"}
    assert token not in json.dumps([e.as_dict() for e in bc_fakes.trace.events])


def test_trace_endpoints(bc_fakes: BcFakes) -> None:
    token = bc_fakes.app_token()
    for path in ("$metadata", "companies", f"companies({bc_fakes.bc.company_id()})/items"):
        requests.get(bc_fakes.api_url(path), headers=bearer(token), timeout=5)
    requests.get("https://api.businesscentral.dynamics.com/elsewhere", timeout=5)
    assert [e.endpoint for e in bc_fakes.trace.where(server="bc")] == ["$metadata", "companies", "items", "unknown"]


# ---------------------------------------------------------------- limits


def test_rate_limit_is_hit_at_the_configured_count_and_lifted_after_the_window(bc_fakes: BcFakes) -> None:
    bc_fakes.bc.set_limits(requests_per_window=5, window_seconds=60)
    token = bc_fakes.app_token()
    statuses = []
    for _ in range(5):
        statuses.append(companies(bc_fakes, bearer(token)).status_code)
        bc_fakes.clock.advance(2)
    assert statuses == [200] * 5
    refused = companies(bc_fakes, bearer(token))
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "Application_TooManyRequests"
    assert refused.headers["Retry-After"] == "50"  # the first request leaves the window 60 s after it came
    delegated = bc_fakes.authority.issue_user_token("alice@contoso.onmicrosoft.com")
    assert companies(bc_fakes, bearer(delegated)).status_code == 200  # limits are per principal
    bc_fakes.clock.advance(49)
    assert companies(bc_fakes, bearer(token)).status_code == 429
    bc_fakes.clock.advance(1)
    assert companies(bc_fakes, bearer(token)).status_code == 200
    assert companies(bc_fakes, bearer(token)).status_code == 429


def test_concurrency_limit_refuses_the_request_over_it(bc_fakes: BcFakes) -> None:
    """Each request is held back one second (a latency fault) and, called straight on the core, the clock does
    not move between them: they overlap, like five requests in flight at once."""
    bc = bc_fakes.bc
    bc.latency = 1.0
    headers = {"authorization": f"Bearer {bc_fakes.app_token()}"}
    path = f"/v2.0/{bc_fakes.tenant_id}/Production/api/v2.0/companies"
    statuses = [bc.handle(Request("GET", path, "", headers)).status for _ in range(6)]
    assert statuses == [200] * 5 + [429]
    bc_fakes.clock.advance(1)
    assert bc.handle(Request("GET", path, "", headers)).status == 200


def test_concurrency_slots_are_explicit_too(bc_fakes: BcFakes) -> None:
    bc = bc_fakes.bc
    bc.set_limits(max_concurrent=2)
    principal = f"{bc_fakes.tenant_id}/{bc_fakes.authority.registry.default_client.sp_object_id}"
    now = bc_fakes.clock.now()
    assert bc.limits.concurrency.enter(principal, now) and bc.limits.concurrency.enter(principal, now)
    response = companies(bc_fakes, bearer(bc_fakes.app_token()))
    assert response.status_code == 429 and response.headers["Retry-After"] == "1"
    bc.limits.concurrency.exit(principal, now)
    assert companies(bc_fakes, bearer(bc_fakes.app_token())).status_code == 200


# ---------------------------------------------------------------- faults


@pytest.mark.parametrize(("status", "code", "retry_after"), [
    (500, "Internal_ServerError", None), (503, "Internal_ServiceUnavailable", "5"),
    (504, "Internal_GatewayTimeout", None), (429, "Application_TooManyRequests", "5"),
])
def test_the_next_responses_fail_on_demand(bc_fakes: BcFakes, status: int, code: str, retry_after: str | None
                                           ) -> None:
    token = bc_fakes.app_token()
    bc_fakes.bc.fail_next(2, status)
    for _ in range(2):
        response = companies(bc_fakes, bearer(token))
        assert response.status_code == status
        assert response.json()["error"]["code"] == code
        assert response.headers.get("Retry-After") == retry_after
    assert companies(bc_fakes, bearer(token)).status_code == 200
    assert [e.status for e in bc_fakes.trace.where(server="bc")] == [status, status, 200]


def test_latency_moves_the_fake_clock(bc_fakes: BcFakes) -> None:
    bc_fakes.bc.latency = 2.5
    start = bc_fakes.clock.now()
    assert companies(bc_fakes, bearer(bc_fakes.app_token())).status_code == 200
    assert bc_fakes.clock.now() == start + 2.5


# ---------------------------------------------------------------- MSAL Python


def test_a_token_from_msal_python_works_unchanged(bc_fakes: BcFakes) -> None:
    app = msal.ConfidentialClientApplication(
        bc_fakes.client_id, client_credential=bc_fakes.client_secret,
        authority=f"https://login.microsoftonline.com/{bc_fakes.tenant_id}")
    result = app.acquire_token_for_client(["https://api.businesscentral.dynamics.com/.default"])
    assert "access_token" in result, result
    response = requests.get(bc_fakes.company_url("customers"), params={"$top": "3"},
                            headers={"Authorization": f"Bearer {result['access_token']}"}, timeout=5)
    assert response.status_code == 200
    assert len(response.json()["value"]) == 3
    issued = [e for e in bc_fakes.trace.where(server="authority", endpoint="token") if e.issued]
    assert issued[-1].issued == last_bc_event(bc_fakes).redeemed
