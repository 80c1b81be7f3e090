"""The reference portal: a small Flask app whose request handling *runs* the documented flow machine.

Each page request attaches a ``Visit`` to the shared machine of its flow (``flows.machine_for``) and moves it
step by step; entering a step performs it (``Visit.on_step``): CC-3 posts the client-credentials request,
CC-6 / AC-9 call Business Central, AC-3 redirects the browser to the Authority, AC-7 redeems the code.
Configuration is the environment contract (``portals.config``). It is the kit's executable specification:
correct, small and readable — the thing a portal vendor copies.
"""

from __future__ import annotations

import base64
import hashlib
import html
import secrets
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
from flask import Flask, Response, redirect, request, session

from flows import DENIED, MODES, Role, current_step, machine_for, trigger_for
from flows.observations import RETRY_AFTER_401
from portals.config import PortalConfig
from portals.sessions import ServerSessionInterface

EXPIRY_MARGIN = 60  # seconds (at most 10% of the token's life): less left counts as expired (clock skew)
HTTP_TIMEOUT = 10


class PortalError(Exception):
    """A step could not be performed; the user gets a clear page with this message and status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Portal:
    """State shared by all requests: configuration, HTTP client, and (AzDelegate) the delegate's token."""

    def __init__(self, config: PortalConfig, now: Callable[[], float] | None = None):
        self.config = config
        self.now = now or (lambda: time.time())  # looked up per call, so a test clock patched in is seen
        self.mode = MODES[config.auth_mode]
        self.flow = self.mode.flow
        self.http = requests.Session()
        self.delegate_token: dict[str, Any] | None = None  # AzDelegate: one token for every portal user

    # Where the token lives depends on the mode (see flows.tables.MODES for the kit's assumption).
    def stored_token(self) -> dict[str, Any] | None:
        if self.mode.token_holder == "delegate account":
            return self.delegate_token
        return session.get("token")

    def store_token(self, token: dict[str, Any] | None) -> None:
        if self.mode.token_holder == "delegate account":
            self.delegate_token = token
        elif token is None:
            session.pop("token", None)
        else:
            session["token"] = token

    def token_is_valid(self, token: dict[str, Any] | None) -> bool:
        if not token:
            return False
        # Renew a little before expiry (clock skew), but never treat a just-issued short-lived token as expired.
        margin = min(EXPIRY_MARGIN, token.get("lifetime", 3600) / 10)
        return token["expires_at"] - self.now() > margin

    @property
    def token_endpoint(self) -> str:
        return f"{self.config.authority}/oauth2/v2.0/token"

    @property
    def authorize_endpoint(self) -> str:
        return f"{self.config.authority}/oauth2/v2.0/authorize"

    def post_token(self, form: dict[str, str]) -> dict[str, Any]:
        """POST to the token endpoint (secret in the body, never in the URL); one retry on a 5xx."""
        for attempt in range(2):
            try:
                resp = self.http.post(self.token_endpoint, data=form, timeout=HTTP_TIMEOUT)
            except requests.RequestException as err:
                raise PortalError(502, f"The sign-in service could not be reached ({type(err).__name__}).") from None
            if resp.status_code >= 500 and attempt == 0:
                continue
            break
        try:
            body = resp.json()
        except ValueError:
            body = {}
        if resp.status_code == 429:
            wait = resp.headers.get("Retry-After", "a few")
            raise PortalError(503, f"The sign-in service is busy; try again in {wait} seconds.")
        if resp.status_code != 200 or not isinstance(body, dict) or not body.get("access_token"):
            error = body.get("error", f"HTTP {resp.status_code}") if isinstance(body, dict) else resp.status_code
            codes = body.get("error_codes", []) if isinstance(body, dict) else []
            code = f" (AADSTS{codes[0]})" if codes else ""
            raise PortalError(502, f"The sign-in service refused the token request: {error}{code}.")
        if str(body.get("token_type", "Bearer")).lower() != "bearer":
            raise PortalError(502, f"Unexpected token type {body.get('token_type')!r}.")
        try:
            lifetime = int(body.get("expires_in", 3600))
        except (TypeError, ValueError):
            lifetime = 3600
        return {"access_token": body["access_token"], "expires_at": self.now() + lifetime, "lifetime": lifetime}

    def page(self, data: dict[str, Any]) -> str:
        return _page(self, data)

    @staticmethod
    def state_matches(expected: dict[str, Any] | None, received: str | None) -> bool:
        """RFC 6749 §10.12: the callback's state must be the one this session sent."""
        return expected is not None and bool(received) and secrets.compare_digest(received, expected["state"])

    def call_bc(self, token: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """GET companies and a few customers of the first company, with the token in the header only."""
        headers = {"Authorization": f"Bearer {token['access_token']}", "Accept": "application/json"}
        try:
            resp = self.http.get(f"{self.config.bc_api_url}/companies", headers=headers, timeout=HTTP_TIMEOUT)
            if resp.status_code != 200:
                return resp.status_code, {}
            companies = resp.json().get("value", [])
            customers: list[dict[str, Any]] = []
            if companies:
                url = f"{self.config.bc_api_url}/companies({companies[0]['id']})/customers"
                more = self.http.get(url, params={"$top": "5", "$select": "number,displayName"}, headers=headers,
                                     timeout=HTTP_TIMEOUT)
                if more.status_code != 200:
                    return more.status_code, {}
                customers = more.json().get("value", [])
        except (requests.RequestException, ValueError, KeyError, TypeError) as err:
            raise PortalError(502, f"Business Central could not be read ({type(err).__name__}).") from None
        return 200, {"companies": companies, "customers": customers}


class Visit:
    """One page request, as a model of the flow machine; ``on_step`` performs the step just entered."""

    def __init__(self, portal: Portal):
        self.portal = portal
        self.token_valid = portal.token_is_valid(portal.stored_token())
        # Read only at the callback: a code proves the user signed in (AC-4) and consented (AC-5).
        self.signed_in = self.consented = True
        self.consent_denied = False
        self.token_response: dict[str, Any] | None = None
        self.data: dict[str, Any] = {}
        self.response: Response | None = None
        self.retried = False
        self.code = self.verifier = ""

    def on_step(self, step: int | str) -> None:
        role = self.portal.flow.step(step).role if isinstance(step, int) else step
        action = _ACTIONS[self.portal.flow.prefix].get(role)
        if action is not None:
            getattr(self, action)()

    # ---- Client Credentials Flow
    def cc_request_token(self) -> None:  # CC-3 (CC-4 is the Authority's answer)
        cfg = self.portal.config
        self.token_response = self.portal.post_token({
            "grant_type": "client_credentials", "client_id": cfg.client_id, "client_secret": cfg.client_secret,
            "scope": cfg.bc_scope})

    def store(self) -> None:  # CC-5 / AC-8
        self.portal.store_token(self.token_response)
        self.token_valid = True

    def use_token(self) -> None:  # CC-6 / AC-9
        token = self.portal.stored_token()
        assert token is not None
        status, self.data = self.portal.call_bc(token)
        # The code flow renews across requests (redirect, callback, page), so the one retry is remembered in
        # the session rather than on this visit.
        renewed = self.retried or session.pop("renewed_after_401", False)
        if status == 401 and not renewed:
            # RFC 6750 §3.1: the token was refused though unexpired; drop it, get a new one once, retry once.
            self.retried = True
            session["renewed_after_401"] = True
            self.portal.store_token(None)
            self.token_valid = False
            self.trigger(RETRY_AFTER_401.trigger)  # the accepted variant: back to the "checks" step
        elif status != 200:
            raise PortalError(502, f"Business Central answered {status}.")

    def render(self) -> None:  # CC-7 / AC-10
        self.response = Response(self.portal.page(self.data), 200, content_type="text/html; charset=utf-8")

    # ---- Authorization Code Flow
    def ac_redirect(self) -> None:  # AC-3
        cfg = self.portal.config
        verifier = _b64url(secrets.token_bytes(32))
        state, nonce = _b64url(secrets.token_bytes(24)), _b64url(secrets.token_bytes(16))
        session["auth"] = {"state": state, "verifier": verifier, "nonce": nonce}
        params = {
            "client_id": cfg.client_id, "response_type": "code", "redirect_uri": cfg.redirect_uri,
            "response_mode": "query", "scope": f"{cfg.delegated_scope} openid profile", "state": state,
            "nonce": nonce, "code_challenge_method": "S256",
            "code_challenge": _b64url(hashlib.sha256(verifier.encode()).digest()),
        }
        self.response = redirect(f"{self.portal.authorize_endpoint}?{urlencode(params)}", 302)

    def ac_redeem(self) -> None:  # AC-7: server side, with the same redirect_uri, the secret and the verifier
        cfg = self.portal.config
        self.token_response = self.portal.post_token({
            "grant_type": "authorization_code", "client_id": cfg.client_id, "client_secret": cfg.client_secret,
            "code": self.code, "redirect_uri": cfg.redirect_uri, "code_verifier": self.verifier,
            "scope": f"{cfg.delegated_scope} openid profile"})

    def ac_store(self) -> None:  # AC-8, then RFC 9700 §4.2.4: send the browser to a URL without the code
        self.store()
        self.response = redirect("/", 303)

    def ac_denied(self) -> None:  # after AC-5 the user declined: no token request (RFC 6749 §4.1.2.1)
        raise PortalError(403, "You declined to let the portal access Business Central, so it cannot show data.")


# What entering each step does (method names of Visit, so variants can override a single step).
_ACTIONS: dict[str, dict[Role | str, str]] = {
    "CC": {Role.TOKEN_REQUEST: "cc_request_token", Role.STORE: "store", Role.USE: "use_token", Role.WORKING: "render"},
    "AC": {Role.REDIRECT: "ac_redirect", Role.TOKEN_REQUEST: "ac_redeem", Role.STORE: "ac_store", Role.USE: "use_token",
           Role.WORKING: "render", DENIED: "ac_denied"},
}


def _page(portal: Portal, data: dict[str, Any]) -> str:
    """The portal's page: the companies and some customers read from Business Central."""
    companies = "".join(f"<li>{html.escape(str(c.get('name', c.get('displayName', ''))))}</li>"
                        for c in data.get("companies", []))
    customers = "".join(f"<tr><td>{html.escape(str(c.get('number', '')))}</td>"
                        f"<td>{html.escape(str(c.get('displayName', '')))}</td></tr>"
                        for c in data.get("customers", []))
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Portal</title></head><body>"
            f"<h1>Business Central portal ({html.escape(portal.config.auth_mode)})</h1>"
            f"<h2>Companies</h2><ul id='companies'>{companies}</ul>"
            f"<h2>Customers</h2><table id='customers'>{customers}</table></body></html>")


def _error_page(status: int, message: str) -> Response:
    body = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Portal error</title></head>"
            f"<body><h1>Sorry</h1><p role='alert'>{html.escape(message)}</p><p><a href='/'>Try again</a></p>"
            f"</body></html>")
    return Response(body, status, content_type="text/html; charset=utf-8")


def create_app(config: PortalConfig | None = None, now: Callable[[], float] | None = None,
               portal_cls: type[Portal] = Portal, visit_cls: type[Visit] = Visit) -> Flask:
    """Build the reference portal; ``config`` defaults to the environment contract. ``portal_cls`` and
    ``visit_cls`` let a variant (``portals.mutants``) change one behaviour and keep the rest."""
    config = config or PortalConfig.from_env()
    portal = portal_cls(config, now)
    app = Flask(__name__)
    app.session_interface = ServerSessionInterface()
    app.extensions["portal"] = portal
    machine = machine_for(portal.flow)
    last = portal.flow.steps[-1].number

    def walk(visit: Visit, first: str = "advance") -> Response:
        """Move the visit step by step until the flow's last step is done or a step produced a response."""
        try:
            getattr(visit, first)()
            while visit.response is None and current_step(visit) != last:
                visit.advance()  # type: ignore[attr-defined]  # bound by transitions
        except PortalError as err:
            return _error_page(err.status, err.message)
        finally:
            machine.detach(visit)
        return visit.response or _error_page(500, "The portal could not complete the request.")

    @app.get("/")
    def page() -> Response:  # CC-1…CC-7, or AC-1, AC-2 then AC-9, AC-10 or the redirect of AC-3
        return walk(machine.attach(visit_cls(portal)))

    callback_path = urlsplit(config.redirect_uri).path or "/"

    @app.route(callback_path, methods=["GET", "POST"])
    def callback() -> Response:  # the Authority's redirect of AC-6 arrives here; AC-7 and AC-8 follow
        params = request.args if request.method == "GET" else request.form
        expected = session.pop("auth", None)
        if not portal.state_matches(expected, params.get("state")):
            return _error_page(400, "This sign-in response does not belong to your session (state mismatch).")
        # The user has answered the Authority (AC-4 logs in, AC-5 authorizes): the visit resumes after the consent.
        visit = machine.attach(visit_cls(portal), initial=portal.flow.number(Role.CONSENT))
        if params.get("error") == "access_denied":
            visit.consent_denied = True
            return walk(visit, trigger_for(DENIED))
        if params.get("error") or not params.get("code"):
            machine.detach(visit)
            return _error_page(502, f"Sign-in did not complete: {params.get('error', 'no code')}.")
        visit.code, visit.verifier = params["code"], (expected or {}).get("verifier", "")
        return walk(visit, trigger_for(portal.flow.number(Role.CALLBACK)))

    @app.after_request
    def hardening(resp: Response) -> Response:
        resp.headers.setdefault("Referrer-Policy", "no-referrer")
        resp.headers.setdefault("Cache-Control", "no-store")
        return resp

    return app
