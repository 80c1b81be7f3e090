"""`bc-conformance serve`: one JSON line when ready, real clients over loopback HTTPS, clean exit on SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import msal
import pytest

NODE_DIR = Path(__file__).parent / "node"


@pytest.fixture(scope="module")
def served() -> Iterator[dict]:
    proc = subprocess.Popen([sys.executable, "-m", "conformance", "serve", "--token-lifetime", "1800"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # blocks until the servers are ready (or the process dies)
        assert line, f"serve printed nothing; stderr: {proc.stderr.read()}"
        info = json.loads(line)
        info["_proc"] = proc
        yield info
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)


def test_serve_prints_the_contract(served):
    for key in ("authority", "tenant_id", "client_id", "client_secret", "scope", "ca_file", "users", "bc_api_url"):
        assert key in served
    assert served["authority"].startswith("https://127.0.0.1:") and served["authority"].endswith(served["tenant_id"])
    assert served["scope"] == "https://api.businesscentral.dynamics.com/.default"
    assert Path(served["ca_file"]).read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert {u["username"].split("@")[0] for u in served["users"]} >= {"alice", "bob"}


def test_msal_python_against_serve(served, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", served["ca_file"])
    app = msal.ConfidentialClientApplication(served["client_id"], client_credential=served["client_secret"],
                                             authority=served["authority"], instance_discovery=False)
    result = app.acquire_token_for_client([served["scope"]])
    assert result.get("token_type") == "Bearer", result
    assert result["expires_in"] == 1800


def test_msal_node_against_serve(served):
    if not (NODE_DIR / "node_modules" / "@azure" / "msal-node").exists():
        if os.environ.get("CI"):
            pytest.fail("tests/node/node_modules is missing: .ci/run must run `npm ci --prefix tests/node`")
        pytest.skip("MSAL Node is not installed: run `npm ci --prefix tests/node`")
    node = shutil.which("node")
    assert node, "node is not on PATH"
    env = {**os.environ, "NODE_EXTRA_CA_CERTS": served["ca_file"]}
    out = subprocess.run([node, "client_credentials.mjs", served["authority"], served["client_id"],
                          served["client_secret"], served["scope"]],
                         cwd=NODE_DIR, env=env, capture_output=True, text=True, timeout=60)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["ok"], (result, out.stderr[-2000:])
    assert result["tokenType"] == "Bearer" and result["sameToken"] and result["fromCache"]


def test_sigterm_exits_zero_and_removes_the_run_ca():
    proc = subprocess.Popen([sys.executable, "-m", "conformance", "serve"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    ca_dir = Path(json.loads(proc.stdout.readline())["ca_file"]).parent
    assert (ca_dir / "server-key.pem").exists()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    assert not ca_dir.exists()  # the run's certificates and private keys do not outlive it
    # Its last word says how many trace events its limit dropped, with the servers' counters.
    last = proc.stderr.read().strip().splitlines()[-1]
    assert last.startswith("bc-conformance serve: stopped; trace events dropped: 0 ")
    stats = json.loads(last.split("stats: ", 1)[1])
    assert stats["trace"]["dropped"] == 0 and stats["trace"]["limit"] > 0
    assert set(stats["servers"]) == {"authority", "bc"}


def test_serve_reports_its_stats(served):
    """GET /_bc_conformance/stats on the Authority: the trace (kept, limit, dropped) and each server's counters."""
    import requests

    from conformance.http_protocol import connection_cap

    stats = requests.get(served["stats_url"], verify=served["ca_file"], timeout=10).json()
    assert stats["trace"]["limit"] > 0 and stats["trace"]["dropped"] == 0
    for server in ("authority", "bc"):
        counters = stats["servers"][server]
        # sized from RLIMIT_NOFILE (inherited from this process, soft raised to hard), shared by the two servers
        assert counters["max_connections"] == connection_cap(servers=2)
        assert counters["bodies_in_flight"] == 0 and counters["refused"] == 0


def test_serve_with_a_bad_config_exits_2(tmp_path):
    bad = tmp_path / "reg.json"
    bad.write_text(json.dumps({"clients": [{"client_id": "not-a-guid"}]}))
    out = subprocess.run([sys.executable, "-m", "conformance", "serve", "--config", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "clients[0].client_id" in out.stderr and not out.stdout



def test_a_long_running_authority_keeps_bounded_memory(monkeypatch):
    """`serve` may issue millions of tokens: its trace and its memory of issued values keep only the newest."""
    from urllib.parse import urlencode

    from conformance.clock import SystemClock
    from conformance.trace import Trace
    from conformance.wire import Request
    from fake_authority import Authority, Registry, core

    monkeypatch.setattr(core, "ISSUED_VALUES_KEPT", 5)
    registry = Registry.default()
    client = registry.default_client
    authority = Authority(registry, SystemClock(), Trace(limit=4))
    body = urlencode({"grant_type": "client_credentials", "client_id": client.client_id,
                      "client_secret": client.secrets[0].value,
                      "scope": "https://api.businesscentral.dynamics.com/.default"}).encode()
    request = Request("POST", f"/{registry.tenant_id}/oauth2/v2.0/token", "",
                      {"content-type": "application/x-www-form-urlencoded"}, body)
    tokens = [json.loads(authority.handle(request).body)["access_token"] for _ in range(8)]
    assert list(authority.issued_values) == tokens[-5:]
    assert [e.seq for e in authority.trace.events] == [5, 6, 7, 8]
