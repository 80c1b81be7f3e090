"""Reading a results document and writing the reports beside it: the only file I/O of ``reports``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reports.html import render_html
from reports.markdown import render_markdown

RESULTS_NAME = "results.json"
HTML_NAME = "report.html"
MARKDOWN_NAME = "report.md"
REQUIRED = ("verdict", "summary", "checks")


def _invalid(path: object, why: str) -> ValueError:
    return ValueError(f"expected a results.json written by bc-conformance run, got {path} ({why})")


def load_results(path_or_dir: str | Path) -> dict[str, Any]:
    """The results document at a path, or in a run directory; ``ValueError`` says what is wrong with it."""
    path = Path(path_or_dir)
    if path.is_dir():
        path = path / RESULTS_NAME
    if not path.is_file():
        raise _invalid(path, "no such file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _invalid(path, f"not readable as JSON: {err}") from err
    if not isinstance(data, Mapping):
        raise _invalid(path, f"a JSON {type(data).__name__}, not an object")
    missing = [key for key in REQUIRED if key not in data]
    if missing:
        raise _invalid(path, f"missing key(s): {', '.join(missing)}")
    if not isinstance(data["checks"], list):
        raise _invalid(path, "'checks' is not a list")
    return dict(data)


def write_reports(results: Mapping[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write ``report.html`` and ``report.md`` into ``out_dir``; returns them as ``{"html": …, "markdown": …}``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {"html": out_dir / HTML_NAME, "markdown": out_dir / MARKDOWN_NAME}
    written["html"].write_text(render_html(results), encoding="utf-8")
    written["markdown"].write_text(render_markdown(results), encoding="utf-8")
    return written


def cli_render(path: str, out: str | None = None) -> Path:
    """``bc-conformance report PATH [-o OUT]``: write the HTML report (and ``report.md`` beside it).

    ``path`` is a results.json or the run directory holding one; ``out`` defaults to ``report.html`` beside
    the results. Returns the HTML file's path.
    """
    results = load_results(path)
    source = Path(path)
    html_path = Path(out) if out else (source if source.is_dir() else source.parent) / HTML_NAME
    if html_path.is_dir():
        html_path = html_path / HTML_NAME
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(render_html(results), encoding="utf-8")
    html_path.with_name(MARKDOWN_NAME).write_text(render_markdown(results), encoding="utf-8")
    return html_path
