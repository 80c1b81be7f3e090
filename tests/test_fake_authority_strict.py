"""Where Entra is strict, the fake is strict: each case gets Entra's error and AADSTS code (as published: the
sources are named in each test). Where Entra is lenient (a rotated refresh token stays valid), the fake is too,
and the RFC's stricter revocation is a switch (``faults.strict_revocation``)."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import replace
from urllib.parse import urlencode

import pytest

from conformance.clock import FakeClock
from conformance.wire import Request, Response
from fake_authority import BC_SCOPE, Authority, Client
from fake_authority.grants import CODE_LIFETIME
from fake_authority.jwt import SigningKey
from fake_bc import BusinessCentral
from tests.test_fake_authority_protocol import REDIRECT, Browserless, aadsts, auth_params, cc_form, get_code, token

PUBLIC_ID = "5a5a5a5a-0000-4000-8000-000000000001"
VERIFIER = "v" * 50


@pytest.fixture(scope="module")
def shared_key() -> SigningKey:
    return SigningKey()


@pytest.fixture
def authority(shared_key: SigningKey) -> Authority:
    a = Authority(clock=FakeClock(), key=shared_key)
    public = Client(PUBLIC_ID, redirect_uris=(REDIRECT,), display_name="Public app")
    a.registry = replace(a.registry, clients=(*a.registry.clients, public))
    return a


def creds(a: Authority) -> dict[str, str]:
    client = a.registry.default_client
    return {"client_id": client.client_id, "client_secret": client.secrets[0].value}


def redeem(a: Authority, code: str, **extra: str) -> Response:
    return token(a, {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, **creds(a), **extra})


def bc_status(a: Authority, access_token: str) -> int:
    bc = BusinessCentral.for_authority(a)
    path = f"/v2.0/{a.registry.tenant_id}/Production/api/v2.0/companies"
    response = bc.handle(Request("GET", path, "", {"authorization": f"Bearer {access_token}"}, b"",
                                 "https://api.businesscentral.dynamics.com"))
    return response.status


# ---------------------------------------------------------------- client authentication


def test_public_client_gets_no_app_token(authority):
    """AADSTS7000218: client_credentials needs a client secret or assertion; a public client has neither."""
    r = token(authority, {"grant_type": "client_credentials", "client_id": PUBLIC_ID, "scope": BC_SCOPE})
    assert aadsts(r) == (401, "invalid_client", 7000218)


def test_public_client_may_not_present_a_secret(authority):
    r = token(authority, {"grant_type": "client_credentials", "client_id": PUBLIC_ID, "client_secret": "x",
                          "scope": BC_SCOPE})
    assert aadsts(r) == (401, "invalid_client", 700025)


def test_business_central_refuses_an_app_token_of_a_public_client(authority):
    forged = authority.issue_app_token(appidacr="0")  # what a lenient Authority would have issued
    assert bc_status(authority, forged) == 401
    assert bc_status(authority, authority.issue_app_token()) == 200


# ---------------------------------------------------------------- request syntax


def test_repeated_parameter_is_refused_whichever_value_comes_first(authority):
    """RFC 6749 §3.1: parameters MUST NOT be included more than once; first-value-wins would hide a wrong secret."""
    good = cc_form(authority)
    body = urlencode(good) + "&client_secret=WRONG"
    r = authority.handle(Request("POST", f"/{authority.registry.tenant_id}/oauth2/v2.0/token", "",
                                 {"content-type": "application/x-www-form-urlencoded"}, body.encode(),
                                 "https://login.microsoftonline.com"))
    assert aadsts(r) == (400, "invalid_request", 9000411)
    assert "client_secret" in r.json_body()["error_description"]


def test_repeated_authorize_parameter_gets_an_error_page_not_a_redirect(authority):
    query = urlencode(auth_params(authority)) + "&redirect_uri=https%3A%2F%2Fevil.example%2Fcb"
    r = authority.handle(Request("GET", f"/{authority.registry.tenant_id}/oauth2/v2.0/authorize", query, {}, b"",
                                 "https://login.microsoftonline.com"))
    assert r.status == 400 and not r.header("Location") and b"AADSTS9000411" in r.body


@pytest.mark.parametrize("content_type", ["text/plain; x=application/x-www-form-urlencoded", "application/json",
                                          "multipart/form-data; boundary=application/x-www-form-urlencoded", ""])
def test_wrong_media_type_is_refused(authority, content_type):
    """Entra reads no parameter from another media type: a JSON body gets 400 AADSTS900144 'grant_type'
    (captured in microsoftgraph/microsoft-graph-docs#20272, MicrosoftDocs/azure-docs#43780)."""
    r = authority.handle(Request("POST", f"/{authority.registry.tenant_id}/oauth2/v2.0/token", "",
                                 {"content-type": content_type}, urlencode(cc_form(authority)).encode(),
                                 "https://login.microsoftonline.com"))
    assert aadsts(r) == (400, "invalid_request", 900144)
    assert "'grant_type'" in r.json_body()["error_description"]


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded",
                                          "Application/X-WWW-Form-Urlencoded; charset=UTF-8"])
def test_form_media_type_with_parameters_is_accepted(authority, content_type):
    r = token(authority, cc_form(authority), headers={"content-type": content_type})
    assert r.status == 200


def test_host_header_is_never_reflected_into_discovery(authority):
    path = f"/{authority.registry.tenant_id}/v2.0/.well-known/openid-configuration"
    evil = authority.handle(Request("GET", path, "", {}, b"", "https://evil.example"))
    config = evil.json_body()
    assert all(config[k].startswith("https://login.microsoftonline.com/")
               for k in ("token_endpoint", "authorization_endpoint", "jwks_uri"))
    authority.serve_at("https://127.0.0.1:8443", "localhost:8443")
    own = authority.handle(Request("GET", path, "", {}, b"", "https://localhost:8443")).json_body()
    assert own["token_endpoint"].startswith("https://localhost:8443/")
    other = authority.handle(Request("GET", path, "", {}, b"", "https://127.0.0.1:9999")).json_body()
    assert other["token_endpoint"].startswith("https://127.0.0.1:8443/")


def test_instance_discovery_refuses_an_unknown_instance(authority):
    query = urlencode({"api-version": "1.1", "authorization_endpoint": "https://evil.example/t/oauth2/v2.0/authorize"})
    r = authority.handle(Request("GET", "/common/discovery/instance", query, {}, b"",
                                 "https://login.microsoftonline.com"))
    assert r.status == 400 and r.json_body()["error"] == "invalid_instance"


# ---------------------------------------------------------------- PKCE


def _challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def test_pkce_downgrade_is_refused(authority):
    """A verifier for a code whose authorization carried no challenge: an attacker stripped the challenge."""
    code = get_code(authority)  # no code_challenge
    assert aadsts(redeem(authority, code, code_verifier=VERIFIER)) == (400, "invalid_grant", 501481)


def test_pkce_s256_round_trip_and_mismatch(authority):
    code = get_code(authority, code_challenge=_challenge(VERIFIER), code_challenge_method="S256")
    assert aadsts(redeem(authority, code, code_verifier="w" * 50)) == (400, "invalid_grant", 501481)
    code = get_code(authority, code_challenge=_challenge(VERIFIER), code_challenge_method="S256")
    assert redeem(authority, code, code_verifier=VERIFIER).status == 200


# ---------------------------------------------------------------- codes: sealed, single use, expiring


def test_codes_are_sealed_not_stored(authority):
    b = Browserless(authority)
    codes = {get_code(authority, b) for _ in range(50)}
    assert len(codes) == 50 and not authority.grants.redeemed  # nothing is kept for an unredeemed code
    code = codes.pop()
    tampered = code[:-6] + ("A" if code[-6] != "A" else "B") + code[-5:]
    assert aadsts(redeem(authority, tampered)) == (400, "invalid_grant", 70000)
    assert redeem(authority, code).status == 200


def test_code_expires_after_ten_minutes(authority):
    code = get_code(authority)
    authority.clock.advance(CODE_LIFETIME + 1)  # type: ignore[attr-defined]
    assert aadsts(redeem(authority, code)) == (400, "invalid_grant", 70008)


def test_code_replay_is_refused_and_entra_keeps_the_first_tokens(authority):
    """Entra answers a second redemption with AADSTS54005 and, as far as anyone has published, leaves the tokens of
    the first redemption working: a portal that works against Entra must not fail here for that."""
    code = get_code(authority)
    first = redeem(authority, code).json_body()
    assert aadsts(redeem(authority, code)) == (400, "invalid_grant", 54005)
    assert bc_status(authority, first["access_token"]) == 200
    assert authority.trace.where(server="authority", endpoint="token")[-1].detail["code_reused"] is True


def test_strict_code_replay_revokes_the_tokens_of_the_first_redemption(authority):
    """RFC 6749 §4.1.2: the Authority SHOULD revoke what a replayed code led to (the strict switch)."""
    authority.faults.strict_revocation = True
    code = get_code(authority)
    first = redeem(authority, code).json_body()
    assert bc_status(authority, first["access_token"]) == 200
    assert aadsts(redeem(authority, code)) == (400, "invalid_grant", 54005)
    assert bc_status(authority, first["access_token"]) == 401
    refreshed = token(authority, {"grant_type": "refresh_token", "refresh_token": first["refresh_token"],
                                  **creds(authority)})
    assert aadsts(refreshed) == (400, "invalid_grant", 50173)
    event = authority.trace.where(server="authority", endpoint="token")[-2]
    assert event.detail["revoked_family"] == {"access_tokens": 1, "refresh_tokens": 1}


def test_strict_replay_spares_other_grants(authority):
    authority.faults.strict_revocation = True
    own = redeem(authority, get_code(authority)).json_body()
    code = get_code(authority)
    redeem(authority, code)
    redeem(authority, code)
    assert bc_status(authority, own["access_token"]) == 200


def test_rotated_refresh_token_stays_valid_as_in_entra_and_the_reuse_is_recorded(authority):
    """Entra: "doesn't revoke old refresh tokens when used"; the trace marks the reuse for the RFC 9700 check."""
    first = redeem(authority, get_code(authority)).json_body()
    rotate = {"grant_type": "refresh_token", **creds(authority)}
    second = token(authority, {**rotate, "refresh_token": first["refresh_token"]}).json_body()
    assert second["refresh_token"] != first["refresh_token"]
    again = token(authority, {**rotate, "refresh_token": first["refresh_token"]})
    assert again.status == 200
    assert authority.trace.where(server="authority", endpoint="token")[-1].detail["refresh_reused"] is True


def test_strict_rotated_refresh_token_reuse_revokes_the_family(authority):
    """RFC 9700 §4.14.2: reuse of a rotated refresh token revokes the active one, and its access tokens."""
    authority.faults.strict_revocation = True
    first = redeem(authority, get_code(authority)).json_body()
    rotate = {"grant_type": "refresh_token", **creds(authority)}
    second = token(authority, {**rotate, "refresh_token": first["refresh_token"]}).json_body()
    assert bc_status(authority, second["access_token"]) == 200
    reuse = token(authority, {**rotate, "refresh_token": first["refresh_token"]})
    assert aadsts(reuse) == (400, "invalid_grant", 50173)
    assert aadsts(token(authority, {**rotate, "refresh_token": second["refresh_token"]}))[2] == 50173
    assert bc_status(authority, second["access_token"]) == 401
    assert bc_status(authority, first["access_token"]) == 401


# ---------------------------------------------------------------- scope of delegated responses


def test_delegated_default_scope_is_echoed_next_to_the_granted_permissions(authority):
    code = get_code(authority, scope=f"{BC_SCOPE} openid profile offline_access")
    scope = redeem(authority, code).json_body()["scope"].split()
    assert "https://api.businesscentral.dynamics.com/.default" in scope
    assert "https://api.businesscentral.dynamics.com/user_impersonation" in scope


def test_named_permission_is_answered_without_default(authority):
    code = get_code(authority)  # Financials.ReadWrite.All
    scope = redeem(authority, code).json_body()["scope"].split()
    assert "https://api.businesscentral.dynamics.com/Financials.ReadWrite.All" in scope
    assert not any(s.endswith("/.default") for s in scope)
