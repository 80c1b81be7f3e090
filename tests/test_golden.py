"""The fakes answer as the real services do: each answer is compared with a published transcript of Entra ID or
Business Central for the same situation (``tests/fixtures/golden/transcripts.json``, every entry naming its
source): same status, same members with the same JSON types, same error codes and message formats."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from conformance.clock import FakeClock
from conformance.wire import Request, Response
from fake_authority import BC_SCOPE, Authority
from fake_authority.jwt import SigningKey
from fake_bc import BusinessCentral
from tests.test_fake_authority_protocol import REDIRECT, cc_form, get_code, token

GOLDEN = json.loads((Path(__file__).parent / "fixtures" / "golden" / "transcripts.json").read_text())
GUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ"
AADSTS_DESCRIPTION = re.compile(
    rf"^AADSTS(\d+): (.+)\r\nTrace ID: {GUID}\r\nCorrelation ID: {GUID}\r\nTimestamp: {STAMP}$", re.DOTALL)
BC_MESSAGE = re.compile(rf"^(.+)  CorrelationId:  {GUID}\.$")


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey()


@pytest.fixture
def authority(key: SigningKey) -> Authority:
    return Authority(clock=FakeClock(), key=key)


def golden(name: str) -> dict[str, Any]:
    entry = GOLDEN[name]
    assert entry["source"], f"golden entry {name} names no source"
    return entry


def same_shape(ours: Any, theirs: Any, path: str = "body") -> None:
    """Same members (recursively) and the same JSON type for each."""
    if isinstance(theirs, dict):
        assert isinstance(ours, dict), f"{path}: expected an object, got {ours!r}"
        assert set(ours) == set(theirs), f"{path}: members {sorted(ours)} != published {sorted(theirs)}"
        for k in theirs:
            same_shape(ours[k], theirs[k], f"{path}.{k}")
    else:
        assert type(ours) is type(theirs), f"{path}: {type(ours).__name__} where Entra sends {type(theirs).__name__}"


def same_error(ours: Response, name: str) -> None:
    entry = golden(name)
    body = ours.json_body()
    assert ours.status == entry["status"], f"{name}: status {ours.status}, published {entry['status']}"
    same_shape(body, entry["body"])
    assert body["error"] == entry["body"]["error"] and body["error_codes"] == entry["body"]["error_codes"]
    ours_match = AADSTS_DESCRIPTION.match(body["error_description"])
    theirs_match = AADSTS_DESCRIPTION.match(entry["body"]["error_description"])
    assert ours_match and theirs_match, body["error_description"]
    assert ours_match[1] == theirs_match[1]
    assert re.fullmatch(STAMP, body["timestamp"]) and re.fullmatch(GUID, body["trace_id"])
    assert body["error_uri"] == entry["body"]["error_uri"]


# ---------------------------------------------------------------- token responses


def test_client_credentials_response(authority):
    r = token(authority, cc_form(authority))
    entry = golden("client_credentials_response")
    assert r.status == entry["status"]
    same_shape(r.json_body(), entry["body"])
    assert r.json_body()["token_type"] == "Bearer"


def _delegated(authority: Authority, scope: str, client_info: bool = False) -> dict[str, Any]:
    code = get_code(authority, scope=scope)
    client = authority.registry.default_client
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "client_id": client.client_id,
            "client_secret": client.secrets[0].value, **({"client_info": "1"} if client_info else {})}
    r = token(authority, form)
    assert r.status == 200
    return r.json_body()


def test_delegated_default_response_echoes_default_after_the_granted_permissions(authority):
    entry = golden("delegated_default_response")
    body = _delegated(authority, f"{BC_SCOPE} openid profile")  # no offline_access: no refresh token, as published
    id_token = body.pop("id_token")  # asked with openid; the published request had none
    assert id_token.count(".") == 2
    same_shape(body, entry["body"])
    ours, theirs = body["scope"].split(), entry["body"]["scope"].split()
    assert ours[:3] == theirs[:3] == ["profile", "openid", "email"]
    assert ours[-1] == f"{BC_SCOPE}" and theirs[-1] == "https://graph.microsoft.com/.default"
    assert set(ours[3:-1]) == {"https://api.businesscentral.dynamics.com/Financials.ReadWrite.All",
                               "https://api.businesscentral.dynamics.com/user_impersonation"}


def test_delegated_named_permission_response(authority):
    entry = golden("delegated_named_response")
    named = "https://api.businesscentral.dynamics.com/Financials.ReadWrite.All"
    body = _delegated(authority, f"{named} openid profile offline_access", client_info=True)
    same_shape(body, entry["body"])
    assert body["scope"].split()[1:] == entry["body"]["scope"].split()[1:] == ["profile", "openid", "email"]
    assert body["scope"].split()[0] == named


# ---------------------------------------------------------------- AADSTS errors


def test_invalid_client_secret(authority):
    same_error(token(authority, cc_form(authority, client_secret="wrong")), "invalid_client_secret")


def test_missing_client_secret(authority):
    form = {k: v for k, v in cc_form(authority).items() if k != "client_secret"}
    same_error(token(authority, form), "missing_client_secret")


def test_json_body_is_answered_as_a_missing_grant_type(authority):
    r = authority.handle(Request("POST", f"/{authority.registry.tenant_id}/oauth2/v2.0/token", "",
                                 {"content-type": "application/json"}, json.dumps(cc_form(authority)).encode(),
                                 "https://login.microsoftonline.com"))
    same_error(r, "missing_grant_type")


def test_code_redeemed_twice(authority):
    client = authority.registry.default_client
    form = {"grant_type": "authorization_code", "code": get_code(authority), "redirect_uri": REDIRECT,
            "client_id": client.client_id, "client_secret": client.secrets[0].value}
    assert token(authority, form).status == 200
    same_error(token(authority, form), "code_redeemed_twice")


def test_pkce_mismatch(authority):
    client = authority.registry.default_client
    code = get_code(authority, code_challenge="c" * 43, code_challenge_method="S256")
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": "v" * 43,
            "client_id": client.client_id, "client_secret": client.secrets[0].value}
    same_error(token(authority, form), "pkce_mismatch")


def test_repeated_parameter(authority):
    body = urlencode(cc_form(authority)) + "&scope=" + BC_SCOPE
    r = authority.handle(Request("POST", f"/{authority.registry.tenant_id}/oauth2/v2.0/token", "",
                                 {"content-type": "application/x-www-form-urlencoded"}, body.encode(),
                                 "https://login.microsoftonline.com"))
    same_error(r, "repeated_parameter")
    assert "The parameter 'scope' is duplicated." in r.json_body()["error_description"]


# ---------------------------------------------------------------- Business Central 401


def _bc(authority: Authority) -> BusinessCentral:
    return BusinessCentral.for_authority(authority)


def _companies(bc: BusinessCentral, authority: Authority, token_value: str | None) -> Response:
    headers = {"authorization": f"Bearer {token_value}"} if token_value else {}
    return bc.handle(Request("GET", f"/v2.0/{authority.registry.tenant_id}/Production/api/v2.0/companies", "",
                             headers, b"", "https://api.businesscentral.dynamics.com"))


@pytest.mark.parametrize(("name", "setup"), [
    ("bc_app_not_registered", lambda a, bc: (bc.entra_apps.unregister(a.registry.default_client.client_id),
                                             a.issue_app_token())[1]),
    ("bc_not_authorized", lambda a, bc: a.issue_app_token(roles=["Other.Role"])),
])
def test_business_central_401_bodies(authority, name, setup):
    entry = golden(name)
    bc = _bc(authority)
    r = _companies(bc, authority, setup(authority, bc))
    assert r.status == entry["status"]
    body = r.json_body()
    same_shape(body, entry["body"])
    assert body["error"]["code"] == entry["body"]["error"]["code"]
    ours, theirs = BC_MESSAGE.match(body["error"]["message"]), BC_MESSAGE.match(entry["body"]["error"]["message"])
    assert ours and theirs and ours[1] == theirs[1]


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.partition(" ")
    return scheme, dict(re.findall(r'(\w+)="([^"]*)"', rest))


def test_business_central_www_authenticate_has_the_entra_resource_shape(authority):
    entry = golden("resource_www_authenticate")
    bc = _bc(authority)
    expired = authority.issue_app_token(lifetime=60)
    authority.clock.advance(3600)  # type: ignore[attr-defined]
    r = _companies(bc, authority, expired)
    scheme, params = _challenge(r.header("WWW-Authenticate"))
    their_scheme, theirs = _challenge(entry["header"])
    assert r.status == entry["status"] and scheme == their_scheme == "Bearer"
    assert set(params) == set(theirs)
    assert params["error"] == theirs["error"] == "invalid_token"
    assert re.fullmatch(r"https://login\.microsoftonline\.com/[^/]+/oauth2/authorize", params["authorization_uri"])
    # RFC 6750 §3.1: a request with no credentials gets the challenge without an error code.
    scheme, params = _challenge(_companies(bc, authority, None).header("WWW-Authenticate"))
    assert scheme == "Bearer" and "authorization_uri" in params and "error" not in params
