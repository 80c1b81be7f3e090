"""Hand-built scenario results for unit tests of the checks and the monitor.

A ``Script`` writes, in seq order, the trace events the fakes and the scripted browser write in a real run (same
servers, endpoints, fields and detail keys as ``bc-conformance run``'s ``results.json``), collects the visits as the
``UserDriver`` returns them, and ``result()`` judges the trace with the real monitor into a ``ScenarioResult``::

    s = Script("AzApp", "valid-token")
    s.access("alice")                    # a first access: page request, token request, BC call, page
    with s.visit("alice"):               # a second access, by hand
        s.request("/")
        call = s.bc()                    # the token stored at the first access
        s.response(200)
    results = results_of(s)              # {"valid-token": ScenarioResult}

Every event method returns the ``TraceEvent`` it wrote, so a test can name the seqs it expects as evidence.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from typing import Any

from conformance.driver import VisitResult
from conformance.engine import ScenarioResult
from conformance.monitor import monitor
from conformance.scenarios import SCENARIOS, Scenario
from conformance.trace import Trace, TraceEvent
from flows import MODES, Role
from portals.config import PortalConfig

T0 = 1_800_000_000.0
TENANT = "7d3c2a1e-5b4f-4e8a-9c6d-2f1e0a9b8c7d"
CLIENT_ID = "3f9b2c4d-8e1a-4b6c-a7d5-0e9f8a7b6c5d"
PORTAL = "localhost:5000"
REDIRECT_PATH = "/auth/callback"
REDIRECT_URI = f"http://{PORTAL}{REDIRECT_PATH}"
AUTHORIZE_PATH = f"/{TENANT}/oauth2/v2.0/authorize"
TOKEN_PATH = f"/{TENANT}/oauth2/v2.0/token"
BC_PATH = f"/v2.0/{TENANT}/Production/api/v2.0/companies"
BC_DEFAULT = "https://api.businesscentral.dynamics.com/.default"
DELEGATED_SCOPE = "https://api.businesscentral.dynamics.com/Financials.ReadWrite.All openid profile"
DELEGATE = "delegate@contoso.onmicrosoft.com"
_IDS = itertools.count(1)  # token ids, codes and fingerprints: unique across scripts, as the Authority's are


def account_of(user: str) -> str:
    return user if "@" in user else f"{user}@contoso.onmicrosoft.com"


def config_for(mode: str) -> PortalConfig:
    return PortalConfig(auth_mode=mode, authority=f"https://login.microsoftonline.com/{TENANT}", tenant_id=TENANT,
                        client_id=CLIENT_ID, client_secret="not-a-real-secret", redirect_uri=REDIRECT_URI,
                        bc_api_url=f"https://api.businesscentral.dynamics.com/v2.0/{TENANT}/Production/api/v2.0")


class Script:
    """One scenario's trace and visits, written event by event."""

    def __init__(self, mode: str, name: str = "missing-token", error: str = ""):
        self.mode = MODES[mode]
        self.flow = self.mode.flow
        self.name = name
        self.now = T0
        self.events: list[TraceEvent] = []
        self.visits: list[VisitResult] = []
        self.sessions: dict[str, str] = {}
        self.last_token = ""  # uti of the last access token the Authority issued
        self.owner: dict[str, str] = {}  # uti → account ("" for an app token)
        self.measured_from = 0
        self.error = error  # the scenario stopped (ScenarioResult.error)
        self.last_code = ""  # fingerprint of the last authorization code issued
        self._visit: VisitResult | None = None
        self._path = "/"
        self._page_status = 0

    # ---------------------------------------------------------------- time and plumbing

    def wait(self, seconds: float) -> Script:
        self.now += seconds
        return self

    def measure(self) -> Script:
        self.measured_from = len(self.visits)
        return self

    def add(self, server: str, endpoint: str, **fields: Any) -> TraceEvent:
        event = TraceEvent(len(self.events) + 1, self.now, server, endpoint, **fields)
        self.events.append(event)
        return event

    def _user(self) -> str:
        return self._visit.user if self._visit is not None else "alice"

    def _account(self, user: str) -> str:
        return DELEGATE if self.mode.token_holder == "delegate account" else account_of(user)

    # ---------------------------------------------------------------- the browser (server "user")

    @contextlib.contextmanager
    def visit(self, user: str = "alice", kind: str = "visit", status: int | None = None, problem: str = "",
              leaks: tuple[str, ...] = (), page_text: str = "<h1>Customers</h1>",
              callback_replayed: bool = False) -> Iterator[VisitResult]:
        """visit_start … visit_end around what the body writes; the visit's status is the last portal page's, or 0
        when the visit ended on a ``problem`` (as the driver reports an exception); ``status`` overrides it."""
        session = self.sessions.setdefault(user, f"s{len(self.sessions) + 1}")
        start = self.add("user", "visit_start", user=user,
                         detail={"session": session, "kind": kind, "callback_replayed": callback_replayed})
        visit = VisitResult(user, self._account(user), session, kind, start.seq, problem=problem,
                            page_text=page_text, leaks=list(leaks))
        self._visit, self._page_status = visit, 0
        yield visit
        visit.status = (0 if problem else self._page_status) if status is None else status
        end = self.add("user", "visit_end", user=user, status=visit.status,
                       detail={"session": session, "kind": kind, "problem": problem, "leaks": list(leaks)})
        visit.end_seq = end.seq
        self.visits.append(visit)
        self._visit = None

    def request(self, path: str = "/", method: str = "GET", host: str = PORTAL, query: str = "") -> TraceEvent:
        self._path = path
        return self.add("user", "request", method=method, path=path, user=self._user(),
                        detail={"host": host, "query": query, "form_keys": []})

    def response(self, status: int = 200, path: str | None = None, location: str = "",
                 referrer_policy: str = "no-referrer", host: str = PORTAL, method: str = "GET") -> TraceEvent:
        if host == PORTAL:
            self._page_status = status
        return self.add("user", "response", method=method, path=self._path if path is None else path,
                        status=status, user=self._user(),
                        detail={"host": host, "query": "", "location": location, "referrer_policy": referrer_policy,
                                "content_type": "text/html; charset=utf-8"})

    def portal_problem(self, problem: str, status: int = 500) -> TraceEvent:
        """What the in-process mount writes when the portal raised or hung."""
        return self.add("portal", "problem", method="GET", path=self._path, status=status,
                        detail={"problem": problem})

    # ---------------------------------------------------------------- the Authority (server "authority")

    def token(self, grant: str = "client_credentials", status: int = 200, expires_in: int | None = 3600,
              user: str = "", redeemed: tuple[str, ...] = (), error: str = "", client_id: str = CLIENT_ID,
              **detail: Any) -> TraceEvent:
        """The token endpoint's event; a 200 issues a new access token (``last_token``)."""
        issued: tuple[str, ...] = ()
        facts: dict[str, Any] = {"secret_in_url": False, "client_auth": "body",
                                 "scope": BC_DEFAULT if grant == "client_credentials" else DELEGATED_SCOPE}
        if status == 200:
            self.last_token = f"tok{next(_IDS)}"
            self.owner[self.last_token] = user
            issued = (f"at:{self.last_token}",)
            if expires_in is not None:
                facts["expires_in"] = expires_in
        elif not error:
            error = "invalid_client"
        facts.update(detail)
        return self.add("authority", "token", method="POST", path=TOKEN_PATH, status=status, error=error,
                        grant=grant, client_id=client_id, user=user, issued=issued, redeemed=redeemed, detail=facts)

    def client_credentials(self, status: int = 200, **fields: Any) -> TraceEvent:
        return self.token("client_credentials", status, **fields)

    def redeem(self, code: str = "", status: int = 200, **fields: Any) -> TraceEvent:
        """The portal redeems an authorization code (the last one issued unless named); ``fields`` override the
        token event's fields or its detail (``redirect_uri``, ``code_verifier``, ``client_auth``, ``fault``…)."""
        fields = {"user": self._account(self._user()), "redirect_uri": REDIRECT_URI, "code_verifier": True, **fields}
        return self.token("authorization_code", status, redeemed=(f"code:{code or self.last_code}",), **fields)

    def refresh(self, rt: str = "rt:0001", status: int = 200, **fields: Any) -> TraceEvent:
        fields = {"user": self._account(self._user()), **fields}
        return self.token("refresh_token", status, redeemed=(rt,), **fields)

    def authorize(self, stage: str, method: str = "GET", status: int = 200, user: str = "",
                  issued: tuple[str, ...] = (), path: str = AUTHORIZE_PATH, **detail: Any) -> TraceEvent:
        """The authorize endpoint's event: its ``stage`` is the page it answered with (login_form, consent_form,
        code_issued, error_redirect, error_page)."""
        n = next(_IDS)
        facts: dict[str, Any] = {
            "state_present": True, "state_length": 32, "state_fp": f"state:{n:012x}", "state_bits": 192.0,
            "code_challenge_method": "S256", "challenge_fp": f"pkce:{n:012x}", "client_id_sent": CLIENT_ID,
            "prompt": "", "response_mode": "query", "response_type": "code", "scope": DELEGATED_SCOPE,
            "redirect_uri": REDIRECT_URI, "stage": stage, **detail}
        return self.add("authority", "authorize", method=method, path=path, status=status,
                        client_id=CLIENT_ID, user=user, issued=issued, detail=facts)

    def sign_in(self, login: bool = True, consent: bool = True, deny: bool = False, **authorize: Any) -> TraceEvent:
        """From the portal's redirect to the browser's arrival at the RedirectURI: the portal's 302, the authorize
        GET, the login form (``login``), the consent form (``consent``), the code (or, ``deny``, access_denied) and
        the browser's request of the callback. Returns the authorize GET (step REDIRECT); ``authorize`` overrides
        its fields or detail."""
        account = self._account(self._user())
        self.response(302, location=f"https://login.microsoftonline.com{AUTHORIZE_PATH}?client_id={CLIENT_ID}")
        self.request(AUTHORIZE_PATH, host="login.microsoftonline.com")
        stages = [s for s, shown in (("login_form", login), ("consent_form", consent)) if shown]
        stages.append("error_redirect" if deny else "code_issued")
        get = None
        for i, stage in enumerate(stages):
            if i:
                self.response(200, host="login.microsoftonline.com")
                self.request(AUTHORIZE_PATH, "POST", host="login.microsoftonline.com")
            extra: dict[str, Any] = dict(authorize) if i == 0 else {}
            if i and stages[i - 1] == "login_form":
                extra["signed_in_now"] = True
            issued: tuple[str, ...] = ()
            if stage == "code_issued":
                self.last_code = f"{next(_IDS):012x}"
                issued = (f"code:{self.last_code}",)
            if stage == "error_redirect":
                extra.update(consent_denied=True, redirect_error="access_denied")
            status = 302 if stage in ("code_issued", "error_redirect") else 200
            event = self.authorize(stage, "GET" if i == 0 else "POST", status, issued=issued,
                                   user="" if stage == "login_form" else account, **extra)
            get = get or event
        self.response(302, host="login.microsoftonline.com", method="POST",
                      location=f"{REDIRECT_URI}?{'error=access_denied' if deny else 'code=[REDACTED]'}&state=x")
        self.request(REDIRECT_PATH, query="code=[REDACTED]&state=x")
        assert get is not None
        return get

    # ---------------------------------------------------------------- Business Central (server "bc")

    def bc(self, token: str | None = None, status: int = 200, endpoint: str = "companies", **detail: Any) -> TraceEvent:
        """A Business Central request carrying ``token`` (default: the last one issued; "" for none)."""
        uti = self.last_token if token is None else token
        facts: dict[str, Any] = {"token_in_query": False, "environment": "Production"}
        owner = self.owner.get(uti, "")
        if uti:
            facts.update(idtyp="user" if owner else "app", exp=self.now + 3600,
                         bearer=f"the access token of {owner or 'the app'}", bearer_kind="access token")
        error = ""
        if status == 401:
            error = "Authentication_InvalidCredentials"
            facts["auth_failure"] = "revoked" if uti else "missing"
        facts.update(detail)
        return self.add("bc", endpoint, method="GET", path=BC_PATH, status=status, error=error, client_id=CLIENT_ID,
                        user=owner, redeemed=(f"at:{uti}",) if uti else (), detail=facts)

    # ---------------------------------------------------------------- whole accesses, as the reference portal does

    def fetch(self, login: bool = True, consent: bool = True) -> TraceEvent:
        """Inside a visit, the portal gets a token as its flow says: CC — a token request; AC — the sign-in at the
        Authority, the code redemption and the 303 back to the page. Returns the first event at the Authority (the
        token request, or the authorize request)."""
        if not self.flow.has(Role.REDIRECT):
            return self.client_credentials()
        first = self.sign_in(login, consent)
        self.redeem()
        self.response(303, location="/")
        self.request("/")
        return first

    def access(self, user: str = "alice", login: bool = True, consent: bool = True, **visit: Any) -> VisitResult:
        """A first access that works: page request, ``fetch``, BC call, 200 page."""
        with self.visit(user, **visit) as v:
            self.request("/")
            self.fetch(login, consent)
            self.bc()
            self.response(200)
        return v

    def reuse(self, user: str = "alice", token: str | None = None) -> VisitResult:
        """A later access that uses the stored token: page request, BC call, 200 page."""
        with self.visit(user) as v:
            self.request("/")
            self.bc(token)
            self.response(200)
        return v

    # ---------------------------------------------------------------- judging

    def result(self) -> ScenarioResult:
        monitored = monitor(self.flow, self.mode, self.events, self.visits)
        scenario = Scenario(self.name, "hand-built", (self.flow.key,), lambda ctx: None)
        return ScenarioResult(self.mode.name, scenario, Trace.of(self.events), self.visits, monitored,
                              self.measured_from, config_for(self.mode.name), self.error)

    def seqs(self, visit: int | None = None, server: str | None = None) -> list[int]:
        """The seqs of the events of one visit (or all), optionally of one server."""
        lo, hi = (self.visits[visit].start_seq, self.visits[visit].end_seq) if visit is not None else (0, 1 << 30)
        return [e.seq for e in self.events if lo <= e.seq <= hi and (server is None or e.server == server)]

    def find(self, server: str, endpoint: str | None = None, **detail: Any) -> list[TraceEvent]:
        """The events of a server (and endpoint) whose detail has these values."""
        return [e for e in self.events if e.server == server and endpoint in (None, e.endpoint)
                and all(e.detail.get(k) == v for k, v in detail.items())]


def results_of(*scripts: Script) -> dict[str, ScenarioResult]:
    return {s.name: s.result() for s in scripts}


# ---------------------------------------------------------------- the reference portal's run, scenario by scenario


def _missing_token(s: Script) -> None:
    s.measure().access()


def _valid_token(s: Script) -> None:
    s.access()
    s.wait(60).measure().reuse()


def _expired_token(s: Script) -> None:
    s.access()
    s.wait(3601).measure().access(login=False, consent=False)  # still signed in and consented at the Authority


def _waits_then_reuses(seconds: int) -> Any:
    def script(s: Script) -> None:
        s.access()
        s.wait(seconds).measure().reuse()
    return script


def _expired_by_hours(s: Script) -> None:
    s.access()
    s.wait(3601 + 3 * 3600).measure().access(login=False, consent=False)


def _sign_in_case(login: bool, consent: bool) -> Any:
    return lambda s: s.measure().access(login=login, consent=consent)


def _consent_denied(s: Script) -> None:
    s.measure()
    with s.visit():
        s.request("/")
        s.sign_in(deny=True)
        s.response(403)
    s.access(login=False)  # the user changes their mind


def _tampered_state(s: Script) -> None:
    s.measure()
    with s.visit():
        s.request("/")
        s.sign_in()
        s.response(400)  # the portal refuses the callback


def _replayed_callback(s: Script) -> None:
    s.access()
    s.measure()
    with s.visit(kind="replay", callback_replayed=True):
        s.request(REDIRECT_PATH, query="code=[REDACTED]&state=x")
        s.response(400)


def _authority_fails(status: int, error: str) -> Any:
    def script(s: Script) -> None:
        s.measure()
        with s.visit():
            s.request("/")
            if s.flow.has(Role.REDIRECT):
                s.sign_in()
                s.redeem(status=status, error=error, fault=f"{status} {error}")
            else:
                s.client_credentials(status=status, error=error, fault=f"{status} {error}")
            s.response(502)
    return script


def _bc_revoked_token(s: Script) -> None:
    s.access()
    s.measure()
    with s.visit():
        s.request("/")
        s.bc(status=401)
        s.fetch(login=False, consent=False)
        s.bc()
        s.response(200)


def _bc_refuses_all(s: Script) -> None:
    s.measure()
    with s.visit():
        s.request("/")
        s.fetch()
        s.bc(status=401)
        s.fetch(login=False, consent=False)
        s.bc(status=401)
        s.response(502)


def _two_users(s: Script) -> None:
    s.access("alice")
    alice = s.last_token
    if s.mode.token_holder == "delegate account":
        s.wait(30).reuse("bob")
    else:
        s.wait(30).access("bob")
    bob = s.last_token
    s.wait(30).reuse("alice", alice)
    s.wait(30).reuse("bob", bob)


REFERENCE: dict[str, Any] = {
    "missing-token": _missing_token,
    "valid-token": _valid_token,
    "expired-token": _expired_token,
    "much-left": _waits_then_reuses(3600 - 600),  # 600 s left: above the 300 s margin, reused
    "renewal-window": _waits_then_reuses(3600 - 120),  # 120 s left: the reference renews under 60 s, so reuses
    "expired-by-hours": _expired_by_hours,
    "not-signed-in": _sign_in_case(True, True),
    "consented-not-signed-in": _sign_in_case(True, False),
    "signed-in-not-consented": _sign_in_case(False, True),
    "signed-in-and-consented": _sign_in_case(False, False),
    "consent-denied": _consent_denied,
    "wrong-state": _tampered_state,
    "missing-state": _tampered_state,
    "replayed-callback": _replayed_callback,
    "authority-invalid-client": _authority_fails(401, "invalid_client"),
    "authority-unavailable": _authority_fails(503, "temporarily_unavailable"),
    "authority-throttled": _authority_fails(429, "temporarily_unavailable"),
    "bc-revoked-token": _bc_revoked_token,
    "bc-refuses-all": _bc_refuses_all,
    "two-users": _two_users,
    "tolerant-parsing": _missing_token,
}
"""How the reference portal plays each scenario (the traces of ``bc-conformance run``), as scripts."""


def reference_script(mode: str, name: str) -> Script:
    script = Script(mode, name)
    REFERENCE[name](script)
    return script


def reference_run(mode: str) -> dict[str, ScenarioResult]:
    """Every scenario of the mode's flow, as the reference portal plays it."""
    return {name: reference_script(mode, name).result() for name in SCENARIOS[MODES[mode].flow.key]}
