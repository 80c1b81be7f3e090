"""Portals in any language, verified over HTTPS: the fakes serve on loopback with a CA generated for the run,
and the portal is a process the kit starts per scenario (``--portal-cmd``) or one the user started
(``--portal-url``). A portal that hangs, answers garbage or loops fails its checks; one that never becomes ready
(exits, never listens on ``PORTAL_PORT``) is reported as such (``ScenarioResult.not_ready``), and ``run`` stops on it
unless ``--keep-going`` (then its checks fail too).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shlex
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests

from conformance import processes
from conformance.engine import NotRun, ScenarioResult, ScenarioRun, Stage, Time, play
from conformance.explore import CannotExplore, Opener
from conformance.portal_time import INSTALL_HINT, ShiftedClock
from conformance.printable import printable
from conformance.scenarios import Scenario
from conformance.servers import FakeServers
from flows import MODES
from flows.observations import RENEWAL_MARGIN
from portals.config import PortalConfig

# --real-time: a token long enough that, after valid-token's 60 s wait, 600 s are left — above MSAL's 300 s renewal
# margin (RENEWAL_MARGIN), as much-left asks — and short enough that letting it expire waits 11 minutes, not 60.
REAL_TIME_LIFETIME = RENEWAL_MARGIN + 360
GRACE = 3.0  # seconds between SIGTERM and SIGKILL
LOG_PREFIX = "bc-conformance-portal-"
CLIENT_SECRET_VARIABLE = "BC_CONFORMANCE_CLIENT_SECRET"  # the fake client's secret, chosen by the user; no file has it

_LIVE: set[PortalProcess] = set()
_LOCK = threading.Lock()


def _stop_all() -> None:
    """At exit: stop the portals still running, then anything this kit marked that escaped them."""
    with _LOCK:
        live = list(_LIVE)
    for proc in live:
        proc.stop()
    processes.sweep_kit()


atexit.register(_stop_all)


def sweep_leftovers() -> None:
    """What a SIGKILLed run left: portal processes whose kit is gone, then their log files."""
    processes.sweep_orphans()
    processes.sweep_owned(tempfile.gettempdir(), LOG_PREFIX)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class PortalProcess:
    """``sh -c CMD`` under a supervisor (``conformance/processes.py``) that keeps everything the command starts —
    forked children, ``setsid`` daemons — and stops all of it: SIGTERM, then SIGKILL after ``GRACE``. Processes carry
    a marker in their environment, and the kit sweeps the marker and the owner of the port after the supervisor.
    Without /proc and prctl (not Linux), the shell's process group is stopped instead.

    The supervisor dies with the thread that started it (``PR_SET_PDEATHSIG``): start and stop from the same thread.
    """

    def __init__(self, cmd: str, env: dict[str, str], port: int, cwd: str | None = None):
        sweep_leftovers()
        self.marker = processes.new_marker()
        self.cmd, self.env, self.port, self.cwd = cmd, {**env, processes.MARKER: self.marker}, port, cwd
        self.log = tempfile.NamedTemporaryFile(prefix=f"{LOG_PREFIX}{os.getpid()}-", suffix=".log", delete=False)  # noqa: SIM115
        processes.hold(self.log.fileno())  # until the last process writing to it is gone
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0  # clock ticks after boot, for the owner of the port
        self.survivors: list[int] = []  # pids that could not be stopped (reported by stop)
        self.not_ready = ""  # after a failed start: what happened, the port, the last lines of output

    def start(self, timeout: float) -> str:
        """Start and wait for the port; returns "" when listening, else what went wrong."""
        with _LOCK:
            _LIVE.add(self)
        self.proc = subprocess.Popen(processes.supervised(["/bin/sh", "-c", self.cmd], GRACE), env=self.env,
                                     cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        me = processes.stat(self.proc.pid)
        self.started_at = me.start if me else 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                self.not_ready = self._not_ready(f"the portal command {_exit_status(code)} before listening on "
                                                 f"port {self.port}")
                return f"the portal command exited with code {code} before listening: {self.output_tail()}"
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.settimeout(0.2)
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return ""
            time.sleep(0.05)
        code = self.proc.poll()
        if code is not None:
            what = f"the portal command {_exit_status(code)} without ever listening on port {self.port}"
        else:
            ports = processes.listening_ports([self.proc.pid, *(p.pid for p in processes.descendants(self.proc.pid))])
            elsewhere = (f"; it listens on port {', '.join(map(str, ports))} instead" if ports
                         else "; it is running but listens on no TCP port")
            what = f"the portal never opened port {self.port} within {timeout:g} s (--startup-timeout){elsewhere}"
        self.not_ready = self._not_ready(what)
        return f"the portal never opened port {self.port} within {timeout:g} s: {self.output_tail()}"

    def _not_ready(self, what: str) -> str:
        """What a user needs to fix a portal that never became ready (read before ``stop`` removes the log)."""
        lines = self.output_lines()
        output = ("last lines of its output:\n" + "\n".join(f"  | {line}" for line in lines) if lines
                  else "it printed nothing")
        return (f"{what}.\n  It was told to listen on 127.0.0.1:{self.port} (PORTAL_PORT={self.port}).\n"
                f"  command: {printable(self.cmd)}" + (f" (in {self.cwd})" if self.cwd else "") + f"\n  {output}")

    def _output(self, limit: int) -> str:
        try:
            with open(self.log.name, "rb") as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - limit))
                return printable(f.read())
        except OSError:
            return ""

    def output_tail(self, limit: int = 400) -> str:
        """The end of the portal's output on one line, without escape sequences or control characters."""
        return " ".join(self._output(limit).split()) or "(no output)"

    def output_lines(self, count: int = 12, width: int = 240) -> list[str]:
        """The last lines of the portal's output (each cut to ``width``), printable."""
        lines = [line.rstrip() for line in self._output(8192).splitlines() if line.strip()]
        return [line if len(line) <= width else line[: width - 1] + "…" for line in lines[-count:]]

    def stop(self) -> None:
        """Stop everything the portal started; Ctrl-C and SIGTERM wait until this is done."""
        with processes.signals_deferred():
            if self.proc is not None:
                if processes.CONTAINED:
                    self._stop_contained(self.proc)
                else:
                    self._stop_group(self.proc)
            with _LOCK:
                _LIVE.discard(self)
            with contextlib.suppress(OSError):
                self.log.close()
                os.unlink(self.log.name)

    def _stop_contained(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)  # the supervisor stops its descendants, then exits
            if not processes.wait_exit(proc.pid, GRACE + processes.KILL_TIMEOUT + 1):
                proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(processes.KILL_TIMEOUT)
        # Behind the supervisor: a process that escaped it (killed supervisor, a pid namespace, ...) still carries
        # the marker or holds the port.
        self.survivors = processes.stop_all(
            lambda: processes.marked(lambda value: value == self.marker, self.port, self.started_at, (proc.pid,)),
            grace=0)

    @staticmethod
    def _stop_group(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(GRACE)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)  # only while the leader is unreaped: its pid is not reused
                proc.wait(GRACE)


def _exit_status(code: int) -> str:
    """How a portal command ended, as a shell user reads it."""
    if code < 0:
        return f"was killed by signal {_signal_name(-code)}"
    if code > 128 and _signal_name(code - 128) != str(code - 128):
        return f"exited with code {code} (killed by {_signal_name(code - 128)})"
    if code == 127:
        return "exited with code 127 (command not found)"
    if code == 126:
        return "exited with code 126 (not executable)"
    return f"exited with code {code}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


@dataclass
class ExternalTarget:
    """A portal started per scenario (``cmd``) or already running (``url``)."""

    cmd: str = ""
    url: str = ""
    page: str = "/"
    redirect_path: str = "/auth/callback"
    startup_timeout: float = 30.0
    cwd: str | None = None
    real_time: bool = False  # where the portal's clock cannot be moved, wait for real (``--real-time``)

    @property
    def name(self) -> str:
        return f"portal command: {self.cmd}" if self.cmd else f"portal at {self.url}"

    @property
    def cli_args(self) -> str:
        portal = f"--portal-cmd {shlex.quote(self.cmd)}" if self.cmd else f"--portal-url {self.url}"
        return portal + (" --real-time" if self.real_time else "")


def portal_environment(config: PortalConfig, ca_file: str) -> dict[str, str]:
    """The environment contract, plus the run's CA for every common TLS stack."""
    env = {k: v for k, v in os.environ.items() if k not in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE")}
    env.update(config.as_env())
    env.update(SSL_CERT_FILE=ca_file, REQUESTS_CA_BUNDLE=ca_file, NODE_EXTRA_CA_CERTS=ca_file, CURL_CA_BUNDLE=ca_file,
               PYTHONUNBUFFERED="1")
    return env


def stage_for(servers: FakeServers, mode: str, portal_url: str, redirect_path: str, page: str = "/",
              time_: Time = Time.FIXED) -> Stage:
    client = servers.registry.default_client
    port = urlsplit(portal_url).port or 80
    config = PortalConfig(
        auth_mode=mode, authority=servers.authority_url, tenant_id=servers.registry.tenant_id,
        client_id=client.client_id, client_secret=client.secrets[0].value, redirect_uri=f"{portal_url}{redirect_path}",
        bc_api_url=servers.bc_api_url or "", bc_scope="https://api.businesscentral.dynamics.com/.default",
        portal_port=port)
    return Stage(servers.authority, servers.bc, servers.clock, config, portal_url,
                 urlsplit(servers.authority_url).netloc, verify=str(servers.ca.ca_file), time=time_, page=page)


@dataclass
class PortalSession:
    """A prepared stage with the portal running (or the reason it is not), and how time is controlled."""

    ctx: ScenarioRun
    error: str  # the portal never became ready: what went wrong ("" when it listens)
    time_control: str  # "virtual (libfaketime)", "real: <why>" or "fixed: <why>", as results.json says it
    process: PortalProcess | None = None


def _uncontrolled(target: ExternalTarget, why: str) -> tuple[Time, str]:
    """The portal's clock cannot be moved: real waits if the user asked for them, else a fixed clock."""
    return (Time.REAL, f"real: {why}") if target.real_time else (Time.FIXED, f"fixed: {why}")


def not_run_reason(scenario: Scenario, time_: Time, time_control: str) -> str:
    """Why a scenario cannot give evidence with this time control ("" when it can)."""
    why = time_control.partition(": ")[2]
    if time_ is Time.FIXED and scenario.needs_time:
        return (f"needs time to pass, and the portal's clock cannot be moved ({why}); --real-time waits for real "
                f"instead, with {REAL_TIME_LIFETIME} s tokens")
    if time_ is Time.REAL and not scenario.real_waits:
        return f"would wait hours in real time ({why}); it runs in virtual time only"
    return ""


@contextlib.contextmanager
def portal_session(servers: FakeServers, target: ExternalTarget, mode: str, request_timeout: float = 10.0,
                   scenario: Scenario | None = None) -> Iterator[PortalSession | str]:
    """Reset the fakes, start the portal (if a command) on a fresh port and the virtual clock, and stop it after.

    With a ``ShiftedClock`` (libfaketime installed) a started portal shares the fakes' virtual clock: tokens keep
    Entra's lifetimes and waits take no time. Where the portal's clock cannot be moved (``--portal-url``, no
    libfaketime, a portal whose ``Date`` header shows it escaped libfaketime), time is real (``--real-time``, with
    tokens of ``REAL_TIME_LIFETIME``) or fixed. Yields the reason instead of a session when ``scenario`` cannot give
    evidence with the time control it would get (then no portal is left running)."""
    servers.authority.reset()
    servers.bc.reset()
    servers.trace.clear()
    clock = servers.clock if target.cmd and isinstance(servers.clock, ShiftedClock) else None
    if clock is not None:
        clock.reset()
        time_, time_control = Time.VIRTUAL, "virtual (libfaketime)"
    else:
        time_, time_control = _uncontrolled(target, "a portal the kit did not start keeps its own clock"
                                            if target.url else INSTALL_HINT)
    if scenario is not None and (reason := not_run_reason(scenario, time_, time_control)):
        yield reason
        return
    port = free_port() if target.cmd else (urlsplit(target.url).port or 80)
    portal_url = f"http://127.0.0.1:{port}" if target.cmd else target.url.rstrip("/")
    ctx = ScenarioRun(MODES[mode], stage_for(servers, mode, portal_url, target.redirect_path, target.page, time_),
                      request_timeout)
    process: PortalProcess | None = None
    error = ""
    try:
        if target.cmd:
            env = portal_environment(ctx.config, str(servers.ca.ca_file))
            if clock is not None:
                env = {k: v for k, v in env.items() if k not in ("FAKETIME", "FAKETIME_SHARED")}  # they win over
                env.update(clock.environment())  # the timestamp file
                clock.sweep_shm()
            process = PortalProcess(target.cmd, env, port, target.cwd)
            error = process.start(target.startup_timeout)
            if clock is not None and not error:
                controlled, why = clock.took_effect(_date_header(portal_url, request_timeout))
                if not controlled:  # e.g. a statically linked portal: as if libfaketime were absent
                    clock.reset(0.0)
                    ctx.stage.time, time_control = _uncontrolled(target, why)
                    if scenario is not None and (reason := not_run_reason(scenario, ctx.stage.time, time_control)):
                        yield reason
                        return
        if ctx.stage.time is Time.REAL:
            servers.authority.token_lifetime = REAL_TIME_LIFETIME
        yield PortalSession(ctx, error, time_control, process)
    finally:
        if process is not None:
            process.stop()
            if clock is not None:
                clock.sweep_shm()


def run_external_scenario(servers: FakeServers, target: ExternalTarget, mode: str, scenario: Scenario,
                          request_timeout: float = 10.0) -> ScenarioResult | NotRun:
    """One scenario on a fresh portal process (or the running ``--portal-url`` portal) and freshly reset fakes; a
    scenario that cannot give evidence with the time control available is not run (``NotRun``, with the reason)."""
    started = time.monotonic()
    with portal_session(servers, target, mode, request_timeout, scenario) as session:
        if isinstance(session, str):
            return NotRun(session)
        result = play(session.ctx, scenario, session.error)
        result.time_control = session.time_control
        if session.process is not None and session.process.not_ready:
            result.not_ready = session.process.not_ready
    result.waited = session.ctx.waited
    result.wall_time = time.monotonic() - started
    return result


def exploration_opener(servers: FakeServers, target: ExternalTarget, mode: str,
                       request_timeout: float = 10.0) -> Opener:
    """Each example of the exploration on a fresh portal process and freshly reset fakes, on the virtual clock
    (clock jumps are the exploration's rules: a portal whose clock the kit cannot move cannot be explored)."""

    @contextlib.contextmanager
    def opener() -> Iterator[tuple[ScenarioRun, str]]:
        with portal_session(servers, target, mode, request_timeout) as session:
            assert isinstance(session, PortalSession)
            if session.ctx.stage.time is not Time.VIRTUAL:
                raise CannotExplore("the exploration jumps the clock, and the portal's clock cannot be moved "
                                    f"({session.time_control.partition(': ')[2]})")
            yield session.ctx, session.error

    return opener


def _date_header(portal_url: str, timeout: float) -> str:
    """The ``Date`` header of the portal's answer to a path no portal serves (no flow starts, nothing is traced)."""
    try:
        return requests.get(f"{portal_url}/.well-known/bc-conformance-clock-probe", timeout=timeout,
                            allow_redirects=False).headers.get("Date", "")
    except requests.RequestException as err:
        return f"(no answer: {type(err).__name__})"


def wait_for_url(url: str, timeout: float, verify: bool | str = True) -> str:
    """For ``--portal-url``: wait until the portal answers anything; returns "" or the problem."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=2, allow_redirects=False, verify=verify)
            return ""
        except requests.RequestException as err:
            last = type(err).__name__
        time.sleep(0.2)
    return f"the portal at {url} did not answer within {timeout:g} s ({last})"

