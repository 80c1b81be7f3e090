"""How the step tables are observed on the wire, and the refinements of them that real clients make.

Next to the tables (``flows.tables``) because the monitor is a fold of these observations through the flow
machine: the *observation map* says which wire event evidences which step (by the step's role, so the same map
serves both flows), and the *accepted variants* are extra, named edges — each with the reason it is accepted —
that the machine allows besides the documented ones. Steps no wire shows (the "checks" and "stores" steps) are
judged by what follows them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from flows.tables import AUTHORIZATION_CODE, CLIENT_CREDENTIALS, Flow, Role

RENEWAL_MARGIN = 300
"""Seconds. A token with less left may be renewed instead of reused: MSAL Python and MSAL Node treat such a token
as expired, so a portal that renews inside this margin conforms (a longer margin is a failure to reuse)."""


class Observed(StrEnum):
    """The wire events the monitor reads, from the trace the fakes and the scripted browser write."""

    PAGE_REQUEST = "the user's browser requests a portal page"
    AUTHORIZE = "the browser arrives at the Authority's authorize endpoint"
    LOGIN_FORM = "the Authority shows its login form"
    CONSENT_FORM = "the Authority shows its consent form"
    CODE_ISSUED = "the Authority sends the browser back with a code"
    CALLBACK_ARRIVAL = "the browser arrives at the RedirectURI"
    TOKEN_REQUEST = "the portal posts to the token endpoint"
    TOKEN_ISSUED = "the token endpoint answers with a token"
    BC_CALL = "Business Central receives a request"
    PAGE_ANSWERED = "the portal answers the user's page request"


OBSERVATION_MAP: dict[Observed, Role] = {
    Observed.PAGE_REQUEST: Role.ACCESS,
    Observed.AUTHORIZE: Role.REDIRECT,
    Observed.LOGIN_FORM: Role.LOGIN,
    Observed.CONSENT_FORM: Role.CONSENT,
    Observed.CALLBACK_ARRIVAL: Role.CALLBACK,
    Observed.TOKEN_REQUEST: Role.TOKEN_REQUEST,
    Observed.TOKEN_ISSUED: Role.TOKEN_ANSWER,
    Observed.BC_CALL: Role.USE,
    Observed.PAGE_ANSWERED: Role.WORKING,
}
"""Which step an observation evidences, as a role; ``step_for`` turns it into the flow's step number (a flow
without the role — the Client Credentials Flow has no redirect — has no such step)."""


def step_for(flow: Flow, observed: Observed) -> int | None:
    role = OBSERVATION_MAP.get(observed)
    return flow.number(role) if role is not None and flow.has(role) else None


@dataclass(frozen=True)
class Variant:
    """An accepted refinement of a table, with its reference: an extra edge ``source → dest`` (by role; no source:
    from any step), or — with no ``dest`` — a relaxed condition on a documented edge."""

    id: str
    title: str
    source: Role | None
    dest: Role | None
    flows: tuple[str, ...]
    reference: str

    def applies(self, flow: Flow) -> bool:
        return flow.key in self.flows and all(flow.has(r) for r in (self.source, self.dest) if r is not None)

    @property
    def trigger(self) -> str:
        return f"variant_{self.id.replace('-', '_')}"


_BOTH = (CLIENT_CREDENTIALS.key, AUTHORIZATION_CODE.key)

EARLY_RENEWAL = Variant(
    "early-renewal", f"renewal of a token with under {RENEWAL_MARGIN} s left", Role.CHECK, None, _BOTH,
    f"MSAL Python and MSAL Node renew any token with less than {RENEWAL_MARGIN} s left")
REFRESH_RENEWAL = Variant(
    "refresh-renewal", "silent renewal with a refresh token (stands in for the redirect, sign-in and callback)",
    Role.CHECK, Role.TOKEN_REQUEST, (AUTHORIZATION_CODE.key,), "RFC 6749 §6; the MSAL libraries' acquire_token_silent")
RETRY_AFTER_401 = Variant(
    "retry-after-401", "a new token after Business Central refused an unexpired one", Role.USE, Role.CHECK, _BOTH,
    "RFC 6750 §3.1 (invalid_token: the client may request a new token and retry)")
SHARED_APP_TOKEN = Variant(
    "shared-app-token", "one app token shared by all sessions", Role.CHECK, None, (CLIENT_CREDENTIALS.key,),
    "informational: the tables keep the token in the session; one per application is kinder to the Authority")
RESTART = Variant(
    "restart", "the user starts over after an access that stopped mid-flow (an error page, a failed sign-in)",
    None, Role.ACCESS, _BOTH, "the user accesses the portal again: the table's first step")

VARIANTS: tuple[Variant, ...] = (EARLY_RENEWAL, REFRESH_RENEWAL, RETRY_AFTER_401, SHARED_APP_TOKEN, RESTART)
