"""Example Business Central portal: Flask + MSAL Python.

A third-party portal as a vendor would write it, verified by bc-oauth-conformance as a process:

    bc-conformance run --portal-cmd "python examples/flask-msal/app.py" --mode AzApp,AzUser

Configuration is the kit's environment contract (AUTH_MODE, AUTHORITY, TENANT_ID, CLIENT_ID, CLIENT_SECRET,
REDIRECT_URI, BC_API_URL, BC_SCOPE, PORTAL_PORT). Comments name the documented step each part implements:
CC-n for the Client Credentials Flow (AzApp), AC-n for the Authorization Code Flow (AzUser, AzDelegate).

Where tokens live:
  AzApp       one app-wide MSAL app; its in-memory cache holds the app token, shared by every session.
  AzUser      an msal.SerializableTokenCache per user session, serialized into a server-side session store;
              the browser's cookie holds only a random session id, never a token.
  AzDelegate  one app-wide MSAL app whose cache holds the delegate account's tokens: the first user to sign in
              is the delegate, and every portal user is served with that account's token.
"""

from __future__ import annotations

import html
import logging
import os
import secrets
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import msal
import requests
from flask import Flask, Request, Response, g, redirect, request, session
from flask.sessions import SessionInterface, SessionMixin

MODES = ("AzApp", "AzUser", "AzDelegate")
HTTP_TIMEOUT = 10  # seconds, for Business Central calls


# ---------------------------------------------------------------------------------------------- configuration


class ConfigError(Exception):
    pass


@dataclass(frozen=True)
class Config:
    mode: str
    authority: str  # https://login.microsoftonline.com/<tenant>
    tenant_id: str
    client_id: str
    client_secret: str
    redirect_uri: str
    bc_api_url: str  # …/v2.0/<tenant>/<environment>/api/v2.0
    bc_scope: str  # https://api.businesscentral.dynamics.com/.default (CC-3, and AC-3 unless BC_USER_SCOPE)
    port: int
    user_scope: str = ""  # BC_USER_SCOPE: a named delegated permission instead, e.g. …/Financials.ReadWrite.All

    @property
    def user_scopes(self) -> list[str]:
        """The Business Central permission the code flow asks for (AC-3): ``.default`` (every permission the app
        registration holds) unless BC_USER_SCOPE names one; MSAL adds openid, profile and offline_access itself."""
        return [self.user_scope or self.bc_scope]


def load_config(env: Mapping[str, str]) -> Config:
    """Read the environment contract; a missing or invalid value raises ConfigError naming it."""
    mode = env.get("AUTH_MODE", "")
    required = ["AUTH_MODE", "AUTHORITY", "TENANT_ID", "CLIENT_ID", "CLIENT_SECRET", "BC_API_URL", "PORTAL_PORT"]
    if mode != "AzApp":
        required.append("REDIRECT_URI")  # the code flow needs it; AzApp does not
    missing = [name for name in required if not env.get(name)]
    if missing:
        raise ConfigError(f"missing environment variable(s): {', '.join(missing)}")
    if mode not in MODES:
        raise ConfigError(f"AUTH_MODE must be one of {', '.join(MODES)}, got {mode!r}")
    for name in ("AUTHORITY", "BC_API_URL"):
        url = urlsplit(env[name])
        if url.scheme != "https" or not url.netloc or url.path.strip("/") == "":
            raise ConfigError(f"{name} must be an https URL with a path, got {env[name]!r}")
    if urlsplit(env["AUTHORITY"]).path.strip("/").split("/")[0].lower() in ("common", "organizations", "consumers"):
        raise ConfigError(f"AUTHORITY must name the tenant (client credentials need it), got {env['AUTHORITY']!r}")
    redirect_uri = env.get("REDIRECT_URI", "")
    if redirect_uri and urlsplit(redirect_uri).scheme not in ("http", "https"):
        raise ConfigError(f"REDIRECT_URI must be an http(s) URL, got {redirect_uri!r}")
    port = env["PORTAL_PORT"]
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"PORTAL_PORT must be a port number, got {port!r}")
    return Config(mode, env["AUTHORITY"].rstrip("/"), env["TENANT_ID"], env["CLIENT_ID"], env["CLIENT_SECRET"],
                  redirect_uri, env["BC_API_URL"].rstrip("/"),
                  env.get("BC_SCOPE") or "https://api.businesscentral.dynamics.com/.default", int(port),
                  env.get("BC_USER_SCOPE", ""))


# ---------------------------------------------------------------------------------------------- sessions


class ServerSession(dict, SessionMixin):
    def __init__(self, sid: str, data: dict | None = None):
        super().__init__(data or {})
        self.sid = sid


class ServerSideSessions(SessionInterface):
    """Sessions kept in this process's memory. The cookie carries only a random id; the token cache stays on
    the server. (Use a shared store such as Redis when running more than one process.)"""

    cookie_name = "portal_session"

    def __init__(self) -> None:
        self._store: dict[str, dict] = {}
        self._lock = threading.Lock()

    def open_session(self, app: Flask, request: Request) -> ServerSession:
        sid = request.cookies.get(self.cookie_name, "")
        with self._lock:
            data = self._store.get(sid)
        if data is None:
            return ServerSession(secrets.token_urlsafe(32))
        return ServerSession(sid, dict(data))

    def save_session(self, app: Flask, session: ServerSession, response: Response) -> None:
        with self._lock:
            is_new = session.sid not in self._store
            if is_new and not session:
                return  # nothing to keep (e.g. AzApp): no session, no cookie
            self._store[session.sid] = dict(session)
        if is_new:
            response.set_cookie(self.cookie_name, session.sid, httponly=True, samesite="Lax", path="/")


# ---------------------------------------------------------------------------------------------- errors and pages


class PortalError(Exception):
    """A step failed; the user gets a page with this status and message (never a stack trace or a secret)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def page(title: str, body: str, status: int = 200) -> Response:
    return Response(f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}"
                    f"</title></head><body>{body}</body></html>", status, content_type="text/html; charset=utf-8")


def error_page(status: int, message: str) -> Response:
    return page("Portal error", f"<h1>Sorry</h1><p role='alert'>{html.escape(message)}</p>"
                                f"<p><a href='/'>Try again</a></p>", status)


def token_error(result: dict) -> PortalError:
    """An MSAL error result → a clear page. Only error codes are shown (never the request, never the secret)."""
    error = str(result.get("error", "unknown_error"))
    codes = result.get("error_codes") or []
    detail = f"{error}, AADSTS{codes[0]}" if codes else error
    if error in ("temporarily_unavailable", "too_many_requests", "service_unavailable"):
        return PortalError(503, f"The sign-in service is busy or unavailable ({detail}); try again in a minute.")
    return PortalError(502, f"The sign-in service refused the portal's token request ({detail}).")


def authority_failure(err: requests.RequestException) -> PortalError:
    """MSAL Python raises (rather than returns an error) on a 5xx answer or a network failure."""
    status = getattr(err.response, "status_code", None)
    what = f"is unavailable (HTTP {status})" if status else f"could not be reached ({type(err).__name__})"
    return PortalError(503, f"The sign-in service {what}; try again in a minute.")


# ---------------------------------------------------------------------------------------------- the portal


def create_app(config: Config | None = None) -> Flask:
    cfg = config or load_config(os.environ)
    app = Flask(__name__)
    app.session_interface = ServerSideSessions()

    # MSAL's http_cache keeps the Authority's discovery document and throttling state; sharing it lets the
    # per-request MSAL apps of AzUser skip rediscovery (the pattern of Microsoft's identity web samples).
    http_cache: dict = {}

    def build_msal_app(cache: msal.TokenCache | None = None) -> msal.ConfidentialClientApplication:
        return msal.ConfidentialClientApplication(
            cfg.client_id, client_credential=cfg.client_secret, authority=cfg.authority, token_cache=cache,
            http_cache=http_cache,
            # A non-Microsoft authority host (e.g. a test Authority on 127.0.0.1) would otherwise be validated
            # with a call to login.microsoftonline.com.
            instance_discovery=False)

    shared_app = build_msal_app() if cfg.mode != "AzUser" else None  # AzApp: app token; AzDelegate: delegate's

    def msal_app() -> msal.ConfidentialClientApplication:
        """The MSAL app serving this request. AzUser: one built around this session's token cache."""
        if shared_app is not None:
            return shared_app
        if "msal_app" not in g:
            g.token_cache = msal.SerializableTokenCache()
            if session.get("token_cache"):
                g.token_cache.deserialize(session["token_cache"])
            g.msal_app = build_msal_app(g.token_cache)
        return g.msal_app

    @app.after_request
    def save_token_cache(resp: Response) -> Response:  # CC-5 / AC-8: the session keeps what MSAL stored
        cache = g.get("token_cache")
        if cache is not None and cache.has_state_changed:
            session["token_cache"] = cache.serialize()
        return resp

    def get_token() -> str | None:
        """CC-2…CC-5 / AC-2 (and AC-7's refresh): MSAL returns its cached token while it is valid (it renews
        with 300 s left), else asks the Authority and caches the answer. None: the user must sign in (AC-3)."""
        client = msal_app()
        try:
            if cfg.mode == "AzApp":  # CC-3: client id + secret, scope BC_SCOPE; CC-4 the answer; CC-5 cached
                result = client.acquire_token_for_client([cfg.bc_scope])
            else:
                accounts = client.get_accounts()
                # None when there is no account or the refresh token no longer works: sign in again.
                result = client.acquire_token_silent(cfg.user_scopes, account=accounts[0]) if accounts else None
        except requests.RequestException as err:
            raise authority_failure(err) from None
        if result is None:
            return None
        if "access_token" not in result:
            raise token_error(result)
        return result["access_token"]

    def forget(access_token: str) -> None:
        """Drop a token Business Central refused from MSAL's cache, so the next get_token asks the Authority
        (AzApp: a new client-credentials request; AzUser/AzDelegate: a refresh with the refresh token)."""
        cache = msal_app().token_cache
        for item in list(cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN, query={"secret": access_token})):
            cache.remove_at(item)

    def read_business_central(access_token: str) -> dict | None:
        """CC-6 / AC-9: companies, then 5 customers of the first one; the token only in the Authorization
        header. None when Business Central answers 401 (the token was refused)."""
        headers = {"Authorization": f"Bearer {access_token}", "Accept": "application/json"}
        try:
            resp = requests.get(f"{cfg.bc_api_url}/companies", headers=headers, timeout=HTTP_TIMEOUT)
            if resp.status_code == 401:
                return None
            resp.raise_for_status()
            companies = resp.json().get("value", [])
            customers = []
            if companies:
                resp = requests.get(f"{cfg.bc_api_url}/companies({companies[0]['id']})/customers",
                                    params={"$top": "5"}, headers=headers, timeout=HTTP_TIMEOUT)
                if resp.status_code == 401:
                    return None
                resp.raise_for_status()
                customers = resp.json().get("value", [])
        except (requests.RequestException, ValueError, KeyError, TypeError, AttributeError) as err:
            status = getattr(getattr(err, "response", None), "status_code", None)
            raise PortalError(502, f"Business Central could not be read ({status or type(err).__name__}).") from None
        return {"companies": companies, "customers": customers}

    def start_sign_in() -> Response:
        """AC-3: send the browser to the Authority's authorize endpoint. MSAL adds PKCE (S256) and a nonce; the
        state is ours (MSAL's default is 16 letters from `random`, under 128 bits). The whole flow, verifier
        included, stays in the server-side session until the callback consumes it."""
        flow = msal_app().initiate_auth_code_flow(cfg.user_scopes, redirect_uri=cfg.redirect_uri,
                                                  state=secrets.token_urlsafe(32))
        session["auth_flow"] = flow
        return redirect(flow["auth_uri"], 302)

    @app.get("/")
    def home() -> Response:  # CC-1 / AC-1: the user accesses the portal
        token = get_token()
        if token is None:
            return start_sign_in()  # AC-3 (AC-4…AC-6 happen at the Authority)
        data = read_business_central(token)
        if data is None:
            # RFC 6750 §3.1: refused though unexpired. Get a new token once and retry once; no loop.
            forget(token)
            token = get_token()
            data = read_business_central(token) if token else None
            if data is None:
                raise PortalError(502, "Business Central refused the portal's access token, also after renewing "
                                       "it. Ask your administrator to check the portal's permissions.")
        return render(data)  # CC-7 / AC-10

    def render(data: dict) -> Response:
        companies = "".join(f"<li>{html.escape(str(c.get('name') or c.get('displayName', '')))}</li>"
                            for c in data["companies"])
        customers = "".join(f"<tr><td>{html.escape(str(c.get('number', '')))}</td>"
                            f"<td>{html.escape(str(c.get('displayName', '')))}</td></tr>" for c in data["customers"])
        return page("Business Central portal",
                    f"<h1>Business Central portal ({html.escape(cfg.mode)})</h1>"
                    f"<h2>Companies</h2><ul id='companies'>{companies}</ul>"
                    f"<h2>Customers</h2><table id='customers'>{customers}</table>")

    callback_path = urlsplit(cfg.redirect_uri).path or "/auth/callback"

    @app.get(callback_path)
    def auth_callback() -> Response:  # AC-6 arrives here; AC-7 and AC-8 follow
        # The flow is consumed now: a replayed callback (same code again) finds nothing to redeem.
        flow = session.pop("auth_flow", None)
        state = request.args.get("state", "")
        if not flow or not state or not secrets.compare_digest(state, flow["state"]):
            return error_page(400, "This sign-in response does not belong to your session (missing or wrong "
                                   "state), so it was ignored. Please open the portal again.")
        if request.args.get("error") == "access_denied":  # the user declined at AC-5: no token request
            return error_page(403, "You declined to let the portal access Business Central, so it cannot show "
                                   "your data. Open the portal again to reconsider.")
        if request.args.get("error") or not request.args.get("code"):
            return error_page(502, f"Sign-in did not complete ({request.args.get('error', 'no code')}).")
        try:  # AC-7: redeem the code server side, with the secret, the same redirect_uri and the PKCE verifier
            result = msal_app().acquire_token_by_auth_code_flow(flow, request.args.to_dict())
        except requests.RequestException as err:
            raise authority_failure(err) from None
        except ValueError:  # MSAL's own state / flow validation
            return error_page(400, "This sign-in response could not be matched to your sign-in. Please try again.")
        if "access_token" not in result:
            raise token_error(result)
        # AC-8: MSAL stored the tokens in the cache (AzUser: saved into the session by save_token_cache).
        # RFC 9700 §4.2.4: continue at a URL without the code.
        return redirect("/", 303)

    @app.errorhandler(PortalError)
    def portal_error(err: PortalError) -> Response:
        return error_page(err.status, err.message)

    @app.errorhandler(500)
    def unexpected_error(err: Exception) -> Response:  # Flask has logged the details; the browser gets none
        return error_page(500, "The portal hit an unexpected error.")

    @app.after_request
    def hardening(resp: Response) -> Response:
        resp.headers["Referrer-Policy"] = "no-referrer"  # the callback URL (with its code) never leaks
        resp.headers["Cache-Control"] = "no-store"
        return resp

    return app


def main() -> None:
    try:
        cfg = load_config(os.environ)
    except ConfigError as err:
        print(f"flask-msal portal: configuration error: {err}", file=sys.stderr)
        sys.exit(2)
    # Werkzeug's access log would write each callback URL, authorization code included, to the log.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    print(f"flask-msal portal ({cfg.mode}) on http://127.0.0.1:{cfg.port}", flush=True)
    create_app(cfg).run(host="127.0.0.1", port=cfg.port, threaded=True)


if __name__ == "__main__":
    main()
