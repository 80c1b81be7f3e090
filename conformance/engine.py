"""Run scenarios against a portal in-process: fresh fakes and a fresh portal per scenario, one trace, one
fake clock (``time.time`` follows it, so portals and client libraries see time jump), then the monitor."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from unittest import mock

import responses

from conformance.clock import Clock, FakeClock
from conformance.driver import StateTamper, UserDriver, VisitResult
from conformance.errors import InternalError
from conformance.inprocess import mount
from conformance.monitor import MonitorResult, monitor
from conformance.redact import redact_text
from conformance.scenarios import Scenario
from conformance.targets import InProcessTarget
from conformance.trace import Trace
from conformance.user import Credentials
from conformance.wsgi import PortalMount
from fake_authority import BC_SCOPE, LOGIN_HOST, Authority, Registry
from fake_authority.core import SESSION_COOKIE
from fake_authority.jwt import SigningKey
from fake_bc import BC_HOST, BusinessCentral
from flows import MODES, Mode
from portals.config import PortalConfig

PORTAL_URL = "http://localhost:5000"
REDIRECT_PATH = "/auth/callback"


@dataclass
class ScenarioResult:
    mode: str
    scenario: Scenario
    trace: Trace
    visits: list[VisitResult]
    monitor: MonitorResult
    measured_from: int  # index into visits of the visit ``simulate`` shows
    config: PortalConfig
    error: str = ""
    waited: float = 0.0  # seconds the scenario let pass (fake clock in-process, real time outside)
    issued_values: set[str] = field(default_factory=set)  # raw tokens and codes: for redaction, never exported
    wall_time: float = 0.0
    not_ready: str = ""  # the portal never became ready (not built, exited, never listened): what happened
    time_control: str = "virtual (in-process fake clock)"  # whose clock the waits moved, or why time was real
    measure_marked: bool = False  # the script named the visit it is about (``ctx.measure()``)


@dataclass
class NotRun:
    """A scenario that could not give evidence here (e.g. it needs time to pass on a clock nobody can move)."""

    reason: str


class Time(StrEnum):
    """Who moves time in a scenario: what ``pause`` and ``let_tokens_expire`` do."""

    VIRTUAL = "virtual"  # the kit moves every clock at once: the fake clock in-process, libfaketime under a portal
    REAL = "real"  # nobody can move the portal's clock, and the user asked for real waits (--real-time)
    FIXED = "fixed"  # nobody can move the portal's clock: scenarios that need time to pass are not run


@dataclass
class Stage:
    """Where a scenario runs: the fakes, the clock and how the portal is reached."""

    authority: Authority
    bc: BusinessCentral
    clock: Clock
    config: PortalConfig
    portal_url: str
    authority_host: str  # host[:port] of the Authority's pages
    verify: bool | str = True  # TLS trust for the browser (the run's CA file over loopback)
    time: Time = Time.VIRTUAL
    page: str = "/"  # the portal page users open


class ScenarioRun:
    """What a scenario script can do: visits by named users, time passing, faults, Authority state."""

    sleep: Callable[[float], None] = staticmethod(time.sleep)  # real waits (``Time.REAL``)

    def __init__(self, mode: Mode, stage: Stage, request_timeout: float = 10.0):
        self.mode, self.stage = mode, stage
        self.clock: Clock = stage.clock
        self.authority, self.bc = stage.authority, stage.bc
        self.trace: Trace = stage.authority.trace
        self.registry: Registry = stage.authority.registry
        self.config = stage.config
        self.request_timeout = request_timeout
        self.users: dict[str, UserDriver] = {}
        self.visits: list[VisitResult] = []
        self.measured_from = 0
        self.measure_marked = False
        self.waited = 0.0
        self._sessions = 0

    # ---- time: jumps of the virtual clock, real waits only when asked for (``Stage.time``)
    def pause(self, seconds: float) -> None:
        """Time passes between two accesses. With a fixed clock nothing passes: scenarios whose evidence needs
        time (``Scenario.needs_time``) are not run there, and the others only space their visits out."""
        self._wait(seconds)

    def let_tokens_expire(self) -> None:
        """Wait until every token issued so far has expired."""
        if self.stage.time is Time.FIXED:
            raise RuntimeError("tokens cannot expire on a clock the kit does not move: run this scenario only in "
                               "virtual time or with --real-time")
        self._wait(self.authority.lifetime_for(self.registry.default_client) + 1)

    def _wait(self, seconds: float) -> None:
        if self.stage.time is Time.VIRTUAL:
            self.clock.advance(seconds)  # type: ignore[attr-defined]
        elif self.stage.time is Time.REAL:
            self.sleep(seconds)
        else:
            return
        self.waited += seconds

    # ---- the script's vocabulary
    def user(self, name: str) -> UserDriver:
        if name not in self.users:
            self._sessions += 1
            # AzDelegate: whoever uses the portal, the Authority sees the one delegate account sign in.
            account = self.registry.delegate if self.mode.token_holder == "delegate account" else name
            user = self.registry.user(account) or next(u for u in self.registry.users
                                                       if u.username.startswith(f"{account}@"))
            self.users[name] = UserDriver(
                name, Credentials(user.username, user.password, user.otp), self.stage.portal_url,
                self.config.redirect_uri, self.stage.authority_host, self.trace, self.clock, self._secrets,
                f"s{self._sessions}", timeout=self.request_timeout, verify=self.stage.verify)
        return self.users[name]

    def new_session(self, name: str) -> None:
        """The user's browser starts a new portal session; their sign-in at the Authority survives."""
        old = self.users.pop(name, None)
        fresh = self.user(name)
        if old is not None:
            for cookie in old.browser.session.cookies:
                if cookie.name == SESSION_COOKIE:
                    fresh.browser.session.cookies.set_cookie(cookie)

    def visit(self, name: str, consent: bool = True, tamper: StateTamper | None = None) -> VisitResult:
        result = self.user(name).visit(self.stage.page, consent=consent, tamper=tamper)
        self.visits.append(result)
        return result

    def replay(self, name: str) -> VisitResult:
        result = self.user(name).replay_callback()
        self.visits.append(result)
        return result

    def measure(self) -> None:
        self.measured_from = len(self.visits)
        self.measure_marked = True

    def account(self, name: str) -> str:
        return self.user(name).credentials.username

    def sign_in_at_authority(self, name: str) -> None:
        """The user already has a sign-in session at the Authority (its cookie is in their browser)."""
        sid = self.authority.sign_in(self.account(name))
        host = self.stage.authority_host.split(":")[0]
        self.user(name).browser.session.cookies.set(SESSION_COOKIE, sid, domain=host, path="/")

    def grant_consent(self, name: str) -> None:
        self.authority.grant_consent(self.account(name), self.registry.default_client.client_id)

    def revoke_bc_tokens(self) -> None:
        """Business Central starts refusing every token it has seen so far, though none has expired."""
        for uti in {r.split(":", 1)[1] for e in self.trace.where(server="bc") for r in e.redeemed}:
            self.bc.revoke_token(uti)

    def _secrets(self) -> Iterator[tuple[str, str]]:
        yield "the client secret", self.config.client_secret
        for value, info in list(self.authority.issued_values.items()):  # a snapshot: the served Authority issues
            if info.kind in ("access token", "refresh token"):
                yield f"{'an' if info.kind[0] == 'a' else 'a'} {info.kind}", value


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set the environment contract for a portal built in-process, and restore what was there."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def in_process_stage(mode: Mode, registry: Registry, key: SigningKey) -> Stage:
    clock = FakeClock()
    authority = Authority(registry, clock, Trace(), key)
    client = registry.default_client
    config = PortalConfig(
        auth_mode=mode.name, authority=f"{LOGIN_HOST}/{registry.tenant_id}", tenant_id=registry.tenant_id,
        client_id=client.client_id, client_secret=client.secrets[0].value, redirect_uri=f"{PORTAL_URL}{REDIRECT_PATH}",
        bc_api_url=f"{BC_HOST}/v2.0/{registry.tenant_id}/Production/api/v2.0", bc_scope=BC_SCOPE, portal_port=5000)
    return Stage(authority, BusinessCentral.for_authority(authority), clock, config, PORTAL_URL,
                 LOGIN_HOST.split("//")[1])


@contextlib.contextmanager
def live(target: InProcessTarget, mode_name: str, registry: Registry | None = None, key: SigningKey | None = None,
         request_timeout: float = 10.0) -> Iterator[tuple[ScenarioRun, str]]:
    """Fresh fakes and a fresh portal, mounted in-process, with ``time.time`` following the fake clock.

    Yields the run context and, if the portal could not be built, the reason (the context is then unusable).
    """
    mode = MODES[mode_name]
    registry = (registry or Registry.default()).with_redirect_uris(f"{PORTAL_URL}{REDIRECT_PATH}")
    ctx = ScenarioRun(mode, in_process_stage(mode, registry, key or SigningKey()), request_timeout)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps, \
            mock.patch("time.time", ctx.clock.now), environment(ctx.config.as_env()):
        mount(rsps, LOGIN_HOST, ctx.authority.handle, ctx.clock)
        mount(rsps, BC_HOST, ctx.bc.handle, ctx.clock)
        try:
            app = target.build(ctx.config)
        except Exception as err:
            yield ctx, f"the portal could not be built: {type(err).__name__}: {err}"
            return
        PortalMount(app, PORTAL_URL, ctx.trace, ctx.clock, request_timeout).mount(rsps)
        yield ctx, ""


def play(ctx: ScenarioRun, scenario: Scenario, error: str = "") -> ScenarioResult:
    """Run a scenario's script in a prepared stage, then judge the trace. ``error``: the portal never became ready
    (the script is not run). Raises ``InternalError`` when a fake recorded an exception of its own."""
    not_ready = error
    if not error:
        try:
            scenario.script(ctx)
        except Exception as err:
            error = f"the scenario stopped: {type(err).__name__}: {err}"
    result = monitor(ctx.mode.flow, ctx.mode, ctx.trace.events, ctx.visits)
    scenario_result = ScenarioResult(ctx.mode.name, scenario, Trace.of(ctx.trace.events), ctx.visits, result,
                                     ctx.measured_from, ctx.config, error, ctx.waited,
                                     set(ctx.authority.raw_values()), not_ready=not_ready,
                                     measure_marked=ctx.measure_marked)
    raise_internal_errors(scenario_result)
    return scenario_result


def raise_internal_errors(result: ScenarioResult) -> None:
    """A fake that raised records ``detail["internal_error"]`` and answers 500: that is a bug in the kit, not the
    portal's behaviour, so it stops the run instead of becoming a verdict."""
    for event in result.trace.events:
        problem = event.detail.get("internal_error")
        if problem:
            server = {"authority": "the fake Authority", "bc": "the fake Business Central"}.get(event.server,
                                                                                                event.server)
            secrets = [result.config.client_secret, *result.issued_values]
            at = f" at {event.detail['internal_error_at']}" if event.detail.get("internal_error_at") else ""
            where = redact_text(f"{server}{at}, answering {event.method} {event.path} — trace seq {event.seq} of "
                                f"scenario {result.mode} > {result.scenario.name}", secrets)
            raise InternalError(redact_text(str(problem), secrets), where, result=result)


def run_scenario(target: InProcessTarget, mode_name: str, scenario: Scenario, registry: Registry | None = None,
                 key: SigningKey | None = None, request_timeout: float = 10.0) -> ScenarioResult:
    """One scenario on a fresh portal and fresh fakes; never raises for what the portal does."""
    with live(target, mode_name, registry, key, request_timeout) as (ctx, error):
        return play(ctx, scenario, error)
