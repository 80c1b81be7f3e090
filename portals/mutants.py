"""Mutant portals: the reference portal with ONE behaviour broken, each naming the check(s) that must catch
it. They are the kit's proof that it catches what it claims to catch (``bc-conformance selftest``).

Use one as a target with ``--portal-app portals.mutants:<factory name>``, e.g.
``bc-conformance run --portal-app portals.mutants:never_reuses_token``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import requests
from flask import Flask, session

from flows import CLIENT_CREDENTIALS
from flows.observations import RETRY_AFTER_401
from portals.config import PortalConfig
from portals.reference import HTTP_TIMEOUT, Portal, PortalError, Visit, create_app

ALL = ("AzApp", "AzUser", "AzDelegate")
CODE = ("AzUser", "AzDelegate")


@dataclass(frozen=True)
class Mutant:
    name: str
    breaks: str  # the one behaviour that is broken, in words
    catches: dict[str, tuple[str, ...]]  # mode → ids of the checks that must catch it
    factory: Callable[[], Flask]

    @property
    def spec(self) -> str:
        return f"portals.mutants:{self.name.replace('-', '_')}"


# ---------------------------------------------------------------------------------------------- variants


class NeverReuses(Portal):
    def token_is_valid(self, token: dict[str, Any] | None) -> bool:
        return False


class ReusesExpired(Portal):
    def token_is_valid(self, token: dict[str, Any] | None) -> bool:
        return bool(token)  # ignores expires_at


class SecretInUrl(Portal):
    def post_token(self, form: dict[str, str]) -> dict[str, Any]:
        form = dict(form)
        secret = form.pop("client_secret")
        resp = self.http.post(f"{self.token_endpoint}?client_secret={secret}", data=form, timeout=HTTP_TIMEOUT)
        body = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {}
        if resp.status_code != 200:
            raise PortalError(502, f"token request failed: {body.get('error', resp.status_code)}")
        return {"access_token": body["access_token"], "expires_at": self.now() + int(body.get("expires_in", 3600))}


class TokenInQuery(Portal):
    def call_bc(self, token: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        resp = self.http.get(f"{self.config.bc_api_url}/companies", params={"access_token": token["access_token"]},
                             timeout=HTTP_TIMEOUT)
        return (200, {"companies": resp.json().get("value", []), "customers": []}) if resp.ok else (
            resp.status_code, {})


class TokenInPage(Portal):
    def page(self, data: dict[str, Any]) -> str:
        token = self.stored_token() or {}
        return super().page(data) + f"<!-- debug: {token.get('access_token', '')} -->"


class IgnoresStateMismatch(Portal):
    @staticmethod
    def state_matches(expected: dict[str, Any] | None, received: str | None) -> bool:
        return True


class SharesTokenAcrossUsers(Portal):
    """AzUser with one token for everyone: user B is served with user A's token."""

    shared: dict[str, Any] | None = None

    def stored_token(self) -> dict[str, Any] | None:
        return self.shared

    def store_token(self, token: dict[str, Any] | None) -> None:
        self.shared = token


class ClientCredentialsForUsers(Portal):
    """AzUser/AzDelegate that never redirects the user: it runs the Client Credentials Flow instead."""

    def __init__(self, config: PortalConfig, now: Callable[[], float] | None = None):
        super().__init__(config, now)
        self.flow = CLIENT_CREDENTIALS


class CallsBcWithoutToken(Portal):
    """Goes to Business Central first and only asks for a token when that fails."""

    def token_is_valid(self, token: dict[str, Any] | None) -> bool:
        return not token or not token["access_token"] or super().token_is_valid(token)

    def stored_token(self) -> dict[str, Any] | None:
        return super().stored_token() or {"access_token": "", "expires_at": 0}

    def call_bc(self, token: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if token["access_token"]:
            return super().call_bc(token)
        resp = self.http.get(f"{self.config.bc_api_url}/companies", timeout=HTTP_TIMEOUT)
        return resp.status_code, {}


class DelegatePerSession(Portal):
    """AzDelegate that keeps the delegate's token per portal session, so every user signs in again."""

    def stored_token(self) -> dict[str, Any] | None:
        return session.get("token")

    def store_token(self, token: dict[str, Any] | None) -> None:
        session["token"] = token


class HammersAuthority(Portal):
    """Retries a failing token request ten times in a row."""

    def post_token(self, form: dict[str, str]) -> dict[str, Any]:
        for _ in range(9):
            with contextlib.suppress(PortalError):
                return super().post_token(form)
        return super().post_token(form)


class StrictParsing(Portal):
    def post_token(self, form: dict[str, str]) -> dict[str, Any]:
        resp = self.http.post(self.token_endpoint, data=form, timeout=HTTP_TIMEOUT)
        body = resp.json()
        if resp.status_code != 200:
            raise PortalError(502, f"token request failed: {body.get('error')}")
        if body["token_type"] != "Bearer":  # RFC 6749 §5.1 says case-insensitive
            raise PortalError(502, f"unsupported token type {body['token_type']}")
        return {"access_token": body["access_token"], "expires_at": self.now() + int(body["expires_in"])}


class EchoesSecretOnError(Portal):
    def post_token(self, form: dict[str, str]) -> dict[str, Any]:
        try:
            return super().post_token(form)
        except PortalError as err:
            raise PortalError(err.status, f"{err.message} Request was: {form}") from None


class UnboundedRetry(Visit):
    def use_token(self) -> None:
        token = self.portal.stored_token()
        assert token is not None
        status, self.data = self.portal.call_bc(token)
        self.attempts = getattr(self, "attempts", 0) + 1
        if status == 401 and self.attempts < 10:  # "until it works" (bounded here only to keep the kit safe)
            session.pop("renewed_after_401", None)
            self.portal.store_token(None)
            self.token_valid = False
            self.trigger(RETRY_AFTER_401.trigger)  # the accepted variant: back to the "checks" step
        elif status != 200:
            raise PortalError(502, f"Business Central answered {status}.")


class NoRetryOn401(Visit):
    def use_token(self) -> None:
        token = self.portal.stored_token()
        assert token is not None
        status, self.data = self.portal.call_bc(token)
        if status != 200:
            raise PortalError(502, f"Business Central answered {status}.")


class StalePageAfterRefusal(Visit):
    """Shows the last data it read, with 200, when Business Central refuses (no renewal, no error page)."""

    last_data: dict[str, Any] = {}  # noqa: RUF012 - deliberately shared: the stale copy

    def use_token(self) -> None:
        token = self.portal.stored_token()
        assert token is not None
        status, data = self.portal.call_bc(token)
        if status == 200:
            StalePageAfterRefusal.last_data = data
        self.data = data if status == 200 else StalePageAfterRefusal.last_data


class SecretToBc(Portal):
    """Sends the client secret to Business Central in an extra header, next to the bearer token."""

    def call_bc(self, token: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.http.headers["X-Client-Secret"] = self.config.client_secret
        return super().call_bc(token)


class IdTokenToBc(Portal):
    """Keeps the ID token of the token response and sends it to Business Central as the bearer token."""

    def post_token(self, form: dict[str, str]) -> dict[str, Any]:
        original = self.http.post

        def keep_id_token(*args: Any, **kwargs: Any) -> requests.Response:
            resp = original(*args, **kwargs)
            with contextlib.suppress(ValueError):
                body = resp.json()
                if isinstance(body, dict) and body.get("id_token"):
                    resp._content = json.dumps({**body, "access_token": body["id_token"]}).encode()
            return resp

        self.http.post = keep_id_token  # type: ignore[method-assign]
        try:
            return super().post_token(form)
        finally:
            self.http.post = original  # type: ignore[method-assign]


class TokenAfterUse(Visit):
    """Asks the Authority for another token after it has used one and rendered the page: a step out of order."""

    def render(self) -> None:
        super().render()
        if self.portal.flow is CLIENT_CREDENTIALS:
            self.cc_request_token()


class NoState(Visit):
    def ac_redirect(self) -> None:
        super().ac_redirect()
        location = self.response.headers["Location"]  # type: ignore[union-attr]
        base, _, query = location.partition("?")
        kept = "&".join(p for p in query.split("&") if not p.startswith("state="))
        self.response.headers["Location"] = f"{base}?{kept}"  # type: ignore[union-attr]


class NoStateCheck(IgnoresStateMismatch):
    pass


class NoPkce(Visit):
    def ac_redirect(self) -> None:
        super().ac_redirect()
        location = self.response.headers["Location"]  # type: ignore[union-attr]
        base, _, query = location.partition("?")
        kept = "&".join(p for p in query.split("&") if not p.startswith("code_challenge"))
        self.response.headers["Location"] = f"{base}?{kept}"  # type: ignore[union-attr]

    def ac_redeem(self) -> None:
        self.verifier = ""
        super().ac_redeem()


class RedeemsTwice(Visit):
    def ac_redeem(self) -> None:
        super().ac_redeem()
        cfg = self.portal.config
        self.portal.http.post(self.portal.token_endpoint, data={  # "just to be sure": the same code again
            "grant_type": "authorization_code", "client_id": cfg.client_id, "client_secret": cfg.client_secret,
            "code": self.code, "redirect_uri": cfg.redirect_uri, "code_verifier": self.verifier},
            timeout=HTTP_TIMEOUT)


class OtherRedirectUri(Visit):
    def ac_redeem(self) -> None:
        cfg = self.portal.config
        self.token_response = self.portal.post_token({
            "grant_type": "authorization_code", "client_id": cfg.client_id, "client_secret": cfg.client_secret,
            "code": self.code, "redirect_uri": cfg.redirect_uri.rstrip("/") + "/", "code_verifier": self.verifier})


class TokenAfterDenial(Visit):
    def ac_denied(self) -> None:
        cfg = self.portal.config
        with contextlib.suppress(PortalError, requests.RequestException):
            self.portal.post_token({"grant_type": "authorization_code", "client_id": cfg.client_id,
                                    "client_secret": cfg.client_secret, "code": self.code or "none",
                                    "redirect_uri": cfg.redirect_uri})
        super().ac_denied()


class NoCallbackRedirect(Visit):
    def ac_store(self) -> None:
        self.store()
        self.use_token()
        self.render()  # renders the page at the callback URL, which still holds the code


# ---------------------------------------------------------------------------------------------- factories


def _factory(portal_cls: type[Portal] = Portal, visit_cls: type[Visit] = Visit,
             config_change: Callable[[PortalConfig], PortalConfig] | None = None) -> Callable[[], Flask]:
    def build() -> Flask:
        config = PortalConfig.from_env()
        if config_change is not None:
            config = config_change(config)
        return create_app(config, portal_cls=portal_cls, visit_cls=visit_cls)

    return build


def _graph_scope(config: PortalConfig) -> PortalConfig:
    return replace(config, bc_scope="https://graph.microsoft.com/.default")


MUTANTS: tuple[Mutant, ...] = (
    Mutant("never-reuses-token", "asks for a new token on every access, though the stored one is valid",
           dict.fromkeys(ALL, ("valid-token-reused",)), _factory(NeverReuses)),
    Mutant("reuses-expired-token", "keeps using the stored token after its expiry",
           dict.fromkeys(ALL, ("expired-token-replaced",)), _factory(ReusesExpired)),
    Mutant("wrong-scope", "asks for a Microsoft Graph token instead of a Business Central one",
           {"AzApp": ("token-request-client-credentials",), "AzUser": ("redirect-to-authority",),
            "AzDelegate": ("redirect-to-authority",)}, _factory(config_change=_graph_scope)),
    Mutant("secret-in-url", "sends the client secret in the token endpoint's query string",
           {"AzApp": ("token-request-client-credentials",), "AzUser": ("code-redeemed-server-side",),
            "AzDelegate": ("code-redeemed-server-side",)}, _factory(SecretInUrl)),
    Mutant("token-in-query", "sends the access token in the query string instead of the Authorization header",
           dict.fromkeys(ALL, ("bearer-token-used", "token-in-header-only")), _factory(TokenInQuery)),
    Mutant("unbounded-401-retry", "retries a Business Central 401 without bound",
           dict.fromkeys(ALL, ("one-retry-on-401",)), _factory(visit_cls=UnboundedRetry)),
    Mutant("no-retry-on-401", "gives up at the first Business Central 401",
           dict.fromkeys(ALL, ("one-retry-on-401",)), _factory(visit_cls=NoRetryOn401)),
    Mutant("no-state", "sends no state to the Authority and checks none",
           dict.fromkeys(CODE, ("state-bound",)), _factory(NoStateCheck, NoState)),
    Mutant("ignores-state-mismatch", "accepts a callback whose state it did not send",
           dict.fromkeys(CODE, ("state-bound",)), _factory(IgnoresStateMismatch)),
    Mutant("redeems-code-twice", "posts the same authorization code to the token endpoint twice",
           dict.fromkeys(CODE, ("code-used-once",)), _factory(visit_cls=RedeemsTwice)),
    Mutant("other-redirect-uri", "redeems the code with another redirect_uri than it authorized with",
           dict.fromkeys(CODE, ("code-redeemed-server-side", "exact-redirect-uri")),
           _factory(visit_cls=OtherRedirectUri)),
    Mutant("token-after-denial", "asks for a token after the callback said error=access_denied",
           dict.fromkeys(CODE, ("consent-denied-handled",)), _factory(visit_cls=TokenAfterDenial)),
    Mutant("shares-token-across-users", "in AzUser, serves user B with user A's token",
           {"AzUser": ("sessions-isolated", "bearer-token-used")}, _factory(SharesTokenAcrossUsers)),
    Mutant("token-in-page", "puts the access token into the page",
           dict.fromkeys(ALL, ("no-leakage",)), _factory(TokenInPage)),
    Mutant("client-credentials-for-users", "in AzUser/AzDelegate, uses client credentials instead of redirecting",
           dict.fromkeys(CODE, ("redirect-to-authority",)), _factory(ClientCredentialsForUsers)),
    Mutant("no-pkce", "sends no PKCE code_challenge", dict.fromkeys(CODE, ("pkce-s256",)),
           _factory(visit_cls=NoPkce)),
    Mutant("no-callback-redirect", "renders the page at the callback URL that still holds the code",
           dict.fromkeys(CODE, ("callback-hygiene",)), _factory(visit_cls=NoCallbackRedirect)),
    Mutant("calls-bc-without-token", "calls Business Central before it has a token",
           dict.fromkeys(ALL, ("missing-token-fetched", "bearer-token-used")), _factory(CallsBcWithoutToken)),
    Mutant("delegate-token-per-session", "in AzDelegate, keeps the delegate's token per session",
           {"AzDelegate": ("delegate-token-shared", "valid-token-reused")}, _factory(DelegatePerSession)),
    Mutant("hammers-authority", "retries a failing token request ten times",
           dict.fromkeys(ALL, ("token-errors-handled",)), _factory(HammersAuthority)),
    Mutant("strict-token-parsing", "rejects token_type 'bearer' and needs expires_in",
           dict.fromkeys(ALL, ("tolerant-parsing",)), _factory(StrictParsing)),
    Mutant("echoes-secret-on-error", "shows the token request, secret included, on its error page",
           dict.fromkeys(ALL, ("token-errors-handled", "no-leakage")), _factory(EchoesSecretOnError)),
    Mutant("token-after-use", "asks for a new token after using one, a step out of the table's order",
           {"AzApp": ("missing-token-fetched", "token-request-client-credentials")},
           _factory(visit_cls=TokenAfterUse)),
    Mutant("stale-page-after-refusal", "shows the last data with 200 when Business Central refuses its call",
           dict.fromkeys(ALL, ("working-portal",)), _factory(visit_cls=StalePageAfterRefusal)),
    Mutant("secret-to-bc", "sends the client secret to Business Central in an extra header",
           dict.fromkeys(ALL, ("bc-gets-only-the-access-token",)), _factory(SecretToBc)),
    Mutant("id-token-to-bc", "sends the ID token to Business Central instead of the access token",
           dict.fromkeys(CODE, ("bc-gets-only-the-access-token", "bearer-token-used")), _factory(IdTokenToBc)),
)

# Module attributes so each mutant is a ``--portal-app portals.mutants:<name>`` target.
for _m in MUTANTS:
    globals()[_m.name.replace("-", "_")] = _m.factory
