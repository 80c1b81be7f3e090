"""Report: time to render the HTML report of a full-profile run of the reference portal (``reports.render_html``
in-process, and ``bc-conformance report DIR`` as a command, interpreter start included), the page's size, and
its height in headless Chromium at 1400 px and at 390 px (a phone) when Chromium is installed.

Usage: ``python -m bench report`` (with the other figures' table), or ``python -m bench.bench_report`` alone.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import reports
from bench.harness import Figure, format_table, seconds
from reports.chromium import Chromium, find_chromium

ROOT = Path(__file__).resolve().parent.parent
REPEATS = 5
WIDTHS = (1400, 390)


def _conformance(*args: str) -> None:
    """One ``bc-conformance`` command in its own process; a failing one is no figure to record."""
    proc = subprocess.run([sys.executable, "-m", "conformance", *args], cwd=ROOT, capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"`bc-conformance {' '.join(args)}` exited {proc.returncode}:\n{proc.stderr[-2000:]}")


def _full_run(out: Path) -> dict[str, Any]:
    """Results of ``bc-conformance run --profile full`` of the in-process reference portal (about 20 s)."""
    _conformance("run", "--profile", "full", "--out", str(out))
    return reports.load_results(out)


def _heights(html: Path) -> dict[int, int]:
    """The page's height (CSS px) at each width, as laid out by Chromium."""
    with Chromium() as browser:
        out = {}
        for width in WIDTHS:
            browser.open(html.as_uri(), width)
            out[width] = int(browser.evaluate("document.documentElement.scrollHeight"))
    return out


def run() -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        out = Path(tmp)
        results = _full_run(out)
        page = reports.render_html(results)
        render = [s * 1000 for s in seconds(lambda: reports.render_html(results), REPEATS)]
        command = seconds(lambda: _conformance("report", str(out)), REPEATS)
        figures = [
            Figure("report: render_html, full-profile run (reference)", "ms", render),
            Figure("report: bc-conformance report DIR (own process)", "s", command),
            Figure("report: report.html size", "KB", [len(page.encode("utf-8")) / 1024]),
        ]
        if find_chromium() is None:
            print("bench_report: chromium not installed; page heights skipped", file=sys.stderr)
            return figures
        heights = _heights(out / "report.html")
    return figures + [Figure(f"report: page height at {w} px (Chromium)", "px", [float(h)])
                      for w, h in heights.items()]


if __name__ == "__main__":
    print(format_table(run()))
