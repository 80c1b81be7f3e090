"""Token endpoint (client credentials) of the fake Authority vs the npm ``oauth2-mock-server``, side by side.

Both servers run as child processes on 127.0.0.1 over HTTPS with leaf certificates from the same run CA
(ECDSA P-256, so the same TLS work per handshake), and sign an RS256 JWT (2048-bit key) per request.
The load generator (``wrk``, keep-alive, ``-c`` = concurrency) is pinned to one core; the servers are
pinned to another core ("pinned") or left free ("unpinned"). The fake and the peer are measured in
turn at each point, so drift hits both. The single-core RS256 signing rate of this machine, measured in
the same run, is the ceiling any token endpoint that signs per request can reach on one core.

Targets (issue): fake ≥ 2× peer pinned, ≥ 1× peer unpinned, and fake pinned c=8 ≥ 60% of the signing rate.

Setup on a fresh machine: ``apt-get install -y wrk`` and ``npm ci --prefix bench/node``.
Knobs (environment):
- ``BENCH_AUTHORITY_SECONDS`` per sample (default 3), ``BENCH_AUTHORITY_REPEATS`` (default 3),
  ``BENCH_AUTHORITY_CONCURRENCY`` (default ``1,8,64``);
- ``BENCH_LOADGEN=python`` forces the fallback client (figures then client-bound);
- ``BENCH_AUTHORITY_FAKE_CMD``: the command that serves the fake and prints its JSON line (default
  ``python -m conformance serve --host 127.0.0.1 --port 0``), e.g. to bench a scratch copy with a fix.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import resource
import shlex
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.client import HTTPSConnection
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from bench.harness import Figure
from bench.loadgen import INSTALL_HINT, LoadResult, run_python, run_wrk, wrk_path
from conformance.tls import RunCA, TlsFiles

median = statistics.median

HERE = Path(__file__).resolve().parent
NODE_DIR = HERE / "node"
REPO = HERE.parent
BC_SCOPE = "https://api.businesscentral.dynamics.com/.default"
MAX_ERROR_FRACTION = 0.01  # more than 1% non-2xx or socket errors fails the benchmark
WARMUP_SECONDS = 1.0
START_TIMEOUT = 30.0


def _log(message: str) -> None:
    print(f"  [authority] {message}", file=sys.stderr, flush=True)


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


# ---------------------------------------------------------------------------------------------- processes


@dataclass
class Served:
    name: str
    proc: subprocess.Popen[str]
    info: dict[str, Any]
    token_url: str
    body: str
    stderr_path: Path
    ca_file: Path
    jwks_path: str


def _cpu_plan() -> tuple[int | None, int | None]:
    """(server core, client core), or Nones when pinning is impossible here."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return None, None
    if len(cpus) < 2 or shutil.which("taskset") is None:
        return None, None
    return cpus[0], cpus[1]


def _pin(core: int | None) -> list[str]:
    return [] if core is None else ["taskset", "-c", str(core)]


def _orphan_guard() -> list[str]:
    """Servers get SIGTERM if this process dies without cleaning up (killed, crashed): Linux ``setpriv``."""
    return ["setpriv", "--pdeathsig", "TERM", "--"] if shutil.which("setpriv") else []


def _stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM the child (only it: its own process group, started by us), then SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


@contextlib.contextmanager
def _child(name: str, cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> Iterator[
        tuple[subprocess.Popen[str], dict[str, Any], Path]]:
    """Start ``cmd``, wait for its one JSON line on stdout, yield (proc, info, stderr file); always stop it."""
    err = tempfile.NamedTemporaryFile("w+", prefix=f"bench-{name}-", suffix=".err", delete=False)  # noqa: SIM115
    cmd = [*_orphan_guard(), *cmd]
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                            text=True, start_new_session=True)
    try:
        lines: queue.Queue[str] = queue.Queue()

        def pump() -> None:  # keep reading so the child never blocks on a full pipe
            for line in proc.stdout:  # type: ignore[union-attr]
                lines.put(line)

        threading.Thread(target=pump, daemon=True, name=f"bench-{name}-stdout").start()
        deadline = time.monotonic() + START_TIMEOUT
        info: dict[str, Any] | None = None
        while info is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} did not print its JSON line within {START_TIMEOUT:.0f}s: {' '.join(cmd)}")
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                if proc.poll() is not None:
                    err.seek(0)
                    raise RuntimeError(f"{name} exited with {proc.returncode} while starting: {' '.join(cmd)}\n"
                                       f"{err.read()[-2000:]}") from None
                continue
            with contextlib.suppress(ValueError):
                info = json.loads(line)
        yield proc, info, Path(err.name)
    finally:
        _stop(proc)
        err.close()
        Path(err.name).unlink(missing_ok=True)


@contextlib.contextmanager
def _fake(core: int | None) -> Iterator[Served]:
    # BENCH_AUTHORITY_FAKE_CMD replaces the command, e.g. to bench a scratch copy with a proposed fix:
    # PYTHONPATH=/tmp/copy BENCH_AUTHORITY_FAKE_CMD="python -P -m conformance serve" python -m bench authority
    custom = os.environ.get("BENCH_AUTHORITY_FAKE_CMD")
    base = shlex.split(custom) if custom else [sys.executable, "-m", "conformance", "serve", "--host", "127.0.0.1",
                                               "--port", "0"]
    cmd = [*_pin(core), *base]
    with _child("fake", cmd, REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"}) as (proc, info, err):
        body = urlencode({"grant_type": "client_credentials", "client_id": info["client_id"],
                          "client_secret": info["client_secret"], "scope": info.get("scope") or BC_SCOPE})
        yield Served("fake", proc, info, f"{info['authority']}/oauth2/v2.0/token", body, err, Path(info["ca_file"]),
                     f"{urlsplit(info['authority']).path}/discovery/v2.0/keys")


@contextlib.contextmanager
def _peer(core: int | None, tls: TlsFiles, client_id: str, client_secret: str) -> Iterator[Served]:
    cmd = [*_pin(core), "node", str(NODE_DIR / "mock_server.mjs"), "--cert", str(tls.cert_file),
           "--key", str(tls.key_file), "--host", "127.0.0.1", "--port", "0"]
    with _child("peer", cmd, NODE_DIR) as (proc, info, err):
        # The same form as the fake gets (the peer ignores the client credentials but parses them).
        body = urlencode({"grant_type": "client_credentials", "client_id": client_id,
                          "client_secret": client_secret, "scope": BC_SCOPE})
        yield Served("peer", proc, info, info["token_url"], body, err, tls.ca_file, "/jwks")


def _peer_missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed (Node 20.19+ is needed for oauth2-mock-server 8)"
    if not (NODE_DIR / "node_modules" / "oauth2-mock-server" / "package.json").exists():
        return f"oauth2-mock-server is not installed: run `npm ci --prefix {NODE_DIR.relative_to(REPO)}`"
    return None


# ---------------------------------------------------------------------------------------------- checks


def _jwk_public_key(jwk: dict[str, Any]) -> Any:
    from cryptography.hazmat.primitives.asymmetric import rsa

    from fake_authority.jwt import b64url_decode

    n = int.from_bytes(b64url_decode(jwk["n"]), "big")
    e = int.from_bytes(b64url_decode(jwk["e"]), "big")
    return rsa.RSAPublicNumbers(e, n).public_key()


def _check(served: Served) -> dict[str, str]:
    """One token request outside the timed runs: 200, an RS256 JWT verifying with the published key, and
    two tokens in a row differ (signed per request, not cached). Returns the TLS parameters for the notes."""
    from fake_authority.jwt import parse

    parts = urlsplit(served.token_url)
    context = ssl.create_default_context(cafile=str(served.ca_file))
    conn = HTTPSConnection(parts.hostname, parts.port, context=context, timeout=10)
    try:
        tokens = []
        for _ in range(2):
            conn.request("POST", parts.path, served.body.encode(),
                         {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"})
            response = conn.getresponse()
            raw = response.read()
            if response.status != 200:
                raise RuntimeError(f"{served.name}: token endpoint answered {response.status}: {raw[:300]!r}")
            tokens.append(json.loads(raw)["access_token"])
            if served.name == "peer" and len(tokens) == 1:
                # RS256 (PKCS#1 v1.5) is deterministic and the peer's claims carry no unique id: only a new
                # ``iat`` second makes its next token differ, which shows it is signed anew, not cached.
                time.sleep(1.05)
        tls = {"tls": str(conn.sock.version()), "cipher": conn.sock.cipher()[0]}  # type: ignore[union-attr]
        conn.request("GET", served.jwks_path)
        keys = json.loads(conn.getresponse().read())["keys"]
    finally:
        conn.close()
    jwt = parse(tokens[0])
    if jwt.header.get("alg") != "RS256":
        raise RuntimeError(f"{served.name}: token is not RS256: {jwt.header}")
    key = next((k for k in keys if k.get("kid") == jwt.header.get("kid")), None)
    if key is None or not jwt.verify(_jwk_public_key(key)):
        raise RuntimeError(f"{served.name}: token signature does not verify with the published JWKS")
    if tokens[0] == tokens[1]:
        raise RuntimeError(f"{served.name}: two token requests returned the same token (not signed per request)")
    bits = _jwk_public_key(key).key_size
    return {**tls, "jwt": f"RS256 {bits}-bit, verified", "token_bytes": str(len(tokens[0]))}


# ---------------------------------------------------------------------------------------------- load


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) used so far by a live process; 0 where /proc is missing."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _machine_cpu() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine so far, from /proc/stat."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (values + [0] * 8)[:8]
    return (user + nice + system + irq + softirq) / tick, steal / tick


def _own_cpu() -> float:
    """CPU seconds of this process and its waited-for children (the load generator)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _load(served: Served, concurrency: int, seconds: float, client_core: int | None) -> LoadResult:
    """One closed-loop run; also accounts CPU: the server's per request, and what other processes on this
    machine used meanwhile (a shared machine makes throughput figures noisy; CPU per request much less so)."""
    server0, (busy0, steal0), own0, t0 = _proc_cpu(served.proc.pid), _machine_cpu(), _own_cpu(), time.monotonic()
    if wrk_path() is not None:
        result = run_wrk(served.token_url, served.body, concurrency, seconds,
                         prefix=[*_orphan_guard(), *_pin(client_core)])
    else:
        result = run_python(served.token_url, served.body, concurrency, seconds, str(served.ca_file),
                            prefix=[*_orphan_guard(), *_pin(client_core)])
    server = _proc_cpu(served.proc.pid) - server0
    (busy1, steal1), own, elapsed = _machine_cpu(), _own_cpu() - own0, time.monotonic() - t0
    if served.proc.poll() is not None:
        raise RuntimeError(f"{served.name} died under load (exit {served.proc.returncode}): "
                           f"{served.stderr_path.read_text()[-2000:]}")
    if result.requests == 0 or result.error_fraction > MAX_ERROR_FRACTION:
        raise RuntimeError(
            f"{served.name} c={concurrency}: {result.requests} responses, {result.non2xx} non-2xx, "
            f"{result.socket_errors} socket errors (> {MAX_ERROR_FRACTION:.0%}): the figures would be meaningless")
    result.extra["server_cpu_us_per_req"] = 1e6 * server / result.requests
    result.extra["server_cores"] = server / elapsed
    result.extra["foreign_cpu_pct"] = max(0.0, 100 * (busy1 - busy0 - server - own) / elapsed)
    result.extra["steal_pct"] = 100 * (steal1 - steal0) / elapsed
    return result


def _sign_rates(core: int | None, busy_core: int | None = None, seconds: float = 1.0,
                repeats: int = 5) -> tuple[list[float], list[float]]:
    """Single-core RS256 signs/s: ``SigningKey.sign`` of the fake's real app claims, and the bare
    ``cryptography`` sign of the same signing input (the floor of the work per token), taking turns.

    With ``busy_core``, a spin loop runs on that core meanwhile: whether a busy load-generator core slows
    the server core's RSA (shared execution units, a noisy host). On a quiet 2-vCPU VM here it does not.
    """
    from conformance.clock import SystemClock
    from fake_authority import Authority
    from fake_authority.jwt import _PAD, _SHA256  # the exact padding/hash objects the fake signs with
    from fake_authority.tokens import app_claims

    authority = Authority(clock=SystemClock())
    client = authority.registry.default_client
    claims = app_claims(authority.registry, client, "https://api.businesscentral.dynamics.com", int(time.time()), 3600)
    key = authority.key
    signing_input = key.sign(claims).rsplit(".", 1)[0].encode()
    private_key = key.private_key

    def timed(fn: Any) -> float:
        n, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            for _ in range(20):
                fn()
            n += 20
        return n / elapsed

    before = os.sched_getaffinity(0) if core is not None else None
    spinner = None
    jwt_rate: list[float] = []
    raw_rate: list[float] = []
    try:
        if busy_core is not None:
            spinner = subprocess.Popen([*_orphan_guard(), *_pin(busy_core), sys.executable, "-c", "while True: pass"],
                                       start_new_session=True)
        if core is not None:
            os.sched_setaffinity(0, {core})
        key.sign(claims)
        for _ in range(repeats):
            jwt_rate.append(timed(lambda: key.sign(claims)))
            raw_rate.append(timed(lambda: private_key.sign(signing_input, _PAD, _SHA256)))
    finally:
        if before is not None:
            os.sched_setaffinity(0, before)
        if spinner is not None:
            spinner.kill()
            spinner.wait(5)
    return jwt_rate, raw_rate


# ---------------------------------------------------------------------------------------------- run


def _concurrencies() -> list[int]:
    raw = os.environ.get("BENCH_AUTHORITY_CONCURRENCY", "1,8,64")
    return [int(c) for c in raw.split(",") if c.strip()]


def _measure(servers: list[Served], levels: list[int], seconds: float, repeats: int, client_core: int | None,
             mode: str) -> dict[tuple[str, int], list[LoadResult]]:
    """Every concurrency level: a warm-up of each server, then ``repeats`` runs taking turns (ABBA order)."""
    out: dict[tuple[str, int], list[LoadResult]] = {}
    for c in levels:
        for s in servers:
            _load(s, c, WARMUP_SECONDS, client_core)
        for rep in range(repeats):
            for s in servers if rep % 2 == 0 else servers[::-1]:
                out.setdefault((s.name, c), []).append(_load(s, c, seconds, client_core))
        _log(f"{mode} c={c}: " + "  ".join(
            f"{s.name} {median([r.rate for r in out[(s.name, c)]]):,.0f} req/s "
            f"({median([r.extra['server_cpu_us_per_req'] for r in out[(s.name, c)]]):,.0f} µs CPU/req)"
            for s in servers))
    return out


def _notes(runs: list[LoadResult], client: str, tls: dict[str, str]) -> dict[str, float | str]:
    def mid(key: str) -> float:
        return round(median([r.extra.get(key, 0.0) for r in runs]), 1)

    return {
        "client": client, "p50_ms": round(median([r.p50_ms for r in runs]), 2),
        "p99_ms": round(median([r.p99_ms for r in runs]), 2),
        "requests": sum(r.requests for r in runs), "errors": sum(r.non2xx + r.socket_errors for r in runs),
        "server_cpu_us_per_req": mid("server_cpu_us_per_req"), "server_cores": round(mid("server_cores"), 2),
        "foreign_cpu_pct_max": round(max(r.extra.get("foreign_cpu_pct", 0.0) for r in runs), 1),
        "steal_pct_max": round(max(r.extra.get("steal_pct", 0.0) for r in runs), 1),
        **tls,
    }


def run() -> list[Figure]:
    seconds = _env_float("BENCH_AUTHORITY_SECONDS", 3.0)
    repeats = max(1, int(_env_float("BENCH_AUTHORITY_REPEATS", 3)))
    levels = _concurrencies()
    server_core, client_core = _cpu_plan()
    modes = ["pinned", "unpinned"] if server_core is not None else ["unpinned"]
    if server_core is None:
        _log("fewer than 2 usable CPUs or no taskset: pinned runs skipped, client and servers share the CPUs")
    client = "wrk" if wrk_path() else "python (client-bound: install wrk)"
    if wrk_path() is None:
        _log(INSTALL_HINT)
    peer_problem = _peer_missing()
    if peer_problem:
        _log(f"peer skipped: {peer_problem}")
    tls_dir = tempfile.TemporaryDirectory(prefix="bench-authority-tls-")
    try:
        return _run(seconds, repeats, levels, server_core, client_core, modes, client, peer_problem,
                    RunCA(Path(tls_dir.name)).issue(("127.0.0.1", "localhost"), name="peer"))
    finally:
        tls_dir.cleanup()


def _run(seconds: float, repeats: int, levels: list[int], server_core: int | None, client_core: int | None,
         modes: list[str], client: str, peer_problem: str | None, peer_tls: TlsFiles) -> list[Figure]:
    sign_jwt, sign_raw = _sign_rates(server_core, repeats=3)
    results: dict[tuple[str, str, int], list[LoadResult]] = {}
    tls_notes: dict[str, dict[str, str]] = {}
    for mode in modes:
        core = server_core if mode == "pinned" else None
        with contextlib.ExitStack() as stack:
            fake = stack.enter_context(_fake(core))
            servers = [fake]
            if not peer_problem:
                servers.insert(0, stack.enter_context(
                    _peer(core, peer_tls, fake.info["client_id"], fake.info["client_secret"])))
            for s in servers:
                tls_notes[s.name] = _check(s)
            _log(f"{mode}: servers on {'core ' + str(core) if core is not None else 'any core'}, load generator on "
                 f"{'core ' + str(client_core) if client_core is not None else 'any core'}; checked "
                 + "; ".join(f"{n}: " + ", ".join(f"{k}={v}" for k, v in t.items()) for n, t in tls_notes.items()))
            for (who, c), runs in _measure(servers, levels, seconds, repeats, client_core, mode).items():
                results[(mode, who, c)] = runs
            _log(f"{mode}: resident memory after the runs: " + ", ".join(
                f"{s.name} {_rss_mb(s.proc.pid):,.0f} MB" for s in servers))
    # Signing again after the load: the machine's speed drifts (shared host), so the ceiling uses both.
    more_jwt, more_raw = _sign_rates(server_core, repeats=3)
    sign_jwt, sign_raw = sign_jwt + more_jwt, sign_raw + more_raw
    busy_jwt = _sign_rates(server_core, busy_core=client_core, repeats=3)[0] if server_core is not None else []

    bare = "authority: RS256 sign (bare cryptography), 1 core"
    sign_name = "authority: RS256 sign (SigningKey.sign), 1 core"
    figures = [
        Figure(bare, "signs/s", sign_raw, notes={"key": "RSA 2048, PKCS#1 v1.5, SHA-256"}),
        Figure(sign_name, "signs/s", sign_jwt, baseline=bare,
               notes={"claims": "the fake's app-token claims; json + base64url included"}),
    ]
    busy_name = "authority: RS256 sign (SigningKey.sign), 1 core, other core busy"
    if busy_jwt:
        figures.append(Figure(busy_name, "signs/s", busy_jwt, baseline=sign_name,
                              notes={"why": "a spin loop on the load generator's core: do the cores slow each other?"}))
    _log(f"RS256 signing, 1 core: {median(sign_jwt):,.0f}/s via SigningKey, {median(sign_raw):,.0f}/s bare")
    foreign = max((r.extra.get("foreign_cpu_pct", 0.0) for runs in results.values() for r in runs), default=0.0)
    if foreign > 15:
        _log(f"WARNING: other processes used up to {foreign:.0f}% of a core during the runs: throughput figures "
             "are noisy; the µs CPU/req notes are the steadier comparison")
    tag = "" if wrk_path() else " [client-bound]"
    for mode in modes:
        target = "≥ 2× peer" if mode == "pinned" else "≥ 1× peer"
        for c in levels:
            peer_name = f"authority: peer oauth2-mock-server, {mode}, c={c}{tag}"
            peer_runs, fake_runs = results.get((mode, "peer", c)), results[(mode, "fake", c)]
            if peer_runs:
                figures.append(Figure(peer_name, "req/s", [r.rate for r in peer_runs],
                                      notes=_notes(peer_runs, client, tls_notes["peer"])))
            figures.append(Figure(f"authority: fake Authority, {mode}, c={c}{tag}", "req/s",
                                  [r.rate for r in fake_runs], baseline=peer_name if peer_runs else "", target=target,
                                  notes=_notes(fake_runs, client, tls_notes["fake"])))
    mode = "pinned" if "pinned" in modes else "unpinned"
    c8 = 8 if 8 in levels else levels[0]
    sign_rate = median(sign_jwt)
    fake_c8 = results[(mode, "fake", c8)]
    figures.append(Figure(f"authority: fake {mode} c={c8} vs 1-core RS256 sign", "% of signs/s",
                          [100 * r.rate / sign_rate for r in fake_c8], target="≥ 60%",
                          notes={"signs_per_s": round(sign_rate, 1)}))
    best_c = max(levels, key=lambda c: median([r.rate for r in results[(mode, "fake", c)]]))
    best = results[(mode, "fake", best_c)]
    figures.append(Figure(f"authority: fake {mode} best (c={best_c}) vs 1-core RS256 sign", "% of signs/s",
                          [100 * r.rate / sign_rate for r in best], notes={"signs_per_s": round(sign_rate, 1)}))
    _verdict(figures)
    return figures


def _verdict(figures: list[Figure]) -> None:
    by_name = {f.name: f for f in figures}
    for f in figures:
        if not f.target:
            continue
        if f.baseline in by_name:
            ratio = f.median / by_name[f.baseline].median
            need = 2.0 if "2×" in f.target else 1.0
            base = by_name[f.baseline].median
            _log(f"{'MET   ' if ratio >= need else 'MISSED'} {f.name}: {f.median:,.0f} vs {base:,.0f} req/s"
                 f" = {ratio:.2f}× (target {f.target})")
        elif f.unit.startswith("%"):
            _log(f"{'MET   ' if f.median >= 60 else 'MISSED'} {f.name}: {f.median:.0f}% (target {f.target})")
