"""The flow machine *judging*: a scenario's trace is turned into step events and fed, visit by visit, to the
shared machine of the flow (one model per portal session). An event the table does not allow — or whose
branch condition does not hold — is a violation naming the step the portal was at and the steps allowed next.

Unobservable steps are judged by what follows them: CC-2/AC-2 ("checks") by whether the portal went to
the Authority or straight to Business Central, CC-5/AC-8 ("stores") by the token that reaches Business
Central. Accepted variants (named in the results): renewal within MSAL's 300 s margin, one app token shared
by all sessions (AzApp), silent renewal with a refresh token (AzUser/AzDelegate), and a fresh token after
Business Central refused an unexpired one.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

from conformance.trace import TraceEvent
from flows import DENIED, IDLE, Flow, Mode, StepNotAllowed, current_step, machine_for, trigger_for

RENEWAL_MARGIN = 300  # seconds: MSAL treats a token with less left as expired; renewing then is conformant

VARIANT_EARLY_RENEWAL = "early renewal (under 300 s left)"
VARIANT_SHARED_APP_TOKEN = "one app token shared by all sessions"
VARIANT_REFRESH = "silent renewal with a refresh token (stands in for AC-3…AC-7)"
VARIANT_RETRY_401 = "new token after Business Central refused an unexpired one"


@dataclass
class TokenInfo:
    uti: str
    exp: float
    principal: str  # username for delegated tokens, "app" for app tokens
    session: str
    grant: str
    seq: int
    refused: bool = False  # Business Central answered 401 to it while unexpired


@dataclass
class Violation:
    step: str  # where the portal was, e.g. "CC-2"
    into: str  # the step it tried to take, e.g. "CC-3"
    seq: int  # the trace event that showed it
    kind: str  # "not-reused" | "bad-token" | "order"
    message: str
    visit: int


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
        self.cc = flow.prefix == "CC"

    # ---------------------------------------------------------------- machine moves

    def fire(self, model: _Session, dest: int | str, event: TraceEvent | None, vs: VisitSteps,
             **conditions: bool) -> None:
        for name, value in conditions.items():
            setattr(model, name, value)
        here = current_step(model)
        try:
            model.trigger(trigger_for(dest))
        except StepNotAllowed as err:
            self._violate(here, dest, event, vs, "order", str(err))
            self.machine.set_state(str(dest), model=model)  # judge the rest from where the portal went
        vs.steps.append(dest)
        if event is not None:
            self.step_of.setdefault(event.seq, self._id(dest))

    def _id(self, step: int | str) -> str:
        return self.flow.step_id(step) if isinstance(step, int) else str(step)

    def _violate(self, here: int | str, dest: int | str, event: TraceEvent | None, vs: VisitSteps, kind: str,
                 message: str) -> None:
        self.violations.append(Violation(self._id(here) if here != IDLE else "start", self._id(dest),
                                         event.seq if event else 0, kind, message, vs.index))

    # ---------------------------------------------------------------- token knowledge

    def holder(self, vs: VisitSteps) -> str:
        return "delegate" if self.mode.token_holder == "delegate account" else vs.session

    def stored(self, model: _Session) -> TokenInfo | None:
        uti = self.delegate_token if self.mode.token_holder == "delegate account" else model.token
        return self.tokens.get(uti)

    def stored_is_valid(self, model: _Session, now: float) -> tuple[bool, str]:
        token = self.stored(model)
        if token is None:
            return False, "the session held no token"
        left = token.exp - now
        if token.refused:
            return False, "Business Central had refused the session's token"
        if left <= 0:
            return False, f"the session's token had expired {-left:.0f} s before"
        if left <= RENEWAL_MARGIN:
            return False, f"the session's token had {left:.0f} s left (within the {RENEWAL_MARGIN} s margin)"
        return True, f"the session held a valid token with {left:.0f} s left"

    def judge_bc_token(self, model: _Session, event: TraceEvent, vs: VisitSteps) -> tuple[bool, str]:
        """Is the token this Business Central call carried the one this session may use, and unexpired?"""
        uti = next((r.split(":", 1)[1] for r in event.redeemed if r.startswith("at:")), "")
        token = self.tokens.get(uti)
        bearer_kind = event.detail.get("bearer_kind", "")
        if bearer_kind and bearer_kind != "access token":
            return False, f"Business Central received {event.detail.get('bearer')} (not an access token)"
        if not uti:
            return False, "Business Central received no bearer token"
        if token is None:
            return False, "Business Central received a token the Authority never issued to this portal"
        if token.exp <= event.time:
            return False, f"Business Central received a token that had expired {event.time - token.exp:.0f} s before"
        if self.mode.token_holder == "delegate account":
            if token.principal == "app":
                return False, "Business Central received an app token where the delegate account's token belongs"
            if token.principal.lower() != vs.account.lower():
                return False, f"Business Central received {token.principal}'s token, not the delegate account's"
            return True, "the delegate account's token"
        if self.mode.token_holder == "user session":
            account = vs.account
            if token.principal.lower() != account.lower():
                return False, f"Business Central received {token.principal}'s token during {account}'s visit"
            return True, "the user's own token"
        if token.principal != "app":
            return False, "Business Central received a delegated token instead of the app token"
        if token.session != vs.session and token.uti != model.token and VARIANT_SHARED_APP_TOKEN not in vs.variants:
            vs.variants.append(VARIANT_SHARED_APP_TOKEN)
        return True, "the app token"

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
            elif event.server == "authority" and event.endpoint == "authorize":
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

    def judge_visit(self, model: _Session, visit: Any, vs: VisitSteps) -> None:
        inside = self.between(visit.start_seq, visit.end_seq)
        end = inside[-1] if inside and inside[-1].seq == visit.end_seq else None
        first_request = next((e for e in inside if e.server == "user" and e.endpoint == "request"), None)
        if visit.kind == "visit":
            if current_step(model) not in (IDLE, DENIED, self.flow.steps[-1].number):
                # The previous access stopped mid-flow (an error page, a failed sign-in): the user starts over.
                self.machine.set_state(IDLE, model=model)
            self.fire(model, 1, first_request, vs)
        last_step = self.flow.steps[-1].number
        use_step = 6 if self.cc else 9
        last_bc_refused = False
        pending: str = ""  # token obtained in this visit, not yet seen at Business Central
        auth: dict[str, Any] = {}
        for kind, event in self.observations(visit):
            here = current_step(model)
            if kind == "token":
                if here == 1:
                    valid, why = self.stored_is_valid(model, event.time)
                    self.fire(model, 2, None, vs, token_valid=False)
                    if valid:
                        self._violate(2, 3 if self.cc else 7, event, vs, "not-reused",
                                      f"{why}, yet the portal asked the Authority for a new one "
                                      f"(grant {event.grant or '?'}) instead of using it")
                    elif "margin" in why:
                        vs.variants.append(VARIANT_EARLY_RENEWAL)
                    here = 2
                if here in (use_step,) and last_bc_refused:
                    vs.variants.append(VARIANT_RETRY_401)
                    self.machine.set_state("2", model=model)
                    here = 2
                if self.cc:
                    if here != 3:
                        self.fire(model, 3, event, vs, token_valid=False)
                    else:
                        self.step_of.setdefault(event.seq, "CC-3")
                    if event.status == 200:
                        pending = self.learn_token(event, vs)
                        self.fire(model, 4, event, vs)
                elif event.grant == "refresh_token" and here == 2:
                    vs.variants.append(VARIANT_REFRESH)
                    self.machine.set_state("6", model=model)
                    self.fire(model, 7, event, vs)
                    if event.status == 200:
                        pending = self.learn_token(event, vs)
                else:
                    if here != 7:
                        self.fire(model, 7, event, vs)
                    else:
                        self.step_of.setdefault(event.seq, "AC-7")
                    if event.status == 200:
                        pending = self.learn_token(event, vs)
            elif kind == "authorize":
                stage = event.detail.get("stage", "")
                if event.method == "GET" and stage not in ("", "error_page"):
                    if here == 1:
                        valid, why = self.stored_is_valid(model, event.time)
                        self.fire(model, 2, None, vs, token_valid=False)
                        if valid:
                            self._violate(2, 3, event, vs, "not-reused",
                                          f"{why}, yet the portal sent the user to the Authority for a new one")
                        elif "margin" in why:
                            vs.variants.append(VARIANT_EARLY_RENEWAL)
                        here = 2
                    if here == use_step and last_bc_refused:
                        vs.variants.append(VARIANT_RETRY_401)
                        self.machine.set_state("2", model=model)
                    elif here not in (2, IDLE, DENIED, self.flow.steps[-1].number):
                        fresh = self.tokens.get(pending)
                        if fresh is not None and fresh.exp - event.time > RENEWAL_MARGIN:
                            self._violate(here, 3, event, vs, "not-reused",
                                          f"the portal had just obtained a token with {fresh.exp - event.time:.0f} s "
                                          "left, yet it sent the user to the Authority again instead of using it")
                    self.fire(model, 3, event, vs, token_valid=False)
                    auth = {}
                if stage == "login_form":
                    auth["login"] = True
                if event.detail.get("signed_in_now"):
                    auth["login_event"] = event
                if stage == "consent_form":
                    auth["consent"] = True
                if event.detail.get("consent_denied") or stage == "code_issued":
                    if auth.get("login"):
                        self.fire(model, 4, auth.get("login_event", event), vs, signed_in=False)
                    if auth.get("consent") or event.detail.get("consent_denied"):
                        self.fire(model, 5, event, vs, signed_in=not auth.get("login"), consented=False)
                    if event.detail.get("consent_denied"):
                        self.fire(model, DENIED, event, vs, consent_denied=True)
                    else:
                        # AC-6 is the browser arriving at the RedirectURI: the next request the user's browser makes.
                        arrival = next((e for e in inside if e.seq > event.seq and e.server == "user"
                                        and e.endpoint == "request"), event)
                        self.fire(model, 6, arrival, vs, signed_in=True, consented=True, consent_denied=False)
                    auth = {}
            elif kind == "bc":
                if here == 1:
                    valid, why = self.judge_bc_token(model, event, vs)
                    self.fire(model, 2, None, vs, token_valid=valid)
                    if not valid:
                        self._violate(2, use_step, event, vs, "bad-token",
                                      f"the portal went straight to Business Central, and {why}")
                    self.fire(model, use_step, event, vs, token_valid=True)
                    model.token_valid = valid
                elif here == use_step:
                    self.step_of.setdefault(event.seq, self._id(use_step))
                    valid, why = self.judge_bc_token(model, event, vs)
                    if not valid:
                        self._violate(use_step, use_step, event, vs, "bad-token", why)
                else:
                    if here == (4 if self.cc else 7):
                        self.fire(model, 5 if self.cc else 8, None, vs)
                    elif here == 2:
                        model.token_valid = True
                    valid, why = self.judge_bc_token(model, event, vs)
                    self.fire(model, use_step, event, vs, token_valid=True)
                    if not valid:
                        self._violate(current_step(model), use_step, event, vs, "bad-token", why)
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
            self.fire(model, last_step, end, vs)
            vs.completed = True

    def _store(self, model: _Session, uti: str) -> None:
        if self.mode.token_holder == "delegate account":
            self.delegate_token = uti
        model.token = uti


def monitor(flow: Flow, mode: Mode, events: list[TraceEvent], visits: list[Any]) -> MonitorResult:
    """Judge a scenario's trace against the flow's step table."""
    return _Judge(flow, mode, events, visits).run()
