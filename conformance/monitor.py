"""The flow machine *judging*: a scenario's trace is folded, visit by visit, through the shared machine of the
flow (one model per portal session). Which wire event evidences which step comes from the observation map next
to the tables (``flows.observations``), found by role, so no step number is written here; the accepted variants
are named edges of the machine. An event the table does not allow — or whose branch condition does not hold — is
a ``Violation``: a kind, the step the portal was at, the step it took, the steps allowed, and the facts.

Unobservable steps are judged by what follows them: the "checks" step by whether the portal went to the
Authority or straight to Business Central, the "stores" step by the token that reaches Business Central.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from conformance.trace import TraceEvent
from flows import DENIED, IDLE, Flow, Mode, Role, StepNotAllowed, current_step, machine_for, trigger_for
from flows.observations import (
    EARLY_RENEWAL,
    REFRESH_RENEWAL,
    RENEWAL_MARGIN,
    RESTART,
    RETRY_AFTER_401,
    SHARED_APP_TOKEN,
)


class Kind(StrEnum):
    """What went wrong; checks select violations by kind, never by their message."""

    NOT_REUSED = "not-reused"  # a valid stored token was not used: a new token or sign-in instead
    NO_TOKEN = "no-token"  # Business Central received no bearer token
    EXPIRED_TOKEN = "expired-token"  # Business Central received an expired token
    NOT_ACCESS_TOKEN = "not-access-token"  # an ID token, refresh token, code or secret as the bearer token
    NOT_ISSUED = "not-issued"  # a token the Authority never issued to this portal
    FOREIGN_TOKEN = "foreign-token"  # another user's token (AzUser), not the delegate's (AzDelegate)
    WRONG_PRINCIPAL = "wrong-principal"  # an app token where a user's belongs, or the reverse
    ORDER = "order"  # a step the table does not allow from where the portal was


@dataclass
class TokenInfo:
    uti: str
    exp: float
    principal: str  # username for delegated tokens, "app" for app tokens
    session: str
    grant: str
    seq: int
    refused: bool = False  # Business Central answered 401 to it while unexpired


BAD_TOKEN = frozenset({Kind.NO_TOKEN, Kind.EXPIRED_TOKEN, Kind.NOT_ACCESS_TOKEN, Kind.NOT_ISSUED,
                       Kind.FOREIGN_TOKEN, Kind.WRONG_PRINCIPAL})


@dataclass
class Violation:
    step: str  # the id of the step where the portal was (``Flow.step_id``)
    into: str  # the id of the step it took
    seq: int  # the trace event that showed it
    kind: Kind
    message: str
    visit: int
    allowed: tuple[str, ...] = ()  # the steps the table allows from ``step``
    facts: dict[str, Any] = field(default_factory=dict)  # e.g. {"seconds_left": 3590} or {"principal": "bob"}


@dataclass
class VisitSteps:
    index: int
    session: str
    user: str
    account: str  # who signs in at the Authority for this user (the delegate account in AzDelegate)
    kind: str
    steps: list[int | str] = field(default_factory=list)
    variants: list[str] = field(default_factory=list)
    completed: bool = False


@dataclass
class MonitorResult:
    visits: list[VisitSteps]
    violations: list[Violation]
    step_of: dict[int, str]  # trace seq → step id it evidences
    tokens: dict[str, TokenInfo]

    @property
    def visited(self) -> set[int]:
        return {s for v in self.visits for s in v.steps if isinstance(s, int)}


class _Session:
    """One portal session as a model of the flow machine; its attributes are the table's conditions."""

    def __init__(self, name: str):
        self.name = name
        self.token_valid = self.signed_in = self.consented = self.consent_denied = False
        self.token: str = ""  # uti of the token this session stored (evidence: it reached Business Central)


class _Judge:
    def __init__(self, flow: Flow, mode: Mode, events: list[TraceEvent], visits: list[Any]):
        self.flow, self.mode, self.events, self.visits = flow, mode, events, visits
        self._seqs = [e.seq for e in events]
        self.machine = machine_for(flow)
        self.sessions: dict[str, _Session] = {}
        self.tokens: dict[str, TokenInfo] = {}
        self.violations: list[Violation] = []
        self.step_of: dict[int, str] = {}
        self.delegate_token = ""
        self.out: list[VisitSteps] = []
        self.code_flow = flow.has(Role.REDIRECT)  # the user is sent to the Authority (AC) or not (CC)
        self.step_use, self.step_request = flow.number(Role.USE), flow.number(Role.TOKEN_REQUEST)
        self.step_store, self.step_last = flow.number(Role.STORE), flow.number(Role.WORKING)
        self.step_check = flow.number(Role.CHECK)
        self.step = {step.role: step.number for step in flow.steps}  # every step of the flow, by role

    # ---------------------------------------------------------------- machine moves

    def fire(self, model: _Session, dest: int | str, event: TraceEvent | None, vs: VisitSteps,
             **conditions: bool) -> None:
        for name, value in conditions.items():
            setattr(model, name, value)
        here = current_step(model)
        try:
            model.trigger(trigger_for(dest))
        except StepNotAllowed as err:
            self._violate(here, dest, event, vs, Kind.ORDER, str(err), allowed=tuple(err.allowed))
            # The one jump outside the table: the portal is where it went, and the rest is judged from there.
            self.machine.set_state(str(dest), model=model)
        vs.steps.append(dest)
        if event is not None:
            self.step_of.setdefault(event.seq, self._id(dest))

    def take_variant(self, model: _Session, variant: Any, vs: VisitSteps) -> None:
        """Move along an accepted variant's edge (``flows.observations``) and name it in the visit's steps."""
        model.trigger(variant.trigger)
        if variant.title not in vs.variants:
            vs.variants.append(variant.title)

    def _id(self, step: int | str) -> str:
        return self.flow.step_id(step) if isinstance(step, int) else str(step)

    def _violate(self, here: int | str, dest: int | str, event: TraceEvent | None, vs: VisitSteps, kind: Kind,
                 message: str, allowed: tuple[str, ...] = (), **facts: Any) -> None:
        self.violations.append(Violation(self._id(here) if here != IDLE else "start", self._id(dest),
                                         event.seq if event else 0, kind, message, vs.index, allowed, facts))

    # ---------------------------------------------------------------- token knowledge

    def stored(self, model: _Session) -> TokenInfo | None:
        uti = self.delegate_token if self.mode.token_holder == "delegate account" else model.token
        return self.tokens.get(uti)

    def stored_is_valid(self, model: _Session, now: float) -> tuple[bool, str, float | None]:
        """Whether the session's stored token must be reused now, why, and the seconds it had left."""
        token = self.stored(model)
        if token is None:
            return False, "the session held no token", None
        left = token.exp - now
        if token.refused:
            return False, "Business Central had refused the session's token", left
        if left <= 0:
            return False, f"the session's token had expired {-left:.0f} s before", left
        if left <= RENEWAL_MARGIN:
            return False, f"the session's token had {left:.0f} s left (within the {RENEWAL_MARGIN} s margin)", left
        return True, f"the session held a valid token with {left:.0f} s left", left

    def judge_bc_token(self, model: _Session, event: TraceEvent, vs: VisitSteps) -> tuple[Kind | None, str]:
        """The kind of fault of the token this Business Central call carried (None: the one this session may use,
        unexpired), and what it was."""
        uti = next((r.split(":", 1)[1] for r in event.redeemed if r.startswith("at:")), "")
        token = self.tokens.get(uti)
        bearer_kind = event.detail.get("bearer_kind", "")
        if bearer_kind and bearer_kind != "access token":
            return (Kind.NOT_ACCESS_TOKEN,
                    f"Business Central received {event.detail.get('bearer')} (not an access token)")
        if not uti:
            return Kind.NO_TOKEN, "Business Central received no bearer token"
        if token is None:
            return Kind.NOT_ISSUED, "Business Central received a token the Authority never issued to this portal"
        if token.exp <= event.time:
            return (Kind.EXPIRED_TOKEN,
                    f"Business Central received a token that had expired {event.time - token.exp:.0f} s before")
        if self.mode.token_holder == "delegate account":
            if token.principal == "app":
                return (Kind.WRONG_PRINCIPAL,
                        "Business Central received an app token where the delegate account's token belongs")
            if token.principal.lower() != vs.account.lower():
                return Kind.FOREIGN_TOKEN, f"Business Central received {token.principal}'s token, not the delegate's"
            return None, "the delegate account's token"
        if self.mode.token_holder == "user session":
            account = vs.account
            if token.principal == "app":
                return Kind.WRONG_PRINCIPAL, f"Business Central received an app token during {account}'s visit"
            if token.principal.lower() != account.lower():
                return (Kind.FOREIGN_TOKEN,
                        f"Business Central received {token.principal}'s token during {account}'s visit")
            return None, "the user's own token"
        if token.principal != "app":
            return Kind.WRONG_PRINCIPAL, "Business Central received a delegated token instead of the app token"
        if token.session != vs.session and token.uti != model.token and SHARED_APP_TOKEN.title not in vs.variants:
            vs.variants.append(SHARED_APP_TOKEN.title)
        return None, "the app token"

    def learn_token(self, event: TraceEvent, vs: VisitSteps) -> str:
        uti = next((i.split(":", 1)[1] for i in event.issued if i.startswith("at:")), "")
        if uti:
            lifetime = float(event.detail.get("expires_in", 0) or 0)
            principal = event.user or "app"
            self.tokens[uti] = TokenInfo(uti, event.time + lifetime, principal, vs.session, event.grant, event.seq)
        return uti

    # ---------------------------------------------------------------- observations

    def between(self, first: int, last: int) -> list[TraceEvent]:
        """Events with ``first <= seq <= last`` (the trace is in seq order)."""
        seqs = self._seqs
        return self.events[bisect.bisect_left(seqs, first):bisect.bisect_right(seqs, last)]

    def observations(self, visit: Any) -> list[tuple[str, TraceEvent]]:
        out: list[tuple[str, TraceEvent]] = []
        for event in self.between(visit.start_seq + 1, visit.end_seq - 1):
            if event.server == "authority" and event.endpoint == "token":
                out.append(("token", event))
            elif event.server == "authority" and event.endpoint == "authorize" and self.code_flow:
                # The Client Credentials Flow has no step a sign-in evidences: a portal that sends the user to the
                # Authority anyway is judged by its token requests and Business Central calls.
                out.append(("authorize", event))
            elif event.server == "bc":
                out.append(("bc", event))
        return out

    def run(self) -> MonitorResult:
        for index, visit in enumerate(self.visits):
            vs = VisitSteps(index, visit.session, visit.user, visit.account, visit.kind)
            self.out.append(vs)
            model = self.sessions.get(visit.session)
            if model is None:
                model = self.sessions[visit.session] = _Session(visit.session)
                self.machine.attach(model)
            self.judge_visit(model, visit, vs)
        for model in self.sessions.values():
            self.machine.detach(model)
        return MonitorResult(self.out, self.violations, self.step_of, self.tokens)

    def _check_step(self, model: _Session, event: TraceEvent, vs: VisitSteps, renewal: str) -> None:
        """The "checks" step, judged by what the portal did next: it went for a new token (``renewal``). That was
        right unless the stored token was valid with more than the renewal margin left."""
        valid, why, left = self.stored_is_valid(model, event.time)
        self.fire(model, self.step_check, None, vs, token_valid=False)
        into = self.step_request if not self.code_flow or event.endpoint == "token" else self.step[Role.REDIRECT]
        if valid:
            self._violate(self.step_check, into, event, vs, Kind.NOT_REUSED, f"{why}, yet {renewal}",
                          seconds_left=left)
        elif left is not None and 0 < left <= RENEWAL_MARGIN:
            vs.variants.append(EARLY_RENEWAL.title)

    def judge_visit(self, model: _Session, visit: Any, vs: VisitSteps) -> None:
        inside = self.between(visit.start_seq, visit.end_seq)
        end = inside[-1] if inside and inside[-1].seq == visit.end_seq else None
        first_request = next((e for e in inside if e.server == "user" and e.endpoint == "request"), None)
        access = self.step[Role.ACCESS]
        if visit.kind == "visit":
            if current_step(model) not in (IDLE, DENIED, self.step_last):
                # The previous access stopped mid-flow (an error page, a failed sign-in): the user starts over
                # (a fresh start, not a refinement worth naming in the visit's variants).
                model.trigger(RESTART.trigger)
                vs.steps.append(access)
                if first_request is not None:
                    self.step_of.setdefault(first_request.seq, self._id(access))
            else:
                self.fire(model, access, first_request, vs)
        use_step = self.step_use
        last_bc_refused = False
        pending: str = ""  # token obtained in this visit, not yet seen at Business Central
        auth: dict[str, Any] = {}
        for kind, event in self.observations(visit):
            here = current_step(model)
            if kind == "token":
                if here == access:
                    self._check_step(model, event, vs, "the portal asked the Authority for a new one "
                                     f"(grant {event.grant or '?'}) instead of using it")
                    here = self.step_check
                if here == use_step and last_bc_refused:
                    self.take_variant(model, RETRY_AFTER_401, vs)
                    here = self.step_check
                if not self.code_flow:
                    if here != self.step_request:
                        self.fire(model, self.step_request, event, vs, token_valid=False)
                    else:
                        self.step_of.setdefault(event.seq, self._id(self.step_request))
                    if event.status == 200:
                        pending = self.learn_token(event, vs)
                        self.fire(model, self.step[Role.TOKEN_ANSWER], event, vs)
                elif event.grant == "refresh_token" and here == self.step_check:
                    self.take_variant(model, REFRESH_RENEWAL, vs)
                    self.step_of.setdefault(event.seq, self._id(self.step_request))
                    vs.steps.append(self.step_request)
                    if event.status == 200:
                        pending = self.learn_token(event, vs)
                else:
                    if here != self.step_request:
                        self.fire(model, self.step_request, event, vs)
                    else:
                        self.step_of.setdefault(event.seq, self._id(self.step_request))
                    if event.status == 200:
                        pending = self.learn_token(event, vs)
            elif kind == "authorize":
                stage = event.detail.get("stage", "")
                redirect = self.step[Role.REDIRECT]
                if event.method == "GET" and stage not in ("", "error_page"):
                    if here == access:
                        self._check_step(model, event, vs, "the portal sent the user to the Authority for a new one")
                        here = self.step_check
                    if here == use_step and last_bc_refused:
                        self.take_variant(model, RETRY_AFTER_401, vs)
                    elif here not in (self.step_check, IDLE, DENIED, self.step_last):
                        fresh = self.tokens.get(pending)
                        if fresh is not None and fresh.exp - event.time > RENEWAL_MARGIN:
                            self._violate(here, redirect, event, vs, Kind.NOT_REUSED,
                                          f"the portal had just obtained a token with {fresh.exp - event.time:.0f} s "
                                          "left, yet it sent the user to the Authority again instead of using it",
                                          seconds_left=fresh.exp - event.time)
                    self.fire(model, redirect, event, vs, token_valid=False)
                    auth = {}
                if stage == "login_form":
                    auth["login"] = True
                if event.detail.get("signed_in_now"):
                    auth["login_event"] = event
                if stage == "consent_form":
                    auth["consent"] = True
                if event.detail.get("consent_denied") or stage == "code_issued":
                    if auth.get("login"):
                        self.fire(model, self.step[Role.LOGIN], auth.get("login_event", event), vs,
                                  signed_in=False)
                    if auth.get("consent") or event.detail.get("consent_denied"):
                        self.fire(model, self.step[Role.CONSENT], event, vs, signed_in=not auth.get("login"),
                                  consented=False)
                    if event.detail.get("consent_denied"):
                        self.fire(model, DENIED, event, vs, consent_denied=True)
                    else:
                        # The callback step is the browser arriving at the RedirectURI: its next request.
                        arrival = next((e for e in inside if e.seq > event.seq and e.server == "user"
                                        and e.endpoint == "request"), event)
                        self.fire(model, self.step[Role.CALLBACK], arrival, vs, signed_in=True,
                                  consented=True, consent_denied=False)
                    auth = {}
            elif kind == "bc":
                fault, why = self.judge_bc_token(model, event, vs)
                if here == access:
                    self.fire(model, self.step_check, None, vs, token_valid=fault is None)
                    if fault is not None:
                        self._violate(self.step_check, use_step, event, vs, fault,
                                      f"the portal went straight to Business Central, and {why}")
                    self.fire(model, use_step, event, vs, token_valid=True)
                    model.token_valid = fault is None
                elif here == use_step:
                    self.step_of.setdefault(event.seq, self._id(use_step))
                    if fault is not None:
                        self._violate(use_step, use_step, event, vs, fault, why)
                else:
                    answer = self.step[Role.TOKEN_ANSWER] if not self.code_flow else self.step_request
                    if here == answer:
                        self.fire(model, self.step_store, None, vs)
                    self.fire(model, use_step, event, vs, token_valid=True)
                    if fault is not None:
                        self._violate(current_step(model), use_step, event, vs, fault, why)
                uti = next((r.split(":", 1)[1] for r in event.redeemed if r.startswith("at:")), "")
                if uti and uti == pending:
                    self._store(model, uti)
                    pending = ""
                elif uti and uti in self.tokens and event.status == 200 and not model.token:
                    self._store(model, uti)
                last_bc_refused = event.status == 401
                if last_bc_refused and uti in self.tokens and self.tokens[uti].exp > event.time:
                    self.tokens[uti].refused = True
        if (end is not None and 200 <= end.status < 300 and current_step(model) == use_step
                and not last_bc_refused):
            self.fire(model, self.step_last, end, vs)
            vs.completed = True

    def _store(self, model: _Session, uti: str) -> None:
        if self.mode.token_holder == "delegate account":
            self.delegate_token = uti
        model.token = uti


def monitor(flow: Flow, mode: Mode, events: list[TraceEvent], visits: list[Any]) -> MonitorResult:
    """Judge a scenario's trace against the flow's step table."""
    return _Judge(flow, mode, events, visits).run()
