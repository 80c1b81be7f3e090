"""The load run's own process: the fakes, the portal, the virtual clock, and Locust in subprocesses.

Locust patches sockets, ssl and threading with gevent when imported; the fakes are asyncio servers in real
threads and this process has long imported requests and ssl. So this process never imports locust: it serves the
fakes (one unbounded trace that records wall times), starts the portal (``--portal-cmd``, under libfaketime) or
waits for it (``--portal-url``), runs ``python -m conformance.load.runner`` as one local Locust process, or as a
master and ``workers`` local workers, and moves the shared clock past every token's expiry every ``expire_every``
seconds while the users keep going. Its own CPU time while the users run is the fakes' (the clock thread and the
waiting main thread cost next to nothing), compared with the runner's and the portal's (``cpu`` in the evidence).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

import requests

from conformance.clock import Clock, SystemClock
from conformance.external import (
    CLIENT_SECRET_VARIABLE,
    PortalProcess,
    free_port,
    portal_environment,
    stage_for,
    wait_for_url,
)
from conformance.load.config import RunConfig
from conformance.load.evidence import Epoch, LoadEvidence, Throttle, Visit
from conformance.portal_time import INSTALL_HINT, ShiftedClock, faketime_library
from conformance.servers import FakeServers
from conformance.trace import Trace
from conformance.wire import Request, Response
from fake_authority import Registry
from fake_authority.registry import User

TOKEN_LATENCY = 0.15
"""Seconds the fake token endpoint takes to answer under load. Entra answers a token request in one to a few hundred
milliseconds; the fake's sub-millisecond answer would close the window in which a portal without single-flight
renewal sends one token request per request in flight, and hide the stampede."""
THROTTLE_RATE = 0.5
"""Business Central's per-principal rate limit while it throttles, in calls per second per user sharing the
principal: users open a page every 0.65 s on average and portals make one or two calls a page, so any portal crosses
it, also when all users share the application's principal (AzApp). It throttles in the last third of each period
between clock moves only (``THROTTLED_SHARE``, ``_move_clock``): every portal meets
429s with Retry-After, and every period also shows the portal working unthrottled. The window is the time between
clock moves at most (a move empties it); concurrency is not limited (real BC queues requests, it does not refuse
them)."""
THROTTLED_SHARE = 1 / 3  # of each period between clock moves: its end
UNLIMITED = 10**9  # calls per window outside the throttling phases
THROTTLE_WINDOW = 5.0  # seconds, at most
MAX_CONCURRENT = 10_000
RUNNER_GRACE = 60.0  # seconds the runner may take beyond the users' duration (sign-ins finishing, workers reporting)


class LoadError(Exception):
    """The run could not produce evidence: a portal that never became ready, a runner that failed (exit code 2)."""


@dataclass
class LoadTarget:
    cmd: str = ""
    url: str = ""
    cwd: str | None = None

    @property
    def name(self) -> str:
        return f"portal command: {self.cmd}" if self.cmd else f"portal at {self.url}"


@dataclass
class LoadOptions:
    mode: str = "AzUser"
    users: int = 10
    spawn_rate: float = 0.0  # users started per second; 0: all at once
    duration: float = 10.0
    expire_every: float = 0.0  # seconds between clock moves; 0: a third of the duration
    page: str = "/"
    redirect_path: str = "/auth/callback"
    startup_timeout: float = 30.0
    request_timeout: float = 10.0
    workers: int = 0  # 0: one Locust process; N: a master and N local workers
    web_port: int = 0  # > 0: Locust's web UI on 127.0.0.1:web_port
    throttle_rate: float = THROTTLE_RATE
    wait: tuple[float, float] = (0.3, 1.0)
    two_tabs: float = 0.2
    out_dir: Path | None = None  # --portal-url: where portal.env is written

    @property
    def every(self) -> float:
        return self.expire_every or max(1.0, self.duration / 3)


class LoadServers(FakeServers):
    """The fakes, with the token endpoint answering after ``TOKEN_LATENCY`` (without blocking the server), and the
    rate limit Business Central applies while it throttles (``_move_clock``)."""

    throttled_limit: int = UNLIMITED

    def _authority_handle(self, request: Request) -> Response:
        response = super()._authority_handle(request)
        if request.path.endswith("/token"):
            response.delay = max(response.delay, TOKEN_LATENCY)
        return response


def load_registry(users: int, redirect_path: str, portal_url: str = "") -> Registry:
    """The default registry plus ``users`` accounts (``user-001@…``) with passwords made for this run."""
    registry = Registry.default(client_secret=os.environ.get(CLIENT_SECRET_VARIABLE) or None).with_redirect_uris(
        f"http://127.0.0.1{redirect_path}", f"http://localhost{redirect_path}")
    if portal_url:
        registry = registry.with_redirect_uris(portal_url.rstrip("/") + redirect_path)
    domain = registry.tenant_domain
    extra = tuple(User(f"user-{i:03d}@{domain}", secrets.token_urlsafe(12),
                       str(uuid.uuid5(uuid.NAMESPACE_URL, f"fake-user/load-{i}")), f"Load User {i:03d}")
                  for i in range(1, users + 1))
    return replace(registry, users=(*registry.users, *extra))


class _Cpu:
    """CPU seconds of this process and of its reaped children, between ``start`` and ``stop``."""

    def start(self) -> None:
        t = os.times()
        self.own = t.user + t.system
        c = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.children = c.ru_utime + c.ru_stime

    def stop(self) -> None:
        t = os.times()
        self.own = t.user + t.system - self.own
        c = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.children = c.ru_utime + c.ru_stime - self.children


def run_load(target: LoadTarget, options: LoadOptions, note: Callable[[str], None] = lambda _msg: None) -> LoadEvidence:
    """Serve the fakes, start (or wait for) the portal, run the users, and return what was seen."""
    library = faketime_library() if target.cmd else None
    accounts = options.users + options.workers  # a worker's share may be one user larger than an even split
    registry = load_registry(accounts, options.redirect_path, target.url)
    clock: Clock = ShiftedClock(library) if library else SystemClock()
    trace = Trace(record_wall=True)  # unbounded: nothing the checks need is ever dropped
    work = Path(tempfile.mkdtemp(prefix="bc-conformance-load-"))
    cpu = _Cpu()
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, work, True)  # the runner's configuration holds the accounts' passwords
        if isinstance(clock, ShiftedClock):
            stack.callback(clock.close)
        servers = stack.enter_context(LoadServers(registry, clock=clock, trace=trace))
        window = min(THROTTLE_WINDOW, options.every)
        throttle = Throttle(max(1, round(options.throttle_rate * window)), window, MAX_CONCURRENT)
        share = 1 if options.mode == "AzUser" else options.users  # users whose calls count against one principal
        servers.bc.set_limits(UNLIMITED, throttle.window, throttle.max_concurrent)  # _move_clock throttles
        servers.throttled_limit = throttle.calls_per_user * share
        portal_url, time_control, expiry = _portal(servers, target, options, stack, note)
        cfg = RunConfig(
            options.mode, portal_url, options.page, options.redirect_path, urlsplit(servers.authority_url).netloc,
            str(servers.ca.ca_file), [(u.username, u.password) for u in registry.users[-accounts:]]
            if options.mode != "AzDelegate" else [(registry.delegate, registry.user(registry.delegate).password)],  # type: ignore[union-attr]
            options.users, options.spawn_rate or float(options.users), options.duration, str(work),
            workers=options.workers, wait=options.wait, two_tabs=options.two_tabs,
            request_timeout=options.request_timeout, web_port=options.web_port,
            step_names=RunConfig.names_for(options.mode))
        note(f"{options.users} users in {options.mode} for {options.duration:g} s"
             + (f", tokens expire every {options.every:g} s" if expiry else f" ({time_control})"))
        cpu.start()
        epochs = _drive(cfg, clock if expiry else None, servers, options, work)
        cpu.stop()
        stats = json.loads((work / "stats.json").read_text())
        visits = [Visit.of(json.loads(line)) for line in (work / "visits.jsonl").read_text().splitlines() if line]
        events = trace.events
        dropped = trace.stats()["dropped"] or 0
        fakes_servers = servers.stats()["servers"]
    runner_cpu = float(stats.get("cpu_seconds", 0.0)) + float(stats.get("workers_cpu_seconds", 0.0))
    total = cpu.own + cpu.children
    stats["fakes_servers"] = fakes_servers
    return LoadEvidence(
        options.mode, options.users, options.duration, options.workers, visits, epochs, events, stats,
        throttle, time_control, expiry, dropped, options.request_timeout,
        cpu={"fakes_seconds": round(cpu.own, 3), "runner_seconds": round(runner_cpu, 3),
             "portal_seconds": round(max(0.0, cpu.children - runner_cpu), 3),
             "fakes_share": round(cpu.own / total, 4) if total > 0 else 0.0})


def _portal(servers: FakeServers, target: LoadTarget, options: LoadOptions, stack: contextlib.ExitStack,
            note: Callable[[str], None]) -> tuple[str, str, bool]:
    """Start the portal (or wait for the one at ``--portal-url``); returns its URL, the time control and whether
    the clock can be moved under it."""
    clock = servers.clock
    if target.url:
        url = target.url.rstrip("/")
        if options.out_dir is not None:
            env = portal_environment(stage_for(servers, options.mode, url, options.redirect_path).config,
                                     str(servers.ca.ca_file))
            options.out_dir.mkdir(parents=True, exist_ok=True)
            env_file = options.out_dir / "portal.env"
            env_file.write_text("".join(f"{k}={env[k]}\n" for k in (
                "AUTH_MODE", "AUTHORITY", "TENANT_ID", "CLIENT_ID", "REDIRECT_URI", "BC_API_URL", "BC_SCOPE",
                "PORTAL_PORT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS")))
            env_file.chmod(0o600)
            note(f"start the portal with the environment in {env_file} and CLIENT_SECRET="
                 f"${CLIENT_SECRET_VARIABLE}; waiting for {url}")
        if problem := wait_for_url(url, options.startup_timeout):
            raise LoadError(problem)
        return url, "real: a portal the kit did not start keeps its own clock, so tokens do not expire under load", \
            False
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = portal_environment(stage_for(servers, options.mode, url, options.redirect_path, options.page).config,
                             str(servers.ca.ca_file))
    if isinstance(clock, ShiftedClock):
        clock.reset()
        env = {k: v for k, v in env.items() if k not in ("FAKETIME", "FAKETIME_SHARED")}
        env.update(clock.environment())
        clock.sweep_shm()
    process = PortalProcess(target.cmd, env, port, target.cwd)
    stack.callback(process.stop)
    if process.start(options.startup_timeout):
        raise LoadError(process.not_ready)
    if not isinstance(clock, ShiftedClock):
        return url, f"real: {INSTALL_HINT}", False
    try:
        date = requests.get(f"{url}/.well-known/bc-conformance-clock-probe", timeout=options.request_timeout,
                            allow_redirects=False).headers.get("Date", "")
    except requests.RequestException as err:
        date = f"(no answer: {type(err).__name__})"
    controlled, why = clock.took_effect(date)
    return url, ("virtual (libfaketime)" if controlled else f"real: {why}"), controlled


def _drive(cfg: RunConfig, clock: Clock | None, servers: LoadServers, options: LoadOptions,
           work: Path) -> list[Epoch]:
    """Run the Locust process(es) and, once the users started, move the clock every ``options.every`` seconds."""
    roles = ["local"] if not options.workers else ["master"] + ["worker"] * options.workers
    if options.workers:
        cfg.master_port = free_port()
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    try:
        for i, role in enumerate(roles):
            path = work / f"config-{i}.json"
            replace(cfg, role=role).write(path)
            logs.append(work / f"runner-{i}.log")
            with open(logs[-1], "wb") as log:
                procs.append(subprocess.Popen([sys.executable, "-m", "conformance.load.runner", str(path)],
                                              stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        epochs: list[Epoch] = []
        done = threading.Event()
        mover = threading.Thread(target=_move_clock, args=(clock, servers, options, work, epochs, done, procs[0]),
                                 name="load-clock", daemon=True)
        mover.start()
        try:
            code = procs[0].wait(options.duration + options.startup_timeout + RUNNER_GRACE)
        except subprocess.TimeoutExpired:
            code = None
        done.set()
        mover.join()
        for proc in procs[1:]:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        if code != 0 or not (work / "stats.json").exists():
            tail = logs[0].read_text(errors="replace")[-1500:] if logs[0].exists() else ""
            what = "did not finish in time" if code is None else f"exited with code {code}"
            raise LoadError(f"the Locust runner {what}; its last output:\n{tail}")
        return epochs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _move_clock(clock: Clock | None, servers: LoadServers, options: LoadOptions, work: Path, epochs: list[Epoch],
                done: threading.Event, runner: subprocess.Popen[bytes]) -> None:
    """Every ``options.every`` seconds of the users' run, every token expires: the clock moves by a token's
    lifetime plus one second, for the fakes and (libfaketime) the portal at once. Business Central throttles in the
    last part of each period (``THROTTLED_SHARE``, at ``THROTTLE_RATE``) and lets everything through before."""
    started = work / "started"
    while not started.exists():
        if done.wait(0.02) or runner.poll() is not None:
            return
    begin = float(started.read_text())
    moves = isinstance(clock, ShiftedClock)
    lifetime = servers.authority.lifetime_for(servers.registry.default_client)
    tight = servers.throttled_limit
    k = 1
    while (k - THROTTLED_SHARE) * options.every < options.duration:
        if done.wait(max(0.0, begin + (k - THROTTLED_SHARE) * options.every - time.time())):
            return
        servers.bc.set_limits(tight)
        if k * options.every >= options.duration or done.wait(max(0.0, begin + k * options.every - time.time())):
            return
        servers.bc.set_limits(UNLIMITED)
        if moves:
            virtual = clock.advance(lifetime + 1)  # type: ignore[union-attr]
            epochs.append(Epoch(k, time.time(), virtual))
        k += 1
