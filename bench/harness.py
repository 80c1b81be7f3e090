"""Tiny benchmark harness: repeated samples, medians, side-by-side ratios, one JSON file."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field


@dataclass
class Figure:
    """One measured figure; ``baseline`` names the figure it is compared with in the same run."""

    name: str
    unit: str
    samples: list[float]
    baseline: str = ""
    target: str = ""
    notes: dict[str, float | str] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "median": self.median, "min": min(self.samples), "max": max(self.samples)}


def rate(fn: Callable[[], object], n: int, repeats: int = 5) -> list[float]:
    """Calls per second of ``fn`` over ``n`` calls, ``repeats`` times."""
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        out.append(n / (time.perf_counter() - start))
    return out


def seconds(fn: Callable[[], object], repeats: int = 3) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def ratio(figure: Figure, by_name: dict[str, Figure]) -> float | None:
    base = by_name.get(figure.baseline)
    if base is None or base.median == 0:
        return None
    return figure.median / base.median


def format_table(figures: list[Figure]) -> str:
    by_name = {f.name: f for f in figures}
    rows = [("figure", "median", "min–max", "unit", "ratio", "vs", "target")]
    for f in figures:
        r = ratio(f, by_name)
        rows.append((
            f.name, f"{f.median:,.1f}", f"{min(f.samples):,.1f}–{max(f.samples):,.1f}", f.unit,
            "" if r is None else f"{r:.2f}×", f.baseline, f.target,
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows)
