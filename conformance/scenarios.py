"""Named starting situations for the simulator: what the session holds and what the Authority knows."""

from __future__ import annotations

from dataclasses import dataclass

from flows import AUTHORIZATION_CODE, CLIENT_CREDENTIALS, Flow


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    token: str = "missing"  # "valid" | "missing" | "expired"
    signed_in: bool = False
    consented: bool = False
    denies_consent: bool = False


_COMMON = (
    Scenario("valid-token", "the session already holds a token with a long life left", token="valid",
             signed_in=True, consented=True),
    Scenario("missing-token", "first access of a new session: no token yet"),
    Scenario("expired-token", "the session holds a token whose expiry has passed", token="expired",
             signed_in=True, consented=True),
)

SCENARIOS: dict[str, dict[str, Scenario]] = {
    CLIENT_CREDENTIALS.key: {s.name: s for s in _COMMON},
    AUTHORIZATION_CODE.key: {s.name: s for s in (
        *_COMMON,
        Scenario("not-signed-in", "no token, the user is not signed in and has not consented"),
        Scenario("consented-not-signed-in", "no token, the user consented before but is signed out",
                 consented=True),
        Scenario("signed-in-not-consented", "no token, the user is signed in but has not consented",
                 signed_in=True),
        Scenario("signed-in-and-consented", "no token, the user is signed in and has consented",
                 signed_in=True, consented=True),
        Scenario("consent-denied", "no token, the user signs in and declines to authorize the app",
                 denies_consent=True),
    )},
}


def scenario_named(flow: Flow, name: str) -> Scenario:
    """Look a scenario up; the error lists the valid names for the flow."""
    known = SCENARIOS[flow.key]
    if name not in known:
        raise KeyError(f"unknown scenario {name!r} for {flow.cli_name}; valid scenarios: {', '.join(known)}")
    return known[name]
