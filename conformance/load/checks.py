"""The load checks: what only many users at once can show, judged from one load run's evidence (the fakes' trace,
with wall times, and what the users saw). Same ``Check`` and ``Verdict`` as the scenario checks (``conformance.
checks``): a flow, steps by role, a level (SHOULD not met → ``warning``), references; a check that saw nothing is
``not_exercised`` with the reason, and every finding names the steps, counts and the users involved.

The page side of cross-talk (a page showing another user's data) is not judged: the fake Business Central serves
the same companies to every user of the tenant, so a page cannot tell whose token fetched it. The token side is.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable

from conformance.checks import Check, Verdict, _both, _doc, _steps
from conformance.load.evidence import LoadEvidence, Visit, principal, uti, wall
from conformance.trace import TraceEvent
from flows import AUTHORIZATION_CODE, MODES, Role

WINDOW_TOLERANCE = 0.05
"""Seconds a Business Central call may lie outside its user's visit (the runner and the fakes read the same wall
clock on this machine; this covers scheduling between a request's timing and its trace event)."""
RENEWALS_PER_SESSION = 1
RENEWAL_TOLERANCE = 1
"""Token requests per session (per application, for an app-wide cache) per expiry: one, plus one tolerated —
two tabs of one session can find the expired token at the same instant, and a portal that holds no lock across the
token request but stores the first answer still sends at most two."""
AMPLIFICATION_FACTOR = 1.25
AMPLIFICATION_SLACK = 2
"""Calls to a throttled principal within Retry-After may exceed the portal's usual calls per visit by 25 % plus
two (a visit that had already passed the throttled call's step) before they count as amplification."""
SHOWN = 8  # users or accounts named in a message; the rest are counted

LoadEvaluate = Callable[[LoadEvidence, str], Verdict]


def _names(items: Iterable[str], shown: int = SHOWN) -> str:
    ordered = list(dict.fromkeys(items))
    more = f" and {len(ordered) - shown} more" if len(ordered) > shown else ""
    return ", ".join(ordered[:shown]) + more


def _step(mode: str, *roles: Role) -> str:
    flow = MODES[mode].flow
    return ", ".join(flow.id_of(r) for r in roles if flow.has(r))


def _numbers(mode: str, *roles: Role) -> list[int]:
    flow = MODES[mode].flow
    return [flow.number(r) for r in roles if flow.has(r)]


def _in_flight(visits: list[Visit], at: float, tolerance: float = WINDOW_TOLERANCE) -> list[str]:
    return sorted({v.user for v in visits if v.start - tolerance <= at <= v.end + tolerance})


def _label_of(evidence: LoadEvidence) -> dict[str, str]:
    """Entra account → the simulated user signed in with it."""
    return {v.account: v.user for v in evidence.visits}


# ------------------------------------------------------------------------------------------ sessions isolated


def sessions_isolated(evidence: LoadEvidence, mode: str) -> Verdict:
    """AzUser: every Business Central call carries a token of a user whose visit was in flight."""
    if mode != "AzUser":
        return Verdict("not_applicable", f"{mode} uses one token for every user by design "
                       f"({MODES[mode].token_holder})")
    calls = [e for e in evidence.bc_calls if e.user]
    if not calls:
        return Verdict("not_exercised", "no Business Central call carried a user's token under load")
    windows: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for v in evidence.visits:
        # A visit the browser gave up on (the run's end, a timeout) may still be served after: its window stays open.
        end = float("inf") if v.stopped or v.problem else v.end + WINDOW_TOLERANCE
        windows[v.account.lower()].append((v.start - WINDOW_TOLERANCE, end))
    labels = {a.lower(): u for a, u in _label_of(evidence).items()}
    foreign: list[TraceEvent] = []
    for call in calls:
        at, own = wall(call), windows.get(call.user.lower(), [])
        if not any(s <= at <= e for s, e in own):
            foreign.append(call)
    use, store = _step(mode, Role.USE), _step(mode, Role.STORE)
    if not foreign:
        return Verdict("passed", f"{use}: all {len(calls)} Business Central calls carried the token of a user whose "
                       f"own visit was in flight ({len({c.user for c in calls})} users)")
    owners = Counter(labels.get(c.user.lower(), c.user) for c in foreign)
    present = Counter(u for c in foreign for u in _in_flight(evidence.visits, wall(c)))
    return Verdict(
        "failed",
        f"{store}/{use}: {len(foreign)} of {len(calls)} Business Central calls carried the token of a user with no "
        f"visit in flight — another user's request used it (a token kept in a global, a cache read without the "
        f"account): tokens of {_names(f'{u} ({n}×)' for u, n in owners.most_common())}; users in flight then: "
        f"{_names(u for u, _ in present.most_common()) or 'none'}",
        f"every call made for a visit carries the token stored in that visit's own session ({store}, {use})",
        f"{len(foreign)} calls with another user's token; owners {_names(owners)}; in flight: "
        f"{_names(u for u, _ in present.most_common())}",
        [c.seq for c in foreign[:20]], steps=_numbers(mode, Role.STORE, Role.USE))


# ------------------------------------------------------------------------------------------ working under load


def _refusals(evidence: LoadEvidence) -> list[float]:
    """When a service refused a call, sorted: the moments an error page is a clean answer rather than the portal's
    own failure. Business Central 429/5xx; the Authority's 429/5xx, and any error to a token request — among them the
    AADSTS70008 a code gets when the kit's clock jumps an hour between a user's sign-in and its redemption."""
    return sorted(wall(e) for e in evidence.events
                  if (e.server == "bc" and (e.status == 429 or e.status >= 500))
                  or (e.server == "authority" and (e.status == 429 or e.status >= 500
                                                   or (e.endpoint == "token" and e.status >= 400))))


def _excused(visit: Visit, refusals: list[float]) -> bool:
    """A service refused a call while the visit was in flight."""
    i = bisect.bisect_left(refusals, visit.start - WINDOW_TOLERANCE)
    return i < len(refusals) and refusals[i] <= visit.end + WINDOW_TOLERANCE


def working_under_load(evidence: LoadEvidence, mode: str) -> Verdict:
    """Every visit ends on a working page, or on a clean error page answered within the request timeout while a
    service was refusing calls (throttled, unavailable): an error page while every service answered is the
    portal's own failure."""
    judged = [v for v in evidence.visits if not v.stopped]
    if not judged:
        return Verdict("not_exercised", "no visit finished during the run")
    refusals = _refusals(evidence)
    working = [v for v in judged if v.on_portal and 200 <= v.status < 300 and not v.problem]
    broken: dict[str, list[Visit]] = defaultdict(list)
    clean: Counter[int] = Counter()
    for v in judged:
        if v in working:
            continue
        if v.problem:
            broken[v.problem.split(":")[0]].append(v)
        elif not v.on_portal:
            broken[f"ended at the Authority (HTTP {v.status})"].append(v)
        elif v.status == 500 or v.status < 400:
            broken[f"HTTP {v.status}"].append(v)
        elif not _excused(v, refusals):
            broken[f"HTTP {v.status} while every service answered"].append(v)
        else:
            clean[v.status] += 1
    never = sorted({v.user for v in judged} - {v.user for v in working})
    page = _step(mode, Role.WORKING)
    clean_text = ", ".join(f"{n}× HTTP {s}" for s, n in sorted(clean.items())) or "none"
    unlucky = f"; {len(never)} users got only error pages while services refused ({_names(never)})" if never else ""
    if not broken:
        return Verdict("passed", f"{page}: {len(working)} of {len(judged)} visits ended on a working page; the "
                       f"others on clean error pages while a service refused calls ({clean_text}){unlucky}")
    kinds = "; ".join(f"{what}: {len(vs)} visits of {_names(v.user for v in vs)}" for what, vs in broken.items())
    bad = [v for vs in broken.values() for v in vs]
    return Verdict(
        "failed", f"{page}: {len(bad)} of {len(judged)} visits under load ended without a page, on a crash or on an "
        f"error page while the services answered ({kinds})", "every visit ends on a working page, or on a clean "
        f"error page (4xx, 502–504) within {evidence.request_timeout:g} s while a service refuses calls",
        f"{len(working)} working, clean errors {clean_text}; {kinds}", steps=_numbers(mode, Role.ACCESS, Role.WORKING))


# ------------------------------------------------------------------------------------------ single-flight renewal


def _epoch_of(evidence: LoadEvidence, at: float) -> int:
    return bisect.bisect_right([e.wall for e in evidence.epochs], at)


def single_flight_renewal(evidence: LoadEvidence, mode: str) -> Verdict:
    """At most one token request per session (or per application) each time the token expires."""
    if not evidence.expiry:
        why = evidence.time_control.partition(": ")[2] or evidence.time_control
        return Verdict("not_exercised", f"tokens did not expire under load: {why}")
    if not evidence.epochs:
        return Verdict("not_exercised", "the run ended before the clock moved (a duration longer than "
                       "--expire-every moves it)")
    limit = RENEWALS_PER_SESSION + RENEWAL_TOLERANCE
    rows = per_expiry(evidence, mode)
    request = _step(mode, Role.TOKEN_REQUEST)
    over = [r for r in rows if r["over"]]
    if not over:
        worst = max((r["max_per_holder"] for r in rows), default=0)
        return Verdict("passed", f"{_step(mode, Role.CHECK)}/{request}: over {len(rows)} expiries, at most {worst} "
                       f"token request(s) per {rows[0]['holder'] if rows else 'session'} per expiry (limit {limit})")
    first = over[0]
    users = _names(u for r in over for u in r["users"])
    return Verdict(
        "failed", f"{request}: token stampede — {first['holder']} {first['worst_holder']} sent "
        f"{first['max_per_holder']} token requests after expiry {first['epoch']} (at most {limit}); "
        f"{len(over)} of {len(rows)} expiries over the limit; users in flight: {users}",
        f"at most {RENEWALS_PER_SESSION} token request per {first['holder']} per expiry (+{RENEWAL_TOLERANCE} "
        "tolerated): the first request renews, the others wait for it (single-flight)",
        "; ".join(f"expiry {r['epoch']}: {r['token_requests']} requests, max {r['max_per_holder']} per "
                  f"{r['holder']}" for r in over[:6]),
        [e for r in over for e in r["seqs"]][:20], steps=_numbers(mode, Role.CHECK, Role.TOKEN_REQUEST))


def per_expiry(evidence: LoadEvidence, mode: str) -> list[dict]:
    """Token requests after each clock move, per token holder: the account (code flow), the application (an
    app-wide cache: fewer distinct tokens reached Business Central than sessions worked — some shared one) or the
    session (AzApp with a cache per session, where a token request names no session: the total against the
    sessions that worked)."""
    grants = ("client_credentials",) if mode == "AzApp" else ("refresh_token", "authorization_code")
    bounds = [e.wall for e in evidence.epochs] + [math.inf]
    limit = RENEWALS_PER_SESSION + RENEWAL_TOLERANCE
    rows = []
    for i, epoch in enumerate(evidence.epochs):
        lo, hi = epoch.wall, bounds[i + 1]
        requests = [e for e in evidence.token_requests if e.grant in grants and lo <= wall(e) < hi]
        visits = [v for v in evidence.visits if lo <= v.end < hi]
        sessions = {v.session for v in visits if v.on_portal and 200 <= v.status < 300}
        tokens = {uti(e) for e in evidence.bc_calls if lo <= wall(e) < hi and e.status < 400 and uti(e)}
        in_flight = sorted({u for e in requests for u in _in_flight(evidence.visits, wall(e))})
        if mode == "AzApp":
            app_wide = 0 < len(tokens) < len(sessions)
            holder = "application" if app_wide else "session"
            allowed = limit if app_wide else limit * max(1, len({v.session for v in visits}))
            count = len(requests)
            worst, most = ("the app" if app_wide else f"the {len(sessions)} sessions"), (
                count if app_wide else math.ceil(count / max(1, len(sessions))))
            over = count > allowed
        else:
            by = Counter(e.user.lower() for e in requests)
            labels = {a.lower(): u for a, u in _label_of(evidence).items()}
            holder = "account" if mode == "AzUser" else "delegate account"
            (account, most) = by.most_common(1)[0] if by else ("", 0)
            worst = labels.get(account, account)
            over = most > limit
            in_flight = [labels.get(a, a) for a, n in by.items() if n > limit] or in_flight
        rows.append({"epoch": epoch.index, "token_requests": len(requests), "sessions": len(sessions),
                     "tokens_at_bc": len(tokens), "holder": holder, "worst_holder": worst, "max_per_holder": most,
                     "over": over, "users": in_flight, "seqs": [e.seq for e in requests]})
    return rows


# ------------------------------------------------------------------------------------------ throttling honoured


def throttling_honoured(evidence: LoadEvidence, mode: str) -> Verdict:
    """After a 429 with Retry-After, no more calls by the throttled principal than its visits would make anyway."""
    throttled = [e for e in evidence.bc_calls if e.status == 429 and e.detail.get("retry_after")]
    use = _step(mode, Role.USE)
    if not throttled:
        return Verdict("not_exercised", f"Business Central never answered 429: the load stayed under its limit "
                       f"({evidence.throttle.calls_per_user} calls per user in {evidence.throttle.window:g} s)")
    windows = _windows(evidence, throttled)
    calls_by = defaultdict(list)
    for e in evidence.bc_calls:
        calls_by[principal(e)].append(e)
    inside_calls: list[TraceEvent] = []
    inside_visits: dict[str, set[int]] = defaultdict(set)
    outside = 0
    for who, calls in calls_by.items():
        spans = windows.get(who, [])
        for e in calls:
            if any(t0 < e.time < t1 for t0, t1, _, _ in spans):
                inside_calls.append(e)
            else:
                outside += 1
        for _, _, w0, w1 in spans:
            inside_visits[who] |= {id(v) for v in _visits_of(evidence, mode, who) if v.start <= w1 and v.end >= w0}
    visits_in = sum(len(s) for s in inside_visits.values())
    visits_out = max(1, len(evidence.visits) - visits_in)
    per_visit = max(1.0, outside / visits_out)
    expected = per_visit * visits_in * AMPLIFICATION_FACTOR + AMPLIFICATION_SLACK
    by = Counter(principal(e) for e in inside_calls)
    excess = {w: n - per_visit * len(inside_visits[w]) for w, n in by.items()}
    if len(inside_calls) <= expected:
        return Verdict("passed", f"{use}: {len(throttled)} answers 429 with Retry-After; within Retry-After "
                       f"{len(inside_calls)} calls came for {visits_in} visits in flight (the portal's usual "
                       f"{per_visit:.1f} calls per visit): no retries at once, no amplification")
    labels = {a.lower(): u for a, u in _label_of(evidence).items()}
    worst = sorted(excess, key=excess.get, reverse=True)  # type: ignore[arg-type]
    users = _names(u for w in worst for u in sorted({v.user for v in _visits_of(evidence, mode, w)
                                                     if id(v) in inside_visits[w]}))
    principals = _names(f"{labels.get(w.lower(), w)} ({by[w]} calls)" for w in worst)
    return Verdict(
        "failed", f"{use}: after {len(throttled)} answers 429 with Retry-After, {len(inside_calls)} calls came before "
        f"Retry-After elapsed for only {visits_in} visits in flight (usually {per_visit:.1f} calls per visit): the "
        f"portal retries at once or multiplies calls; throttled: {principals}; users: {users}",
        f"no call to a throttled principal before Retry-After elapses, beyond the calls new visits make "
        f"(at most {expected:.0f} here)", f"{len(inside_calls)} calls within Retry-After for {visits_in} visits",
        [e.seq for e in inside_calls[:20]], steps=_numbers(mode, Role.USE))


def _windows(evidence: LoadEvidence, throttled: list[TraceEvent]) -> dict[str, list[tuple[float, float, float, float]]]:
    """Per principal: (virtual start, virtual end, wall start, wall end) of each Retry-After, overlaps merged."""
    out: dict[str, list[tuple[float, float, float, float]]] = defaultdict(list)
    jumps = [e.wall for e in evidence.epochs]
    for e in sorted(throttled, key=lambda e: e.time):
        try:
            wait = float(e.detail["retry_after"])
        except (TypeError, ValueError):
            continue
        w0 = wall(e)
        nxt = jumps[bisect.bisect_right(jumps, w0)] if bisect.bisect_right(jumps, w0) < len(jumps) else math.inf
        span = (e.time, e.time + wait, w0, min(w0 + wait, nxt))
        spans = out[principal(e)]
        if spans and span[0] <= spans[-1][1]:
            last = spans[-1]
            spans[-1] = (last[0], max(last[1], span[1]), last[2], max(last[3], span[3]))
        else:
            spans.append(span)
    return out


def _visits_of(evidence: LoadEvidence, mode: str, who: str) -> list[Visit]:
    """The visits whose calls count against a principal: its own user's (AzUser), everyone's otherwise."""
    if mode == "AzUser":
        return [v for v in evidence.visits if v.account.lower() == who.lower()]
    return evidence.visits


# ------------------------------------------------------------------------------------------ registry


LOAD = "bc-conformance load: many users at once, each with a session of its own"
EXPIRING = (f"{LOAD}, while the kit moves the portal's clock past every token's expiry (--portal-cmd with "
            "libfaketime)")


def _load_check(id: str, title: str, level: str, steps: dict[str, tuple[int, ...]], evaluate: LoadEvaluate,
                refs: tuple[str, ...], modes: tuple[str, ...] = ("AzApp", "AzUser", "AzDelegate"),
                needs: str = LOAD) -> Check:
    return Check(id, title, level, steps, _doc(steps) + refs, evaluate, modes,  # type: ignore[arg-type]
                 needs=needs)


LOAD_CHECKS: tuple[Check, ...] = (
    _load_check("sessions-isolated-under-load", "Sessions isolated under load", "MUST",
                _steps(ac=(Role.STORE, Role.USE)), sessions_isolated,
                (f"{AUTHORIZATION_CODE.id_of(Role.STORE)} stores the token in the session: one user's token never "
                 "serves another",), ("AzUser",)),
    _load_check("working-under-load", "Working under load", "MUST", _both(Role.ACCESS, Role.WORKING),
                working_under_load, ("a clean, bounded error page when a service is busy",)),
    _load_check("single-flight-renewal", "Single-flight token renewal", "SHOULD",
                _both(Role.CHECK, Role.TOKEN_REQUEST), single_flight_renewal,
                ("AADSTS50196: Entra treats repeated identical token requests as a client request loop",
                 "MSAL token cache guidance: acquire tokens silently, once"), needs=EXPIRING),
    _load_check("throttling-honoured", "Throttling honoured", "SHOULD", _both(Role.USE), throttling_honoured,
                ("RFC 9110 §10.2.3 Retry-After", "Business Central API limits: 429 Too Many Requests")),
)
