"""Property-based exploration: a Hypothesis state machine per mode drives users, the clock and faults in
orders nobody wrote a scenario for, and checks after every move that the monitor saw no violation.

The rules come from the flow data: every branch condition the table's edges test (``flows.CONDITIONS``)
gets a rule that flips it in the world — ``token_valid`` by clock jumps, faults and BC revocation,
``signed_in`` by signing out at the Authority, ``consented`` by revoking consent, ``consent_denied`` by a
user who declines. Invariants: the monitor's verdicts (no move the table does not allow; every Business
Central call carries an unexpired token issued to the right principal; no token request while a valid
token was stored) and the protocol's (no code or refresh token redeemed twice).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.errors import Flaky
from hypothesis.reporting import with_reporter
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from conformance.engine import ScenarioRun, live
from conformance.errors import InternalError
from conformance.monitor import monitor
from conformance.targets import InProcessTarget
from fake_authority.jwt import SigningKey
from flows import MODES

USERS = ("alice", "bob")
BUDGETS = {"full": 150}  # examples per mode in the ``full`` profile
STEPS_PER_EXAMPLE = 8


@dataclass
class Exploration:
    mode: str
    examples: int
    passed: bool
    counterexample: list[str] = field(default_factory=list)  # the shrunk sequence, one call per line
    failure: str = ""
    replay: str = ""


def _conditions(mode: str) -> set[str]:
    return {name for edge in MODES[mode].flow.edges for name, _ in edge.when}


def machine_for_mode(mode: str, target: InProcessTarget, key: SigningKey) -> type[RuleBasedStateMachine]:
    """Build the state machine class for one mode from its flow's conditions."""
    conditions = _conditions(mode)
    lifetime = 3600

    class PortalExploration(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self._stack = contextlib.ExitStack()
            self.ctx: ScenarioRun
            self.ctx, error = self._stack.enter_context(live(target, mode, key=key, request_timeout=5.0))
            if error:
                raise RuntimeError(error)
            self.next_visit_denies: set[str] = set()

        def teardown(self) -> None:
            self._stack.close()

        # ---- the users
        @rule(user=st.sampled_from(USERS))
        def visit(self, user: str) -> None:
            deny = user in self.next_visit_denies
            self.next_visit_denies.discard(user)
            self.ctx.visit(user, consent=not deny)

        @rule(user=st.sampled_from(USERS))
        def new_session(self, user: str) -> None:
            """The user's browser forgets the portal's session (the Authority's sign-in stays)."""
            self.ctx.new_session(user)

        # ---- token_valid: time and faults
        @precondition(lambda self: "token_valid" in conditions)
        @rule(seconds=st.sampled_from([30, 600, lifetime - 200, lifetime + 1, 2 * lifetime]))
        def clock_jumps(self, seconds: int) -> None:
            self.ctx.clock.advance(seconds)

        @precondition(lambda self: "token_valid" in conditions)
        @rule(kind=st.sampled_from(["authority-503", "authority-429", "bc-revokes-tokens"]))
        def fault(self, kind: str) -> None:
            if kind == "authority-503":
                self.ctx.authority.faults.fail_next_token_requests(1, status=503)
            elif kind == "authority-429":
                self.ctx.authority.faults.throttle(1, retry_after=1)
            else:
                self.ctx.revoke_bc_tokens()

        # ---- signed_in, consented, consent_denied: the Authority's side
        @precondition(lambda self: "signed_in" in conditions)
        @rule(user=st.sampled_from(USERS))
        def signs_out_at_authority(self, user: str) -> None:
            self.ctx.authority.sign_out_everywhere(self.ctx.account(user))

        @precondition(lambda self: "consented" in conditions)
        @rule(user=st.sampled_from(USERS))
        def revokes_consent(self, user: str) -> None:
            self.ctx.authority.revoke_consent(self.ctx.account(user))

        @precondition(lambda self: "consent_denied" in conditions)
        @rule(user=st.sampled_from(USERS))
        def will_decline_consent(self, user: str) -> None:
            self.next_visit_denies.add(user)

        # ---- invariants
        @invariant()
        def the_fakes_did_not_fail(self) -> None:
            for event in self.ctx.trace.events:  # a fake's own exception is a bug in the kit, not a portal finding
                if event.detail.get("internal_error"):
                    at = event.detail.get("internal_error_at", "")
                    raise InternalError(str(event.detail["internal_error"]),
                                        f"{event.server} fake{' at ' + at if at else ''}, answering {event.method} "
                                        f"{event.path} — trace seq {event.seq} while exploring {mode}")

        @invariant()
        def the_table_is_followed(self) -> None:
            result = monitor(self.ctx.mode.flow, self.ctx.mode, self.ctx.trace.events, self.ctx.visits)
            assert not result.violations, "; ".join(f"{v.step}→{v.into}: {v.message}" for v in result.violations)

        @invariant()
        def no_grant_is_redeemed_twice(self) -> None:
            seen: set[str] = set()
            for event in self.ctx.trace.where(server="authority", endpoint="token"):
                for grant in event.redeemed:
                    assert grant not in seen, f"the Authority saw {grant.split(':')[0]} {grant} redeemed twice"
                    seen.add(grant)

    PortalExploration.__name__ = f"{mode}Exploration"
    PortalExploration.TestCase.settings = settings(max_examples=1)
    return PortalExploration


def explore(target: InProcessTarget, mode: str, examples: int, seed: int, key: SigningKey | None = None,
            replay: str = "") -> Exploration:
    """Run the mode's state machine; on failure return the shrunk sequence and the command that replays it."""
    machine = machine_for_mode(mode, target, key or SigningKey())
    machine._hypothesis_internal_use_seed = seed  # type: ignore[attr-defined]  # what @seed does
    report: list[str] = []
    config = settings(max_examples=examples, stateful_step_count=STEPS_PER_EXAMPLE, database=None, deadline=None,
                      suppress_health_check=list(HealthCheck), print_blob=False, report_multiple_bugs=False)
    try:
        with with_reporter(report.append):
            run_state_machine_as_test(machine, settings=config)
    except InternalError:
        raise  # the kit's bug: never a finding about the portal
    except (AssertionError, Flaky, Exception) as err:
        notes = [*report, *getattr(err, "__notes__", [])]
        invariants = ("state.the_fakes_did_not_fail()", "state.the_table_is_followed()",
                      "state.no_grant_is_redeemed_twice()", "state.teardown()")
        steps = [line.strip() for chunk in notes for line in str(chunk).splitlines()
                 if line.strip().startswith("state.") and line.strip() not in invariants]
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return Exploration(mode, examples, False, steps, message[:1000], replay)
    return Exploration(mode, examples, True, replay=replay)


Run = Callable[..., Any]
