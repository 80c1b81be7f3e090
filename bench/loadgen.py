"""Closed-loop HTTP load for the server benchmarks: ``wrk`` when installed, else a Python fallback.

Both run as a child process (so they can be pinned with ``taskset`` to a core the servers do not use)
and report the same dict: requests, seconds, rate, non2xx, socket errors, latency percentiles.

The fallback (``python -m bench.loadgen URL ...``) is a thread per connection with keep-alive
``http.client``: it holds the GIL and tops out at a few thousand requests/s, so figures measured with it
are marked client-bound.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.client import HTTPSConnection
from pathlib import Path
from urllib.parse import urlsplit

INSTALL_HINT = ("wrk is not installed: the figures below come from the Python fallback client and are "
                "client-bound (it saturates before a fast server does). For real figures install wrk: "
                "`apt-get install -y wrk` (Debian/Ubuntu) or `brew install wrk` (macOS).")

# Lua for wrk: a fixed form POST on every keep-alive request, and a JSON summary line at the end.
_WRK_LUA = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Accept"] = "application/json"
wrk.body = %s

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\nBENCH_JSON {"requests":%%d,"duration_us":%%d,"bytes":%%d,"connect":%%d,"read":%%d,"write":%%d,' ..
    '"status":%%d,"timeout":%%d,"p50_us":%%d,"p99_us":%%d,"mean_us":%%.1f}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50.0), latency:percentile(99.0), latency.mean))
end
"""


@dataclass
class LoadResult:
    requests: int
    seconds: float
    non2xx: int  # responses with status >= 400 (wrk) / != 200 (fallback)
    socket_errors: int  # connect, read, write errors and timeouts
    p50_ms: float
    p99_ms: float
    client: str  # "wrk" | "python"
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def error_fraction(self) -> float:
        return (self.non2xx + self.socket_errors) / max(self.requests, 1)


def wrk_path() -> str | None:
    """``wrk`` on PATH, unless ``BENCH_LOADGEN=python`` forces the fallback client."""
    if os.environ.get("BENCH_LOADGEN", "").lower() == "python":
        return None
    return shutil.which("wrk")


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def run_wrk(url: str, body: str, connections: int, seconds: float, prefix: list[str] | None = None,
            threads: int = 1, timeout_s: float = 5.0) -> LoadResult:
    """``wrk -t threads -c connections -d seconds`` with keep-alive POSTs of ``body``."""
    wrk = wrk_path()
    if wrk is None:
        raise RuntimeError(INSTALL_HINT)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="bench-post-", delete=False) as f:
        f.write(_WRK_LUA % _lua_string(body))
        script = f.name
    try:
        cmd = [*(prefix or []), wrk, f"-t{max(1, min(threads, connections))}", f"-c{connections}",
               f"-d{max(1, round(seconds))}s", f"--timeout={timeout_s:g}s", "-s", script, url]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + timeout_s + 30)
    finally:
        Path(script).unlink(missing_ok=True)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed (exit {proc.returncode}): {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
    s = json.loads(line.removeprefix("BENCH_JSON "))
    return LoadResult(
        requests=s["requests"], seconds=s["duration_us"] / 1e6, non2xx=s["status"],
        socket_errors=s["connect"] + s["read"] + s["write"] + s["timeout"],
        p50_ms=s["p50_us"] / 1000, p99_ms=s["p99_us"] / 1000, client="wrk",
        extra={"bytes_per_response": s["bytes"] / max(s["requests"], 1)},
    )


def run_python(url: str, body: str, connections: int, seconds: float, ca_file: str,
               prefix: list[str] | None = None) -> LoadResult:
    """The fallback client, in a child process (``prefix`` e.g. ``["taskset", "-c", "1"]``)."""
    cmd = [*(prefix or []), sys.executable, "-m", "bench.loadgen", url, "--body", body, "--ca-file", ca_file,
           "-c", str(connections), "-d", str(seconds)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60,
                          cwd=Path(__file__).resolve().parent.parent)
    if proc.returncode != 0:
        raise RuntimeError(f"python load client failed (exit {proc.returncode}):\n{proc.stderr}")
    return LoadResult(**json.loads(proc.stdout.strip().splitlines()[-1]))


def _python_load(url: str, body: bytes, connections: int, seconds: float, ca_file: str) -> LoadResult:
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    context = ssl.create_default_context(cafile=ca_file)
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
    start_gate = threading.Barrier(connections + 1)
    stop_at = [0.0]
    lock = threading.Lock()
    totals = {"requests": 0, "non2xx": 0, "errors": 0}
    latencies: list[float] = []

    def worker() -> None:
        conn = HTTPSConnection(parts.hostname, parts.port, context=context, timeout=10)
        ok = bad = err = 0
        mine: list[float] = []
        start_gate.wait()
        while (now := time.perf_counter()) < stop_at[0]:
            try:
                conn.request("POST", path, body, headers)  # bytes body: one send with the headers
                response = conn.getresponse()
                response.read()
                mine.append(time.perf_counter() - now)
                if response.status == 200:
                    ok += 1
                else:
                    bad += 1
            except (OSError, ssl.SSLError, Exception):
                err += 1
                conn.close()
                conn = HTTPSConnection(parts.hostname, parts.port, context=context, timeout=10)
        conn.close()
        with lock:
            totals["requests"] += ok + bad
            totals["non2xx"] += bad
            totals["errors"] += err
            latencies.extend(mine[::10] or mine)

    workers = [threading.Thread(target=worker, daemon=True) for _ in range(connections)]
    for w in workers:
        w.start()
    begin = time.perf_counter()
    stop_at[0] = begin + seconds
    start_gate.wait()
    for w in workers:
        w.join(seconds + 30)
    elapsed = time.perf_counter() - begin
    latencies.sort()
    p = (lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000) if latencies else (lambda q: 0.0)
    return LoadResult(totals["requests"], elapsed, totals["non2xx"], totals["errors"], p(0.5), p(0.99), "python",
                      {"mean_ms": statistics.fmean(latencies) * 1000 if latencies else 0.0})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--body", required=True, help="application/x-www-form-urlencoded POST body")
    parser.add_argument("--ca-file", required=True)
    parser.add_argument("-c", "--connections", type=int, default=8)
    parser.add_argument("-d", "--duration", type=float, default=3.0)
    args = parser.parse_args(argv)
    result = _python_load(args.url, args.body.encode(), args.connections, args.duration, args.ca_file)
    print(json.dumps(result.__dict__))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
