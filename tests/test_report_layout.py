"""The report of real runs (one passing, one failing) measured in headless Chromium at 1400 px and at 390 px (a
phone): no step text cut in a diagram, no edge label over another or over a step, each label on its own edge, no
page wider than the screen (diagrams, tables and traces may scroll inside their own box), and the summary first,
naming every failed, warning and not exercised check and every scenario that did not pass.

Screenshots of each page and diagram are written to the test's tmp_path, for a person to look at. The page is
measured by script through the DevTools protocol (``reports.chromium``), so the page keeps its strict CSP.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest

import reports
from reports.chromium import Chromium
from tests.boxes import inside, overlap

ROOT = Path(__file__).resolve().parent.parent
RUNS = {"passing": [], "failing": ["--portal-app", "portals.mutants:token_in_query"]}
"""The reference portal, and a mutant whose run has failed, warning and not exercised checks."""
WIDTHS = (1400, 390)
ATTENTION = ("failed", "warning", "not_exercised")
SKIPPED = {"mode": "AzApp", "flow": "client_credentials", "name": "two-users", "outcome": "not_exercised",
           "description": "two users, one session each", "visits": [], "violations": [], "waited": 0.0, "trace": [],
           "error": "needs a fresh portal, and a portal given by --portal-url is started once"}
"""A scenario not run, with its reason, as a ``--portal-url`` run reports it (in place of the failing run's own)."""

MEASURE = r"""
(() => {
  const box = el => { const r = el.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
  const onEdge = (edge, rect) => {
    // the label's centre (a rotation turns it about that centre) must lie on the edge's line; dashes ignored
    const b = rect.getBBox(), probe = edge.cloneNode();
    probe.removeAttribute('stroke-dasharray'); probe.setAttribute('stroke-width', '3');
    edge.parentNode.appendChild(probe);
    const hit = probe.isPointInStroke(new DOMPoint(b.x + b.width / 2, b.y + b.height / 2));
    probe.remove();
    return hit;
  };
  const nodes = [], labels = [];
  for (const fig of document.querySelectorAll('figure.diagram')) {
    const mode = fig.id.replace(/^diagram-/, '');
    for (const a of fig.querySelectorAll('a.flow-step')) {
      nodes.push({mode, step: a.dataset.step, box: box(a.querySelector('rect.node')),
                  text: [...a.querySelectorAll('text.step-text tspan')].map(t => t.textContent).join(' '),
                  pieces: [...a.querySelectorAll('text, tspan')].map(box)});
    }
    for (const g of fig.querySelectorAll('g.edge-label')) {
      const edge = fig.querySelector(`.edge[data-edge="${g.dataset.edge}"]`);
      labels.push({mode, edge: g.dataset.edge, box: box(g), backdrop: box(g.querySelector('rect')),
                   text: box(g.querySelector('text')), onEdge: !!edge && onEdge(edge, g.querySelector('rect')),
                   words: [...g.querySelectorAll('tspan')].map(t => t.textContent).join(' ')});
    }
  }
  const main = document.querySelector('main');
  const summary = document.getElementById('summary');
  const rows = summary ? [...summary.querySelectorAll('tbody tr, li')] : [];
  return {
    nodes, labels,
    firstSection: main && main.querySelector('section') ? main.querySelector('section').id : null,
    summaryTop: summary ? summary.getBoundingClientRect().top + scrollY : null,
    summaryText: summary ? summary.innerText : '',
    summaryLinks: summary ? [...summary.querySelectorAll('a[href^="#"]')].map(a => a.getAttribute('href')) : [],
    hiddenRows: rows.filter(r => r.getBoundingClientRect().height === 0).length,
    clippedCells: summary ? [...summary.querySelectorAll('td')].filter(td => td.scrollWidth > td.clientWidth + 1
                                                                       || td.scrollHeight > td.clientHeight + 1)
                                                       .map(td => td.innerText.slice(0, 60)) : [],
    height: document.documentElement.scrollHeight,
  };
})()
"""

OVERFLOW = r"""
(() => {
  // Open everything (as a reader clicking "Expand all"), then list what sticks out of the page, or out of a box
  // that clips it, other than inside a box that scrolls sideways.
  document.querySelectorAll('details').forEach(d => { d.open = true; });
  const width = document.documentElement.clientWidth, out = [];
  const all = [...document.body.querySelectorAll('*')].filter(el => !el.closest('svg') || el.tagName === 'svg');
  for (const el of all) {  // mark the boxes that scroll or clip sideways, once
    const x = getComputedStyle(el).overflowX;
    if (x !== 'visible') el.dataset.ox = x === 'auto' || x === 'scroll' ? 'scroll' : 'clip';
  }
  for (const el of all) {
    const r = el.getBoundingClientRect();
    if (!r.width) continue;
    const box = el.parentElement && el.parentElement.closest('[data-ox]');
    if (box && box.dataset.ox === 'scroll') continue;
    const q = box ? box.getBoundingClientRect() : {left: 0, right: width};
    if (r.right > q.right + 0.5 || r.left < q.left - 0.5) {
      const name = el.tagName.toLowerCase() + (typeof el.className === 'string' ? '.' + el.className : '');
      out.push(`${name} ${Math.round(r.left)}–${Math.round(r.right)}: ` + (box ? 'cut by ' + box.className
                                                                               : 'wider than the page'));
    }
  }
  return {scrollWidth: document.documentElement.scrollWidth, width, out: out.slice(0, 20), count: out.length};
})()
"""


# ------------------------------------------------------------------------------------------ fixtures


def _start(out: Path, args: list[str]) -> subprocess.Popen[str]:
    """``bc-conformance run`` into ``out`` (in-process, a few seconds), started in its own process."""
    return subprocess.Popen([sys.executable, "-m", "conformance", "run", "--out", str(out), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _skipped(scenario: dict[str, Any]) -> dict[str, Any]:
    same = (scenario["mode"], scenario["name"]) == (SKIPPED["mode"], SKIPPED["name"])
    return copy.deepcopy(SKIPPED) if same else scenario


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, Any]]]:
    """The report of each run (both run at once); in the failing one, a scenario was not run, for a reason."""
    folders = {name: tmp_path_factory.mktemp(name) for name in RUNS}
    started = {name: _start(folders[name], args) for name, args in RUNS.items()}
    out = {}
    for name, proc in started.items():
        output, _ = proc.communicate(timeout=300)
        assert proc.returncode in (0, 1), output[-3000:]
        results = reports.load_results(folders[name])
        if name == "failing":
            results["scenarios"] = [_skipped(sc) for sc in results["scenarios"]]
            (folders[name] / "results.json").write_text(json.dumps(results), encoding="utf-8")
            reports.cli_render(str(folders[name]), None)
        out[name] = (folders[name] / "report.html", results)
    assert {c["outcome"] for c in out["failing"][1]["checks"]} >= set(ATTENTION), "the failing run must have all 3"
    return out


@dataclass
class Measured:
    page: dict[str, Any]  # what MEASURE returned, with the console lines and where the screenshots are
    results: dict[str, Any]
    width: int
    html: Path


@pytest.fixture(scope="module", params=[(run, width) for run in RUNS for width in WIDTHS],
                ids=lambda p: f"{p[0]}-{p[1]}px")
def measured(request: pytest.FixtureRequest, browser: Chromium, runs: dict[str, tuple[Path, dict[str, Any]]],
             tmp_path_factory: pytest.TempPathFactory) -> Measured:
    """The page of one run at one width, measured; screenshots of the page and its diagrams saved beside it."""
    run, width = request.param
    html, results = runs[run]
    browser.events.clear()
    browser.open(html.as_uri(), width)
    page = browser.evaluate(MEASURE)
    shots = tmp_path_factory.mktemp(f"screenshots-{run}-{width}")
    browser.screenshot(shots / "page.png")
    for mode in results["modes"]:
        browser.screenshot(shots / f"diagram-{mode}.png", element=f"#diagram-{mode}")
    page["console"] = browser.console()
    page["screenshots"] = str(shots)
    return Measured(page, results, width, html)


# ------------------------------------------------------------------------------------------ the tests


def test_every_step_text_is_whole_and_inside_its_box(measured: Measured) -> None:
    page, results = measured.page, measured.results
    steps = {(m, f"{flow['prefix']}-{s['number']}"): s["text"] for m in results["modes"]
             for flow in [results["flows"][_flow_of(results, m)]] for s in flow["steps"]}
    drawn = {(n["mode"], n["step"]): n for n in page["nodes"]}
    assert set(drawn) == set(steps), page["screenshots"]
    for key, text in steps.items():
        node = drawn[key]
        assert node["text"] == " ".join(text.split()), (key, node["text"])  # the whole text, no ellipsis
        for piece in node["pieces"]:
            assert inside(piece, node["box"]), f"{key}: text at {piece} leaves its box {node['box']}"


def _flow_of(results: dict[str, Any], mode: str) -> str:
    return next(s["flow"] for s in results["steps"] if s["mode"] == mode)


def test_edge_labels_sit_on_their_edges_apart(measured: Measured) -> None:
    page, results = measured.page, measured.results
    for mode in results["modes"]:
        flow = results["flows"][_flow_of(results, mode)]
        labels = [lb for lb in page["labels"] if lb["mode"] == mode]
        named = {lb["edge"]: lb for lb in labels}
        for edge in flow["edges"]:
            if edge["label"]:
                label = named.get(f"{edge['source']}-{edge['dest']}")
                assert label is not None, f"{mode}: edge {edge['source']}→{edge['dest']} has no label"
                assert label["words"] == edge["label"] and label["onEdge"], (mode, label)
        for label in labels:
            assert inside(label["text"], label["backdrop"]), f"{mode}: label of {label['edge']} is cut"
        for a, b in combinations(labels, 2):
            assert not overlap(a["box"], b["box"]), f"{mode}: labels of {a['edge']} and {b['edge']} overlap"
        for label in labels:
            for node in page["nodes"]:
                if node["mode"] == mode:
                    assert not overlap(label["box"], node["box"]), f"{mode}: {label['edge']} over {node['step']}"


def test_the_summary_comes_first_and_names_everything(measured: Measured) -> None:
    page, results = measured.page, measured.results
    assert page["firstSection"] == "summary"
    assert page["summaryTop"] < (700 if measured.width > 600 else 1000), page["summaryTop"]  # under the verdict
    text = " ".join(page["summaryText"].split())
    links = set(page["summaryLinks"])
    for check in (c for c in results["checks"] if c["outcome"] in ATTENTION):
        assert f"#check-{check['mode']}-{check['id']}" in links, check["id"]
        for value in (check["title"], check["id"], " ".join(check["message"].split())):
            assert value in text, (check["id"], value)
    for scenario in (s for s in results["scenarios"] if s["outcome"] != "passed"):
        assert f"#scenario-{scenario['mode']}-{scenario['name']}" in links, scenario["name"]
        if scenario["outcome"] == "not_exercised":
            assert scenario["error"] in text
    assert page["hiddenRows"] == 0 and not page["clippedCells"], page["clippedCells"]
    if not any(c["outcome"] in ATTENTION for c in results["checks"]):
        assert "No check failed, none raised a warning and every check was exercised." in text


def test_nothing_is_wider_than_the_screen(browser: Chromium, measured: Measured) -> None:
    assert not measured.page["console"], measured.page["console"]  # a CSP violation or a script error logs one
    browser.open(measured.html.as_uri(), measured.width)
    found = browser.evaluate(OVERFLOW)  # with every section opened
    assert found["scrollWidth"] <= found["width"], found
    assert found["count"] == 0, found["out"]
