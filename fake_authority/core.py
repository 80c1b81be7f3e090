"""The fake Microsoft Entra ID Authority, sans-IO: ``Authority.handle(Request) -> Response``.

Endpoints (v2.0, and the v1 ones older portals use): instance discovery, OpenID configuration, JWKS,
authorize (login, MFA and consent pages; sign-in cookie; remembered consent; query, fragment and
form_post response modes; prompt none/login/consent), token (client_credentials, authorization_code with
PKCE, refresh_token with rotation) and logout. Every exchange is appended to the shared trace without
secrets; nothing a client sends can produce a 500.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import secrets
import uuid
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import unquote, unquote_plus, urlsplit

from conformance.clock import Clock, FakeClock
from conformance.errors import where_raised
from conformance.redact import fingerprint, redact_mapping
from conformance.trace import Trace
from conformance.wire import Request, Response, with_query
from fake_authority import errors as E
from fake_authority.errors import OAuthError, fail
from fake_authority.faults import AuthorityFaults
from fake_authority.grants import CODE_LIFETIME, CodeGrant, CodeSealer, Family, Grants, IssuedValue
from fake_authority.jwt import SigningKey
from fake_authority.pages import render
from fake_authority.registry import BC_RESOURCE, Client, Registry, User
from fake_authority.tokens import (
    ScopeError,
    ScopeRequest,
    app_claims,
    client_info,
    id_token_claims,
    parse_scope,
    user_claims,
)

REFRESH_IDLE_LIFETIME = 90 * 24 * 3600
MAX_REFRESH_TOKENS = 100_000  # a long-running serve forgets the oldest beyond this
SESSION_COOKIE = "ESTSAUTH"
ISSUED_VALUES_KEPT = 20_000  # raw tokens remembered for leak search and redaction (a scenario needs a few)
CODES_KEPT = 1_000  # raw codes likewise: codes are sealed, so unredeemed ones must cost no memory beyond this
MULTI_TENANT = frozenset({"common", "organizations"})
# The Authority's own host names: a request addressed to any other Host is answered with the canonical one, never
# by reflecting the Host header into the endpoints it publishes.
LOGIN_HOSTS = ("login.microsoftonline.com", "login.windows.net", "login.microsoft.com", "sts.windows.net")

_ROUTE = re.compile(
    r"^/(?P<tenant>[^/]+)/(?:"
    r"(?P<v2>oauth2/v2\.0/(?P<v2ep>authorize|token|logout))"
    r"|(?P<v1>oauth2/(?P<v1ep>authorize|token|logout))"
    r"|(?P<oidc>(?P<oidcver>v2\.0/)?\.well-known/openid-configuration)"
    r"|(?P<keys>discovery/(?:v2\.0/)?keys)"
    r"|(?P<instance>discovery/instance)"
    r")/?$"
)


@dataclass
class RefreshGrant:
    client_id: str
    username: str
    scope: ScopeRequest
    issued_at: float
    last_used: float
    family: str = ""
    revoked: bool = False
    rotated_to: str = ""  # fingerprint of the refresh token issued in exchange (Entra keeps the old one valid)


@dataclass
class SignInSession:
    username: str
    mfa_done: bool = False


@dataclass
class _Ctx:
    """What one request carries through its handling, for the trace."""

    endpoint: str
    grant: str = ""
    client_id: str = ""
    user: str = ""
    issued: list[str] = field(default_factory=list)
    redeemed: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)


class Authority:
    """State and behaviour of the fake Entra ID; adapters feed it ``Request`` values."""

    def __init__(
        self,
        registry: Registry | None = None,
        clock: Clock | None = None,
        trace: Trace | None = None,
        key: SigningKey | None = None,
    ):
        self.registry = registry or Registry.default()
        self.clock: Clock = clock or FakeClock()
        self.trace = trace if trace is not None else Trace()
        self.key = key or SigningKey()
        self.faults = AuthorityFaults()
        self.token_lifetime: int | None = None  # scenario override of every client's lifetime
        self.codes = CodeSealer()
        self.grants = Grants()
        self.refresh_tokens: dict[str, RefreshGrant] = {}
        self.canonical_base = f"https://{LOGIN_HOSTS[0]}"
        self.hosts: set[str] = set(LOGIN_HOSTS)  # lower-case host[:port] this Authority answers as
        self.sessions: dict[str, SignInSession] = {}
        self.consents: set[tuple[str, str]] = set()  # (username, client_id)
        # Raw values of the tokens and codes issued (the newest ISSUED_VALUES_KEPT, in order): never exported,
        # used to find leaks and to redact.
        self.issued_values: dict[str, IssuedValue] = {}
        self.issued_codes: dict[str, IssuedValue] = {}

    def _remember(self, value: str, kind: str, who: str, client_id: str, grant: str = "") -> None:
        code = kind == "authorization code"
        kept, cap = (self.issued_codes, CODES_KEPT) if code else (self.issued_values, ISSUED_VALUES_KEPT)
        kept[value] = IssuedValue(kind, who, client_id, grant)
        if len(kept) > cap:  # a long-running serve: forget the oldest
            del kept[next(iter(kept))]

    def identify(self, value: str) -> IssuedValue | None:
        """What a raw value is, if this Authority issued it (or it is a client's secret); else None."""
        found = self.issued_values.get(value) or self.issued_codes.get(value)
        if found is not None:
            return found
        for client in self.registry.clients:
            if any(hmac.compare_digest(s.value.encode(), value.encode()) for s in client.secrets):
                return IssuedValue("client secret", "the app", client.client_id)
        return None

    def raw_values(self) -> list[str]:
        """The raw tokens and codes issued lately (newest kept): to find leaks and to redact; never exported."""
        return [*self.issued_values, *self.issued_codes]

    # ------------------------------------------------------------------ public helpers for scenarios

    def reset(self) -> None:
        """Forget every code, token, session and consent and clear the faults (not the registry or key)."""
        self.grants.clear()
        self.refresh_tokens.clear()
        self.sessions.clear()
        self.consents.clear()
        self.issued_values.clear()
        self.issued_codes.clear()
        self.faults.clear()
        self.token_lifetime = None

    def grant_consent(self, username: str, client_id: str | None = None) -> None:
        self.consents.add((username.lower(), (client_id or self.registry.default_client.client_id).lower()))

    def revoke_consent(self, username: str, client_id: str | None = None) -> None:
        self.consents.discard((username.lower(), (client_id or self.registry.default_client.client_id).lower()))

    def serve_at(self, base_url: str, *aliases: str) -> None:
        """Publish ``base_url`` (``https://host:port``) in discovery; ``aliases`` are other host[:port] names of the
        same server (e.g. ``localhost:port``) that the Authority also answers as."""
        self.canonical_base = base_url.rstrip("/")
        self.hosts.update(h.lower() for h in (urlsplit(base_url).netloc, *aliases))

    def access_token_revoked(self, uti: str) -> bool:
        """Whether an access token was revoked with its grant (code replay, refresh token reuse)."""
        return self.grants.is_revoked(uti)

    def revoke_refresh_tokens(self, username: str | None = None) -> int:
        """Revoke every refresh token (of one user); returns how many were still usable."""
        n = 0
        for grant in self.refresh_tokens.values():
            if not grant.revoked and (username is None or grant.username.lower() == username.lower()):
                grant.revoked, n = True, n + 1
        return n

    def sign_in(self, username: str) -> str:
        """Open a sign-in session for a user (as if they had logged in earlier); returns the cookie value."""
        if self.registry.user(username) is None:
            raise KeyError(f"unknown user {username!r}")
        sid = secrets.token_urlsafe(24)
        self.sessions[sid] = SignInSession(self.registry.user(username).username, mfa_done=True)  # type: ignore[union-attr]
        return sid

    def sign_out_everywhere(self, username: str | None = None) -> None:
        for sid in [s for s, sess in self.sessions.items() if username in (None, sess.username)]:
            del self.sessions[sid]

    def lifetime_for(self, client: Client) -> int:
        return self.token_lifetime or client.token_lifetime or self.registry.token_lifetime

    def issue_app_token(self, client_id: str | None = None, resource: str = BC_RESOURCE,
                        lifetime: int | None = None, **overrides: Any) -> str:
        """Sign an app token directly (tests and scenarios); ``overrides`` replace claims."""
        client = self.registry.client(client_id or self.registry.default_client.client_id)
        if client is None:
            raise KeyError(f"unknown client {client_id!r}")
        now = int(self.clock.now())
        claims = app_claims(self.registry, client, resource, now, lifetime or self.lifetime_for(client))
        claims.update(overrides)
        return self.key.sign({k: v for k, v in claims.items() if v is not None})

    def issue_user_token(self, username: str, client_id: str | None = None, scope: str = "",
                         lifetime: int | None = None, **overrides: Any) -> str:
        client = self.registry.client(client_id or self.registry.default_client.client_id)
        user = self.registry.user(username)
        if client is None or user is None:
            raise KeyError(f"unknown client {client_id!r} or user {username!r}")
        request = parse_scope(scope or f"{BC_RESOURCE}/.default")
        now = int(self.clock.now())
        claims = user_claims(self.registry, client, user, request, now, lifetime or self.lifetime_for(client))
        claims.update(overrides)
        return self.key.sign({k: v for k, v in claims.items() if v is not None})

    @property
    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.key.jwk]}

    # ------------------------------------------------------------------ entry point

    def handle(self, request: Request) -> Response:
        if request.base.partition("://")[2].lower() not in self.hosts:
            request = replace(request, base=self.canonical_base)  # never reflect a foreign Host header
        match = _ROUTE.match(request.path)
        ctx = _Ctx("unknown" if match is None else self._endpoint_name(match))
        try:
            if match is None:
                response = Response.html(404, render("error.html", title="Not found",
                                                     message=f"No endpoint at {request.path}"))
            else:
                response = self._dispatch(request, match, ctx)
        except OAuthError as err:
            ctx.detail.setdefault("aadsts", err.code)
            response = err.render(self.clock.now(), request.header("client-request-id"))
        except Exception as err:
            ctx.detail["internal_error"] = f"{type(err).__name__}: {err}"
            ctx.detail["internal_error_at"] = where_raised(err)  # a bug in the kit: the run stops on it
            response = fail(E.ServerError, E.SERVICE_ERROR).render(self.clock.now())
        if self.faults.latency:
            response.delay = self.faults.latency
        self._record(request, response, ctx)
        return response

    @staticmethod
    def _endpoint_name(match: re.Match[str]) -> str:
        if match["v2ep"] or match["v1ep"]:
            return match["v2ep"] or match["v1ep"]
        if match["oidc"]:
            return "openid-configuration"
        return "jwks" if match["keys"] else "instance-discovery"

    def _dispatch(self, request: Request, match: re.Match[str], ctx: _Ctx) -> Response:
        tenant = unquote(match["tenant"])
        v1 = bool(match["v1"]) or (bool(match["oidc"]) and not match["oidcver"])
        if match["instance"]:
            return self._instance_discovery(request)
        known = self.registry.knows_tenant(tenant) or tenant.lower() in MULTI_TENANT
        if not known:
            if ctx.endpoint == "authorize":
                return self._error_page(400, fail(E.InvalidRequest, E.TENANT_UNKNOWN, tenant=tenant[:80]))
            raise fail(E.InvalidRequest, E.TENANT_UNKNOWN, tenant=tenant[:80])
        if match["keys"]:
            return Response.json(200, self.jwks)
        if match["oidc"]:
            return Response.json(200, self._openid_configuration(request.base, tenant, v1))
        if ctx.endpoint == "token":
            return self._token(request, tenant, v1, ctx)
        if ctx.endpoint == "authorize":
            return self._authorize(request, tenant, v1, ctx)
        return self._logout(request)

    def _record(self, request: Request, response: Response, ctx: _Ctx) -> None:
        error = ""
        if response.status >= 400 and response.header("content-type").startswith("application/json"):
            try:
                error = str(response.json_body().get("error", ""))
            except ValueError:
                error = ""
        ctx.detail["query"] = redact_mapping(request.params)
        if request.form:
            ctx.detail["form"] = redact_mapping(request.form)
        self.trace.append(
            self.clock.now(), "authority", ctx.endpoint, method=request.method, path=request.path,
            status=response.status, error=error or ctx.detail.get("redirect_error", ""), grant=ctx.grant,
            client_id=ctx.client_id, user=ctx.user, issued=tuple(ctx.issued), redeemed=tuple(ctx.redeemed),
            detail=ctx.detail,
        )

    # ------------------------------------------------------------------ discovery

    def _instance_discovery(self, request: Request) -> Response:
        host = urlsplit(request.params.get("authorization_endpoint", "")).netloc or urlsplit(request.base).netloc
        if host.lower() not in self.hosts:
            return Response.json(400, {"error": "invalid_instance", "error_description": "AADSTS50049: Unknown or "
                                       "invalid instance.", "error_codes": [50049]})
        base = f"https://{host}"
        tenant = urlsplit(request.params.get("authorization_endpoint", "")).path.split("/")[1:2] or ["common"]
        return Response.json(200, {
            "tenant_discovery_endpoint": f"{base}/{tenant[0] or 'common'}/v2.0/.well-known/openid-configuration",
            "api-version": "1.1",
            "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
        })

    def _openid_configuration(self, base: str, tenant: str, v1: bool) -> dict[str, Any]:
        tid = "{tenantid}" if tenant.lower() in MULTI_TENANT else self.registry.tenant_id
        path = f"{base}/{tenant}"
        if v1:
            return {
                "issuer": f"https://sts.windows.net/{tid}/",
                "authorization_endpoint": f"{path}/oauth2/authorize",
                "token_endpoint": f"{path}/oauth2/token",
                "end_session_endpoint": f"{path}/oauth2/logout",
                "jwks_uri": f"{base}/{tenant}/discovery/keys",
                "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
                "response_types_supported": ["code", "id_token", "code id_token", "token id_token", "token"],
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "scopes_supported": ["openid"],
                "tenant_region_scope": "EU",
                "cloud_instance_name": "microsoftonline.com",
            }
        return {
            "token_endpoint": f"{path}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": f"{path}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{base}/{tid}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
            "authorization_endpoint": f"{path}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{path}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{path}/oauth2/v2.0/logout",
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nonce", "name", "oid", "tid",
                                 "preferred_username", "ver"],
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
            "rbac_url": "https://pas.windows.net",
        }

    def _issuer(self, base: str) -> str:
        return f"{base}/{self.registry.tenant_id}/v2.0"

    # ------------------------------------------------------------------ token endpoint

    def _token(self, request: Request, tenant: str, v1: bool, ctx: _Ctx) -> Response:
        if request.method != "POST":
            raise E.InvalidRequest(900561, "The endpoint only accepts POST, OPTIONS requests. Received a "
                                           f"{request.method[:10]} request.")
        if not request.is_form:  # Entra reads no parameter from another media type: "must contain 'grant_type'"
            ctx.detail["content_type"] = request.header("content-type")[:80]
        if request.repeated:  # RFC 6749 §3.1: request and response parameters MUST NOT be included more than once
            raise fail(E.InvalidRequest, E.PARAM_REPEATED, param=request.repeated[0][:60])
        form = request.form
        ctx.grant = grant = form.get("grant_type", "")
        ctx.detail["secret_in_url"] = any(k in request.params for k in ("client_secret", "client_assertion"))
        ctx.detail["scope"] = form.get("scope", "")
        if grant == "authorization_code":
            ctx.detail.update(redirect_uri=form.get("redirect_uri", "")[:300], code_verifier=bool(form.get(
                "code_verifier")))
        fault = self.faults.take_token_fault()
        if fault is not None:
            ctx.detail["fault"] = f"{fault.status} {fault.error}"
            return self._fault_response(fault)
        if not grant:
            raise fail(E.InvalidRequest, E.PARAM_MISSING, param="grant_type")
        client = self._authenticate_client(request, tenant, ctx)
        if grant == "client_credentials":
            return self._client_credentials(request, client, v1, ctx)
        if grant == "authorization_code":
            return self._authorization_code(request, client, v1, ctx)
        if grant == "refresh_token":
            return self._refresh(request, client, v1, ctx)
        raise fail(E.UnsupportedGrantType, E.GRANT_UNSUPPORTED, grant=grant[:60])

    def _fault_response(self, fault: Any) -> Response:
        kinds = {cls.error: cls for cls in (E.InvalidClient, E.InvalidGrant, E.InvalidRequest, E.ServerError,
                                            E.TemporarilyUnavailable, E.UnauthorizedClient, E.InvalidScope)}
        kind = kinds.get(fault.error, E.TemporarilyUnavailable)
        entry = E.THROTTLED if fault.status == 429 else (
            E.SECRET_INVALID if kind is E.InvalidClient else E.SERVICE_UNAVAILABLE)
        err = fail(kind, entry, client="(fault)")
        response = err.render(self.clock.now())
        response.status = fault.status
        if fault.retry_after is not None:
            response.headers.append(("Retry-After", str(fault.retry_after)))
        return response

    def _authenticate_client(self, request: Request, tenant: str, ctx: _Ctx) -> Client:
        form = request.form
        basic_id = basic_secret = ""
        auth = request.header("authorization")
        if auth[:6].lower() == "basic ":
            try:
                decoded = base64.b64decode(auth[6:].strip(), validate=True).decode("utf-8")
                basic_id, _, basic_secret = decoded.partition(":")
                basic_id, basic_secret = unquote_plus(basic_id), unquote_plus(basic_secret)
            except (ValueError, UnicodeDecodeError):
                raise E.InvalidClient(7000216, "The Authorization header is not valid HTTP Basic "
                                               "credentials.") from None
        client_id = form.get("client_id", "") or basic_id
        if basic_id and form.get("client_id") and form["client_id"] != basic_id:
            raise E.InvalidRequest(90014, "The client_id in the body does not match the one in the "
                                          "Authorization header.")
        if not client_id:
            raise fail(E.InvalidRequest, E.PARAM_MISSING, param="client_id")
        ctx.client_id = client_id[:80]
        client = self.registry.client(client_id)
        if client is None:
            raise fail(E.UnauthorizedClient, E.CLIENT_UNKNOWN, client=client_id[:80], tenant=tenant[:80])
        ctx.client_id = client.client_id
        secret = basic_secret or form.get("client_secret", "")
        ctx.detail["client_auth"] = "basic" if basic_secret else ("body" if form.get("client_secret") else "none")
        if not client.confidential:
            if secret or form.get("client_assertion"):
                raise E.InvalidClient(*E.PUBLIC_CLIENT_SECRET)
            if form.get("grant_type") == "client_credentials":  # only a confidential client has an app identity
                raise E.InvalidClient(*E.SECRET_MISSING)
            return client
        if not secret:
            raise E.InvalidClient(*E.SECRET_MISSING)
        match = next((s for s in client.secrets if hmac.compare_digest(s.value.encode(), secret.encode())), None)
        if match is None:
            raise fail(E.InvalidClient, E.SECRET_INVALID, client=client.client_id)
        if match.expires_at is not None and match.expires_at <= self.clock.now():
            raise fail(E.InvalidClient, E.SECRET_EXPIRED, client=client.client_id)
        return client

    def _scope(self, raw: str) -> ScopeRequest:
        try:
            return parse_scope(raw)
        except ScopeError as err:
            if err.kind == "unknown_resource":
                raise fail(E.InvalidResource, E.RESOURCE_UNKNOWN, resource=err.resource[:120],
                           tenant=self.registry.tenant_id) from None
            if err.kind == "multiple_resources":
                raise fail(E.InvalidScope, E.SCOPE_MULTI_RESOURCE, scope=raw[:200]) from None
            raise fail(E.InvalidScope, E.SCOPE_INVALID, scope=raw[:200]) from None

    def _client_credentials(self, request: Request, client: Client, v1: bool, ctx: _Ctx) -> Response:
        raw = self._v1_scope(request.form, default_permission=".default") if v1 else request.form.get("scope", "")
        if not raw:
            raise fail(E.InvalidRequest, E.PARAM_MISSING, param="scope")
        scope = self._scope(raw)
        if not scope.resource or scope.permissions != (".default",) or scope.oidc:
            raise fail(E.InvalidScope, E.SCOPE_NOT_DEFAULT, scope=raw[:200])
        lifetime = self.lifetime_for(client)
        claims = app_claims(self.registry, client, scope.resource, int(self.clock.now()), lifetime)
        token = self.key.sign(claims)
        self._remember(token, "access token", "the app", client.client_id, "client_credentials")
        ctx.issued.append(f"at:{claims['uti']}")
        ctx.detail.update(resource=scope.resource, expires_in=lifetime)
        body: dict[str, Any] = {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime,
                                "access_token": token}
        return self._token_response(body, v1, scope.resource, int(claims["exp"]))  # type: ignore[arg-type]

    def _v1_scope(self, form: dict[str, str], default_permission: str) -> str:
        """v1 endpoints name a ``resource`` instead of scopes."""
        resource = form.get("resource", "")
        if not resource:
            return form.get("scope", "")
        return f"{resource.rstrip('/')}/{default_permission}"

    def _token_response(self, body: dict[str, Any], v1: bool, resource: str, exp: int) -> Response:
        if self.faults.quirky_token_responses:
            # RFC 6749 §5.1/§7.1: token_type is case-insensitive, expires_in is only RECOMMENDED, and clients
            # must ignore unknown fields.
            body = {**{k: v for k, v in body.items() if k not in ("expires_in", "ext_expires_in")},
                    "token_type": "bearer", "x_unknown_field": {"nested": [1, 2, 3]}}
            return Response.json(200, body, [("Cache-Control", "no-store"), ("Pragma", "no-cache")])
        if v1:
            now = int(self.clock.now())
            body = {**body, "expires_in": str(body["expires_in"]), "ext_expires_in": str(body["ext_expires_in"]),
                    "expires_on": str(exp), "not_before": str(now), "resource": resource}
        return Response.json(200, body, [("Cache-Control", "no-store"), ("Pragma", "no-cache")])

    def _authorization_code(self, request: Request, client: Client, v1: bool, ctx: _Ctx) -> Response:
        form = request.form
        code = form.get("code", "")
        if not code:
            raise fail(E.InvalidRequest, E.PARAM_MISSING, param="code")
        ctx.redeemed.append(fingerprint(code, "code"))
        grant = self.codes.open(code)
        if grant is None:
            raise fail(E.InvalidGrant, E.CODE_INVALID)
        ctx.user = grant.username
        if grant.client_id != client.client_id:
            raise fail(E.InvalidGrant, E.CODE_FOREIGN)
        now = self.clock.now()
        if now - grant.issued_at > CODE_LIFETIME:
            raise fail(E.InvalidGrant, E.GRANT_EXPIRED)
        redirect_uri = form.get("redirect_uri", "")
        if redirect_uri != grant.redirect_uri:
            raise fail(E.InvalidGrant, E.REDIRECT_MISMATCH, got=redirect_uri[:300], want=grant.redirect_uri)
        verifier = form.get("code_verifier", "")
        if grant.challenge and not _pkce_ok(grant.challenge, grant.method, verifier):
            raise fail(E.InvalidGrant, E.PKCE_MISMATCH)
        if verifier and not grant.challenge:  # a verifier for a code issued without a challenge: a PKCE downgrade
            raise fail(E.InvalidGrant, E.PKCE_DOWNGRADE)
        family = self.grants.redeem(grant, now)
        if family is None:
            ctx.detail["code_reused"] = True
            first = self.grants.family_of_code(grant.code_id)
            # RFC 6749 §4.1.2: the Authority SHOULD revoke what the code led to; Entra is not known to: strict only.
            if self.faults.strict_revocation and first is not None and not first.revoked:
                ctx.detail["revoked_family"] = self._revoke_family(first, "authorization code redeemed twice")
            raise fail(E.InvalidGrant, E.CODE_REDEEMED)
        user = self.registry.user(grant.username)
        assert user is not None  # codes are only issued to registered users
        return self._user_tokens(request, client, user, parse_scope(grant.scope), grant.nonce, v1, ctx,
                                 family=family)

    def _revoke_family(self, family: Family, reason: str) -> dict[str, int]:
        """Revoke a grant's access and refresh tokens; returns how many of each, for the trace."""
        refresh = self.grants.revoke(family, reason)
        for value in refresh:
            grant = self.refresh_tokens.get(value)
            if grant is not None:
                grant.revoked = True
        return {"access_tokens": len(family.access), "refresh_tokens": len(refresh)}

    def _refresh(self, request: Request, client: Client, v1: bool, ctx: _Ctx) -> Response:
        form = request.form
        token = form.get("refresh_token", "")
        if not token:
            raise fail(E.InvalidRequest, E.PARAM_MISSING, param="refresh_token")
        ctx.redeemed.append(fingerprint(token, "rt"))
        grant = self.refresh_tokens.get(token)
        if grant is None:
            raise fail(E.InvalidGrant, E.REFRESH_INVALID)
        ctx.user = grant.username
        if grant.client_id != client.client_id:
            raise fail(E.InvalidGrant, E.CODE_FOREIGN)
        family = self.grants.families.get(grant.family)
        if grant.rotated_to:
            # Entra keeps a rotated refresh token valid ("doesn't revoke old refresh tokens when used"); RFC 9700
            # §4.14.2 lets an Authority revoke the whole family instead: the strict switch does that.
            ctx.detail["refresh_reused"] = True
            if self.faults.strict_revocation and family is not None and not family.revoked:
                ctx.detail["revoked_family"] = self._revoke_family(family, "rotated refresh token used again")
        if grant.revoked:
            raise fail(E.InvalidGrant, E.REFRESH_REVOKED)
        if self.clock.now() - grant.last_used > REFRESH_IDLE_LIFETIME:
            raise E.InvalidGrant(700082, "The refresh token has expired due to inactivity.")
        if self.faults.mfa_demanded_for(grant.username):
            err = fail(E.InvalidGrant, E.MFA_REQUIRED, resource=grant.scope.token_resource)
            err.suberror = "basic_action"
            raise err
        raw = self._v1_scope(form, "user_impersonation") if v1 else form.get("scope", "")
        scope = self._scope(raw) if raw else grant.scope
        if not scope.resource and grant.scope.resource:
            scope = ScopeRequest(grant.scope.resource, grant.scope.permissions, scope.oidc)
        user = self.registry.user(grant.username)
        assert user is not None
        grant.last_used = self.clock.now()
        response = self._user_tokens(request, client, user, scope, "", v1, ctx, rotate_from=grant, family=family)
        return response

    def _user_tokens(self, request: Request, client: Client, user: User, scope: ScopeRequest, nonce: str,
                     v1: bool, ctx: _Ctx, rotate_from: RefreshGrant | None = None,
                     family: Family | None = None) -> Response:
        now = int(self.clock.now())
        lifetime = self.lifetime_for(client)
        claims = user_claims(self.registry, client, user, scope, now, lifetime)
        ctx.issued.append(f"at:{claims['uti']}")
        if family is not None:
            family.access = {uti: exp for uti, exp in family.access.items() if exp >= now}
            family.access[str(claims["uti"])] = float(claims["exp"])  # type: ignore[arg-type]
        ctx.detail.update(resource=scope.token_resource, expires_in=lifetime)
        access_token = self.key.sign(claims)
        grant = ctx.grant or "authorization_code"
        self._remember(access_token, "access token", user.username, client.client_id, grant)
        body: dict[str, Any] = {"token_type": "Bearer", "scope": scope.response_scope(), "expires_in": lifetime,
                                "ext_expires_in": lifetime, "access_token": access_token}
        keep_refresh = rotate_from is not None or "offline_access" in scope.oidc or v1
        if keep_refresh:
            refresh = secrets.token_urlsafe(48)
            self._remember(refresh, "refresh token", user.username, client.client_id, grant)
            self.refresh_tokens[refresh] = RefreshGrant(client.client_id, user.username, scope, now, now,
                                                        family.id if family is not None else "")
            if family is not None:
                family.refresh.append(refresh)
            while len(self.refresh_tokens) > MAX_REFRESH_TOKENS:
                del self.refresh_tokens[next(iter(self.refresh_tokens))]
            if rotate_from is not None:
                rotate_from.rotated_to = fingerprint(refresh, "rt")
            body["refresh_token"] = refresh
            ctx.issued.append(fingerprint(refresh, "rt"))
        if "openid" in scope.oidc or (rotate_from is not None and "openid" in rotate_from.scope.oidc):
            body["id_token"] = self.key.sign(
                id_token_claims(self._issuer(request.base), self.registry, client, user, nonce, now, lifetime))
            self._remember(body["id_token"], "ID token", user.username, client.client_id, grant)
        if request.form.get("client_info") == "1":
            body["client_info"] = client_info(user, self.registry)
        return self._token_response(body, v1, scope.token_resource, int(claims["exp"]))  # type: ignore[arg-type]

    # ------------------------------------------------------------------ authorize endpoint

    def _authorize(self, request: Request, tenant: str, v1: bool, ctx: _Ctx) -> Response:
        params = dict(request.params)
        action: dict[str, str] = {}
        if request.method == "POST":
            posted = request.form
            action = {k: posted[k] for k in ("action", "username", "password", "otp", "consent") if k in posted}
            params.update({k: v for k, v in posted.items() if k not in action})
        elif request.method != "GET":
            return self._error_page(405, E.InvalidRequest(900561, "The authorize endpoint accepts GET and POST."))
        if request.repeated:  # RFC 6749 §3.1; which redirect_uri or state is meant cannot be known: no redirect
            ctx.detail["stage"] = "error_page"
            return self._error_page(400, fail(E.InvalidRequest, E.PARAM_REPEATED, param=request.repeated[0][:60]))
        flow = {k: v for k, v in params.items()}
        ctx.detail.update(
            state_present="state" in params, state_length=len(params.get("state", "")),
            state_fp=fingerprint(params["state"], "state") if params.get("state") else "",
            state_bits=round(_entropy_bits(params.get("state", "")), 1),
            code_challenge_method=params.get("code_challenge_method", "plain" if "code_challenge" in params
                                             else ""),
            challenge_fp=fingerprint(params["code_challenge"], "pkce") if params.get("code_challenge") else "",
            client_id_sent=params.get("client_id", "")[:80],
            prompt=params.get("prompt", ""), response_mode=params.get("response_mode", ""),
            response_type=params.get("response_type", ""), scope=params.get("scope", params.get("resource", "")),
            redirect_uri=params.get("redirect_uri", "")[:300], stage="",
        )
        client_id = params.get("client_id", "")
        ctx.client_id = client_id[:80]
        client = self.registry.client(client_id) if client_id else None
        if client is None:
            ctx.detail["stage"] = "error_page"
            if not client_id:
                return self._error_page(400, fail(E.InvalidRequest, E.PARAM_MISSING, param="client_id"))
            return self._error_page(400, fail(E.UnauthorizedClient, E.CLIENT_UNKNOWN, client=client_id[:80],
                                              tenant=tenant[:80]))
        ctx.client_id = client.client_id
        redirect_uri = params.get("redirect_uri") or (client.redirect_uris[0] if client.redirect_uris else "")
        if not redirect_uri_registered(redirect_uri, client.redirect_uris):
            ctx.detail["stage"] = "error_page"
            return self._error_page(400, E.InvalidRequest(
                50011, f"The redirect URI '{redirect_uri[:300]}' specified in the request does not match the "
                       f"redirect URIs configured for the application '{client.client_id}'."))
        state = params.get("state")
        mode = params.get("response_mode") or "query"

        def error_redirect(error: str, code: int, text: str, **extra: str) -> Response:
            ctx.detail.update(stage="error_redirect", redirect_error=error)
            values = {"error": error, "error_description": f"AADSTS{code}: {text}", **extra}
            if state is not None:
                values["state"] = state
            return self._to_client(redirect_uri, values, mode if mode in ("query", "fragment", "form_post")
                                   else "query")

        if mode not in ("query", "fragment", "form_post"):
            return error_redirect("invalid_request", 900144, f"The response_mode '{mode[:40]}' is not supported.")
        if params.get("response_type") != "code":
            return error_redirect("unsupported_response_type", 700054,
                                  "The response_type must be 'code' for this application.")
        raw_scope = self._v1_scope(params, "user_impersonation") if v1 else params.get("scope", "")
        if not raw_scope:
            return error_redirect("invalid_request", 900144,
                                  "The request body must contain the following parameter: 'scope'.")
        try:
            scope = parse_scope(raw_scope)
        except ScopeError as err:
            if err.kind == "unknown_resource":
                return error_redirect("invalid_resource", 500011, f"The resource principal named "
                                      f"{err.resource[:120]} was not found in the tenant.")
            return error_redirect("invalid_scope", 70011, f"The provided value for the input parameter "
                                  f"'scope' is not valid: {raw_scope[:200]}")
        if v1 and "openid" not in scope.oidc:  # v1 always signs the user in
            raw_scope, scope = f"{raw_scope} openid", ScopeRequest(scope.resource, scope.permissions,
                                                                   scope.oidc | {"openid"})
        challenge = params.get("code_challenge", "")
        method = params.get("code_challenge_method", "plain" if challenge else "")
        if challenge and method not in ("S256", "plain"):
            return error_redirect("invalid_request", 501491, f"Invalid code_challenge_method '{method[:20]}'.")
        if challenge and not 43 <= len(challenge) <= 128:
            return error_redirect("invalid_request", 501491, "The code_challenge must be 43 to 128 characters.")
        prompt = params.get("prompt", "")
        action_url = request.path

        # --- sign-in (AC-4): an existing sign-in session is reused unless prompt=login
        session_id = request.cookies.get(SESSION_COOKIE, "")
        session = self.sessions.get(session_id)
        set_cookie: list[tuple[str, str]] = []
        form_values = {k: v for k, v in flow.items() if k not in ("action", "username", "password", "otp",
                                                                  "consent")}
        login_error = ""
        if action.get("action") == "login":
            user = self.registry.user(action.get("username", ""))
            if user is None or not hmac.compare_digest(user.password.encode(), action.get("password", "").encode()):
                login_error = "Your account or password is incorrect. (AADSTS50126)"
                ctx.detail["login_failed"] = True
                session = None
            else:
                session_id = secrets.token_urlsafe(24)
                session = SignInSession(user.username)
                self.sessions[session_id] = session
                set_cookie = [("Set-Cookie", f"{SESSION_COOKIE}={session_id}; Path=/; Secure; HttpOnly; "
                                             "SameSite=None")]
                ctx.detail["signed_in_now"] = True
                form_values["login_done"] = "1"
        fresh_login = flow.get("login_done") == "1" or action.get("action") == "login"
        if session is None or (prompt == "login" and not fresh_login):
            if prompt == "none":
                return error_redirect("login_required", 50058, "A silent sign-in request was sent but no user "
                                      "is signed in.")
            ctx.detail["stage"] = "login_form"
            page = render("login.html", title="Sign in", app=client.display_name, action=action_url,
                          params=form_values, username=params.get("login_hint", ""), error=login_error)
            return Response.html(200, page, [("Cache-Control", "no-store"), *set_cookie])
        user = self.registry.user(session.username)
        if user is None:
            self.sessions.pop(session_id, None)
            return self._error_page(400, E.InvalidRequest(50034, "The user account does not exist."))
        ctx.user = user.username
        form_values["login_done"] = "1" if fresh_login else form_values.get("login_done", "")

        # --- MFA, when the user's policy or a fault demands it
        if (user.mfa or self.faults.mfa_demanded_for(user.username)) and not session.mfa_done:
            if action.get("action") == "mfa" and hmac.compare_digest(action.get("otp", "").encode(),
                                                                     user.otp.encode()):
                session.mfa_done = True
            else:
                if prompt == "none":
                    return error_redirect("interaction_required", 50076, "Multi-factor authentication is "
                                          "required.")
                ctx.detail["stage"] = "mfa_form"
                error = "That code is not valid." if action.get("action") == "mfa" else ""
                page = render("mfa.html", title="Verify your identity", action=action_url, params=form_values,
                              error=error)
                return Response.html(200, page, [("Cache-Control", "no-store"), *set_cookie])

        # --- consent (AC-5): remembered per user and client unless prompt=consent
        key = (user.username.lower(), client.client_id.lower())
        if action.get("action") == "consent":
            if action.get("consent") == "accept" and not self.faults.consent_denied_for(user.username):
                self.consents.add(key)
                form_values["consent_done"] = "1"
                ctx.detail["consented_now"] = True
            else:
                ctx.detail["consent_denied"] = True
                return error_redirect("access_denied", 65004, "User declined to consent to access the app.",
                                      error_subcode="cancel")
        needs_consent = client.consent_required and (
            key not in self.consents or (prompt == "consent" and flow.get("consent_done") != "1"
                                         and not ctx.detail.get("consented_now")))
        if needs_consent:
            if prompt == "none":
                return error_redirect("consent_required", 65001, f"The user or administrator has not consented "
                                      f"to use the application with ID '{client.client_id}'.")
            ctx.detail["stage"] = "consent_form"
            page = render("consent.html", title="Permissions requested", app=client.display_name,
                          action=action_url, params=form_values, username=user.username,
                          scopes=[f"{scope.token_resource}/{p}" for p in scope.granted])
            return Response.html(200, page, [("Cache-Control", "no-store"), *set_cookie])

        # --- AC-6: redirect back to the RedirectURI with a code
        code = self.codes.seal(CodeGrant(secrets.token_hex(8), client.client_id, redirect_uri, raw_scope,
                                         user.username, params.get("nonce", ""), challenge, method,
                                         self.clock.now()))
        self._remember(code, "authorization code", user.username, client.client_id)
        ctx.issued.append(fingerprint(code, "code"))
        ctx.detail["stage"] = "code_issued"
        values = {"code": code}
        if state is not None:
            values["state"] = state
        values["session_state"] = str(uuid.uuid5(uuid.NAMESPACE_URL, session_id))
        response = self._to_client(redirect_uri, values, mode)
        response.headers.extend(set_cookie)
        return response

    def _to_client(self, redirect_uri: str, values: dict[str, str], mode: str) -> Response:
        if mode == "form_post":
            page = render("form_post.html", title="Working…", action=redirect_uri, params=values)
            return Response.html(200, page, [("Cache-Control", "no-store")])
        if mode == "fragment":
            return Response.redirect(with_query(redirect_uri.split("#")[0], values, sep="#"))
        return Response.redirect(with_query(redirect_uri, values))

    def _error_page(self, status: int, err: OAuthError) -> Response:
        message = f"AADSTS{err.code}: {err.text}"
        return Response.html(status, render("error.html", title="Sorry, but we're having trouble signing you in",
                                            message=message))

    def _logout(self, request: Request) -> Response:
        self.sessions.pop(request.cookies.get(SESSION_COOKIE, ""), None)
        expire = ("Set-Cookie", f"{SESSION_COOKIE}=; Path=/; Secure; HttpOnly; Max-Age=0")
        target = request.params.get("post_logout_redirect_uri", "")
        registered = {u for c in self.registry.clients for u in c.redirect_uris}
        origin = {f"{urlsplit(u).scheme}://{urlsplit(u).netloc}" for u in registered}
        if target and (target in registered or f"{urlsplit(target).scheme}://{urlsplit(target).netloc}" in origin):
            return Response.redirect(target, [expire])
        return Response.html(200, render("error.html", title="Signed out", message="You signed out."), [expire])


_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})


def redirect_uri_registered(uri: str, registered: tuple[str, ...]) -> bool:
    """Exact match, except that Entra ignores the port of an ``http`` loopback redirect URI (RFC 8252 §7.3)."""
    if uri in registered:
        return True
    try:
        parts = urlsplit(uri)
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        return False
    if parts.scheme != "http" or (host if ":" not in host else f"[{host}]") not in _LOOPBACK_HOSTS:
        return False
    for candidate in registered:
        reg = urlsplit(candidate)
        if (reg.scheme, (reg.hostname or "").lower(), reg.path, reg.query) == ("http", host, parts.path, parts.query):
            return True
    return False


def _entropy_bits(value: str) -> float:
    """Upper estimate of a random value's entropy: length × log2 of the smallest usual alphabet it fits."""
    if not value:
        return 0.0
    for size, alphabet in ((10, "0123456789"), (16, "0123456789abcdef"), (16, "0123456789ABCDEF"),
                           (64, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/.~")):
        if all(c in alphabet for c in value):
            return len(value) * math.log2(size)
    return len(value) * math.log2(95)


def _pkce_ok(challenge: str, method: str, verifier: str) -> bool:
    if not verifier:
        return False
    if method == "S256":
        digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
        computed = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        return hmac.compare_digest(computed, challenge)
    return hmac.compare_digest(verifier.encode(), challenge.encode())
