"""A Business Central portal with hand-written OAuth (no MSAL): plain HTTP with `requests`, Flask for the pages.

It is what many vendors write when they do not use a Microsoft library, and it makes two legitimate choices the
MSAL examples do not: the Authority answers with ``response_mode=form_post`` (the default of ASP.NET Core's
OpenID Connect handler; Microsoft recommends it), and a token is renewed ``RENEW_MARGIN`` seconds before it
expires (default 120; MSAL uses 300).

Configuration is the environment contract (AUTH_MODE, AUTHORITY, CLIENT_ID, CLIENT_SECRET, REDIRECT_URI,
BC_API_URL, BC_SCOPE, PORTAL_PORT) plus RESPONSE_MODE (form_post or query) and RENEW_MARGIN. Comments name the
documented step each part implements: CC-n = Client Credentials Flow (AzApp), AC-n = Authorization Code Flow
(AzUser, AzDelegate).
"""

from __future__ import annotations

import base64
import hashlib
import html
import os
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
from flask import Flask, Response, redirect, request

HTTP_TIMEOUT = 10
SESSION_COOKIE = "hw_session"


@dataclass(frozen=True)
class Config:
    mode: str
    authority: str
    client_id: str
    client_secret: str
    redirect_uri: str
    bc_api_url: str
    scope: str
    port: int
    response_mode: str = "form_post"
    renew_margin: float = 120.0

    @classmethod
    def from_env(cls, env: dict[str, str]) -> Config:
        missing = [k for k in ("AUTH_MODE", "AUTHORITY", "CLIENT_ID", "CLIENT_SECRET", "BC_API_URL", "PORTAL_PORT")
                   if not env.get(k)]
        if env.get("AUTH_MODE") != "AzApp" and not env.get("REDIRECT_URI"):
            missing.append("REDIRECT_URI")
        if missing:
            raise SystemExit(f"missing environment variable(s): {', '.join(missing)}")
        mode = env.get("RESPONSE_MODE", "form_post")
        if mode not in ("form_post", "query"):
            raise SystemExit(f"RESPONSE_MODE must be form_post or query, got {mode!r}")
        return cls(env["AUTH_MODE"], env["AUTHORITY"].rstrip("/"), env["CLIENT_ID"], env["CLIENT_SECRET"],
                   env.get("REDIRECT_URI", ""), env["BC_API_URL"].rstrip("/"),
                   env.get("BC_SCOPE") or "https://api.businesscentral.dynamics.com/.default", int(env["PORTAL_PORT"]),
                   mode, float(env.get("RENEW_MARGIN", "120")))


class SignInError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Portal:
    """Tokens per browser session (AzApp, AzUser) or one for the delegate account (AzDelegate)."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.http = requests.Session()
        self.sessions: dict[str, dict[str, Any]] = {}  # session id -> {"token": {...}}
        self.pending: dict[str, dict[str, str]] = {}  # state -> {"sid", "verifier"}: form_post arrives cross-site
        self.delegate: dict[str, Any] | None = None
        self.lock = threading.Lock()

    # --- where the token lives (CC-5 / AC-8: "in the session")
    def token(self, sid: str) -> dict[str, Any] | None:
        return self.delegate if self.cfg.mode == "AzDelegate" else self.sessions.get(sid, {}).get("token")

    def store(self, sid: str, token: dict[str, Any] | None) -> None:
        if self.cfg.mode == "AzDelegate":
            self.delegate = token
        else:
            self.sessions.setdefault(sid, {})["token"] = token

    def valid(self, token: dict[str, Any] | None) -> bool:
        """CC-2 / AC-2: a token is valid while more than RENEW_MARGIN seconds are left."""
        return bool(token) and token["expires_at"] - time.time() > self.cfg.renew_margin  # type: ignore[index]

    # --- the Authority
    def post_token(self, form: dict[str, str]) -> dict[str, Any]:
        """CC-3 / AC-7: client id and secret in the body, never in a URL; CC-4: the Authority's answer."""
        form = {**form, "client_id": self.cfg.client_id, "client_secret": self.cfg.client_secret}
        try:
            resp = self.http.post(f"{self.cfg.authority}/oauth2/v2.0/token", data=form, timeout=HTTP_TIMEOUT)
            body = resp.json()
        except (requests.RequestException, ValueError):
            raise SignInError(503, "The sign-in service could not be reached; try again in a minute.") from None
        if resp.status_code != 200 or not isinstance(body, dict) or "access_token" not in body:
            error = body.get("error", resp.status_code) if isinstance(body, dict) else resp.status_code
            raise SignInError(503 if resp.status_code in (429, 503) else 502,
                              f"The sign-in service refused the token request ({error}).")
        try:
            lifetime = float(body.get("expires_in", 3600))
        except (TypeError, ValueError):
            lifetime = 3600.0
        return {"access_token": body["access_token"], "refresh_token": body.get("refresh_token", ""),
                "expires_at": time.time() + lifetime}

    def authorize_url(self, sid: str) -> str:
        """AC-3: the browser goes to the Authority with state (bound to this session) and PKCE."""
        state, verifier = b64url(secrets.token_bytes(24)), b64url(secrets.token_bytes(32))
        with self.lock:
            self.pending[state] = {"sid": sid, "verifier": verifier}
        query = {"client_id": self.cfg.client_id, "response_type": "code", "redirect_uri": self.cfg.redirect_uri,
                 "response_mode": self.cfg.response_mode, "scope": f"{self.cfg.scope} openid offline_access",
                 "state": state, "code_challenge": b64url(hashlib.sha256(verifier.encode()).digest()),
                 "code_challenge_method": "S256"}
        return f"{self.cfg.authority}/oauth2/v2.0/authorize?{urlencode(query)}"

    def renew(self, sid: str) -> dict[str, Any] | None:
        """CC-3 for AzApp; a refresh-token renewal for the code flow; None when the user must sign in (AC-3)."""
        if self.cfg.mode == "AzApp":
            return self.post_token({"grant_type": "client_credentials", "scope": self.cfg.scope})
        old = self.token(sid)
        if old and old.get("refresh_token"):
            try:
                return self.post_token({"grant_type": "refresh_token", "refresh_token": old["refresh_token"],
                                        "scope": f"{self.cfg.scope} openid offline_access"})
            except SignInError:
                return None
        return None

    def companies(self, token: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
        """CC-6 / AC-9: the stored token, in the Authorization header only."""
        try:
            resp = self.http.get(f"{self.cfg.bc_api_url}/companies", timeout=HTTP_TIMEOUT,
                                 headers={"Authorization": f"Bearer {token['access_token']}"})
            return resp.status_code, (resp.json().get("value", []) if resp.status_code == 200 else [])
        except (requests.RequestException, ValueError):
            return 502, []


def page(body: str, status: int = 200) -> Response:
    return Response(f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Portal</title></head>"
                    f"<body>{body}</body></html>", status, content_type="text/html; charset=utf-8")


def create_app(cfg: Config | None = None) -> Flask:
    cfg = cfg or Config.from_env(dict(os.environ))
    portal = Portal(cfg)
    app = Flask(__name__)

    def session_id() -> str:
        return request.cookies.get(SESSION_COOKIE) or secrets.token_urlsafe(32)

    def with_cookie(resp: Response, sid: str) -> Response:
        resp.set_cookie(SESSION_COOKIE, sid, httponly=True, samesite="Lax", path="/")
        resp.headers["Referrer-Policy"] = "no-referrer"
        resp.headers["Cache-Control"] = "no-store"
        return resp

    @app.get("/")
    def home() -> Response:  # CC-1 / AC-1: the user accesses the portal
        sid = session_id()
        try:
            for attempt in range(2):
                token = portal.token(sid)
                if not portal.valid(token):  # CC-2 / AC-2
                    token = portal.renew(sid)
                    if token is None:  # AC-3: no valid token and no silent renewal
                        return with_cookie(redirect(portal.authorize_url(sid), 302), sid)
                    portal.store(sid, token)  # CC-5 / AC-8
                status, companies = portal.companies(token)  # type: ignore[arg-type]
                if status == 401 and attempt == 0:  # RFC 6750 §3.1: refused though unexpired: renew once, retry once
                    portal.store(sid, {**token, "expires_at": 0})  # type: ignore[dict-item]  # keeps the refresh token
                    continue
                if status != 200:
                    return with_cookie(page(f"<p role='alert'>Business Central answered {status}.</p>", 502), sid)
                items = "".join(f"<li>{html.escape(str(c.get('name', '')))}</li>" for c in companies)
                return with_cookie(page(f"<h1>Companies</h1><ul id='companies'>{items}</ul>"), sid)  # CC-7 / AC-10
        except SignInError as err:
            return with_cookie(page(f"<p role='alert'>{html.escape(err.message)}</p>", err.status), sid)
        return with_cookie(page("<p role='alert'>Business Central refused the portal twice.</p>", 502), sid)

    @app.route(urlsplit(cfg.redirect_uri).path or "/auth/callback", methods=["GET", "POST"])
    def callback() -> Response:  # AC-6: the Authority sends the browser back with a code
        params = request.form if request.method == "POST" else request.args
        with portal.lock:
            pending = portal.pending.pop(params.get("state", ""), None)  # single use
        if pending is None:
            return page("<p role='alert'>This sign-in response does not belong to a sign-in of this portal.</p>", 400)
        sid = pending["sid"]
        if params.get("error") or not params.get("code"):
            return with_cookie(page(f"<p role='alert'>Sign-in did not complete: "
                                    f"{html.escape(params.get('error', 'no code'))}.</p>", 403), sid)
        try:  # AC-7: redeemed server side with the same redirect_uri and the PKCE verifier
            token = portal.post_token({"grant_type": "authorization_code", "code": params["code"],
                                       "redirect_uri": cfg.redirect_uri, "code_verifier": pending["verifier"]})
        except SignInError as err:
            return with_cookie(page(f"<p role='alert'>{html.escape(err.message)}</p>", err.status), sid)
        portal.store(sid, token)  # AC-8
        return with_cookie(redirect("/", 303), sid)  # a URL without the code (RFC 9700 §4.2.4)

    return app


if __name__ == "__main__":
    config = Config.from_env(dict(os.environ))
    create_app(config).run("127.0.0.1", config.port, threaded=True)
