"""Scenarios: short scripts of what users, the clock and the fakes do, for one mode at a time.

Each scenario runs on a fresh portal and fresh fakes. ``ctx.measure()`` marks the visit that
``bc-conformance simulate`` shows; the monitor and the checks read every visit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from conformance.driver import missing_state, wrong_state
from flows import AUTHORIZATION_CODE, CLIENT_CREDENTIALS, MODES, Flow
from flows.observations import RENEWAL_MARGIN

if TYPE_CHECKING:
    from conformance.engine import ScenarioRun

LONG_LIFE = 3600  # seconds: far beyond MSAL's 300 s renewal margin, so reuse is expected
BOTH = (CLIENT_CREDENTIALS.key, AUTHORIZATION_CODE.key)
CODE_ONLY = (AUTHORIZATION_CODE.key,)


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    flows: tuple[str, ...]
    script: Callable[[ScenarioRun], None]
    fresh_portal: bool = True  # needs a portal with no state left by earlier scenarios
    # Its evidence needs time to pass (``ctx.pause``, ``ctx.let_tokens_expire``): run only where the kit moves the
    # portal's clock, or with real waits (``--real-time``) when ``real_waits`` (hours of waiting are never asked).
    needs_time: bool = False
    real_waits: bool = True


def _valid_token(ctx: ScenarioRun) -> None:
    ctx.visit("alice")
    ctx.pause(60)
    ctx.measure()
    ctx.visit("alice")


def _missing_token(ctx: ScenarioRun) -> None:
    ctx.measure()
    ctx.visit("alice")


def _expired_token(ctx: ScenarioRun) -> None:
    ctx.visit("alice")
    ctx.let_tokens_expire()
    ctx.measure()
    ctx.visit("alice")


def _lifetime(ctx: ScenarioRun) -> int:
    return ctx.authority.lifetime_for(ctx.registry.default_client)


def _much_left(ctx: ScenarioRun) -> None:
    """A token well past half its life, still above the renewal margin: it must be reused."""
    ctx.visit("alice")
    ctx.pause(_lifetime(ctx) - (RENEWAL_MARGIN + 300))
    ctx.measure()
    ctx.visit("alice")


def _renewal_window(ctx: ScenarioRun) -> None:
    """A token inside the renewal margin (120 s left): reuse and renewal are both conformant."""
    ctx.visit("alice")
    ctx.pause(_lifetime(ctx) - 120)
    ctx.measure()
    ctx.visit("alice")


def _expired_by_hours(ctx: ScenarioRun) -> None:
    ctx.visit("alice")
    ctx.let_tokens_expire()
    ctx.pause(3 * 3600)
    ctx.measure()
    ctx.visit("alice")


def _consented_not_signed_in(ctx: ScenarioRun) -> None:
    ctx.grant_consent("alice")
    ctx.measure()
    ctx.visit("alice")


def _signed_in_not_consented(ctx: ScenarioRun) -> None:
    ctx.sign_in_at_authority("alice")
    ctx.measure()
    ctx.visit("alice")


def _signed_in_and_consented(ctx: ScenarioRun) -> None:
    ctx.sign_in_at_authority("alice")
    ctx.grant_consent("alice")
    ctx.measure()
    ctx.visit("alice")


def _consent_denied(ctx: ScenarioRun) -> None:
    ctx.measure()
    ctx.visit("alice", consent=False)
    ctx.visit("alice")  # the user changes their mind: the flow starts again at step 1


def _wrong_state(ctx: ScenarioRun) -> None:
    ctx.measure()
    ctx.visit("alice", tamper=wrong_state)


def _missing_state(ctx: ScenarioRun) -> None:
    ctx.measure()
    ctx.visit("alice", tamper=missing_state)


def _replayed_callback(ctx: ScenarioRun) -> None:
    ctx.visit("alice")
    ctx.measure()
    ctx.replay("alice")


def _authority_invalid_client(ctx: ScenarioRun) -> None:
    ctx.authority.faults.fail_next_token_requests(3, status=401, error="invalid_client")
    ctx.measure()
    ctx.visit("alice")


def _authority_unavailable(ctx: ScenarioRun) -> None:
    ctx.authority.faults.fail_next_token_requests(3, status=503, error="temporarily_unavailable")
    ctx.measure()
    ctx.visit("alice")


def _authority_throttled(ctx: ScenarioRun) -> None:
    ctx.authority.faults.throttle(3, retry_after=30)
    ctx.measure()
    ctx.visit("alice")


def _bc_revoked_token(ctx: ScenarioRun) -> None:
    ctx.visit("alice")
    ctx.revoke_bc_tokens()
    ctx.measure()
    ctx.visit("alice")


def _bc_refuses_all(ctx: ScenarioRun) -> None:
    ctx.bc.faults.revoke_principal(ctx.config.client_id, float("inf"))  # every token of this app, old or new
    ctx.measure()
    ctx.visit("alice")


def _two_users(ctx: ScenarioRun) -> None:
    for name in ("alice", "bob", "alice", "bob"):
        ctx.visit(name)
        ctx.pause(30)


def _tolerant_parsing(ctx: ScenarioRun) -> None:
    ctx.authority.faults.quirky_token_responses = True
    ctx.measure()
    ctx.visit("alice")


_ALL = (
    Scenario("valid-token", "a second access while the session's token has a long life left", BOTH, _valid_token,
             fresh_portal=False, needs_time=True),
    Scenario("missing-token", "first access of a new session: no token yet", BOTH, _missing_token),
    Scenario("expired-token", "an access after the session's token has expired (by 1 s)", BOTH, _expired_token,
             needs_time=True),
    Scenario("much-left", f"a second access when the token has {RENEWAL_MARGIN + 300} s left: above the renewal "
             "margin, so it must be reused", BOTH, _much_left, needs_time=True),
    Scenario("renewal-window", "a second access when the token has 120 s left: reuse or renewal are both "
             "conformant", BOTH, _renewal_window, needs_time=True),
    Scenario("expired-by-hours", "an access three hours after the session's token expired", BOTH,
             _expired_by_hours, needs_time=True, real_waits=False),
    Scenario("not-signed-in", "no token; the user is not signed in at the Authority and has not consented",
             CODE_ONLY, _missing_token),
    Scenario("consented-not-signed-in", "no token; the user consented before but is signed out", CODE_ONLY,
             _consented_not_signed_in),
    Scenario("signed-in-not-consented", "no token; the user is signed in but has not consented", CODE_ONLY,
             _signed_in_not_consented),
    Scenario("signed-in-and-consented", "no token; the user is signed in and has consented", CODE_ONLY,
             _signed_in_and_consented),
    Scenario("consent-denied", "the user declines to authorize the app, then tries again", CODE_ONLY,
             _consent_denied),
    Scenario("wrong-state", "the callback arrives with a state the portal did not send", CODE_ONLY, _wrong_state),
    Scenario("missing-state", "the callback arrives without a state", CODE_ONLY, _missing_state),
    Scenario("replayed-callback", "the browser opens the same callback URL (same code) again", CODE_ONLY,
             _replayed_callback),
    Scenario("authority-invalid-client", "the Authority answers invalid_client to token requests", BOTH,
             _authority_invalid_client),
    Scenario("authority-unavailable", "the Authority answers 503 to token requests", BOTH, _authority_unavailable),
    Scenario("authority-throttled", "the Authority answers 429 with Retry-After to token requests", BOTH,
             _authority_throttled),
    Scenario("bc-revoked-token", "Business Central answers 401 to a token that has not expired", BOTH,
             _bc_revoked_token),
    Scenario("bc-refuses-all", "Business Central answers 401 to every token, old and new", BOTH, _bc_refuses_all),
    Scenario("two-users", "two users use the portal in turns", BOTH, _two_users, fresh_portal=False),
    Scenario("tolerant-parsing", "the token response has token_type 'bearer', no expires_in, an unknown field",
             BOTH, _tolerant_parsing),
)

SCENARIOS: dict[str, dict[str, Scenario]] = {
    flow: {s.name: s for s in _ALL if flow in s.flows} for flow in BOTH
}


def scenario_named(flow: Flow, name: str) -> Scenario:
    """Look a scenario up; the error lists the valid names for the flow."""
    known = SCENARIOS[flow.key]
    if name not in known:
        raise KeyError(f"unknown scenario {name!r} for {flow.cli_name}; valid scenarios: {', '.join(known)}")
    return known[name]


def scenario_plan(modes: Iterable[str], wanted: Iterable[str] = (), restarts: bool = True) -> dict[str, list[str]]:
    """The scenarios each mode would run: the ``wanted`` ones (all when empty) of its flow, and only those that need
    no fresh portal when the portal is not restarted (``--portal-url``)."""
    wanted = set(wanted)
    return {mode: [name for name, scenario in SCENARIOS[MODES[mode].flow.key].items()
                   if (not wanted or name in wanted) and (restarts or not scenario.fresh_portal)]
            for mode in modes}
