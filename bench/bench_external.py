"""External portals: wall time of a full run (every scenario) of AzApp and of AzUser over HTTPS against the
Node.js example (target < 60 s each), with the Flask example beside it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from bench.harness import Figure

ROOT = Path(__file__).resolve().parent.parent
NODE_EXAMPLE = ROOT / "examples" / "express-msal-node"
PORTALS = {
    "Node example": f"node {NODE_EXAMPLE / 'server.js'}",
    "Flask example": f"{sys.executable} {ROOT / 'examples' / 'flask-msal' / 'app.py'}",
}


def _wall(mode: str, cmd: str) -> float:
    """Seconds for one `bc-conformance run`; a run whose verdict is not 0 is no figure to record."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "conformance", "run", "--mode", mode, "--portal-cmd", cmd,
                           "--out", f"/tmp/bc-conformance-bench-external-{mode}"],
                          check=False, capture_output=True, text=True, cwd=ROOT)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"`bc-conformance run --mode {mode} --portal-cmd {cmd!r}` exited {proc.returncode} "
                           f"(expected 0):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return took


def run() -> list[Figure]:
    if not (NODE_EXAMPLE / "node_modules").exists():
        print(f"bench_external: run `npm ci --prefix {NODE_EXAMPLE.relative_to(ROOT)}` first; skipped",
              file=sys.stderr)
        return []
    return [
        Figure(f"external: full {mode} run against the {name}", "s", [_wall(mode, cmd) for _ in range(2)],
               target="< 60 s" if name == "Node example" else "")
        for name, cmd in PORTALS.items() for mode in ("AzApp", "AzUser")
    ]
