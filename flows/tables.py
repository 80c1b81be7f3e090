"""The two documented step tables, as data: the single source of truth of the kit.

Source: "Anywhere Portal authorization flows", copied with its URL in ``flows/anywhere-portal-authorization-flows.txt``.
Step texts are copied word for word. Every consumer (state machines, simulator, monitor, diagrams,
reports, Hypothesis machines) derives from ``CLIENT_CREDENTIALS`` and ``AUTHORIZATION_CODE`` below.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

DOCUMENT = "Anywhere Portal authorization flows"
DOCUMENT_URL = "https://docs.staedean.com/business-central/docs/bc-anywhere-portal-authorization-flows"

IDLE = "idle"
"""Pseudo-state before step 1: the user has not accessed the portal yet."""
DENIED = "denied"
"""Pseudo-state after AC-5 when the user declines to authorize the app."""


class Role(StrEnum):
    """What a step does, in words both flows share: the observation map (``flows.observations``) and the checks
    find a flow's steps by role, so no step number is written outside this file."""

    ACCESS = "access"  # the user accesses the portal
    CHECK = "check"  # the portal checks for a valid token
    REDIRECT = "redirect"  # the portal sends the user to the Authority
    LOGIN = "login"  # the user logs in at the Authority
    CONSENT = "consent"  # the user authorizes the app
    CALLBACK = "callback"  # the Authority sends the user back to the RedirectURI with a code
    TOKEN_REQUEST = "token request"  # the portal asks the Authority for a token
    TOKEN_ANSWER = "token answer"  # the Authority sends back a token
    STORE = "store"  # the portal stores the token in the session
    USE = "use"  # the portal calls Business Central with the stored token
    WORKING = "working"  # the user uses the portal, connected to Business Central


@dataclass(frozen=True)
class Step:
    number: int
    actor: str  # "User" | "Portal" | "Authority"
    text: str
    role: Role
    sets: str = ""  # the condition (see CONDITIONS) that holds once this step is done


@dataclass(frozen=True)
class Edge:
    """A move the table allows, from ``source`` to ``dest`` (step numbers, or IDLE / DENIED).

    ``when`` lists the branch conditions as (predicate, required value); the predicates are
    named in ``CONDITIONS``. ``kind`` tells how the document motivates the edge.
    """

    source: int | str
    dest: int | str
    when: tuple[tuple[str, bool], ...] = ()
    kind: str = "next"  # "next" | "skip" | "cycle" | "end"
    because: str = ""  # the document's sentence for skips and ends

    @property
    def label(self) -> str:
        """Human label for diagrams: the condition, or empty for the plain next step."""
        return " and ".join(name if value else f"not {name}" for name, value in self.when)


CONDITIONS: dict[str, str] = {
    "token_valid": "a valid (present, unexpired) token exists in the session",
    "signed_in": "the user is already logged in at the Authority",
    "consented": "the user has already authorized the app",
    "consent_denied": "the user declines to authorize the app",
}


@dataclass(frozen=True)
class Flow:
    key: str  # "client_credentials" | "authorization_code"
    prefix: str  # step id prefix: "CC" | "AC"
    title: str
    steps: tuple[Step, ...]
    edges: tuple[Edge, ...]
    modes: tuple[str, ...] = field(default=())

    @property
    def cli_name(self) -> str:
        return self.key.replace("_", "-")

    def step(self, number: int) -> Step:
        for step in self.steps:
            if step.number == number:
                return step
        raise KeyError(f"{self.title} has no step {number}; it has steps 1-{len(self.steps)}")

    def number(self, role: Role) -> int:
        """The step that plays ``role`` in this flow; KeyError names the flow when none does."""
        for step in self.steps:
            if step.role == role:
                return step.number
        raise KeyError(f"{self.title} has no {role.value} step")

    def has(self, role: Role) -> bool:
        return any(step.role == role for step in self.steps)

    def id_of(self, role: Role) -> str:
        return self.step_id(self.number(role))

    def step_id(self, number: int) -> str:
        return f"{self.prefix}-{number}"

    def edges_from(self, source: int | str) -> tuple[Edge, ...]:
        return tuple(e for e in self.edges if e.source == source)

    @property
    def states(self) -> tuple[int | str, ...]:
        names: list[int | str] = [IDLE, *(s.number for s in self.steps)]
        names += [d for d in dict.fromkeys(e.dest for e in self.edges) if d not in names]
        return tuple(names)


_VALID = (("token_valid", True),)
_NO_VALID = (("token_valid", False),)

CLIENT_CREDENTIALS = Flow(
    key="client_credentials",
    prefix="CC",
    title="Client Credentials Flow",
    modes=("AzApp",),
    steps=(
        Step(1, "User", "Accesses the portal.", Role.ACCESS),
        Step(2, "Portal", "Checks if a valid token exists in the session. If it does, steps 3 to 5 are skipped.",
             Role.CHECK),
        Step(3, "Portal", "When no valid token exists or the existing token is expired, sends a request to "
             "the Authority for a new access token using the client ID and client secret.", Role.TOKEN_REQUEST),
        Step(4, "Authority", "Sends back an access token.", Role.TOKEN_ANSWER),
        Step(5, "Portal", "Stores the retrieved access token in the session.", Role.STORE, "token_valid"),
        Step(6, "Portal", "Uses the stored access token to send authenticated requests to Microsoft "
             "Dynamics 365 Business Central.", Role.USE),
        Step(7, "User", "Uses the portal, now connected successfully to Microsoft Dynamics 365 Business "
             "Central.", Role.WORKING),
    ),
    edges=(
        Edge(IDLE, 1),
        Edge(1, 2),
        Edge(2, 3, _NO_VALID),
        Edge(2, 6, _VALID, "skip", "If it does, steps 3 to 5 are skipped."),
        Edge(3, 4),
        Edge(4, 5),
        Edge(5, 6),
        Edge(6, 7),
        # Step 2 "checks if a valid token exists in the session": a later access of the same session
        # starts again at step 1 and may find the token stored at step 5.
        Edge(7, 1, kind="cycle", because="The user accesses the portal again."),
    ),
)

AUTHORIZATION_CODE = Flow(
    key="authorization_code",
    prefix="AC",
    title="Authorization Code Flow",
    modes=("AzUser", "AzDelegate"),
    steps=(
        Step(1, "User", "Accesses the portal.", Role.ACCESS),
        Step(2, "Portal", "Checks if a valid token exists in the session. If it does, steps 3 to 8 are skipped.",
             Role.CHECK),
        Step(3, "Portal", "When no valid token exists or the existing token is expired, redirects the user "
             "to the Authority URI to request an authorization code.", Role.REDIRECT),
        Step(4, "User", "Logs in to their Microsoft account if not already logged in.", Role.LOGIN, "signed_in"),
        Step(5, "User", "Authorizes the app if not already authorized.", Role.CONSENT, "consented"),
        Step(6, "Authority", "Redirects the user back to the URL defined as the RedirectURI, with an "
             "authorization code.", Role.CALLBACK),
        Step(7, "Portal", "Sends a server-side request to the Authority to get an access (Bearer) token "
             "using the received authorization code.", Role.TOKEN_REQUEST),
        Step(8, "Portal", "Stores the retrieved access token in the session.", Role.STORE, "token_valid"),
        Step(9, "Portal", "Uses the stored access token to send authenticated requests to Microsoft "
             "Dynamics 365 Business Central.", Role.USE),
        Step(10, "User", "Uses the portal, now connected successfully to Microsoft Dynamics 365 Business "
             "Central.", Role.WORKING),
    ),
    edges=(
        Edge(IDLE, 1),
        Edge(1, 2),
        Edge(2, 3, _NO_VALID),
        Edge(2, 9, _VALID, "skip", "If it does, steps 3 to 8 are skipped."),
        Edge(3, 4, (("signed_in", False),)),
        Edge(3, 5, (("signed_in", True), ("consented", False)), "skip",
             "Logs in to their Microsoft account if not already logged in."),
        Edge(3, 6, (("signed_in", True), ("consented", True)), "skip",
             "Logs in … if not already logged in. Authorizes the app if not already authorized."),
        Edge(4, 5, (("consented", False),)),
        Edge(4, 6, (("consented", True),), "skip", "Authorizes the app if not already authorized."),
        Edge(5, 6, (("consent_denied", False),)),
        # The document is silent on a refusal; OAuth (RFC 6749 §4.1.2.1) ends the flow with access_denied.
        Edge(5, DENIED, (("consent_denied", True),), "end", "The user declines to authorize the app."),
        Edge(6, 7),
        Edge(7, 8),
        Edge(8, 9),
        Edge(9, 10),
        Edge(10, 1, kind="cycle", because="The user accesses the portal again."),
        Edge(DENIED, 1, kind="cycle", because="The user accesses the portal again."),
    ),
)

FLOWS: dict[str, Flow] = {f.key: f for f in (CLIENT_CREDENTIALS, AUTHORIZATION_CODE)}


# The document names the modes but does not say how AzUser and AzDelegate differ. The kit's assumption,
# stated here once (change it here): AzUser keeps a token per user session; AzDelegate uses one delegate
# account's token for every portal user.
@dataclass(frozen=True)
class Mode:
    name: str
    flow: Flow
    token_holder: str  # "application" | "user session" | "delegate account"
    assumption: str


MODES: dict[str, Mode] = {
    "AzApp": Mode("AzApp", CLIENT_CREDENTIALS, "application",
                  "The portal's app token (client ID and secret) is kept in the session."),
    "AzUser": Mode("AzUser", AUTHORIZATION_CODE, "user session",
                   "Each portal user signs in; the token is kept per user session and never shared."),
    "AzDelegate": Mode("AzDelegate", AUTHORIZATION_CODE, "delegate account",
                       "One delegate account signs in; its token serves every portal user."),
}


def flow_named(name: str) -> Flow:
    """Look a flow up by key or CLI name; the error lists the valid names."""
    key = name.replace("-", "_")
    if key not in FLOWS:
        valid = ", ".join(f.cli_name for f in FLOWS.values())
        raise KeyError(f"unknown flow {name!r}; valid flows: {valid}")
    return FLOWS[key]
