"""Conformance engine: wall time of a quick run of every mode on the reference portal, and simulated flows
per second in-process for the valid-token and missing-token paths, beside the RS256 crypto they need."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench.harness import Figure, rate
from conformance.engine import run_scenario
from conformance.scenarios import Scenario
from conformance.targets import REFERENCE, InProcessTarget
from fake_authority.jwt import SigningKey, parse

FLOWS = 200


def _flows_per_second(path: str, key: SigningKey, target: InProcessTarget) -> float:
    """One scenario doing FLOWS visits: each in a new session (missing token) or all in one (valid token)."""
    elapsed: list[float] = []

    def script(ctx) -> None:
        ctx.visit("alice")
        start = time.perf_counter()
        for _ in range(FLOWS):
            if path == "missing-token":
                ctx.users.pop("alice")  # a new browser: no portal session, so no token yet
            ctx.visit("alice")
        elapsed.append(time.perf_counter() - start)

    result = run_scenario(target, "AzApp", Scenario(f"bench-{path}", "", ("client_credentials",), script), key=key)
    if result.error or not elapsed:
        raise RuntimeError(result.error or "the benchmark scenario did not run")
    return FLOWS / elapsed[0]


def _transport_floor() -> list[float]:
    """The same four HTTP exchanges a missing-token flow makes (page, token, 2 BC calls), each a bare
    ``responses`` callback: the cost of the in-process transport alone, the practical ceiling."""
    import requests
    import responses

    session = requests.Session()
    with responses.RequestsMock() as rsps:
        rsps.add_callback("GET", "http://localhost:5000/", callback=lambda r: (200, {}, "ok"))
        out = rate(lambda: [session.get("http://localhost:5000/") for _ in range(4)], 200)
    return out


def _command(args: list[str]) -> tuple[float, float]:
    """Wall seconds and peak resident memory (MB) of one ``bc-conformance`` command in its own process."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "conformance", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _, _, usage = os.wait4(proc.pid, 0)
    return time.perf_counter() - start, usage.ru_maxrss / 1024


def run() -> list[Figure]:
    key = SigningKey()
    target = InProcessTarget.load(REFERENCE)
    token = key.sign({"aud": "x", "uti": "y", "exp": 2_000_000_000})
    jwt = parse(token)
    sign = rate(lambda: key.sign({"aud": "x", "uti": "y", "exp": 2_000_000_000}), 300)
    verify = rate(lambda: jwt.verify(key.public_key), 3000)
    both = [1 / (1 / s + 1 / v) for s, v in zip(sign, verify, strict=True)]
    valid = [_flows_per_second("valid-token", key, target) for _ in range(3)]
    missing = [_flows_per_second("missing-token", key, target) for _ in range(3)]
    out = ["--out", "/tmp/bc-conformance-bench-run"]
    wall = [_command(["run", "--mode", "all", "--profile", "quick", *out])[0] for _ in range(3)]
    full = [_command(["run", "--mode", "all", "--profile", "full", *out]) for _ in range(2)]
    selftest = [_command(["selftest"])[0]]
    floor = _transport_floor()
    return [
        Figure("engine: RS256 sign + verify (crypto limit of a missing-token flow)", "flows/s", both),
        Figure("engine: 4 bare requests+responses exchanges (transport limit of a flow)", "flows/s", floor,
               baseline="engine: RS256 sign + verify (crypto limit of a missing-token flow)"),
        Figure("engine: missing-token flows in-process (AzApp)", "flows/s", missing,
               baseline="engine: RS256 sign + verify (crypto limit of a missing-token flow)", target="≥ 0.5×"),
        Figure("engine: RS256 verify (crypto of a valid-token flow, uncached)", "flows/s", verify),
        Figure("engine: valid-token flows in-process (AzApp)", "flows/s", valid,
               baseline="engine: RS256 verify (crypto of a valid-token flow, uncached)"),
        Figure("engine: run --profile quick --mode all (reference)", "s", wall, target="< 10 s"),
        Figure("engine: run --profile full --mode all (reference)", "s", [w for w, _ in full], target="< 60 s"),
        Figure("engine: run --profile full --mode all, peak memory", "MB", [m for _, m in full], target="< 300 MB"),
        Figure("engine: selftest (reference + every mutant, quick)", "s", selftest),
    ]
