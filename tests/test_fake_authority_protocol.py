"""The fake Authority's protocol behaviour through its sans-IO core: errors, pages, faults, trace, registry."""

from __future__ import annotations

import base64
import json
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conformance.browser import Page
from conformance.clock import FakeClock
from conformance.redact import MARK
from conformance.user import callback_params
from conformance.wire import Request, Response
from fake_authority import BC_SCOPE, Authority, Registry, RegistryError, Secret
from fake_authority.jwt import parse
from fake_authority.registry import from_dict, load

FORM = {"content-type": "application/x-www-form-urlencoded"}
REDIRECT = "http://localhost/auth/callback"
BC_DELEGATED = "https://api.businesscentral.dynamics.com/Financials.ReadWrite.All"


@pytest.fixture(scope="module")
def shared_key():
    from fake_authority.jwt import SigningKey

    return SigningKey()


@pytest.fixture
def authority(shared_key) -> Authority:
    return Authority(clock=FakeClock(), key=shared_key)


def _tid(a: Authority) -> str:
    return a.registry.tenant_id


def token(a: Authority, form: dict[str, str], headers: dict[str, str] | None = None, tenant: str = "",
          query: str = "") -> Response:
    body = urlencode(form).encode()
    return a.handle(Request("POST", f"/{tenant or _tid(a)}/oauth2/v2.0/token", query, {**FORM, **(headers or {})},
                            body, "https://login.microsoftonline.com"))


def cc_form(a: Authority, **overrides: str) -> dict[str, str]:
    client = a.registry.default_client
    return {"grant_type": "client_credentials", "client_id": client.client_id,
            "client_secret": client.secrets[0].value, "scope": BC_SCOPE, **overrides}


def aadsts(response: Response) -> tuple[int, str, int]:
    body = response.json_body()
    assert body["error_description"].startswith(f"AADSTS{body['error_codes'][0]}:")
    assert {"trace_id", "correlation_id", "timestamp", "error_uri"} <= set(body)
    return response.status, body["error"], body["error_codes"][0]


class Browserless:
    """Walks the authorize endpoint with plain Request values, keeping the sign-in cookie."""

    def __init__(self, a: Authority):
        self.a, self.cookie = a, ""

    def authorize(self, params: dict[str, str], method: str = "GET", form: dict[str, str] | None = None) -> Response:
        headers = {"cookie": self.cookie} if self.cookie else {}
        path = f"/{_tid(self.a)}/oauth2/v2.0/authorize"
        if method == "POST":
            r = self.a.handle(Request("POST", path, "", {**FORM, **headers}, urlencode(form or {}).encode(),
                                      "https://login.microsoftonline.com"))
        else:
            r = self.a.handle(Request("GET", path, urlencode(params), headers, b"", "https://login.microsoftonline.com"))
        for name, value in r.headers:
            if name == "Set-Cookie" and "Max-Age=0" not in value:
                self.cookie = value.split(";")[0]
        return r

    def submit(self, r: Response, form_id: str, **fields: str) -> Response:
        page = Page("https://login.microsoftonline.com/x", r.status, {}, r.body.decode())
        form = page.form(form_id)
        assert form is not None, f"no {form_id} form in: {r.body[:300]!r}"
        return self.authorize({}, "POST", {**form.fields, **fields})

    def sign_in(self, r: Response, user_index: int = 0) -> Response:
        user = self.a.registry.users[user_index]
        return self.submit(r, "login", username=user.username, password=user.password)


def auth_params(a: Authority, **overrides: str) -> dict[str, str]:
    return {"client_id": a.registry.default_client.client_id, "response_type": "code", "redirect_uri": REDIRECT,
            "scope": f"{BC_DELEGATED} openid profile offline_access", "state": "s" * 22, **overrides}


def get_code(a: Authority, b: Browserless | None = None, **overrides: str) -> str:
    b = b or Browserless(a)
    r = b.authorize(auth_params(a, **overrides))
    if b"id=\"login\"" in r.body:
        r = b.sign_in(r)
    if b"id=\"consent\"" in r.body:
        r = b.submit(r, "consent", consent="accept")
    assert r.status == 302, r.body[:400]
    return callback_params(r.header("Location"))["code"]


# ---------------------------------------------------------------- token endpoint errors


def test_client_credentials_secret_in_http_basic(authority):
    client = authority.registry.default_client
    basic = base64.b64encode(f"{client.client_id}:{client.secrets[0].value}".encode()).decode()
    r = token(authority, {"grant_type": "client_credentials", "scope": BC_SCOPE}, {"authorization": f"Basic {basic}"})
    assert r.status == 200 and r.json_body()["token_type"] == "Bearer"
    assert authority.trace.events[-1].detail["client_auth"] == "basic"


@pytest.mark.parametrize(("change", "expected"), [
    ({"client_secret": "wrong"}, (401, "invalid_client", 7000215)),
    ({"client_secret": ""}, (401, "invalid_client", 7000218)),
    ({"client_id": "00000000-0000-0000-0000-000000000001"}, (400, "unauthorized_client", 700016)),
    ({"scope": "https://api.businesscentral.dynamics.com/Financials.ReadWrite.All"}, (400, "invalid_scope", 1002012)),
    ({"scope": "https://nowhere.example/.default"}, (400, "invalid_resource", 500011)),
    ({"scope": f"{BC_SCOPE} https://graph.microsoft.com/.default"}, (400, "invalid_scope", 700022)),
    ({"scope": ""}, (400, "invalid_request", 900144)),
    ({"grant_type": "password"}, (400, "unsupported_grant_type", 70003)),
    ({"grant_type": ""}, (400, "invalid_request", 900144)),
])
def test_token_errors_have_the_entra_shape_and_codes(authority, change, expected):
    assert aadsts(token(authority, cc_form(authority, **change))) == expected


def test_expired_secret_and_unknown_tenant(shared_key):
    registry = Registry.default()
    client = registry.default_client
    from dataclasses import replace

    expired = replace(client, secrets=(Secret("old-secret", expires_at=1.0),))
    a = Authority(replace(registry, clients=(expired,)), FakeClock(), key=shared_key)
    assert aadsts(token(a, cc_form(a, client_secret="old-secret"))) == (401, "invalid_client", 7000222)
    assert aadsts(token(a, cc_form(a), tenant="no-such-tenant")) == (400, "invalid_request", 90002)


def test_malformed_body_and_wrong_method(authority):
    r = authority.handle(Request("POST", f"/{_tid(authority)}/oauth2/v2.0/token", "",
                                 {"content-type": "application/json"}, b'{"grant_type": "client_credentials"}'))
    assert aadsts(r)[1] == "invalid_request"
    r = authority.handle(Request("GET", f"/{_tid(authority)}/oauth2/v2.0/token"))
    assert aadsts(r) == (400, "invalid_request", 900561)


def test_secret_in_the_url_is_not_accepted_and_is_recorded(authority):
    form = cc_form(authority)
    secret = form.pop("client_secret")
    r = token(authority, form, query=urlencode({"client_secret": secret}))
    assert aadsts(r) == (401, "invalid_client", 7000218)
    event = authority.trace.events[-1]
    assert event.detail["secret_in_url"] is True and secret not in repr(event)


# ---------------------------------------------------------------- codes


def test_code_is_single_use_short_lived_and_bound_to_client_and_redirect(authority):
    client = authority.registry.default_client

    def redeem(code: str, **overrides: str) -> Response:
        return token(authority, {"grant_type": "authorization_code", "client_id": client.client_id,
                                 "client_secret": client.secrets[0].value, "code": code, "redirect_uri": REDIRECT,
                                 "scope": BC_DELEGATED, **overrides})

    code = get_code(authority)
    assert aadsts(redeem(code, redirect_uri="http://localhost/other")) == (400, "invalid_grant", 500112)
    ok = redeem(code)
    assert ok.status == 200 and {"refresh_token", "id_token", "access_token"} <= set(ok.json_body())
    assert aadsts(redeem(code)) == (400, "invalid_grant", 54005)
    assert aadsts(redeem("not-a-code")) == (400, "invalid_grant", 70000)
    late = get_code(authority)
    authority.clock.advance(601)
    assert aadsts(redeem(late)) == (400, "invalid_grant", 70008)


def test_pkce_plain_and_s256(authority):
    client = authority.registry.default_client
    verifier = "v" * 50
    base = {"grant_type": "authorization_code", "client_id": client.client_id,
            "client_secret": client.secrets[0].value, "redirect_uri": REDIRECT}
    code = get_code(authority, code_challenge=verifier, code_challenge_method="plain")
    assert token(authority, {**base, "code": code, "code_verifier": verifier}).status == 200
    code = get_code(authority, code_challenge=verifier, code_challenge_method="plain")
    assert aadsts(token(authority, {**base, "code": code})) == (400, "invalid_grant", 501481)


def test_refresh_rotation_reuse_and_revocation(authority):
    client = authority.registry.default_client
    creds = {"client_id": client.client_id, "client_secret": client.secrets[0].value}
    first = token(authority, {"grant_type": "authorization_code", "code": get_code(authority), "redirect_uri": REDIRECT,
                              **creds}).json_body()
    refresh = {"grant_type": "refresh_token", "scope": BC_DELEGATED, **creds}
    second = token(authority, {**refresh, "refresh_token": first["refresh_token"]})
    assert second.status == 200 and second.json_body()["refresh_token"] != first["refresh_token"]
    reused = token(authority, {**refresh, "refresh_token": first["refresh_token"]})
    assert reused.status == 200  # Entra keeps rotated refresh tokens valid
    assert authority.revoke_refresh_tokens() == 3
    assert aadsts(token(authority, {**refresh, "refresh_token": first["refresh_token"]}))[2] == 50173
    assert aadsts(token(authority, {**refresh, "refresh_token": "bogus"}))[1] == "invalid_grant"


# ---------------------------------------------------------------- authorize pages and errors


def test_unregistered_redirect_uri_gets_an_error_page_never_a_redirect(authority):
    r = Browserless(authority).authorize(auth_params(authority, redirect_uri="https://evil.example/cb"))
    assert r.status == 400 and not r.header("Location")
    assert b"AADSTS50011" in r.body and r.header("content-type").startswith("text/html")


def test_loopback_redirect_uri_port_is_ignored_as_in_entra(authority):
    code = get_code(authority, redirect_uri="http://localhost:53117/auth/callback")
    assert code
    r = Browserless(authority).authorize(auth_params(authority, redirect_uri="http://localhost:53117/other"))
    assert r.status == 400


def test_authorize_errors_redirect_with_the_state_echoed(authority):
    b = Browserless(authority)
    r = b.authorize(auth_params(authority, prompt="none", state="abc123"))
    params = callback_params(r.header("Location"))
    assert params["error"] == "login_required" and params["state"] == "abc123"
    assert params["error_description"].startswith("AADSTS50058")
    r = b.authorize(auth_params(authority, response_type="token", state="xyz"))
    assert callback_params(r.header("Location"))["state"] == "xyz"
    r = b.authorize(auth_params(authority, scope="https://nowhere.example/x"))
    assert callback_params(r.header("Location"))["error"] == "invalid_resource"


def test_consent_denied_redirects_access_denied(authority):
    b = Browserless(authority)
    r = b.sign_in(b.authorize(auth_params(authority, state="st")))
    r = b.submit(r, "consent", consent="deny")
    params = callback_params(r.header("Location"))
    assert (params["error"], params["state"]) == ("access_denied", "st")
    assert params["error_description"].startswith("AADSTS65004")


def test_deny_consent_fault_refuses_even_an_accept(authority):
    authority.faults.deny_consent.add("*")
    b = Browserless(authority)
    r = b.submit(b.sign_in(b.authorize(auth_params(authority))), "consent", consent="accept")
    assert callback_params(r.header("Location"))["error"] == "access_denied"


def test_signed_in_browser_skips_login_and_prompts_force_pages(authority):
    b = Browserless(authority)
    get_code(authority, b)
    assert b.authorize(auth_params(authority)).status == 302  # signed in and consented: straight back
    assert b'id="login"' in b.authorize(auth_params(authority, prompt="login")).body
    assert b'id="consent"' in b.authorize(auth_params(authority, prompt="consent")).body
    r = Browserless(authority).authorize(auth_params(authority))
    assert b'id="login"' in r.body  # another browser has no sign-in session


def test_prompt_none_without_consent_and_consent_required(authority):
    b = Browserless(authority)
    b.sign_in(b.authorize(auth_params(authority)))
    r = b.authorize(auth_params(authority, prompt="none"))
    assert callback_params(r.header("Location"))["error"] == "consent_required"


def test_form_post_and_fragment_response_modes(authority):
    b = Browserless(authority)
    get_code(authority, b)
    r = b.authorize(auth_params(authority, response_mode="form_post"))
    page = Page("https://login.microsoftonline.com/x", 200, {}, r.body.decode())
    assert page.form("form_post").action == REDIRECT and page.form("form_post").fields["code"]
    r = b.authorize(auth_params(authority, response_mode="fragment"))
    assert "#code=" in r.header("Location")


def test_wrong_password_shows_the_login_again(authority):
    b = Browserless(authority)
    r = b.submit(b.authorize(auth_params(authority)), "login", username="alice@contoso.onmicrosoft.com",
                 password="nope")
    assert r.status == 200 and b"AADSTS50126" in r.body and b'id="login"' in r.body


def test_mfa_demanded(authority):
    authority.faults.demand_mfa.add("*")
    b = Browserless(authority)
    r = b.sign_in(b.authorize(auth_params(authority)))
    assert b'id="mfa"' in r.body
    assert b'id="mfa"' in b.submit(r, "mfa", otp="999999").body
    r = b.submit(r, "mfa", otp=authority.registry.users[0].otp)
    assert b'id="consent"' in r.body


# ---------------------------------------------------------------- faults and lifetimes


def test_fail_next_token_requests_then_recover(authority):
    authority.faults.fail_next_token_requests(2, status=503)
    assert token(authority, cc_form(authority)).status == 503
    assert token(authority, cc_form(authority)).status == 503
    assert token(authority, cc_form(authority)).status == 200


def test_throttle_sends_retry_after_and_latency_moves_the_fake_clock(authority):
    authority.faults.throttle(1, retry_after=7)
    r = token(authority, cc_form(authority))
    assert r.status == 429 and r.header("Retry-After") == "7"
    authority.faults.latency = 2.5
    assert token(authority, cc_form(authority)).delay == 2.5


def test_invalid_client_fault(authority):
    authority.faults.fail_next_token_requests(1, status=401, error="invalid_client")
    assert aadsts(token(authority, cc_form(authority)))[:2] == (401, "invalid_client")


def test_lifetime_per_client_and_per_scenario(authority):
    r = token(authority, cc_form(authority)).json_body()
    assert r["expires_in"] == 3600
    authority.token_lifetime = 120
    r = token(authority, cc_form(authority)).json_body()
    claims = parse(r["access_token"]).claims
    assert r["expires_in"] == 120 and claims["exp"] - claims["iat"] == 120


def test_v1_endpoint_with_resource(authority):
    client = authority.registry.default_client
    body = urlencode({"grant_type": "client_credentials", "client_id": client.client_id,
                      "client_secret": client.secrets[0].value,
                      "resource": "https://api.businesscentral.dynamics.com"}).encode()
    r = authority.handle(Request("POST", f"/{_tid(authority)}/oauth2/token", "", FORM, body))
    assert r.status == 200 and r.json_body()["resource"] == "https://api.businesscentral.dynamics.com"
    assert isinstance(r.json_body()["expires_on"], str)


# ---------------------------------------------------------------- discovery


def test_discovery_documents(authority):
    tid = _tid(authority)
    authority.serve_at("https://h:1")
    config = authority.handle(Request("GET", f"/{tid}/v2.0/.well-known/openid-configuration", base="https://h:1"))
    body = config.json_body()
    assert body["issuer"] == f"https://h:1/{tid}/v2.0"
    assert body["token_endpoint"] == f"https://h:1/{tid}/oauth2/v2.0/token"
    jwks = authority.handle(Request("GET", f"/{tid}/discovery/v2.0/keys")).json_body()
    assert jwks["keys"][0]["kid"] == authority.key.kid
    inst = authority.handle(Request("GET", "/common/discovery/instance", "api-version=1.1&authorization_endpoint="
                                    "https://login.microsoftonline.com/common/oauth2/authorize"))
    assert inst.json_body()["tenant_discovery_endpoint"].endswith("/v2.0/.well-known/openid-configuration")


# ---------------------------------------------------------------- trace and secrets


def test_trace_never_holds_secrets_codes_or_tokens(authority):
    client = authority.registry.default_client
    cc = token(authority, cc_form(authority)).json_body()
    code = get_code(authority)
    ac = token(authority, {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                           "client_id": client.client_id, "client_secret": client.secrets[0].value}).json_body()
    dumped = json.dumps([e.as_dict() for e in authority.trace])
    for secret in (client.secrets[0].value, code, cc["access_token"], ac["access_token"], ac["refresh_token"],
                   authority.registry.users[0].password):
        assert secret not in dumped
    assert MARK in dumped
    kinds = {i.split(":")[0] for e in authority.trace for i in e.issued}
    assert kinds == {"at", "code", "rt"}


# ---------------------------------------------------------------- registry


def test_registry_loads_toml_and_json(tmp_path):
    toml = tmp_path / "r.toml"
    toml.write_text("""
token_lifetime = 900
[tenant]
id = "11111111-2222-3333-4444-555555555555"
[[clients]]
client_id = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
secrets = ["s3cret", {value = "old", expires_at = 1}]
redirect_uris = ["https://portal.example/cb"]
consent_required = false
[[users]]
username = "carol@contoso.com"
password = "pw"
mfa = true
""")
    r = load(toml)
    assert r.tenant_id == "11111111-2222-3333-4444-555555555555" and r.token_lifetime == 900
    assert r.default_client.secrets[1].expires_at == 1 and not r.default_client.consent_required
    assert r.users[0].mfa
    js = tmp_path / "r.json"
    js.write_text(json.dumps({"users": [{"username": "dave@x.com", "password": "p"}], "delegate": "dave@x.com"}))
    assert load(js).delegate == "dave@x.com"


@pytest.mark.parametrize(("data", "names"), [
    ({"clients": [{"client_id": "nope"}]}, "clients[0].client_id"),
    ({"clients": [{"client_id": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", "redirect_uris": ["ftp://x"]}]},
     "clients[0].redirect_uris[0]"),
    ({"clients": [{"client_id": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", "secrets": [3]}]}, "clients[0].secrets[0]"),
    ({"users": [{"username": "eve", "password": "p"}]}, "users[0].username"),
    ({"users": [{"username": "eve@x.com"}]}, "users[0].password"),
    ({"token_lifetime": 0}, "token_lifetime"),
    ({"tenant": {"id": "x"}}, "tenant.id"),
    ({"delegate": "nobody@x.com"}, "delegate"),
])
def test_registry_validation_names_the_bad_field(data, names):
    with pytest.raises(RegistryError, match=names.replace("[", r"\[").replace("]", r"\]")):
        from_dict(data)


def test_registry_file_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[[clients]\n")
    with pytest.raises(RegistryError, match="not valid TOML"):
        load(bad)
    with pytest.raises(RegistryError, match="cannot read"):
        load(tmp_path / "missing.json")


# ---------------------------------------------------------------- fuzzing: never a 500

_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
_keys = st.sampled_from(["grant_type", "client_id", "client_secret", "scope", "code", "redirect_uri",
                         "code_verifier", "refresh_token", "response_type", "state", "prompt", "response_mode",
                         "code_challenge", "code_challenge_method", "action", "username", "password", "consent",
                         "resource", "nonce", "login_done"])
_values = st.one_of(_text, st.sampled_from(["client_credentials", "authorization_code", "refresh_token", "code",
                                            BC_SCOPE, BC_DELEGATED, REDIRECT, "none", "login", "consent",
                                            "form_post", "S256", "plain", "accept", "deny", "login"]))


def _valid_ids(a: Authority) -> st.SearchStrategy[str]:
    return st.sampled_from([a.registry.default_client.client_id, a.registry.default_client.secrets[0].value])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_requests_never_get_a_500(authority, data):
    tid = _tid(authority)
    path = data.draw(st.sampled_from([
        f"/{tid}/oauth2/v2.0/token", f"/{tid}/oauth2/v2.0/authorize", f"/{tid}/oauth2/token",
        f"/{tid}/oauth2/authorize", "/common/oauth2/v2.0/token", "/x/oauth2/v2.0/token",
        f"/{tid}/oauth2/v2.0/logout", "/", "/%ZZ/oauth2/v2.0/token",
    ]))
    values = st.one_of(_values, _valid_ids(authority))
    form = data.draw(st.dictionaries(_keys, values, max_size=8))
    query = data.draw(st.dictionaries(_keys, values, max_size=5))
    headers = data.draw(st.dictionaries(
        st.sampled_from(["content-type", "authorization", "cookie", "client-request-id"]),
        st.one_of(_text, st.sampled_from(["application/x-www-form-urlencoded", "Basic Zm9vOmJhcg==", "Basic !!",
                                          "ESTSAUTH=abc", "Bearer x"])), max_size=4))
    raw_body = data.draw(st.one_of(st.just(urlencode(form).encode()), st.binary(max_size=60)))
    method = data.draw(st.sampled_from(["GET", "POST", "PUT"]))
    r = authority.handle(Request(method, path, urlencode(query), headers, raw_body))
    assert r.status < 500, (r.status, r.body[:300])
    assert b"Traceback" not in r.body
    if r.header("content-type").startswith("application/json") and r.status >= 400:
        body = r.json_body()
        assert body["error"] and body["error_description"].startswith("AADSTS")
    assert not [e for e in authority.trace if "internal_error" in e.detail]
