"""External portals over real HTTPS: started per scenario, stopped cleanly, failures reported — never a crash."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conformance.cli import main
from conformance.external import ExternalTarget, PortalProcess, free_port, portal_environment, stage_for
from conformance.run import RunOptions, judge, run_mode
from conformance.servers import FakeServers
from fake_authority import Registry
from fake_authority.jwt import SigningKey

PY = sys.executable


def _http_portal(do_get: str) -> str:
    """A one-handler portal command listening on PORTAL_PORT; ``do_get`` is the body of ``do_GET``."""
    return (f"{PY} -c \"import os, socket, http.server as h\n"
            "class H(h.BaseHTTPRequestHandler):\n"
            f"    def do_GET(self):\n        {do_get}\n"
            "h.ThreadingHTTPServer(('127.0.0.1', int(os.environ['PORTAL_PORT'])), H).serve_forever()\"")


ANSWERS_500 = _http_portal("self.send_response(500); self.end_headers(); self.wfile.write(b'boom')")
BLOCK = "self.rfile.read()"  # a GET has no body: this blocks until the client gives up and closes
HANGS = _http_portal(BLOCK)
GARBAGE = _http_portal("self.wfile.write(b'\\x00\\xff not http at all\\r\\n\\r\\n'); self.wfile.flush()")
LOOPS = _http_portal("self.send_response(302); self.send_header('Location', self.path + 'x'); "
                     "self.send_header('Content-Length', '0'); self.end_headers()")


@pytest.fixture(scope="module")
def servers():
    registry = Registry.default().with_redirect_uris("http://127.0.0.1/auth/callback")
    with FakeServers(registry) as running:
        yield running


def _run(servers, cmd: str, mode: str = "AzApp", scenarios=("missing-token",), timeout: float = 20.0,
         request_timeout: float = 10.0) -> dict:
    target = ExternalTarget(cmd=cmd, startup_timeout=timeout)
    options = RunOptions(modes=(mode,), scenarios=scenarios, request_timeout=request_timeout)
    return judge(target, {mode: run_mode(target, mode, options, SigningKey(), servers=servers)}, options)


def _check(results: dict, check_id: str) -> dict:
    return next(c for c in results["checks"] if c["id"] == check_id)


def test_without_a_clock_the_kit_moves_time_dependent_checks_are_not_exercised(servers):
    """These fakes run on the wall clock (as without libfaketime): nothing is raced against real time — the
    scenarios whose evidence needs time to pass are not run, and their checks say why and what to do."""
    results = _run(servers, f"{PY} -m portals.serve", scenarios=("missing-token", "valid-token", "expired-token"))
    assert [c for c in results["checks"] if c["outcome"] == "failed"] == []
    assert _check(results, "missing-token-fetched")["outcome"] == "passed"
    for check_id, scenario in (("valid-token-reused", "valid-token"), ("expired-token-replaced", "expired-token")):
        check = _check(results, check_id)
        assert check["outcome"] == "not_exercised"
        assert f"scenario {scenario} was not run: needs time to pass" in check["message"], check["message"]
        assert "apt-get install faketime" in check["message"] and "--real-time" in check["message"]
    assert {s["name"]: s["outcome"] for s in results["scenarios"]}["expired-token"] == "not_exercised"
    assert results["exit_code"] == 3


def test_real_time_waits_for_real_with_tokens_that_outlive_the_renewal_margin(servers, monkeypatch):
    """--real-time: waits are real (here recorded instead of slept) and tokens live long enough for MSAL's 300 s
    margin plus the wait, so a correct portal reuses its token."""
    from conformance.engine import ScenarioRun
    from conformance.external import REAL_TIME_LIFETIME
    from flows.observations import RENEWAL_MARGIN

    slept: list[float] = []
    monkeypatch.setattr(ScenarioRun, "sleep", staticmethod(slept.append))
    target = ExternalTarget(cmd=f"{PY} -m portals.serve", real_time=True)
    options = RunOptions(modes=("AzApp",), scenarios=("valid-token",))
    results = judge(target, {"AzApp": run_mode(target, "AzApp", options, SigningKey(), servers=servers)}, options)
    assert slept == [60]
    assert REAL_TIME_LIFETIME - 60 > RENEWAL_MARGIN and servers.authority.token_lifetime == REAL_TIME_LIFETIME
    (scenario,) = results["scenarios"]
    assert scenario["time_control"].startswith("real: ") and scenario["waited"] == 60
    assert _check(results, "valid-token-reused")["outcome"] == "passed"
    assert "--real-time" in _check(results, "valid-token-reused")["replay"]


@pytest.mark.parametrize(("cmd", "reason"), [
    ("exit 3", "exited with code 3 before listening"),
    ("sleep 60", "never opened port"),
    (ANSWERS_500, "page status 500"),
    (HANGS, "within the request timeout"),
    (GARBAGE, "is not HTTP"),
    (LOOPS, "more than 20 redirects"),
], ids=["exits", "never-listens", "answers-500", "hangs", "garbage", "redirect-loop"])
def test_a_broken_portal_command_gets_failed_checks_with_the_reason(servers, cmd, reason):
    started = time.monotonic()
    results = _run(servers, cmd, timeout=2.0, request_timeout=1.0)
    assert time.monotonic() - started < 2.0 + 10  # bounded by the startup and request timeouts (plus the stop grace)
    working = _check(results, "working-portal")
    assert working["outcome"] == "failed"
    assert reason in working["received"] + working["message"], working
    assert results["exit_code"] == 1


def test_no_orphaned_process_is_left(servers, tmp_path):
    pidfile = tmp_path / "pid"
    # The shell starts a child that would outlive a plain kill of the shell; the process group must go.
    process = PortalProcess(f"sleep 60 & echo $! > {pidfile}; wait", dict(os.environ), free_port())
    assert "never opened port" in process.start(0.5)
    child = int(pidfile.read_text())
    assert _alive(child)
    process.stop()
    assert not _alive(child)


def _alive(pid: int) -> bool:
    """Running, not merely a zombie waiting for its reparented parent to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def test_a_portal_given_by_url_runs_only_the_scenarios_that_need_no_fresh_portal(servers):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = stage_for(servers, "AzApp", url, "/auth/callback").config
    process = PortalProcess(f"{PY} -m portals.serve", portal_environment(config, str(servers.ca.ca_file)), port)
    try:
        assert process.start(20) == ""
        skipped: dict[str, str] = {}
        target = ExternalTarget(url=url)
        options = RunOptions(modes=("AzApp",))
        per_mode = {"AzApp": run_mode(target, "AzApp", options, SigningKey(), servers=servers, skipped=skipped)}
    finally:
        process.stop()
    assert set(per_mode["AzApp"]) == {"two-users"}
    assert "missing-token" in skipped and "fresh portal" in skipped["missing-token"]
    assert "needs time to pass" in skipped["valid-token"] and "did not start" in skipped["valid-token"]
    results = judge(target, per_mode, options, None, {"AzApp": skipped})
    reused = _check(results, "valid-token-reused")
    assert reused["outcome"] == "not_exercised" and "keeps its own clock" in reused["message"]
    assert _check(results, "missing-token-fetched")["outcome"] == "not_exercised"


def test_portal_url_that_never_answers_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["run", "--mode", "AzApp", "--portal-url", f"http://127.0.0.1:{free_port()}", "--startup-timeout", "0.5",
              "--out", str(tmp_path / "out")])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "did not answer within 0.5 s" in err
    # The portal.env it printed the path of named this run's CA file, deleted with the run: nothing is left behind.
    assert not (tmp_path / "out").exists()


def test_conflicting_targets_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["run", "--portal-cmd", "true", "--portal-app", "x:y", "--out", str(tmp_path)])
    assert exited.value.code == 2 and "at most one of" in capsys.readouterr().err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_run_leaves_no_portal_process(tmp_path, sig):
    # The portal tells the test its pid once the kit is in the middle of a request to it, then hangs there.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(30)
        report = f"socket.create_connection(('127.0.0.1', {listener.getsockname()[1]})).sendall(b'%d' % os.getpid())"
        portal = _http_portal(f"{report}; {BLOCK}")
        kit = subprocess.Popen([PY, "-m", "conformance", "run", "--mode", "AzApp", "--portal-cmd", portal,
                                "--out", str(tmp_path / "out")], stderr=subprocess.PIPE, text=True)
        try:
            connection, _ = listener.accept()  # bounded by the listener's timeout
            with connection:
                portal_pid = int(connection.recv(32))
            kit.send_signal(sig)
            _, err = kit.communicate(timeout=30)
        finally:
            kit.kill()
    assert kit.returncode == (130 if sig == signal.SIGINT else 143)
    assert "Traceback" not in err
    assert not _alive(portal_pid)
    assert not (tmp_path / "out" / "results.json").exists()  # nothing half-done
