"""The self-contained HTML report: one file, inline CSS, JS and SVG, no network fetch.

Rendered with jinja2 and autoescape on, so any text from results is escaped; the only markup that is not
escaped is the package's own CSS/JS and the SVG built with ``reports.svg`` (which escapes what it draws). The page
carries no ANSI escape sequence or control character (``conformance.printable``), whatever results.json holds.
A Content-Security-Policy in the page forbids every fetch and allows only this page's own script.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from conformance.printable import printable
from reports.flow_svg import flow_diagram
from reports.load_svg import load_chart
from reports.model import OUTCOMES, SUMMARY_ORDER, build, label
from reports.refs import DOCUMENT_TITLE, DOCUMENT_URL
from reports.sequence_svg import sequence_diagram

TEMPLATES = Path(__file__).resolve().parent / "templates"
EVIDENCE_SHOWN = 6
"""Evidence events printed per check; a portal stuck in a loop can give hundreds (all are marked in the trace)."""


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined,
        trim_blocks=False, lstrip_blocks=False,
    )
    env.globals["label"] = label
    return env


def _asset(name: str) -> str:
    return (TEMPLATES / name).read_text(encoding="utf-8")


def _csp(script: str) -> str:
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    return ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
            f"script-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'")


def render_html(results: Mapping[str, Any]) -> str:
    """The report page for a results document (see ``reports`` for the contract)."""
    view = build(results)
    script = _asset("report.js")
    page = _environment().get_template("report.html.j2").render(
        r=view,
        flow_svg={m.name: Markup(flow_diagram(m)) for m in view.modes},
        sequence_svg={s.anchor: Markup(sequence_diagram(s)) for m in view.modes for s in m.scenarios},
        load_svg=Markup(load_chart(view.load.chart)) if view.load else "",
        outcomes=OUTCOMES, evidence_shown=EVIDENCE_SHOWN, summary_order=SUMMARY_ORDER,
        document_url=DOCUMENT_URL, document_title=DOCUMENT_TITLE,
        css=Markup(_asset("report.css")), js=Markup(script), csp=_csp(script),
    )
    # Every string from results was made printable on its way in (reports.safe); this pass also covers what is not
    # a string there (a hand-edited number, a key): no escape sequence or control character reaches the page.
    return printable(page)
