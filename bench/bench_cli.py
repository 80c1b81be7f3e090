"""The newcomer's first second: time from starting `bc-conformance run` to its first progress line on stderr
(target < 0.5 s), beside the time the interpreter alone takes to start (the floor)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time

from bench.harness import Figure


def _first_line(argv: list[str]) -> float:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "conformance", *argv, "--out", out], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        line = proc.stderr.readline()
        took = time.perf_counter() - start
        proc.kill()
        proc.wait()
    if not line.startswith("bc-conformance run:"):
        raise RuntimeError(f"the first line on stderr was {line!r}, not the run's opening line")
    return took


def _interpreter() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - start


def run() -> list[Figure]:
    floor = "python3 -c pass (interpreter start)"
    return [
        Figure(floor, "s", [_interpreter() for _ in range(5)]),
        Figure("run: start to first progress line", "s", [_first_line(["run", "--mode", "AzApp"]) for _ in range(5)],
               baseline=floor, target="< 0.5 s"),
    ]
