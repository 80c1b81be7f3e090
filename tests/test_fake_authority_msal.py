"""Unmodified MSAL Python against the fake Authority: in-process (responses) and over loopback HTTPS."""

from __future__ import annotations

import base64
import hashlib
import json

import msal
import pytest

from conformance.browser import Browser
from conformance.user import Credentials, callback_params, complete_authorize, starts_with
from fake_authority import BC_SCOPE, LOGIN_HOST
from fake_authority.jwt import parse

REDIRECT = "http://localhost/auth/callback"
BC_DELEGATED = "https://api.businesscentral.dynamics.com/Financials.ReadWrite.All"


def _app(authority, secret: str | None = None, base: str = LOGIN_HOST, **kwargs) -> msal.ConfidentialClientApplication:
    client = authority.registry.default_client
    return msal.ConfidentialClientApplication(
        client.client_id, client_credential=secret or client.secrets[0].value,
        authority=f"{base}/{authority.registry.tenant_id}", **kwargs)


def _token_requests(authority) -> list:
    return authority.trace.where(server="authority", endpoint="token")


def test_client_credentials_in_process_then_from_msal_cache(fake_authority):
    app = _app(fake_authority)
    first = app.acquire_token_for_client([BC_SCOPE])
    assert first["token_type"] == "Bearer" and first["token_source"] == "identity_provider"
    claims = parse(first["access_token"]).claims
    assert claims["aud"] == "https://api.businesscentral.dynamics.com"
    assert claims["roles"] == ["API.ReadWrite.All", "Automation.ReadWrite.All"]
    assert claims["idtyp"] == "app" and claims["tid"] == fake_authority.registry.tenant_id
    assert parse(first["access_token"]).header["kid"] == fake_authority.jwks["keys"][0]["kid"]
    second = app.acquire_token_for_client([BC_SCOPE])
    assert second["access_token"] == first["access_token"] and second["token_source"] == "cache"
    assert len(_token_requests(fake_authority)) == 1


def test_wrong_secret_yields_aadsts7000215(fake_authority):
    result = _app(fake_authority, secret="not-the-secret").acquire_token_for_client([BC_SCOPE])
    assert result["error"] == "invalid_client"
    assert result["error_codes"] == [7000215]
    assert result["error_description"].startswith("AADSTS7000215:")
    assert _token_requests(fake_authority)[-1].status == 401


def test_client_credentials_over_loopback_https(fake_authority_server, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(fake_authority_server.ca.ca_file))
    authority = fake_authority_server.authority
    # A non-Microsoft host: MSAL Python would ask login.microsoftonline.com to validate it; turn that off.
    app = _app(authority, base=fake_authority_server.authority_server.url, instance_discovery=False)
    result = app.acquire_token_for_client([BC_SCOPE])
    assert result.get("token_type") == "Bearer", result
    assert app.acquire_token_for_client([BC_SCOPE])["token_source"] == "cache"
    assert len(_token_requests(authority)) == 1


def _auth_code_flow(authority, scopes=(BC_DELEGATED,), user=0, consent=True):
    app = _app(authority)
    flow = app.initiate_auth_code_flow(list(scopes), redirect_uri=REDIRECT)
    browser = Browser()
    who = authority.registry.users[user]
    stop = starts_with(REDIRECT)
    page = complete_authorize(browser, browser.get(flow["auth_uri"], stop_at=stop),
                              Credentials(who.username, who.password), consent=consent, stop_at=stop)
    return app, flow, callback_params(page), browser


def test_auth_code_flow_with_msal_python(fake_authority):
    app, flow, response, _ = _auth_code_flow(fake_authority)
    result = app.acquire_token_by_auth_code_flow(flow, response)
    assert "access_token" in result, result
    claims = parse(result["access_token"]).claims
    assert claims["scp"] == "Financials.ReadWrite.All" and claims["idtyp"] == "user"
    assert claims["upn"] == fake_authority.registry.users[0].username
    assert result["refresh_token"]
    # MSAL 1.31 validates the id_token (aud, iss, exp, nonce): it got here, and the nonce is the sent one.
    sent_nonce = hashlib.sha256(flow["nonce"].encode()).hexdigest()
    assert result["id_token_claims"]["nonce"] == sent_nonce
    assert result["id_token_claims"]["aud"] == fake_authority.registry.default_client.client_id
    info = json.loads(base64.urlsafe_b64decode(result["client_info"] + "=="))
    assert info == {"uid": claims["oid"], "utid": fake_authority.registry.tenant_id}
    # Steps seen by the browser: the login page, the consent page, then the redirect with a code.
    stages = [e.detail["stage"] for e in fake_authority.trace.where(endpoint="authorize")]
    assert stages == ["login_form", "consent_form", "code_issued"]
    # The account is in MSAL's cache: a silent call is served without a new request.
    accounts = app.get_accounts()
    assert accounts and app.acquire_token_silent([BC_DELEGATED], account=accounts[0])["access_token"]


def test_redeeming_the_same_code_again_gives_aadsts54005(fake_authority):
    app, flow, response, _ = _auth_code_flow(fake_authority)
    assert "access_token" in app.acquire_token_by_auth_code_flow(flow, response)
    again = app.acquire_token_by_auth_code_flow(flow, response)
    assert again["error"] == "invalid_grant" and again["error_codes"] == [54005]


def test_tampered_code_verifier_gives_aadsts501481(fake_authority):
    app, flow, response, _ = _auth_code_flow(fake_authority)
    flow["code_verifier"] = flow["code_verifier"][:-4] + "AAAA"
    result = app.acquire_token_by_auth_code_flow(flow, response)
    assert result["error"] == "invalid_grant" and result["error_codes"] == [501481]


def test_refresh_through_msal_rotates_the_refresh_token(fake_authority):
    app, flow, response, _ = _auth_code_flow(fake_authority)
    first = app.acquire_token_by_auth_code_flow(flow, response)
    account = app.get_accounts()[0]
    refreshed = app.acquire_token_silent([BC_DELEGATED], account=account, force_refresh=True)
    assert refreshed["access_token"] != first["access_token"]
    refresh = _token_requests(fake_authority)[-1]
    assert refresh.grant == "refresh_token" and refresh.status == 200
    assert refresh.redeemed[0] != refresh.issued[-1]  # a new refresh token replaced the old one


def test_denied_consent_reaches_msal_as_access_denied_with_state_checked(fake_authority):
    app, flow, response, _ = _auth_code_flow(fake_authority, consent=False)
    assert response["state"] == flow["state"] and response["error"] == "access_denied"
    result = app.acquire_token_by_auth_code_flow(flow, response)
    assert result["error"] == "access_denied"
    assert not _token_requests(fake_authority)


@pytest.mark.parametrize("scopes", [(BC_DELEGATED,), ("https://api.businesscentral.dynamics.com/.default",)])
def test_second_authorization_skips_login_and_consent(fake_authority, scopes):
    app, flow, response, browser = _auth_code_flow(fake_authority, scopes)
    app.acquire_token_by_auth_code_flow(flow, response)
    flow2 = app.initiate_auth_code_flow(list(scopes), redirect_uri=REDIRECT)
    page = browser.get(flow2["auth_uri"], stop_at=starts_with(REDIRECT))
    assert page.status == 302 and "code" in callback_params(page)
    assert fake_authority.trace.where(endpoint="authorize")[-1].detail["stage"] == "code_issued"
