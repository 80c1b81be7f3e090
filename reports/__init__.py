"""Reports of a conformance run: a self-contained HTML page and a Markdown summary.

``reports`` renders results only; it never runs a scenario. Its input is the ``results.json`` document
that ``bc-conformance run`` writes (top-level keys: target, kit_version, date, modes, profile, seed,
exit_code, verdict, summary, summary_by_level, checks, steps, scenarios, flows; extra keys are ignored), or the one
``bc-conformance load`` writes, which adds ``load`` (Locust's figures and the fakes', ``conformance/load/results.py``):
the report then has an "Under load" section (``reports.load``, its chart ``reports.load_svg``).
Every string printed from it is redacted again and stripped of escape sequences and control characters
(``reports.safe``); anchors are stable (``reports.anchors``). The page's layout is checked in headless Chromium
(``reports.chromium``, used by the tests and ``bench/bench_report.py``).
"""

from reports.files import cli_render, load_results, write_reports
from reports.html import render_html
from reports.markdown import render_markdown

__all__ = ["cli_render", "load_results", "render_html", "render_markdown", "write_reports"]
