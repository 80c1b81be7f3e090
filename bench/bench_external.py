"""External portals over HTTPS, measured side by side in one run:

- wall time of a full run of AzApp and AzUser against the Node.js and Flask examples, scenarios one at a time
  (``--jobs 1``, as before concurrency) and as many at once as there are cores (target ≤ 3 s per mode);
- the same Flask app run in-process (``--portal-app``) and over HTTPS (target: external ≤ 3× in-process);
- Hypothesis examples per second of ``--profile full`` against a started portal (a fresh process per example),
  beside the same exploration in-process.

A run whose verdict is not 0 is no figure to record: the bench stops with the run's output.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.harness import Figure

ROOT = Path(__file__).resolve().parent.parent
NODE_EXAMPLE = ROOT / "examples" / "express-msal-node"
FLASK_EXAMPLE = ROOT / "examples" / "flask-msal"
PORTALS = {
    "Node example": f"node {NODE_EXAMPLE / 'server.js'}",
    "Flask example": f"{sys.executable} {FLASK_EXAMPLE / 'app.py'}",
}
MODES = ("AzApp", "AzUser")
CORES = os.cpu_count() or 1
EXPLORED = 10  # examples per exploration figure


def _wall(mode: str, *target: str, jobs: int | None = None, cwd: Path = ROOT) -> float:
    """Seconds for one `bc-conformance run`."""
    argv = [sys.executable, "-m", "conformance", "run", "--mode", mode, *target,
            "--out", f"/tmp/bc-conformance-bench-external-{mode}"]
    if jobs is not None:
        argv += ["--jobs", str(jobs)]
    start = time.perf_counter()
    proc = subprocess.run(argv, check=False, capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv[2:])}` exited {proc.returncode} (expected 0):\n"
                           f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return took


def _examples_per_second(external: bool) -> float:
    """``EXPLORED`` examples of the AzUser exploration against the Flask example, in-process or as a process."""
    from conformance.explore import explore
    from conformance.external import ExternalTarget, exploration_opener
    from conformance.portal_time import ShiftedClock, faketime_library
    from conformance.servers import FakeServers
    from conformance.targets import InProcessTarget
    from fake_authority import Registry

    if not external:
        sys.path.insert(0, str(FLASK_EXAMPLE))
        try:
            start = time.perf_counter()
            found = explore(InProcessTarget.load("app:create_app"), "AzUser", EXPLORED, seed=0)
        finally:
            sys.path.remove(str(FLASK_EXAMPLE))
        took = time.perf_counter() - start
    else:
        library = faketime_library()
        if library is None:
            raise RuntimeError("libfaketime is not installed (apt-get install faketime)")
        clock = ShiftedClock(library)
        registry = Registry.default().with_redirect_uris("http://127.0.0.1/auth/callback")
        with contextlib.ExitStack() as stack, FakeServers(registry, clock=clock) as servers:
            stack.callback(clock.close)
            opener = exploration_opener(servers, ExternalTarget(cmd=PORTALS["Flask example"]), "AzUser")
            start = time.perf_counter()
            found = explore(None, "AzUser", EXPLORED, seed=0, opener=opener)
            took = time.perf_counter() - start
    if not found.passed:
        raise RuntimeError(f"the Flask example failed the exploration: {found.failure}")
    return EXPLORED / took


def run() -> list[Figure]:
    if not (NODE_EXAMPLE / "node_modules").exists():
        print(f"bench_external: run `npm ci --prefix {NODE_EXAMPLE.relative_to(ROOT)}` first; skipped",
              file=sys.stderr)
        return []
    figures: list[Figure] = []
    for name, cmd in PORTALS.items():
        for mode in MODES:
            one = f"external: {mode} run against the {name}, --jobs 1"
            figures.append(Figure(one, "s", [_wall(mode, "--portal-cmd", cmd, jobs=1) for _ in range(2)]))
            figures.append(Figure(f"external: {mode} run against the {name}, --jobs {CORES}", "s",
                                  [_wall(mode, "--portal-cmd", cmd, jobs=CORES) for _ in range(2)], baseline=one,
                                  target="≤ 3 s"))
    for mode in MODES:
        inside = f"in-process: {mode} run of the Flask example (--portal-app)"
        figures.append(Figure(inside, "s", [_wall(mode, "--portal-app", "app:create_app", cwd=FLASK_EXAMPLE)
                                            for _ in range(2)]))
        figures.append(Figure(f"external vs in-process: {mode} run of the Flask example, --jobs {CORES}", "s",
                              [_wall(mode, "--portal-cmd", PORTALS["Flask example"], jobs=CORES) for _ in range(2)],
                              baseline=inside, target="≤ 3×"))
    inside = "exploration in-process: AzUser examples of the Flask example"
    figures.append(Figure(inside, "examples/s", [_examples_per_second(False) for _ in range(2)]))
    figures.append(Figure("exploration over HTTPS: AzUser examples of the Flask example (a process each)",
                          "examples/s", [_examples_per_second(True) for _ in range(2)], baseline=inside))
    return figures
