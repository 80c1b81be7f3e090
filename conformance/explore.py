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
import inspect
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import ClassVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.errors import Flaky
from hypothesis.internal.conjecture import engine
from hypothesis.reporting import with_reporter
from hypothesis.stateful import (
    INVARIANT_MARKER,
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from conformance.engine import ScenarioRun, live
from conformance.errors import InternalError
from conformance.monitor import monitor
from conformance.targets import InProcessTarget
from fake_authority.jwt import SigningKey
from flows import MODES

USERS = ("alice", "bob")
BUDGETS = {"full": 150}  # examples per mode in the ``full`` profile, in-process
EXTERNAL_EXAMPLES = 25  # examples per mode for a started portal (each example starts a fresh portal process)
EXTERNAL_SHRINK_SECONDS = 12  # how long shrinking may take for a started portal (Hypothesis's own limit: 300 s)
STEPS_PER_EXAMPLE = 8
LIFETIME = 3600  # Entra's default access-token lifetime, which the fakes issue

Opener = Callable[[], AbstractContextManager[tuple[ScenarioRun, str]]]
"""Prepares a fresh portal and fakes for one example: yields the run context and "" — or the reason the portal
could not be made ready — and cleans up after."""


class CannotExplore(Exception):
    """The stage cannot host the exploration (e.g. the portal's clock cannot be moved): reported as not exercised."""


@dataclass
class Exploration:
    mode: str
    examples: int
    passed: bool
    counterexample: list[str] = field(default_factory=list)  # the shrunk sequence, one call per line
    failure: str = ""
    replay: str = ""
    not_exercised: str = ""  # why the exploration could not run ("" when it did)


def _conditions(mode: str) -> frozenset[str]:
    return frozenset(name for edge in MODES[mode].flow.edges for name, _ in edge.when)


class PortalExploration(RuleBasedStateMachine):
    """Users, the clock and the Authority's and Business Central's faults, in random orders, against one fresh portal
    per example. Subclass it to add your own rules (``@rule``) or invariants (``@invariant``) and pass the subclass
    to ``explore(..., machine=...)``; ``self.ctx`` is the scenario vocabulary (``visit``, ``pause``, ``authority``,
    ``bc`` …). ``explore`` sets ``mode``, ``conditions`` and ``opener`` on a subclass per mode."""

    mode: ClassVar[str] = ""
    conditions: ClassVar[frozenset[str]] = frozenset()  # the branch conditions of the mode's flow table
    opener: ClassVar[Opener]

    def __init__(self) -> None:
        super().__init__()
        self._stack = contextlib.ExitStack()
        self.ctx: ScenarioRun
        try:
            self.ctx, error = self._stack.enter_context(type(self).opener())
        except CannotExplore:
            self._stack.close()
            raise
        if error:
            self._stack.close()
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
    @precondition(lambda self: "token_valid" in self.conditions)
    @rule(seconds=st.sampled_from([30, 600, LIFETIME - 200, LIFETIME + 1, 2 * LIFETIME]))
    def clock_jumps(self, seconds: int) -> None:
        self.ctx.pause(seconds)

    @precondition(lambda self: "token_valid" in self.conditions)
    @rule(kind=st.sampled_from(["authority-503", "authority-429", "bc-revokes-tokens"]))
    def fault(self, kind: str) -> None:
        if kind == "authority-503":
            self.ctx.authority.faults.fail_next_token_requests(1, status=503)
        elif kind == "authority-429":
            self.ctx.authority.faults.throttle(1, retry_after=1)
        else:
            self.ctx.revoke_bc_tokens()

    # ---- signed_in, consented, consent_denied: the Authority's side
    @precondition(lambda self: "signed_in" in self.conditions)
    @rule(user=st.sampled_from(USERS))
    def signs_out_at_authority(self, user: str) -> None:
        self.ctx.authority.sign_out_everywhere(self.ctx.account(user))

    @precondition(lambda self: "consented" in self.conditions)
    @rule(user=st.sampled_from(USERS))
    def revokes_consent(self, user: str) -> None:
        self.ctx.authority.revoke_consent(self.ctx.account(user))

    @precondition(lambda self: "consent_denied" in self.conditions)
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
                                    f"{event.path} — trace seq {event.seq} while exploring {self.mode}")

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


def machine_for_mode(mode: str, opener: Opener,
                     base: type[PortalExploration] = PortalExploration) -> type[PortalExploration]:
    """``base`` bound to one mode and to the stage every example starts from."""
    machine = type(f"{mode}{base.__name__}", (base,), {
        "mode": mode, "conditions": _conditions(mode), "opener": staticmethod(opener)})
    machine.TestCase.settings = settings(max_examples=1)
    return machine


def in_process(target: InProcessTarget, mode: str, key: SigningKey) -> Opener:
    """Each example on a fresh in-process portal and fakes (``engine.live``)."""
    return lambda: live(target, mode, key=key, request_timeout=5.0)


@contextlib.contextmanager
def _shrinking_limited_to(seconds: int | None) -> Iterator[None]:
    """Hypothesis shrinks for up to 5 minutes; each step of a started portal costs a process start (~0.5 s), so
    shrinking is cut earlier there (a module constant of Hypothesis's engine, read when shrinking starts)."""
    if seconds is None:
        yield
        return
    saved = engine.MAX_SHRINKING_SECONDS
    engine.MAX_SHRINKING_SECONDS = seconds
    try:
        yield
    finally:
        engine.MAX_SHRINKING_SECONDS = saved


def explore(target: InProcessTarget | None, mode: str, examples: int, seed: int, key: SigningKey | None = None,
            replay: str = "", opener: Opener | None = None,
            machine: type[PortalExploration] = PortalExploration, shrink_seconds: int | None = None) -> Exploration:
    """Run the mode's state machine (``machine``, or a subclass of it with more rules); on failure return the
    shrunk sequence and the command that replays it (the same seed generates the same sequences). ``opener``
    prepares each example's stage (default: the in-process ``target``)."""
    if opener is None:
        assert target is not None, "explore needs an in-process target or an opener"
        opener = in_process(target, mode, key or SigningKey())
    bound = machine_for_mode(mode, opener, machine)
    bound._hypothesis_internal_use_seed = seed  # type: ignore[attr-defined]  # what @seed does
    report: list[str] = []
    config = settings(max_examples=examples, stateful_step_count=STEPS_PER_EXAMPLE, database=None, deadline=None,
                      suppress_health_check=list(HealthCheck), print_blob=False, report_multiple_bugs=False)
    try:
        with with_reporter(report.append), _shrinking_limited_to(shrink_seconds):
            run_state_machine_as_test(bound, settings=config)
    except InternalError:
        raise  # the kit's bug: never a finding about the portal
    except CannotExplore as err:
        return Exploration(mode, 0, False, replay=replay, not_exercised=str(err))
    except (AssertionError, Flaky, Exception) as err:
        notes = [*report, *getattr(err, "__notes__", [])]
        checks = {f"state.{name}()" for name, member in inspect.getmembers(bound)
                  if getattr(member, INVARIANT_MARKER, None)} | {"state.teardown()"}
        steps = [line.strip() for chunk in notes for line in str(chunk).splitlines()
                 if line.strip().startswith("state.") and line.strip() not in checks]
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return Exploration(mode, examples, False, steps, message[:1000], replay)
    return Exploration(mode, examples, True, replay=replay)
