"""The conformance checks (catalogue: ``conformance/checks-catalogue.md``), each a function of a mode's scenario
results. Every check names its flow and the step numbers it verifies; best-practice checks cite their RFC
section and carry a lower level (SHOULD → ``warning`` when not met, MAY → informational).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from conformance.monitor import BAD_TOKEN, Kind, Violation
from conformance.trace import TraceEvent
from flows import AUTHORIZATION_CODE, CLIENT_CREDENTIALS, DOCUMENT_URL, MODES, Role
from flows.observations import SHARED_APP_TOKEN

if TYPE_CHECKING:
    from conformance.engine import ScenarioResult

CC, AC = CLIENT_CREDENTIALS.key, AUTHORIZATION_CODE.key
# Step ids by role (``flows.tables.Role``): checks name steps by what they do, never by a number typed here.
_C = {step.role: CLIENT_CREDENTIALS.step_id(step.number) for step in CLIENT_CREDENTIALS.steps}
_A = {step.role: AUTHORIZATION_CODE.step_id(step.number) for step in AUTHORIZATION_CODE.steps}


def _steps(cc: tuple[Role, ...] = (), ac: tuple[Role, ...] = ()) -> dict[str, tuple[int, ...]]:
    """The step numbers a check verifies, per flow, from the roles of those steps."""
    out = {CC: tuple(CLIENT_CREDENTIALS.number(r) for r in cc)} if cc else {}
    return {**out, AC: tuple(AUTHORIZATION_CODE.number(r) for r in ac)} if ac else out


def _both(*roles: Role) -> dict[str, tuple[int, ...]]:
    return _steps(roles, roles)


OUTCOMES = ("passed", "failed", "warning", "not_applicable", "not_exercised")
BC_RESOURCE = "https://api.businesscentral.dynamics.com"


@dataclass
class Verdict:
    outcome: str
    message: str
    expected: str = ""
    received: str = ""
    evidence: list[int] = field(default_factory=list)  # trace seqs
    scenarios: list[str] = field(default_factory=list)
    steps: list[int] | None = None  # a failure: the steps its evidence points to (None: the check's steps)


Results = dict[str, "ScenarioResult"]
Evaluate = Callable[[Results, str], "Verdict"]


@dataclass(frozen=True)
class Check:
    id: str
    title: str
    level: str  # MUST | SHOULD | MAY
    steps: dict[str, tuple[int, ...]]  # flow key → step numbers verified
    refs: tuple[str, ...]
    evaluate: Evaluate
    modes: tuple[str, ...] = ("AzApp", "AzUser", "AzDelegate")
    scenarios: tuple[str, ...] = ()  # the scenarios the check reads (for replay commands)
    needs: str = ""  # what exercises it, when not scenarios of `run` (e.g. `bc-conformance load`)

    def applies(self, mode: str, flow: str) -> bool:
        return mode in self.modes and flow in self.steps


# ------------------------------------------------------------------------------------------ helpers


def _ok(message: str, scenarios: Iterable[str] = ()) -> Verdict:
    return Verdict("passed", message, scenarios=list(scenarios))


def _fail(
    level_outcome: str,
    message: str,
    expected: str,
    received: str,
    evidence: Iterable[int] = (),
    scenarios: Iterable[str] = (),
) -> Verdict:
    return Verdict(level_outcome, message, expected, received, sorted(set(evidence)), list(scenarios))


def _not_run(names: Iterable[str]) -> Verdict:
    return Verdict("not_exercised", f"scenario(s) {', '.join(names)} did not run")


def _visit_events(sr: ScenarioResult, index: int) -> list[TraceEvent]:
    v = sr.visits[index]
    return [e for e in sr.trace.events if v.start_seq <= e.seq <= v.end_seq]


def _token_events(events: Iterable[TraceEvent]) -> list[TraceEvent]:
    return [e for e in events if e.server == "authority" and e.endpoint == "token"]


def _bc_events(events: Iterable[TraceEvent]) -> list[TraceEvent]:
    return [e for e in events if e.server == "bc"]


def _authorize_gets(events: Iterable[TraceEvent]) -> list[TraceEvent]:
    return [e for e in events if e.server == "authority" and e.endpoint == "authorize" and e.method == "GET"]


def _uti(event: TraceEvent) -> str:
    return next((r.split(":", 1)[1] for r in event.redeemed if r.startswith("at:")), "")


def _problem(sr: ScenarioResult, index: int) -> str:
    v = sr.visits[index]
    if v.problem:
        return v.problem
    problems = [e.detail.get("problem", "") for e in _visit_events(sr, index) if e.server == "portal"]
    return problems[0] if problems else ""


def _describe_visit(sr: ScenarioResult, index: int) -> str:
    v = sr.visits[index]
    steps = sr.monitor.visits[index].steps if index < len(sr.monitor.visits) else []
    ids = ", ".join(_step_ids(sr, steps)) or "no step"
    problem = _problem(sr, index)
    tail = f"; {problem}" if problem else ""
    return f"visit {index + 1} by {v.user}: steps {ids}; page status {v.status or 'none'}{tail}"


def _step_ids(sr: ScenarioResult, steps: Iterable[int | str]) -> list[str]:
    prefix = "CC" if sr.config.auth_mode == "AzApp" else "AC"
    return [f"{prefix}-{s}" if isinstance(s, int) else str(s) for s in steps]


def _violations(results: Results, kinds: Iterable[Kind]) -> list[tuple[str, Violation]]:
    return [(name, v) for name, sr in results.items() for v in sr.monitor.violations if v.kind in kinds]


def _baseline_broken(results: Results) -> Verdict | None:
    """Checks that perturb a working flow (a fault, a second user, a quirk) cannot judge a portal whose
    plain first access does not work: that failure is reported by the MUST checks."""
    sr = results.get("missing-token")
    if sr is not None and sr.monitor.visits and not sr.monitor.visits[0].completed:
        return Verdict(
            "not_exercised",
            "cannot judge: the portal's plain first access (scenario missing-token) "
            "does not complete, see working-portal",
        )
    return None


def _level(check_level: str) -> str:
    return "failed" if check_level == "MUST" else "warning"


# ------------------------------------------------------------------------------------------ MUST


def valid_token_reused(results: Results, mode: str) -> Verdict:
    if "valid-token" not in results:
        return _not_run(["valid-token"])
    sr = results["valid-token"]
    bad = _violations(results, (Kind.NOT_REUSED,))
    expected = (
        "with a token of 3600 s life, a second access in the same session makes no token request and no "
        "redirect to the Authority; Business Central receives the token stored at the first access"
    )
    if bad:
        name, v = bad[0]
        return _blame_store_if_no_session(_fail(
            "failed",
            f"{v.step}: {v.message}",
            expected,
            f"in scenario {name}: {v.message}",
            [x.seq for _, x in bad],
            sorted({n for n, _ in bad}),
        ), results[name], v.visit, mode)
    if len(sr.visits) < 2:
        return _not_run(["valid-token"])
    first, second = _visit_events(sr, 0), _visit_events(sr, 1)
    before = {_uti(e) for e in _bc_events(first)}
    after = _bc_events(second)
    if not after:
        return _fail(
            "failed",
            "the second access made no Business Central call",
            expected,
            _describe_visit(sr, 1),
            [e.seq for e in second],
            ["valid-token"],
        )
    if not before or _uti(after[0]) not in before:
        return _blame_store_if_no_session(_fail(
            "failed",
            "the second access sent Business Central a token other than the stored one",
            expected,
            "tokens differ between the first and the second access",
            [e.seq for e in after],
            ["valid-token"],
        ), sr, 1, mode)
    return _ok("the stored token was reused: no token request or redirect on the second access", ["valid-token"])


def _blame_store_if_no_session(verdict: Verdict, sr: ScenarioResult, visit: int, mode: str) -> Verdict:
    """A token that was not reused points at the check step (CC-2/AC-2: it did not find or trust the stored token);
    the store step (CC-5/AC-8) is blamed too only when the evidence shows there was no session to store it in: the
    browser carried no cookie to the portal on that visit."""
    flow = MODES[mode].flow
    verdict.steps = [flow.number(Role.CHECK)]
    if visit < len(sr.visits) and _no_session(sr, visit):
        verdict.steps.append(flow.number(Role.STORE))
        verdict.received += (f"; the portal set no cookie, so up to visit {visit + 1} the browser carried none back: "
                             f"it kept no session to store the token in ({flow.id_of(Role.STORE)})")
    return verdict


def _no_session(sr: ScenarioResult, index: int) -> bool:
    """The browser never carried a cookie back to the portal in this session, up to this visit (the first request
    of a session has none by nature; every later one would, had the portal set a session cookie)."""
    portal = urlsplit(sr.config.redirect_uri).netloc
    session = sr.visits[index].session
    start = next(v.start_seq for v in sr.visits if v.session == session)
    requests_ = [e for e in sr.trace.events if start <= e.seq <= sr.visits[index].end_seq and e.server == "user"
                 and e.endpoint == "request" and e.detail.get("host") == portal and e.user == sr.visits[index].user]
    later = requests_[1:]
    return bool(later) and not any(e.detail.get("cookie") for e in later)


def missing_token_fetched(results: Results, mode: str) -> Verdict:
    if "missing-token" not in results:
        return _not_run(["missing-token"])
    sr = results["missing-token"]
    if not sr.visits:
        return _fail("failed", sr.error or "no visit happened", "a first access", "none")
    events = _visit_events(sr, 0)
    code_flow = mode != "AzApp"
    fetch = _authorize_gets(events) if code_flow else _token_events(events)
    bc = _bc_events(events)
    what = (
        f"redirect to the Authority URI ({_A[Role.REDIRECT]})"
        if code_flow
        else f"token request to the Authority ({_C[Role.TOKEN_REQUEST]})"
    )
    expected = f"on the first access of a session, a {what} before any Business Central call"
    if not fetch:
        return _fail(
            "failed",
            f"no {what.split(' (')[0]} on the first access",
            expected,
            _describe_visit(sr, 0),
            [e.seq for e in events if e.server in ("bc", "authority")],
            ["missing-token"],
        )
    if bc and bc[0].seq < fetch[0].seq:
        return _fail(
            "failed",
            "Business Central was called before a token was obtained",
            expected,
            f"Business Central call at #{bc[0].seq}, token step at #{fetch[0].seq}",
            [bc[0].seq, fetch[0].seq],
            ["missing-token"],
        )
    return _ok(f"the {what} came first", ["missing-token"])


def expired_token_replaced(results: Results, mode: str) -> Verdict:
    expired_use = _violations(results, (Kind.EXPIRED_TOKEN,))
    expected = (
        "after the token's expiry, the next access gets a new token before calling Business Central; "
        "Business Central never receives an expired token"
    )
    if expired_use:
        _name, v = expired_use[0]
        return _fail(
            "failed",
            f"{v.step}: {v.message}",
            expected,
            v.message,
            [x.seq for _, x in expired_use],
            sorted({n for n, _ in expired_use}),
        )
    if "expired-token" not in results:
        return _not_run(["expired-token"])
    sr = results["expired-token"]
    if len(sr.visits) < 2:
        return _not_run(["expired-token"])
    events = _visit_events(sr, 1)
    renew = [
        e
        for e in events
        if (e.server == "authority" and e.endpoint == "token" and e.status == 200) or e in _authorize_gets(events)
    ]
    bc = [e for e in _bc_events(events) if _uti(e)]  # calls that carried a token (not an anonymous probe)
    if not renew:
        return _fail(
            "failed",
            "no new token was obtained after the expiry",
            expected,
            _describe_visit(sr, 1),
            [e.seq for e in bc],
            ["expired-token"],
        )
    if bc and bc[0].seq < renew[0].seq:
        return _fail(
            "failed",
            "Business Central was called with the old token before renewal",
            expected,
            f"call #{bc[0].seq} before renewal #{renew[0].seq}",
            [bc[0].seq],
            ["expired-token"],
        )
    return _ok("the expired token was replaced before Business Central was called", ["expired-token"])


def token_request_uses_client_credentials(results: Results, mode: str) -> Verdict:
    requests_ = [(n, e) for n, sr in results.items() for e in _token_events(sr.trace.events)]
    if not requests_:
        return Verdict("not_exercised", "the portal made no token request")
    expected = (
        "grant_type=client_credentials, the configured client id, the client secret in the body or HTTP "
        "Basic, scope https://api.businesscentral.dynamics.com/.default; the secret never in a URL"
    )
    any_sr = next(iter(results.values()))
    for name, e in requests_:
        problems = []
        if e.detail.get("secret_in_url"):
            problems.append("the client secret was sent in the URL")
        if e.grant != "client_credentials":
            problems.append(f"grant_type was {e.grant!r}")
        if e.client_id and e.client_id.lower() != any_sr.config.client_id.lower():
            problems.append(f"client_id was {e.client_id!r}")
        if e.detail.get("client_auth") == "none" and not e.detail.get("fault"):
            problems.append("no client secret was sent")
        scope = e.detail.get("scope", "")
        if not e.detail.get("fault") and scope.split() != [f"{BC_RESOURCE}/.default"]:
            problems.append(f"scope was {scope!r}")
        if problems:
            return _fail(
                "failed",
                f"{_C[Role.TOKEN_REQUEST]}: {'; '.join(problems)}",
                expected,
                f"token request #{e.seq} in {name}: " + "; ".join(problems),
                [e.seq],
                [name],
            )
    return _ok(f"{len(requests_)} token request(s) carried the client id and secret correctly")


def redirect_to_authority(results: Results, mode: str) -> Verdict:
    expected = (
        "the browser is sent to the configured Authority's authorize endpoint with response_type=code, "
        "the client id, the configured RedirectURI and a scope for Business Central"
    )
    app_tokens = [
        (n, e) for n, sr in results.items() for e in _token_events(sr.trace.events) if e.grant == "client_credentials"
    ]
    if app_tokens:
        name, e = app_tokens[0]
        return _fail(
            "failed",
            f"{_A[Role.REDIRECT]}: the portal used client credentials instead of redirecting the user",
            expected,
            f"token request #{e.seq} with grant_type=client_credentials in {name}",
            [e.seq],
            [name],
        )
    if "missing-token" not in results:
        return _not_run(["missing-token"])
    sr = results["missing-token"]
    gets = _authorize_gets(sr.trace.events)
    if not gets:
        return _fail(
            "failed",
            f"{_A[Role.REDIRECT]}: the user was never sent to the Authority",
            expected,
            _describe_visit(sr, 0) if sr.visits else sr.error,
            scenarios=["missing-token"],
        )
    e = gets[0]
    problems = []
    if e.detail.get("response_type") != "code":
        problems.append(f"response_type was {e.detail.get('response_type')!r}")
    if e.detail.get("client_id_sent", "").lower() != sr.config.client_id.lower():
        problems.append(f"client_id was {e.detail.get('client_id_sent')!r}")
    if urlsplit(e.detail.get("redirect_uri", "")).path != urlsplit(sr.config.redirect_uri).path:
        problems.append(f"redirect_uri was {e.detail.get('redirect_uri')!r}")
    if BC_RESOURCE not in e.detail.get("scope", "") and "996def3d" not in e.detail.get("scope", ""):
        problems.append(f"scope {e.detail.get('scope')!r} names no Business Central permission")
    if not e.path.lower().startswith(f"/{sr.config.tenant_id}/") and not e.path.startswith("/organizations/"):
        problems.append(f"the authorize endpoint was {e.path!r}, not the configured Authority's")
    if problems:
        return _fail(
            "failed",
            f"{_A[Role.REDIRECT]}: {'; '.join(problems)}",
            expected,
            f"authorize request #{e.seq}",
            [e.seq],
            ["missing-token"],
        )
    return _ok("the user was redirected to the configured Authority with the right parameters", ["missing-token"])


_FLOW_SCENARIOS = ("not-signed-in", "consented-not-signed-in", "signed-in-not-consented", "signed-in-and-consented")


def login_and_consent_when_needed(results: Results, mode: str) -> Verdict:
    ran = [n for n in _FLOW_SCENARIOS if n in results]
    if not ran:
        return _not_run(_FLOW_SCENARIOS)
    expected = "the flow completes whether or not the user was signed in / had consented already"
    for name in ran:
        sr = results[name]
        if not sr.visits or not sr.monitor.visits[0].completed:
            received = _describe_visit(sr, 0) if sr.visits else sr.error
            return _fail(
                "failed",
                f"scenario {name}: the flow did not complete",
                expected,
                received,
                [e.seq for e in sr.trace.events if e.server != "user"][:12],
                [name],
            )
    return _ok(f"the flow completed in {len(ran)} sign-in/consent situations", ran)


def code_redeemed_server_side(results: Results, mode: str) -> Verdict:
    if "missing-token" not in results:
        return _not_run(["missing-token"])
    sr = results["missing-token"]
    expected = (
        "the code arrives at the RedirectURI and the portal (not the browser) exchanges it at the token "
        "endpoint with the same redirect_uri and the client secret"
    )
    browser_posts = [
        e for e in sr.trace.events if e.server == "user" and e.endpoint == "request" and e.path.endswith("/token")
    ]
    if browser_posts:
        return _fail(
            "failed",
            f"{_A[Role.TOKEN_REQUEST]}: the browser called the token endpoint",
            expected,
            f"browser request #{browser_posts[0].seq}",
            [browser_posts[0].seq],
            ["missing-token"],
        )
    issued = [e for e in sr.trace.events if e.server == "authority" and e.detail.get("stage") == "code_issued"]
    redeem = [e for e in _token_events(sr.trace.events) if e.grant == "authorization_code"]
    if not issued:
        return (
            _not_run(["missing-token"])
            if not sr.visits
            else _fail(
                "failed",
                f"no authorization code was issued (the flow never reached {_A[Role.CALLBACK]})",
                expected,
                _describe_visit(sr, 0),
                scenarios=["missing-token"],
            )
        )
    if not redeem:
        return _fail(
            "failed",
            f"{_A[Role.TOKEN_REQUEST]}: the authorization code was never redeemed",
            expected,
            _describe_visit(sr, 0),
            [issued[0].seq],
            ["missing-token"],
        )
    e = redeem[0]
    problems = []
    if e.detail.get("redirect_uri") != issued[0].detail.get("redirect_uri"):
        problems.append(
            f"redirect_uri {e.detail.get('redirect_uri')!r} differs from the authorize request's "
            f"{issued[0].detail.get('redirect_uri')!r}"
        )
    if e.detail.get("client_auth") == "none":
        problems.append("no client secret was sent")
    if problems:
        return _fail(
            "failed",
            f"{_A[Role.TOKEN_REQUEST]}: {'; '.join(problems)}",
            expected,
            f"token request #{e.seq}",
            [e.seq],
            ["missing-token"],
        )
    return _ok("the portal redeemed the code server side with the same redirect_uri and its secret", ["missing-token"])


def bearer_token_used(results: Results, mode: str) -> Verdict:
    expected = (
        "every Business Central request carries Authorization: Bearer <the token the Authority issued "
        "to this session/app>"
    )
    bad = _violations(results, BAD_TOKEN - {Kind.EXPIRED_TOKEN})
    for name, sr in results.items():
        for e in _bc_events(sr.trace.events):
            if e.detail.get("auth_failure") == "missing" or (not _uti(e) and e.status == 401):
                return _fail(
                    "failed",
                    f"{_use_step_id(mode)}: a Business Central request carried no bearer token",
                    expected,
                    f"request #{e.seq} in {name}: {e.detail.get('auth_failure', 'no token')}"
                    + (" (the token was in the query string)" if e.detail.get("token_in_query") else ""),
                    [e.seq],
                    [name],
                )
    if bad:
        name, v = bad[0]
        return _fail(
            "failed",
            f"{v.step}: {v.message}",
            expected,
            v.message,
            [x.seq for _, x in bad],
            sorted({n for n, _ in bad}),
        )
    calls = sum(len(_bc_events(sr.trace.events)) for sr in results.values())
    if not calls:
        return Verdict("not_exercised", "the portal never called Business Central")
    return _ok(f"{calls} Business Central request(s) carried the right bearer token")


def bc_gets_only_the_access_token(results: Results, mode: str) -> Verdict:
    step = _use_step_id(mode)
    expected = (
        "Business Central receives the access token, in the Authorization header, and no other credential: "
        "never the client secret, an authorization code, a refresh token or an ID token"
    )
    calls = 0
    for name, sr in results.items():
        for e in _bc_events(sr.trace.events):
            calls += 1
            sent = list(e.detail.get("credentials_carried", ()))
            kind = e.detail.get("bearer_kind", "")
            if kind and kind != "access token":
                sent = [
                    f"{e.detail['bearer']} (not an access token) as the bearer token",
                    *(x for x in sent if not x.endswith("in the authorization header")),
                ]
            if sent:
                return _fail(
                    "failed",
                    f"{step}: the portal sent {sent[0]} to Business Central"
                    + (f" (and {len(sent) - 1} more)" if len(sent) > 1 else ""),
                    expected,
                    f"request #{e.seq} in {name} carried {'; '.join(sent)}",
                    [e.seq],
                    [name],
                )
    if not calls:
        return Verdict("not_exercised", "the portal never called Business Central")
    return _ok(f"{calls} Business Central request(s) carried the access token and no other credential")


def _use_step_id(mode: str) -> str:
    return MODES[mode].flow.id_of(Role.USE)


def _page_step_id(mode: str) -> str:
    return MODES[mode].flow.id_of(Role.WORKING)


def working_portal(results: Results, mode: str) -> Verdict:
    names = [n for n in ("missing-token", "valid-token", "expired-token") if n in results]
    if not names:
        return _not_run(["missing-token", "valid-token", "expired-token"])
    expected = "the user's page request returns 2xx after a successful Business Central call made with the token"
    for name in names:
        sr = results[name]
        if sr.error and not sr.visits:
            return _fail("failed", sr.error, expected, sr.error, scenarios=[name])
        for i, vs in enumerate(sr.monitor.visits):
            if not vs.completed:
                return _fail(
                    "failed",
                    f"scenario {name}: the user did not get a working page",
                    expected,
                    _describe_visit(sr, i),
                    [e.seq for e in _visit_events(sr, i) if e.server != "user"][:12],
                    [name],
                )
    # Every visit of every scenario: a 2xx page after Business Central refused the visit's last call shows stale
    # data or none, and tells the user all is well (CC-7 / AC-10 "now connected successfully").
    for name, sr in results.items():
        for i in range(len(sr.visits)):
            events = _visit_events(sr, i)
            end = next((e for e in reversed(events) if e.server == "user" and e.endpoint == "visit_end"), None)
            calls = _bc_events(events)
            if end is not None and 200 <= end.status < 300 and calls and calls[-1].status >= 400:
                refused = calls[-1]
                return _fail(
                    "failed",
                    f"{_page_step_id(mode)}: the portal answered {end.status} after Business "
                    f"Central refused its call ({refused.status} {refused.error or ''}".rstrip()
                    + ")",
                    expected,
                    f"scenario {name}, visit {i + 1}: Business Central request #{refused.seq} "
                    f"got {refused.status}, yet the page was {end.status}",
                    [refused.seq, end.seq],
                    [name],
                )
    return _ok("every access ended on a working page backed by Business Central data", names)


# ------------------------------------------------------------------------------------------ SHOULD / MAY


def token_in_header_only(results: Results, mode: str) -> Verdict:
    expected = "the access token only in the Authorization header, never in a query string"
    calls = 0
    for name, sr in results.items():
        for e in _bc_events(sr.trace.events):
            calls += 1
            if e.detail.get("token_in_query"):
                return _fail(
                    "warning",
                    "the access token was sent in a query string",
                    expected,
                    f"Business Central request #{e.seq} in {name}",
                    [e.seq],
                    [name],
                )
    if not calls:
        return Verdict("not_exercised", "the portal never called Business Central")
    return _ok("no Business Central request carried a token in its query string")


def one_retry_on_401(results: Results, mode: str) -> Verdict:
    if (broken := _baseline_broken(results)) is not None:
        return broken
    names = [n for n in ("bc-revoked-token", "bc-refuses-all") if n in results]
    if not names:
        return _not_run(["bc-revoked-token", "bc-refuses-all"])
    expected = "when Business Central answers 401 invalid_token, the portal gets a new token once and retries once"
    exercised = []
    for name in names:
        sr = results[name]
        index = sr.measured_from
        if index >= len(sr.visits):
            continue
        events = _visit_events(sr, index)
        # Refusals of a token the portal sent (an anonymous probe's 401 is not an invalid_token refusal).
        refused = [e for e in _bc_events(events) if e.status == 401 and e.detail.get("auth_failure") != "missing"]
        gets = _authorize_gets(events)
        # A renewal after the first refusal: a new authorization (AC) or a token request that is not the code
        # redemption of that authorization.
        renew = [
            e
            for e in events
            if refused
            and e.seq > refused[0].seq
            and (e in gets or (e.server == "authority" and e.endpoint == "token" and e.grant != "authorization_code"))
        ]
        if len(refused) > 2 or len(renew) > 1 or "redirect" in _problem(sr, index):
            return _fail(
                "warning",
                f"scenario {name}: the portal looped after a 401",
                expected,
                f"{len(refused)} refused calls and {len(renew)} renewals in one access"
                + (f"; {_problem(sr, index)}" if _problem(sr, index) else ""),
                [e.seq for e in (refused + renew)[:20]],
                [name],
            )
        if refused:
            exercised.append(name)
        if name == "bc-revoked-token" and refused:
            after = [e for e in _bc_events(events) if e.seq > refused[0].seq and e.status == 200]
            if not renew or not after:
                return _fail(
                    "warning",
                    "the portal did not renew the token and retry after a 401",
                    expected,
                    _describe_visit(sr, index),
                    [e.seq for e in refused],
                    [name],
                )
    if not exercised:
        return Verdict("not_exercised", f"Business Central refused no call of the measured access ({', '.join(names)})")
    return _ok("one renewal and one retry after a 401, and no loop when every token is refused", exercised)


_ERROR_SCENARIOS = ("authority-invalid-client", "authority-unavailable", "authority-throttled")


def token_errors_handled(results: Results, mode: str) -> Verdict:
    if (broken := _baseline_broken(results)) is not None:
        return broken
    ran = [n for n in _ERROR_SCENARIOS if n in results]
    if not ran:
        return _not_run(_ERROR_SCENARIOS)
    expected = "a clear error page, at most 3 token requests per access, the secret not echoed"
    for name in ran:
        sr = results[name]
        for i, v in enumerate(sr.visits):
            problem = _problem(sr, i)
            count = len(_token_events(_visit_events(sr, i)))
            if problem or not v.status:
                return _fail(
                    "warning",
                    f"scenario {name}: the portal did not answer with a page",
                    expected,
                    problem or "no response",
                    scenarios=[name],
                )
            if count > 3:
                return _fail(
                    "warning",
                    f"scenario {name}: {count} token requests in one access",
                    expected,
                    f"{count} token requests",
                    [e.seq for e in _token_events(_visit_events(sr, i))],
                    [name],
                )
            if v.status >= 500 and "Traceback" in v.page_text:
                return _fail(
                    "warning",
                    f"scenario {name}: the error page is a stack trace",
                    expected,
                    f"status {v.status} with a Python traceback",
                    scenarios=[name],
                )
            if any("client secret" in leak for leak in v.leaks):
                return _fail(
                    "warning",
                    f"scenario {name}: the error page echoed the client secret",
                    expected,
                    "; ".join(v.leaks),
                    scenarios=[name],
                )
    return _ok("token endpoint errors gave an error page with bounded retries", ran)


def tolerant_parsing(results: Results, mode: str) -> Verdict:
    if (broken := _baseline_broken(results)) is not None:
        return broken
    name = "tolerant-parsing"
    if name not in results:
        return _not_run([name])
    sr = results[name]
    expected = "token_type in any case, unknown fields ignored, a missing expires_in does not break the portal"
    if not sr.visits or not sr.monitor.visits[0].completed:
        return _fail(
            "warning",
            "the portal failed on a token response with token_type 'bearer', no expires_in and an unknown field",
            expected,
            _describe_visit(sr, 0) if sr.visits else sr.error,
            scenarios=[name],
        )
    return _ok("the portal accepted a lower-case token_type, an unknown field and no expires_in", [name])


def state_bound(results: Results, mode: str) -> Verdict:
    expected = (
        "state present, ≥128 bits, unique per request; a callback with a wrong or missing state leads "
        "to no token request"
    )
    gets = [(n, e) for n, sr in results.items() for e in _authorize_gets(sr.trace.events)]
    if not gets:
        return Verdict("not_exercised", "the portal sent no authorize request")
    for name, e in gets:
        if not e.detail.get("state_present"):
            return _fail(
                "warning",
                f"{_A[Role.REDIRECT]}: the authorize request carried no state",
                expected,
                f"authorize request #{e.seq} in {name} without state",
                [e.seq],
                [name],
            )
        bits = float(e.detail.get("state_bits", 0))
        if bits < 128:
            return _fail(
                "warning",
                f"{_A[Role.REDIRECT]}: state of {e.detail.get('state_length')} characters (~{bits:.0f} bits)",
                expected,
                f"authorize request #{e.seq} in {name}",
                [e.seq],
                [name],
            )
    fps = [e.detail.get("state_fp") for _, e in gets]
    if len(fps) != len(set(fps)):
        return _fail(
            "warning",
            f"{_A[Role.REDIRECT]}: the same state was sent in more than one authorize request",
            expected,
            f"{len(fps) - len(set(fps))} repeated state value(s)",
            [e.seq for _, e in gets],
            [],
        )
    for name in ("wrong-state", "missing-state"):
        if name in results:
            redeemed = [e for e in _token_events(results[name].trace.events) if e.grant == "authorization_code"]
            if redeemed:
                return _fail(
                    "warning",
                    f"{_A[Role.CALLBACK]}: the portal redeemed a code whose callback had a {name.split('-')[0]} state",
                    expected,
                    f"token request #{redeemed[0].seq} in {name}",
                    [redeemed[0].seq],
                    [name],
                )
    tested = [n for n in ("wrong-state", "missing-state") if n in results]
    return _ok(f"state was present and unique; {', '.join(tested) or 'no tampering scenario ran'}", tested)


def pkce_s256(results: Results, mode: str) -> Verdict:
    expected = "a PKCE code_challenge with method S256, a matching verifier, new per request"
    gets = [(n, e) for n, sr in results.items() for e in _authorize_gets(sr.trace.events)]
    if not gets:
        return Verdict("not_exercised", "the portal sent no authorize request")
    for name, e in gets:
        if e.detail.get("code_challenge_method") != "S256":
            method = e.detail.get("code_challenge_method") or "no challenge"
            return _fail(
                "warning",
                f"{_A[Role.REDIRECT]}: PKCE method was {method}",
                expected,
                f"authorize request #{e.seq} in {name}",
                [e.seq],
                [name],
            )
    fps = [e.detail.get("challenge_fp") for _, e in gets]
    if len(fps) != len(set(fps)):
        return _fail(
            "warning",
            f"{_A[Role.REDIRECT]}: a PKCE challenge was reused",
            expected,
            "repeated code_challenge",
            [e.seq for _, e in gets],
        )
    for name, sr in results.items():
        for e in _token_events(sr.trace.events):
            if e.grant == "authorization_code" and not e.detail.get("code_verifier") and not e.detail.get("fault"):
                return _fail(
                    "warning",
                    f"{_A[Role.TOKEN_REQUEST]}: the code was redeemed without a code_verifier",
                    expected,
                    f"token request #{e.seq} in {name}",
                    [e.seq],
                    [name],
                )
    return _ok(f"{len(gets)} authorize request(s) used S256 with a fresh challenge")


def exact_redirect_uri(results: Results, mode: str) -> Verdict:
    expected = "the registered RedirectURI, byte for byte, in the authorize and the token request"
    seen = 0
    for name, sr in results.items():
        configured = sr.config.redirect_uri
        for e in _authorize_gets(sr.trace.events):
            seen += 1
            if e.detail.get("redirect_uri") != configured:
                return _fail(
                    "warning",
                    f"{_A[Role.REDIRECT]}: redirect_uri differs from the configured RedirectURI",
                    expected,
                    f"{e.detail.get('redirect_uri')!r} instead of {configured!r}",
                    [e.seq],
                    [name],
                )
        for e in _token_events(sr.trace.events):
            seen += e.grant == "authorization_code"
            if e.grant == "authorization_code" and e.detail.get("redirect_uri") != configured:
                return _fail(
                    "warning",
                    f"{_A[Role.TOKEN_REQUEST]}: redirect_uri of the code redemption differs",
                    expected,
                    f"{e.detail.get('redirect_uri')!r} instead of {configured!r}",
                    [e.seq],
                    [name],
                )
    if not seen:
        return Verdict("not_exercised", "the portal sent no authorize request and redeemed no code")
    return _ok("the RedirectURI was sent exactly as configured")


def code_used_once(results: Results, mode: str) -> Verdict:
    expected = "the Authority never sees the same code twice; a replayed callback is rejected"
    for name, sr in results.items():
        seen: dict[str, int] = {}
        for e in _token_events(sr.trace.events):
            for r in e.redeemed:
                if r.startswith("code:"):
                    if r in seen:
                        return _fail(
                            "warning",
                            f"{_A[Role.TOKEN_REQUEST]}: the same authorization code was redeemed twice",
                            expected,
                            f"token requests #{seen[r]} and #{e.seq} in {name}",
                            [seen[r], e.seq],
                            [name],
                        )
                    seen[r] = e.seq
    if "replayed-callback" not in results:
        return _not_run(["replayed-callback"])
    replays = [
        e
        for e in results["replayed-callback"].trace.events
        if e.endpoint == "visit_start" and e.detail.get("kind") == "replay"
    ]
    if not any(e.detail.get("callback_replayed") for e in replays):
        return Verdict(
            "not_exercised",
            "the replayed-callback scenario had no authorization response to send again "
            "(the first visit never reached the RedirectURI)",
        )
    return _ok("no code was redeemed twice, the replayed callback included", ["replayed-callback"])


def consent_denied_handled(results: Results, mode: str) -> Verdict:
    name = "consent-denied"
    if name not in results or not results[name].visits:
        return _not_run([name])
    sr = results[name]
    expected = "error=access_denied on the callback gives a clear page and no token request"
    events = _visit_events(sr, 0)
    after = [e for e in _token_events(events)]
    if after:
        return _fail(
            "warning",
            f"{_A[Role.CONSENT]}: the portal asked for a token after the user declined",
            expected,
            f"token request #{after[0].seq}",
            [after[0].seq],
            [name],
        )
    v = sr.visits[0]
    problem = _problem(sr, 0)
    if problem or not v.status or v.status >= 500 or (200 <= v.status < 300 and not v.page_text.strip()):
        return _fail(
            "warning",
            f"{_A[Role.CALLBACK]}: no clear page after the denial",
            expected,
            problem or f"status {v.status or 'none'}",
            scenarios=[name],
        )
    return _ok("the denial gave a page and no token request", [name])


def refresh_token_rotation(results: Results, mode: str) -> Verdict:
    expected = "when refreshing, the newest refresh token is used, never an older one"
    refreshes = [
        (n, e) for n, sr in results.items() for e in _token_events(sr.trace.events) if e.grant == "refresh_token"
    ]
    for name, e in refreshes:
        if e.detail.get("refresh_reused"):
            return _fail(
                "warning",
                f"{_A[Role.TOKEN_REQUEST]}: an already rotated refresh token was used",
                expected,
                f"token request #{e.seq} in {name}",
                [e.seq],
                [name],
            )
    if not refreshes:
        return Verdict("not_exercised", "the portal never used a refresh token")
    return _ok(f"{len(refreshes)} refresh(es), each with the newest refresh token")


def sessions_isolated(results: Results, mode: str) -> Verdict:
    if (broken := _baseline_broken(results)) is not None:
        return broken
    name = "two-users"
    if name not in results:
        return _not_run([name])
    sr = results[name]
    expected = "user B's Business Central calls never carry user A's token"
    for v in sr.monitor.violations:
        if v.kind == Kind.FOREIGN_TOKEN:
            return _fail("warning", f"{v.step}: {v.message}", expected, v.message, [v.seq], [name])
    return _ok("each user's calls carried their own token", [name])


def delegate_shared(results: Results, mode: str) -> Verdict:
    if (broken := _baseline_broken(results)) is not None:
        return broken
    name = "two-users"
    if name not in results:
        return _not_run([name])
    sr = results[name]
    expected = (
        "AzDelegate (kit assumption): once the delegate account signed in, every portal user is served "
        "with its token, without signing in again"
    )
    second_user = [i for i, v in enumerate(sr.visits) if v.user != sr.visits[0].user]
    if not second_user:
        return _not_run([name])
    events = _visit_events(sr, second_user[0])
    if _authorize_gets(events):
        return _fail(
            "warning",
            f"{_A[Role.CHECK]}: the second portal user was sent to sign in although the delegate token was valid",
            expected,
            _describe_visit(sr, second_user[0]),
            [e.seq for e in _authorize_gets(events)],
            [name],
        )
    return _ok("the second user was served with the delegate account's token", [name])


def no_leakage(results: Results, mode: str) -> Verdict:
    expected = (
        "the client secret, access and refresh tokens never appear in pages, URLs, or redirects sent to the browser"
    )
    if not any(sr.visits for sr in results.values()):
        return Verdict("not_exercised", "no visit reached the portal")
    for name, sr in results.items():
        for i, v in enumerate(sr.visits):
            if v.leaks:
                return _fail("warning", f"{v.leaks[0]}", expected, "; ".join(v.leaks), [sr.visits[i].end_seq], [name])
    return _ok("no secret or token reached the browser")


def callback_hygiene(results: Results, mode: str) -> Verdict:
    expected = "after the callback the browser is redirected to a URL without the code; Referrer-Policy is set"
    seen = 0
    for name, sr in results.items():
        redirect_path = urlsplit(sr.config.redirect_uri).path
        events = sr.trace.events
        for i, e in enumerate(events):
            if not (e.server == "user" and e.endpoint == "response" and e.path == redirect_path):
                continue
            request_at = max(
                (j for j in range(i) if events[j].server == "user" and events[j].endpoint == "request"), default=0
            )
            redeemed = any(
                x.server == "authority"
                and x.endpoint == "token"
                and x.grant == "authorization_code"
                and x.status == 200
                for x in events[request_at:i]
            )
            if not redeemed or e.status >= 400:  # callbacks whose code the portal redeemed and used
                continue
            seen += 1
            if e.status not in (301, 302, 303, 307, 308):
                return _fail(
                    "warning",
                    f"{_A[Role.CALLBACK]}: the callback page was rendered at the URL that holds the code",
                    expected,
                    f"status {e.status} at the callback",
                    [e.seq],
                    [name],
                )
            if "code=" in e.detail.get("location", ""):
                return _fail(
                    "warning",
                    f"{_A[Role.CALLBACK]}: the redirect after the callback still carries the code",
                    expected,
                    e.detail.get("location", ""),
                    [e.seq],
                    [name],
                )
            if not e.detail.get("referrer_policy"):
                return _fail(
                    "warning",
                    f"{_A[Role.CALLBACK]}: the callback response sets no Referrer-Policy",
                    expected,
                    "no Referrer-Policy header",
                    [e.seq],
                    [name],
                )
    if not seen:
        return Verdict("not_exercised", "no callback with a code reached the portal")
    return _ok(f"{seen} callback(s) redirected to a clean URL with a Referrer-Policy")


def app_token_shared(results: Results, mode: str) -> Verdict:
    name = "two-users"
    if name not in results:
        return _not_run([name])
    if not _bc_events(results[name].trace.events):
        return Verdict("not_exercised", "the portal never called Business Central in scenario two-users")
    shared = any(SHARED_APP_TOKEN.title in v.variants for v in results[name].monitor.visits)
    if shared:
        return _ok("one app token served every session (kinder to the Authority)", [name])
    return _ok("one token request per session (conformant: the tables keep the token in the session)", [name])


_DOC = "Anywhere Portal authorization flows"


def _doc(flow_steps: dict[str, tuple[int, ...]]) -> tuple[str, ...]:
    return tuple(
        f"{_DOC}, {'CC' if f == CC else 'AC'}-{','.join(map(str, s))} <{DOCUMENT_URL}>" for f, s in flow_steps.items()
    )


def _check(
    id: str,
    title: str,
    level: str,
    steps: dict[str, tuple[int, ...]],
    evaluate: Evaluate,
    rfc: tuple[str, ...] = (),
    modes: tuple[str, ...] = ("AzApp", "AzUser", "AzDelegate"),
    scenarios: tuple[str, ...] = (),
) -> Check:
    judge = _and_in_order(evaluate, steps) if level == "MUST" else evaluate
    return Check(id, title, level, steps, _doc(steps) + rfc, judge, modes, scenarios)


def _and_in_order(evaluate: Evaluate, steps: dict[str, tuple[int, ...]]) -> Evaluate:
    """A MUST check also fails when the portal took one of its steps out of the table's order (a step the table
    does not allow from where the portal was): the monitor's ORDER violations, by the step taken."""

    def judge(results: Results, mode: str) -> Verdict:
        verdict = evaluate(results, mode)
        if verdict.outcome != "passed":
            return verdict
        flow = MODES[mode].flow
        ids = {flow.step_id(n) for n in steps.get(flow.key, ())}
        for name, v in _violations(results, (Kind.ORDER,)):
            # A replayed callback is the browser acting outside the tables; what the portal does with it is
            # judged by the SHOULD checks (state-bound, code-used-once), not as a step out of order.
            if v.into in ids and results[name].monitor.visits[v.visit].kind == "visit":
                return _fail("failed", f"{v.into}: taken out of order, after {v.step}", "the steps in the order "
                             f"the table allows: after {v.step}, {', '.join(v.allowed) or 'nothing'}", v.message,
                             [v.seq], [name])
        return verdict

    return judge


ALL = ("AzApp", "AzUser", "AzDelegate")
CODE_MODES = ("AzUser", "AzDelegate")
_ALL_CC = tuple(s.number for s in CLIENT_CREDENTIALS.steps)
_ALL_AC = tuple(s.number for s in AUTHORIZATION_CODE.steps)

CHECKS: tuple[Check, ...] = (
    _check(
        "valid-token-reused",
        "Valid token is reused",
        "MUST",
        _both(Role.CHECK, Role.STORE),
        valid_token_reused,
        scenarios=("valid-token", "much-left"),
    ),
    _check(
        "missing-token-fetched",
        "Missing token is fetched",
        "MUST",
        _steps(cc=(Role.CHECK, Role.TOKEN_REQUEST), ac=(Role.CHECK, Role.REDIRECT)),
        missing_token_fetched,
        scenarios=("missing-token",),
    ),
    _check(
        "expired-token-replaced",
        "Expired token is replaced",
        "MUST",
        _steps(cc=(Role.CHECK, Role.TOKEN_REQUEST), ac=(Role.CHECK, Role.REDIRECT)),
        expired_token_replaced,
        scenarios=("expired-token", "expired-by-hours"),
    ),
    _check(
        "token-request-client-credentials",
        "Token request uses client id and secret",
        "MUST",
        _steps(cc=(Role.TOKEN_REQUEST,)),
        token_request_uses_client_credentials,
        modes=("AzApp",),
    ),
    _check(
        "redirect-to-authority",
        "Redirect to the Authority URI",
        "MUST",
        _steps(ac=(Role.REDIRECT,)),
        redirect_to_authority,
        modes=CODE_MODES,
        scenarios=("missing-token",),
    ),
    _check(
        "login-consent-when-needed",
        "Login and consent only when needed",
        "MUST",
        _steps(ac=(Role.LOGIN, Role.CONSENT)),
        login_and_consent_when_needed,
        modes=CODE_MODES,
        scenarios=_FLOW_SCENARIOS,
    ),
    _check(
        "code-redeemed-server-side",
        "Code is redeemed server side",
        "MUST",
        _steps(ac=(Role.CALLBACK, Role.TOKEN_REQUEST)),
        code_redeemed_server_side,
        modes=CODE_MODES,
        scenarios=("missing-token",),
    ),
    _check(
        "bearer-token-used", "Bearer token is used for Business Central", "MUST", _both(Role.USE), bearer_token_used
    ),
    _check(
        "working-portal",
        "User gets a working portal",
        "MUST",
        _both(Role.WORKING),
        working_portal,
        scenarios=("missing-token", "valid-token", "expired-token"),
    ),
    _check(
        "bc-gets-only-the-access-token",
        "Only the access token goes to Business Central",
        "MUST",
        _both(Role.USE),
        bc_gets_only_the_access_token,
    ),
    _check(
        "token-in-header-only",
        "Token only in the Authorization header",
        "SHOULD",
        _both(Role.USE),
        token_in_header_only,
        ("RFC 6750 §2.1", "RFC 6750 §5.3"),
    ),
    _check(
        "one-retry-on-401",
        "One renewal and one retry on 401",
        "SHOULD",
        _both(Role.USE),
        one_retry_on_401,
        ("RFC 6750 §3.1",),
        scenarios=("bc-revoked-token",),
    ),
    _check(
        "token-errors-handled",
        "Token endpoint errors are handled",
        "SHOULD",
        _steps(cc=(Role.TOKEN_REQUEST, Role.TOKEN_ANSWER), ac=(Role.TOKEN_REQUEST,)),
        token_errors_handled,
        ("RFC 6749 §5.2",),
        scenarios=_ERROR_SCENARIOS,
    ),
    _check(
        "tolerant-parsing",
        "Tolerant parsing of the token response",
        "SHOULD",
        _steps(cc=(Role.TOKEN_ANSWER,), ac=(Role.TOKEN_REQUEST,)),
        tolerant_parsing,
        ("RFC 6749 §5.1", "RFC 6749 §7.1"),
        scenarios=("tolerant-parsing",),
    ),
    _check(
        "state-bound",
        "state present and bound to the session",
        "SHOULD",
        _steps(ac=(Role.REDIRECT, Role.CALLBACK)),
        state_bound,
        ("RFC 6749 §10.12", "RFC 9700 §4.7"),
        CODE_MODES,
        ("wrong-state", "missing-state"),
    ),
    _check(
        "pkce-s256",
        "PKCE with S256",
        "SHOULD",
        _steps(ac=(Role.REDIRECT, Role.TOKEN_REQUEST)),
        pkce_s256,
        ("RFC 7636", "RFC 9700 §2.1.1"),
        CODE_MODES,
    ),
    _check(
        "exact-redirect-uri",
        "Exact redirect URI",
        "SHOULD",
        _steps(ac=(Role.REDIRECT, Role.TOKEN_REQUEST)),
        exact_redirect_uri,
        ("RFC 9700 §2.1",),
        CODE_MODES,
    ),
    _check(
        "code-used-once",
        "Code used once",
        "SHOULD",
        _steps(ac=(Role.TOKEN_REQUEST,)),
        code_used_once,
        ("RFC 6749 §4.1.2", "RFC 9700 §4.2.4"),
        CODE_MODES,
        ("replayed-callback",),
    ),
    _check(
        "consent-denied-handled",
        "Consent denied is handled",
        "SHOULD",
        _steps(ac=(Role.CONSENT, Role.CALLBACK)),
        consent_denied_handled,
        ("RFC 6749 §4.1.2.1",),
        CODE_MODES,
        ("consent-denied",),
    ),
    _check(
        "refresh-token-rotation",
        "Refresh token rotation",
        "SHOULD",
        _steps(ac=(Role.CHECK, Role.TOKEN_REQUEST)),
        refresh_token_rotation,
        ("RFC 9700 §4.14",),
        CODE_MODES,
    ),
    _check(
        "sessions-isolated",
        "Sessions are isolated",
        "SHOULD",
        _steps(ac=(Role.STORE, Role.USE)),
        sessions_isolated,
        ("RFC 6819 §5.3",),
        ("AzUser",),
        ("two-users",),
    ),
    _check(
        "delegate-token-shared",
        "Delegate token serves every user",
        "SHOULD",
        _steps(ac=(Role.CHECK, Role.USE)),
        delegate_shared,
        ("kit assumption: AzDelegate uses one delegate account's token (README)",),
        ("AzDelegate",),
        ("two-users",),
    ),
    _check(
        "no-leakage",
        "No secret or token leakage",
        "SHOULD",
        {CC: _ALL_CC, AC: _ALL_AC},
        no_leakage,
        ("RFC 6749 §10.3", "RFC 6749 §10.4"),
    ),
    _check(
        "callback-hygiene",
        "Callback hygiene",
        "SHOULD",
        _steps(ac=(Role.CALLBACK,)),
        callback_hygiene,
        ("RFC 9700 §4.2.4",),
        CODE_MODES,
    ),
    _check(
        "app-token-shared",
        "Token shared across sessions",
        "MAY",
        _steps(cc=(Role.CHECK,)),
        app_token_shared,
        ("informational: one request per session is conformant",),
        ("AzApp",),
        ("two-users",),
    ),
)


def evaluate(check: Check, results: Results, mode: str) -> Verdict:
    """Run one check. A check that raises is a bug in the kit, never a verdict on the portal: ``InternalError``
    (the run stops with exit 2 and says which check, in which mode)."""
    try:
        verdict = check.evaluate(results, mode)
    except Exception as err:
        import traceback

        from conformance.errors import InternalError

        raise InternalError(
            f"{type(err).__name__}: {err}", f"check {check.id} in {mode}", "".join(traceback.format_exception(err))
        ) from err
    if verdict.outcome == "failed" and check.level != "MUST":
        verdict.outcome = _level(check.level)
    return verdict
