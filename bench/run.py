"""Run every ``bench/bench_*.py``, print one table, write ``bench/results.json``.

Usage: ``python -m bench [NAME ...]`` (NAME filters modules, e.g. ``flows``).
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import sys
from pathlib import Path

from bench.harness import Figure, format_table, ratio

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    names = sorted(p.stem for p in HERE.glob("bench_*.py"))
    if argv:
        names = [n for n in names if any(a in n for a in argv)]
    figures: list[Figure] = []
    for name in names:
        print(f"… {name}", file=sys.stderr, flush=True)
        figures.extend(importlib.import_module(f"bench.{name}").run())
    print(format_table(figures))
    by_name = {f.name: f for f in figures}
    fresh = [{**f.as_dict(), "ratio": ratio(f, by_name)} for f in figures]
    path = HERE / "results.json"
    kept: list[dict] = []
    if argv and path.exists():  # a filtered run updates its own figures and keeps the others
        try:
            kept = [f for f in json.loads(path.read_text()).get("figures", []) if f["name"] not in by_name]
        except (ValueError, KeyError, TypeError):
            kept = []
    out = {
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
                    "cores": os.cpu_count()},
        "figures": kept + fresh,
    }
    path.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
