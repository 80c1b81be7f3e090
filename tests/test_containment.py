"""Portal processes are contained, key material does not outlive its run, and no output file holds a secret.

Real processes throughout; the tests wait on sockets and pidfds, never on sleeps. Each escaping portal
(``tests/escaping_portals.py``) reports every one of its processes (pid, start time, marker, port) before its port
opens, so "nothing left" is checked against what really ran: the pids are gone, no process carries the marker, and
the port is free.
"""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conformance import external, processes
from conformance.external import ExternalTarget, PortalProcess, free_port, portal_environment, stage_for
from conformance.run import RunOptions, run_mode
from conformance.servers import FakeServers
from conformance.tls import TLS_PREFIX, RunCA
from fake_authority import Registry
from fake_authority.jwt import SigningKey

linux = pytest.mark.skipif(not processes.CONTAINED, reason="needs Linux /proc, prctl and pidfds")

PY = sys.executable
ROOT = Path(__file__).resolve().parent.parent
PORTALS = ROOT / "tests" / "escaping_portals.py"
ESCAPING = ("ignores-term", "forks", "daemon")  # the three
KINDS = (*ESCAPING, "daemon-clean-env")  # and a daemon that also drops the marker: only its port gives it away
TIMEOUT = 60  # seconds: a bound on every wait, never a delay


# ---------------------------------------------------------------- helpers


@pytest.fixture
def reports() -> Iterator[socket.socket]:
    """The socket every portal process reports to."""
    with socket.create_server(("127.0.0.1", 0), backlog=64) as listener:
        listener.settimeout(TIMEOUT)
        yield listener


def _portal(kind: str, listener: socket.socket) -> str:
    return f"{shlex.quote(PY)} {shlex.quote(str(PORTALS))} {kind} {listener.getsockname()[1]}"


def _collect(listener: socket.socket) -> list[dict]:
    """Reports until the process that serves the port has reported (bounded by the listener's timeout)."""
    got: list[dict] = []
    while not any(r["role"] == "listener" for r in got):
        connection, _ = listener.accept()
        with connection, connection.makefile() as lines:
            got.append(json.loads(lines.readline()))
    return got


def _alive(pid: int, start: int) -> bool:
    """That very process is running (not a zombie, not a later process with the same pid)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return fields[0] not in ("Z", "X") and int(fields[19]) == start


def _carrying(marker: str) -> list[int]:
    """Every process whose environment holds this portal's marker (an independent scan of /proc)."""
    needle = f"{processes.MARKER}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def _port_free(port: int) -> bool:
    """Nobody listens on 127.0.0.1:port (SO_REUSEADDR: a connection in TIME_WAIT does not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen()
        except OSError:
            return False
    return True


def _assert_nothing_left(got: list[dict]) -> None:
    assert [r for r in got if _alive(r["pid"], r["start"])] == []
    markers = {r["marker"] for r in got if r["marker"]}
    assert markers, got  # at least the first process carried the kit's marker
    assert [pid for m in markers for pid in _carrying(m)] == []
    assert all(_port_free(r["port"]) for r in got)


def _wait_dead(pid: int, timeout: float = TIMEOUT) -> None:
    """Block on a pidfd until ``pid`` has exited (it is not our child: nothing to reap)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        assert select.select([fd], [], [], timeout)[0], f"process {pid} still running after {timeout} s"
    finally:
        os.close(fd)


def _kit(*args: str, **kwargs) -> subprocess.Popen[str]:
    return subprocess.Popen([PY, "-m", "conformance", "run", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.fixture(scope="module")
def servers():
    registry = Registry.default().with_redirect_uris("http://127.0.0.1/auth/callback")
    with FakeServers(registry) as running:
        yield running


# ---------------------------------------------------------------- 1. portal processes are contained


@linux
@pytest.mark.parametrize("kind", KINDS)
def test_nothing_a_portal_started_survives_its_scenario(servers, reports, kind, monkeypatch):
    monkeypatch.setattr(external, "GRACE", 0.5)  # the SIGTERM-ignoring processes cost the grace period, no more
    target = ExternalTarget(cmd=_portal(kind, reports), startup_timeout=20)
    options = RunOptions(modes=("AzApp",), scenarios=("missing-token",), request_timeout=5)
    results = run_mode(target, "AzApp", options, SigningKey(), servers=servers)
    assert set(results) == {"missing-token"}
    _assert_nothing_left(_collect(reports))
    assert not external._LIVE


@linux
@pytest.mark.parametrize("kind", ESCAPING)
def test_nothing_a_portal_started_survives_the_run(reports, kind, tmp_path):
    kit = _kit("--portal-cmd", _portal(kind, reports), "--mode", "AzApp", "--scenario", "missing-token",
               "--out", str(tmp_path / "out"))
    try:
        _, err = kit.communicate(timeout=TIMEOUT)
    finally:
        kit.kill()
    assert kit.returncode in (0, 1), err
    assert "Traceback" not in err
    _assert_nothing_left(_collect(reports))


@linux
@pytest.mark.parametrize("kind", ESCAPING)
def test_nothing_a_portal_started_survives_ctrl_c_of_the_run(reports, kind, tmp_path):
    kit = _kit("--portal-cmd", _portal(kind, reports), "--mode", "AzApp", "--scenario", "missing-token",
               "--out", str(tmp_path / "out"))
    try:
        got = _collect(reports)  # the portal is up (its listener reported): now interrupt the kit
        assert any(_alive(r["pid"], r["start"]) for r in got)
        kit.send_signal(signal.SIGINT)
        _, err = kit.communicate(timeout=TIMEOUT)
    finally:
        kit.kill()
    assert kit.returncode == 130, err
    assert "Traceback" not in err
    _assert_nothing_left(got)


@linux
@pytest.mark.parametrize("kind", ["forks", "daemon-clean-env"])
def test_the_marker_and_the_port_find_what_escaped_a_killed_supervisor(reports, kind, monkeypatch):
    """The supervisor is the first line; the kit's sweep (marker, owner of the port) is the second. Kill the first:
    ``daemon-clean-env`` has dropped the marker, so only the port finds it."""
    monkeypatch.setattr(external, "GRACE", 0.5)
    port = free_port()
    process = PortalProcess(_portal(kind, reports), {**os.environ, "PORTAL_PORT": str(port)}, port)
    try:
        assert process.start(20) == ""
        got = _collect(reports)
        os.kill(process.proc.pid, signal.SIGKILL)
        process.proc.wait(TIMEOUT)
        assert [r for r in got if r["role"] == "listener" and _alive(r["pid"], r["start"])]  # it escaped
    finally:
        process.stop()
    assert process.survivors == []
    _assert_nothing_left(got)


@linux
def test_a_daemonizing_portal_is_running_while_its_daemon_is(reports, monkeypatch):
    """The command exits at once, its daemon serves: the portal has not 'exited before listening', and the daemon
    is the supervisor's (a child subreaper's) child, not init's."""
    monkeypatch.setattr(external, "GRACE", 0.5)
    port = free_port()
    process = PortalProcess(_portal("daemon", reports), {**os.environ, "PORTAL_PORT": str(port)}, port)
    try:
        assert process.start(20) == ""
        got = _collect(reports)
        role = {r["role"]: r for r in got}
        _wait_dead(role["parent"]["pid"])
        _wait_dead(role["intermediate"]["pid"])
        assert processes.stat(role["listener"]["pid"]).ppid == process.proc.pid
        assert process.proc.poll() is None
    finally:
        process.stop()
    _assert_nothing_left(got)


# ---------------------------------------------------------------- 2. key material


def _owned(prefix: str, pid: int) -> list[Path]:
    return sorted(Path(tempfile.gettempdir()).glob(f"{prefix}{pid}-*"))


@linux
def test_a_sigkilled_run_leaves_its_keys_to_the_next_run_which_sweeps_them(reports, tmp_path):
    # The portal reports once the kit is in the middle of a request to it, then hangs there: mid-scenario.
    report = (f"socket.create_connection(('127.0.0.1', {reports.getsockname()[1]}))"
              ".sendall(json.dumps(dict(pid=os.getpid(), role='listener')).encode() + b'\\n')")
    portal = (f"{PY} -c \"import os, json, socket, http.server as h\n"
              "class H(h.BaseHTTPRequestHandler):\n"
              f"    def do_GET(self):\n        {report}; self.rfile.read()\n"
              "h.ThreadingHTTPServer(('127.0.0.1', int(os.environ['PORTAL_PORT'])), H).serve_forever()\"")
    kit = _kit("--portal-cmd", portal, "--mode", "AzApp", "--scenario", "missing-token",
               "--out", str(tmp_path / "out"))
    try:
        portal_pid = _collect(reports)[0]["pid"]
        shell = processes.stat(portal_pid).ppid
        supervisor = processes.stat(shell).ppid
        [tls] = _owned(TLS_PREFIX, kit.pid)
        assert stat.S_IMODE(tls.stat().st_mode) == 0o700
        assert {p.name for p in tls.iterdir()} >= {"ca.pem", "server-key.pem"}
        assert len(_owned(external.LOG_PREFIX, kit.pid)) == 1
        kit.kill()
        kit.wait(TIMEOUT)
    finally:
        kit.kill()
    # PDEATHSIG: the supervisor learns of the kit's death and stops the portal, unasked.
    _wait_dead(supervisor)
    assert not processes.stat(portal_pid) or not processes.stat(portal_pid).alive
    assert tls.exists()  # SIGKILL: the kit could not clean up ...
    ca = RunCA()  # ... the next run does
    try:
        assert not tls.exists()
        assert stat.S_IMODE(ca.directory.stat().st_mode) == 0o700
    finally:
        ca.close()
    assert not ca.directory.exists()
    assert _owned(external.LOG_PREFIX, kit.pid)  # the portal log, likewise, until the next portal starts
    external.sweep_leftovers()
    assert not _owned(external.LOG_PREFIX, kit.pid)


@linux
def test_a_directory_in_use_is_never_swept(tmp_path):
    ca = RunCA()
    try:
        assert ca.directory not in processes.sweep_owned(tempfile.gettempdir(), TLS_PREFIX)  # its owner lives
        assert ca.directory.exists()
    finally:
        ca.close()
    # A dead pid in the name is not enough (the pid may belong to another pid namespace): the lock must be free too.
    dead = subprocess.Popen(["true"])
    dead.wait()
    leftover = tmp_path / f"{TLS_PREFIX}{dead.pid}-x"
    leftover.mkdir(mode=0o700)
    lock = os.open(leftover, os.O_RDONLY | os.O_DIRECTORY)
    try:
        processes.hold(lock)
        assert processes.sweep_owned(tmp_path, TLS_PREFIX) == [] and leftover.exists()
    finally:
        os.close(lock)
    assert processes.sweep_owned(tmp_path, TLS_PREFIX) == [leftover] and not leftover.exists()


@linux
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_run_removes_its_keys(reports, sig, tmp_path):
    kit = _kit("--portal-cmd", _portal("plain", reports), "--mode", "AzApp", "--scenario", "missing-token",
               "--out", str(tmp_path / "out"))
    try:
        _collect(reports)
        [tls] = _owned(TLS_PREFIX, kit.pid)
        kit.send_signal(sig)
        kit.communicate(timeout=TIMEOUT)
    finally:
        kit.kill()
    assert kit.returncode == (130 if sig == signal.SIGINT else 143)
    assert not tls.exists()
    assert not _owned(external.LOG_PREFIX, kit.pid)


# ---------------------------------------------------------------- 3. no secret in any output file


def test_a_portal_url_run_writes_the_secret_nowhere(tmp_path):
    secret = "test~" + os.urandom(18).hex()
    out = tmp_path / "out"
    port = free_port()
    kit = _kit("--portal-url", f"http://127.0.0.1:{port}", "--mode", "AzApp", "--out", str(out),
               "--startup-timeout", str(TIMEOUT), env={**os.environ, external.CLIENT_SECRET_VARIABLE: secret})
    portal: PortalProcess | None = None
    try:
        assert kit.stderr is not None
        for line in kit.stderr:  # blocks until the kit says it waits for the portal
            if "Start the portal with the environment in" in line:
                break
        env_text = (out / "portal.env").read_text()
        assert "CLIENT_SECRET=" not in env_text
        assert external.CLIENT_SECRET_VARIABLE in env_text.splitlines()[0]  # a comment says where it comes from
        env = dict(line.split("=", 1) for line in env_text.splitlines() if line and not line.startswith("#"))
        # The user gives their portal the value they gave the kit.
        portal = PortalProcess(f"{PY} -m portals.serve", {**os.environ, **env, "CLIENT_SECRET": secret}, port,
                               str(ROOT))
        assert portal.start(TIMEOUT) == ""
        stdout, err = kit.communicate(timeout=TIMEOUT * 2)
    finally:
        kit.kill()
        if portal is not None:
            portal.stop()
    # The secret reached the fake client: the portal got its tokens, no MUST check failed. A --portal-url run is
    # incomplete (exit 3): a portal the kit does not restart cannot show its first access (missing-token).
    assert kit.returncode == 3, stdout + err
    assert "FAILED" not in stdout and "INCOMPLETE:" in stdout
    assert secret not in stdout + err
    written = [path for path in out.rglob("*") if path.is_file()]
    assert {p.name for p in written} >= {"portal.env", "results.json", "report.html"}
    assert [p for p in written if secret.encode() in p.read_bytes()] == []


@pytest.fixture
def signal_handlers() -> Iterator[None]:
    """``main`` installs SIGTERM/SIGHUP handlers for its run: give the test process its own back."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def test_a_generated_secret_is_printed_once_and_written_nowhere(tmp_path, capsys, monkeypatch, signal_handlers):
    from conformance.cli import main

    monkeypatch.delenv(external.CLIENT_SECRET_VARIABLE, raising=False)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exited:
        main(["run", "--mode", "AzApp", "--portal-url", f"http://127.0.0.1:{free_port()}", "--startup-timeout",
              "0.5", "--out", str(out)])
    assert exited.value.code == 2  # nobody started the portal
    err = capsys.readouterr().err
    secret = re.search(r"CLIENT_SECRET for this run \(shown once, written nowhere\): (\S+)", err)[1]
    assert err.count(secret) == 1 and external.CLIENT_SECRET_VARIABLE in err
    assert not out.exists()  # a run without a verdict leaves nothing, portal.env included


def test_the_environment_contract_is_unchanged_for_portal_commands(servers):
    config = stage_for(servers, "AzApp", "http://127.0.0.1:1", "/auth/callback").config
    env = portal_environment(config, str(servers.ca.ca_file))
    assert env["CLIENT_SECRET"] == servers.registry.default_client.secrets[0].value
