"""The monitor's cost per trace event, today's fold (steps by role, variants as machine edges, typed violations)
beside the monitor of the last release before it (commit ``BEFORE``, loaded from git history), on the same
recorded traces: every scenario of every mode of the reference portal."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

from bench.harness import Figure
from conformance.monitor import monitor
from conformance.run import RunOptions, run_mode
from conformance.targets import REFERENCE, InProcessTarget
from fake_authority.jwt import SigningKey
from flows import MODES

BEFORE = "6b89582"  # the landed monitor that re-typed the tables (before issue #13)
REPEATS = 20


def _old_monitor() -> ModuleType | None:
    root = Path(__file__).resolve().parent.parent
    try:
        source = subprocess.run(["git", "show", f"{BEFORE}:conformance/monitor.py"], cwd=root, check=True,
                                capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    path = Path(tempfile.mkdtemp()) / "monitor_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("monitor_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["monitor_before"] = module
    spec.loader.exec_module(module)
    return module


def _per_event_us(fold: object, cases: list[tuple]) -> list[float]:
    events = sum(len(c[2]) for c in cases)
    out = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(REPEATS):
            for flow, mode, trace, visits in cases:
                fold(flow, mode, trace, visits)  # type: ignore[operator]
        out.append((time.perf_counter() - start) / (REPEATS * events) * 1e6)
    return out


def run() -> list[Figure]:
    target = InProcessTarget.load(REFERENCE)
    cases = []
    for mode in MODES:
        results = run_mode(target, mode, RunOptions(modes=(mode,)), SigningKey())
        cases += [(MODES[mode].flow, MODES[mode], sr.trace.events, sr.visits) for sr in results.values()]
    events = sum(len(c[2]) for c in cases)
    figures = [Figure("monitor cost per trace event (now)", "µs", _per_event_us(monitor, cases),
                      baseline="monitor cost per trace event (before #13)" if _old_monitor() else "",
                      notes={"events": events, "scenarios": len(cases)})]
    old = _old_monitor()
    if old is not None:
        figures.insert(0, Figure("monitor cost per trace event (before #13)", "µs",
                                 _per_event_us(old.monitor, cases), notes={"commit": BEFORE}))
    return figures
