"""Normal token requests while 5,000 slow connections are held open against ``bc-conformance serve`` (slowloris).

``serve`` runs as a child process (pinned to one core when there are two); the slow clients
(``bench.slowloris hold``: a partial request head, then a byte every ~3 s, reopened as soon as the server closes
it) and the latency probe (``bench.slowloris probe``: client-credentials token requests back to back) run in
their own processes on the other core. The probe measures the p99 latency of a token request on one kept-alive
connection and on a new TLS connection per request, first with no slow connections, then with them held, then
again without (the "no slow connections" samples are taken before and after, so drift hits both sides).

The slow connections are what the header deadline (10 s), the TLS handshake deadline and the connection cap
(from RLIMIT_NOFILE) exist for: each one gets a 408 after 10 s and is reopened at once, so ~500 handshakes and 408s
per second go on beside the probe. Target (issue 12): p99 < 200 ms with 5,000 slow connections.

Knobs (environment): ``BENCH_SLOWLORIS_CONNECTIONS`` (default 5000), ``BENCH_SLOWLORIS_SECONDS`` per probe sample
(default 5), ``BENCH_SLOWLORIS_REPEATS`` (default 3, with the slow connections held), ``BENCH_SLOWLORIS_FAKE_CMD``
(the command that serves the fake and prints its JSON line; default ``python -m conformance serve``).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shlex
import ssl
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.client import HTTPSConnection
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from bench.bench_authority import (
    BC_SCOPE,
    REPO,
    Served,
    _check,
    _child,
    _cpu_plan,
    _env_float,
    _machine_cpu,
    _orphan_guard,
    _own_cpu,
    _pin,
    _proc_cpu,
    _rss_mb,
)
from bench.harness import Figure

RAMP_TIMEOUT = 120.0  # seconds for the slow clients to get their connections open
HELD_FRACTION = 0.95  # of the slow connections that must be open before measuring (the others are being reopened)
MAX_ERROR_FRACTION = 0.01
TARGET_MS = 200.0


def _log(message: str) -> None:
    print(f"  [slowloris] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _serve(core: int | None) -> Iterator[tuple[subprocess.Popen[str], dict[str, Any]]]:
    custom = os.environ.get("BENCH_SLOWLORIS_FAKE_CMD")
    base = shlex.split(custom) if custom else [sys.executable, "-m", "conformance", "serve", "--host", "127.0.0.1"]
    with _child("serve", [*_pin(core), *base], REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"}) as (proc, info, _):
        yield proc, info


def _probe(info: dict[str, Any], core: int | None, seconds: float, fresh: bool) -> dict[str, Any]:
    body = urlencode({"grant_type": "client_credentials", "client_id": info["client_id"],
                      "client_secret": info["client_secret"], "scope": info.get("scope") or BC_SCOPE})
    cmd = [*_orphan_guard(), *_pin(core), sys.executable, "-m", "bench.slowloris", "probe",
           f"{info['authority']}/oauth2/v2.0/token", "--body", body, "--ca-file", info["ca_file"],
           "-d", str(seconds), *(["--fresh"] if fresh else [])]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=seconds + 60)
    if out.returncode != 0:
        raise RuntimeError(f"probe failed (exit {out.returncode}): {out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    bad = result["non200"] + result["errors"]
    if result["requests"] == 0 or bad > MAX_ERROR_FRACTION * max(result["requests"], 1):
        raise RuntimeError(f"probe: {result['requests']} answers, {result['non200']} non-200, {result['errors']} "
                           f"errors (> {MAX_ERROR_FRACTION:.0%}): {result}")
    return result


def _stats(info: dict[str, Any]) -> dict[str, Any]:
    url = info.get("stats_url") or ""
    if not url:
        return {}
    parts = urlsplit(url)
    conn = HTTPSConnection(parts.hostname, parts.port, context=ssl.create_default_context(cafile=info["ca_file"]),
                           timeout=10)
    try:
        conn.request("GET", parts.path, headers={"Connection": "close"})
        response = conn.getresponse()
        return json.loads(response.read()) if response.status == 200 else {}
    except (OSError, ValueError):
        return {}
    finally:
        conn.close()


class Slowloris:
    """The ``hold`` child: started pinned, its JSON counter lines read by a thread; stopped by closing its stdin."""

    def __init__(self, info: dict[str, Any], connections: int, core: int | None):
        url = f"{info['authority']}/oauth2/v2.0/token"
        cmd = [*_orphan_guard(), *_pin(core), sys.executable, "-m", "bench.slowloris", "hold", url,
               "-c", str(connections), "-d", "900", "--watch-stdin"]
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, start_new_session=True)
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.last: dict[str, Any] = {}
        threading.Thread(target=self._pump, daemon=True, name="slowloris-stdout").start()

    def _pump(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            with contextlib.suppress(ValueError):
                self.lines.put(json.loads(line))

    def latest(self) -> dict[str, Any]:
        with contextlib.suppress(queue.Empty):
            while True:
                self.last = self.lines.get_nowait()
        return self.last

    def wait_open(self, count: int, timeout: float) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                self.last = self.lines.get(timeout=1)
            except queue.Empty:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the slow clients exited ({self.proc.returncode})") from None
                continue
            if self.last.get("open", 0) >= count:
                return self.last
        raise RuntimeError(f"only {self.last.get('open', 0)} of {count} slow connections open after {timeout:.0f}s")

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.stdin.close()  # type: ignore[union-attr]
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


def _summary(runs: list[dict[str, Any]]) -> dict[str, float | str]:
    return {"p50_ms": round(statistics.median(r["p50_ms"] for r in runs), 2),
            "max_ms": round(max(r["max_ms"] for r in runs), 1),
            "requests": sum(r["requests"] for r in runs), "errors": sum(r["errors"] + r["non200"] for r in runs)}


def run() -> list[Figure]:
    connections = int(_env_float("BENCH_SLOWLORIS_CONNECTIONS", 5000))
    seconds = _env_float("BENCH_SLOWLORIS_SECONDS", 5.0)
    repeats = max(1, int(_env_float("BENCH_SLOWLORIS_REPEATS", 3)))
    server_core, client_core = _cpu_plan()
    _log(f"serve on {'core ' + str(server_core) if server_core is not None else 'any core'}; slow clients and "
         f"probe on {'core ' + str(client_core) if client_core is not None else 'any core'}")
    quiet: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    loaded: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    with _serve(server_core) as (proc, info):
        _check_token(proc, info)
        rss_idle = _rss_mb(proc.pid)
        for fresh in (False, True):
            quiet[fresh].append(_probe(info, client_core, seconds, fresh))
        slow = Slowloris(info, connections, client_core)
        try:
            ramp0 = time.monotonic()
            held = slow.wait_open(int(connections * HELD_FRACTION), RAMP_TIMEOUT)
            _log(f"{held['open']:,} slow connections open after {time.monotonic() - ramp0:.1f}s")
            opens, server_conns, rss = [], [], []
            cpu0 = (_machine_cpu()[0], _proc_cpu(proc.pid), _proc_cpu(slow.proc.pid), _own_cpu(), time.monotonic())
            for _ in range(repeats):
                for fresh in (False, True):
                    before = slow.latest().get("open", 0)
                    loaded[fresh].append(_probe(info, client_core, seconds, fresh))
                    opens.extend([before, slow.latest().get("open", 0)])
                    server_conns.append(_stats(info).get("servers", {}).get("authority", {}).get("connections", 0))
                    rss.append(_rss_mb(proc.pid))
            counters = slow.latest()
            server = _stats(info)
            busy, serve_cpu, slow_cpu, own, elapsed = (b - a for a, b in zip(cpu0, (
                _machine_cpu()[0], _proc_cpu(proc.pid), _proc_cpu(slow.proc.pid), _own_cpu(), time.monotonic()),
                strict=True))
            cpu = {"serve_cpu_pct": round(100 * serve_cpu / elapsed, 1), "slow_clients_cpu_pct": round(
                100 * slow_cpu / elapsed, 1), "foreign_cpu_pct": round(max(0.0, 100 * (
                    busy - serve_cpu - slow_cpu - own) / elapsed), 1)}
        finally:
            slow.stop()
        for fresh in (False, True):
            quiet[fresh].append(_probe(info, client_core, seconds, fresh))
    authority = server.get("servers", {}).get("authority", {})
    notes: dict[str, float | str] = {"slow_connections_target": connections,
             "slow_open_min": min(opens), "slow_open_median": statistics.median(opens),
             "server_connections_median": statistics.median(server_conns),
             "slow_reopened": counters.get("opened", 0), "slow_answers": json.dumps(counters.get("status", {})),
             "slow_connect_failures": counters.get("failed", 0),
             "server_header_timeouts": authority.get("header_timeouts", 0),
             "server_refused": authority.get("refused", 0),
             "server_max_connections": authority.get("max_connections", 0),
             "server_trims": authority.get("trims", 0), "server_trim_ms_max": authority.get("trim_ms_max", 0),
             "serve_rss_idle_mb": round(rss_idle, 1), "serve_rss_loaded_mb": round(max(rss), 1), **cpu}
    figures = []
    for fresh, label in ((False, "one kept-alive connection"), (True, "new TLS connection per request")):
        base = f"slowloris: token p99, {label}, no slow connections"
        figures.append(Figure(base, "ms", [r["p99_ms"] for r in quiet[fresh]], notes=_summary(quiet[fresh])))
        figures.append(Figure(f"slowloris: token p99, {label}, {connections:,} slow connections", "ms",
                              [r["p99_ms"] for r in loaded[fresh]], baseline=base, target=f"< {TARGET_MS:g} ms",
                              notes={**_summary(loaded[fresh]), **notes}))
    figures.append(Figure(f"slowloris: serve resident memory, {connections:,} slow connections", "MB", rss,
                          notes={"idle_mb": round(rss_idle, 1)}))
    for f in figures:
        if f.target:
            _log(f"{'MET   ' if f.median < TARGET_MS else 'MISSED'} {f.name}: p99 {f.median:.1f} ms "
                 f"(no slow connections: {statistics.median(r['p99_ms'] for r in quiet['new' in f.name]):.1f} ms)")
    _log(f"slow clients: {notes['slow_open_median']:,} open (median), reopened {notes['slow_reopened']:,} times, "
         f"server answers {notes['slow_answers']}; serve RSS {rss_idle:.0f} → {max(rss):.0f} MB; CPU: serve "
         f"{cpu['serve_cpu_pct']}%, slow clients {cpu['slow_clients_cpu_pct']}%, other processes "
         f"{cpu['foreign_cpu_pct']}% (of one core)")
    return figures


def _check_token(proc: subprocess.Popen[str], info: dict[str, Any]) -> None:
    """One token request outside the timed runs: 200, an RS256 JWT that verifies (bench_authority's check)."""
    body = urlencode({"grant_type": "client_credentials", "client_id": info["client_id"],
                      "client_secret": info["client_secret"], "scope": info.get("scope") or BC_SCOPE})
    _check(Served("fake", proc, info, f"{info['authority']}/oauth2/v2.0/token", body, Path(os.devnull),
                  Path(info["ca_file"]), f"{urlsplit(info['authority']).path}/discovery/v2.0/keys"))
