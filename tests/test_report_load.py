"""The report's "Under load" section, from the results of a real ``bc-conformance load`` run
(tests/fixtures/load_results.json): every figure of ``load`` on the page and in the Markdown, the chart drawn from
the series (one bar per second, a dashed line per clock move), no section for a results document without ``load``,
and, in headless Chromium at 1400 and 390 px, a chart that fills its box without overflowing or overlapping labels.
"""

from __future__ import annotations

import copy
import math
import re
from datetime import UTC, datetime
from html.parser import HTMLParser
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest

import reports
from reports.chromium import Chromium
from tests.boxes import inside, overlap

FIXTURES = Path(__file__).parent / "fixtures"
LOAD = FIXTURES / "load_results.json"
SAMPLE = FIXTURES / "sample_results.json"  # a ``bc-conformance run`` document: no ``load``
WIDTHS = (1400, 390)
DROPPED = "no trace event was dropped"


class Page(HTMLParser):
    """Tags in document order, with the ids of the elements enclosing each, and the text under each id."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[tuple[str, str | None]] = []
        self.tags: list[tuple[str, dict[str, str], tuple[str, ...]]] = []
        self.texts: dict[str, list[str]] = {}
        self.feed(html)

    def _inside(self) -> tuple[str, ...]:
        return tuple(i for _, i in self.open if i)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        self.tags.append((tag, values, self._inside()))
        if values.get("id"):
            self.texts.setdefault(values["id"], [])
        if tag not in ("meta", "link", "br", "input", "img", "rect", "line", "path", "circle"):
            self.open.append((tag, values.get("id")))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        self.tags.append((tag, values, self._inside()))

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.open) - 1, -1, -1):
            if self.open[i][0] == tag:
                del self.open[i:]
                return

    def handle_data(self, data: str) -> None:
        for ident in self._inside():
            self.texts[ident].append(data)

    def text(self, ident: str) -> str:
        return " ".join(" ".join(self.texts[ident]).split())

    def within(self, ident: str, tag: str = "", cls: str = "") -> list[dict[str, str]]:
        return [a for t, a, ids in self.tags if ident in ids and (not tag or t == tag)
                and (not cls or cls in a.get("class", "").split())]

    def ids(self) -> set[str]:
        return {a["id"] for _, a, _ in self.tags if a.get("id")}


def g(value: float) -> str:
    """A figure as a reader expects it: 37 for 37.0, 3.33 as is."""
    return f"{value:g}"


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    return reports.load_results(LOAD)


@pytest.fixture(scope="module")
def html(results: dict[str, Any]) -> str:
    return reports.render_html(results)


@pytest.fixture(scope="module")
def page(html: str) -> Page:
    return Page(html)


def _start(load: dict[str, Any]) -> float:
    """When the users started: the results do not say, and the kit moves the clock at start + k × every."""
    walls = [e["wall"] for e in load["epochs"]]
    return float(walls[0] - (walls[-1] - walls[0]) / (len(walls) - 1))


def _rows(html: str, table: str) -> list[list[str]]:
    """The cells' texts of each row of the table with this class."""
    body = re.search(rf'<table class="{table}">(.*?)</table>', html, re.S)
    assert body, table
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", body[1], re.S)
    cells = [re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S) for row in rows]
    return [[" ".join(re.sub(r"<[^>]+>", " ", c).split()) for c in row] for row in cells]


# ------------------------------------------------------------------------------------------ the section


def test_the_section_follows_the_summary_and_shows_the_parameters_and_visits(results: dict[str, Any],
                                                                               page: Page) -> None:
    load = results["load"]
    sections = [a["id"] for t, a, ids in page.tags if t == "section" and "id" in a]
    assert sections[:3] == ["summary", "load", "counts"]
    text = page.text("load")
    assert text.startswith("Under load")
    assert any(a.get("href") == "#load" for t, a, _ in page.tags if t == "a")  # in the contents bar
    assert f"Mode {load['mode']}" in text and f"Users {load['users']}" in text
    assert "Workers 0 (one Locust process)" in text and f"Duration {g(load['duration_s'])} s" in text
    assert f"Time control {load['time_control']}" in text
    visits = load["visits"]
    for figure, words in (("total", "visits"), ("working", "working"), ("clean_errors", "clean errors"),
                          ("broken", "broken"), ("stopped", "stopped by the run's end"),
                          ("per_second", "visits per second")):
        assert f"{g(visits[figure])} {words}" in text, figure


def test_requests_table_has_locusts_figures_linked_to_the_steps(results: dict[str, Any], html: str,
                                                                 page: Page) -> None:
    load = results["load"]
    rows = _rows(html, "load-requests")
    keys = ("requests", "failures", "rps", "p50_ms", "p95_ms", "p99_ms")
    assert rows[0][:2] == ["Request", "Method"] and rows[0][-3:] == ["p50 ms", "p95 ms", "p99 ms"]
    for row, entry in zip(rows[1:-1], load["requests"], strict=True):
        assert row == [entry["name"], entry["method"], *(g(entry[k]) for k in keys)]
    assert rows[-1] == ["Total", "", *(g(load["total"][k]) for k in keys)]
    links = [a["href"] for a in page.within("load", "a", "stepref")]
    steps = [f"#{load['mode']}-{e['name'].split()[0]}" for e in load["requests"]]
    assert links == steps and all(s[1:] in page.ids() for s in steps)


def test_expiries_throttling_cpu_trace_and_errors(results: dict[str, Any], html: str, page: Page) -> None:
    load = results["load"]
    text = page.text("load")
    start = _start(load)
    for row, entry in zip(_rows(html, "load-expiries")[1:], load["token_requests_per_expiry"], strict=True):
        epoch = next(e for e in load["epochs"] if e["index"] == entry["epoch"])
        virtual = datetime.fromtimestamp(epoch["virtual"], UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        assert row[:3] == [g(entry["epoch"]), f"{epoch['wall'] - start:.1f} s",
                           f"{virtual} (wall clock + {(epoch['virtual'] - epoch['wall']) / 3600:.1f} h)"]
        assert row[3:6] == [g(entry["token_requests"]), g(entry["sessions"]), entry["holder"]]
        assert row[6] == f"{g(entry['max_per_holder'])} ({entry['worst_holder']})"
        assert row[7] == ("over" if entry["over"] else "no")
    throttle = load["throttle"]
    assert (f"allowed {throttle['calls_per_user']} calls per user every {g(throttle['window_s'])} s and answered "
            f"{throttle['responses_429']} with 429") in text
    share = f"{100 * load['fakes']['cpu_share']:.1f}"
    assert f"The fake Authority and Business Central used {share} % of the run's CPU" in text
    assert load["fakes"]["trace_dropped"] == 0
    assert f"The trace holds {load['fakes']['trace_events']} events; {DROPPED}." in text
    assert not page.within("load", cls="load-warn")
    for error in load["errors"]:
        assert f"×{error['occurrences']} {error['error']} on {error['name']}" in text


def test_the_load_checks_are_linked_not_repeated(results: dict[str, Any], page: Page) -> None:
    hrefs = [a["href"] for a in page.within("load", "a")]
    for check in results["checks"]:
        anchor = f"check-{check['mode']}-{check['id']}"
        assert f"#{anchor}" in hrefs and anchor in page.ids()
    assert not page.within("load", "details")  # no check card in the section, and no second card anywhere
    cards = [a["id"] for t, a, _ in page.tags if t == "details" and "check" in a.get("class", "").split()]
    assert sorted(cards) == sorted(f"check-{c['mode']}-{c['id']}" for c in results["checks"])


def test_dropped_trace_events_raise_a_visible_warning(results: dict[str, Any]) -> None:
    doctored = copy.deepcopy(results)
    doctored["load"]["fakes"]["trace_dropped"] = 17
    page = Page(reports.render_html(doctored))
    warnings = page.within("load", cls="load-warn")
    assert warnings, "no warning for dropped trace events"
    text = page.text("load")
    assert "Warning: 17 trace events were dropped." in text and DROPPED not in text
    markdown = reports.render_markdown(doctored)
    assert "⚠️ **17 trace events were dropped**" in markdown and DROPPED not in markdown
    del doctored["load"]["fakes"]["trace_dropped"]  # not reported: never claim that none was dropped
    assert DROPPED not in reports.render_html(doctored) and DROPPED not in reports.render_markdown(doctored)


def test_planted_markup_in_load_strings_is_escaped(results: dict[str, Any]) -> None:
    doctored = copy.deepcopy(results)
    doctored["load"]["errors"] = [{"name": "AC-1 <b>x</b>", "error": "<script>alert(1)</script>\x1b[31m",
                                   "occurrences": 1}]
    doctored["load"]["requests"][0]["name"] = "AC-1 <img src=x onerror=alert(1)>"
    doctored["load"]["time_control"] = "real: <svg onload=alert(1)>"
    html = reports.render_html(doctored)
    page = Page(html)
    assert not [a for t, a, ids in page.tags if t in ("script", "img", "b") and "load" in ids]
    assert "<svg onload" not in html and "\x1b" not in html and "&lt;script&gt;alert(1)" in html
    assert "\x1b" not in reports.render_markdown(doctored)


# ------------------------------------------------------------------------------------------ the chart


def test_chart_has_a_bar_per_second_and_a_line_per_clock_move(results: dict[str, Any], html: str,
                                                               page: Page) -> None:
    load = results["load"]
    svgs = page.within("load-chart", "svg")
    assert len(svgs) == 1 and svgs[0]["role"] == "img"
    labelled = svgs[0]["aria-labelledby"].split()
    assert [t for t, a, _ in page.tags if a.get("id") in labelled] == ["title", "desc"]
    desc = page.text("load-chart-desc")
    assert f"Requests per second: {load['total']['requests']} in all" in desc
    assert f"Failures per second: {load['total']['failures']} in all" in desc and "Tokens expire at" in desc
    for series, cls in (("failures_over_time", "bar-failures"), ("requests_over_time", "bar-requests")):
        bars = page.within("load-chart", "rect", cls)
        assert [(int(b["data-second"]), int(b["data-count"])) for b in bars] == [tuple(p) for p in load[series]]
        heights = [float(b["height"]) for b in bars]
        top = max(n for _, n in load[series])
        assert heights.index(max(heights)) == [n for _, n in load[series]].index(top)  # drawn to scale
    lines = page.within("load-chart", "line", "epoch")
    assert [int(a["data-epoch"]) for a in lines] == [e["index"] for e in load["epochs"]]
    walls = [e["wall"] for e in load["epochs"]]
    start = _start(load)
    seconds = math.ceil(max(t for t, _ in load["requests_over_time"]) + 1)
    for line, wall in zip(lines, walls, strict=True):
        assert line["x1"] == line["x2"] and line.get("stroke-dasharray")
        assert float(line["x1"].rstrip("%")) == pytest.approx(100 * (wall - math.floor(start)) / seconds, abs=0.01)
    labels = re.findall(r'<text[^>]*class="epoch-label"[^>]*>([^<]*)</text>', html)
    assert labels == ["tokens expire"] * len(load["epochs"])


def test_no_load_no_section(results: dict[str, Any]) -> None:
    for document in (reports.load_results(SAMPLE), {k: v for k, v in results.items() if k != "load"}):
        html = re.sub(r"<style>.*?</style>", "", reports.render_html(document), flags=re.S)  # the CSS names it
        assert 'id="load"' not in html and "Under load" not in html and "load-chart" not in html
        assert "### Under load" not in reports.render_markdown(document)


def test_markdown_has_the_table_and_the_figures(results: dict[str, Any]) -> None:
    load = results["load"]
    markdown = reports.render_markdown(results)
    lines = markdown.splitlines()
    assert lines.index("### Under load") < next(i for i, line in enumerate(lines) if line.startswith("| Level |"))
    head = lines.index("| Request | Method | Requests | Failures | Requests/s | p50 ms | p95 ms | p99 ms |")
    keys = ("requests", "failures", "rps", "p50_ms", "p95_ms", "p99_ms")
    for line, entry in zip(lines[head + 2:], [*load["requests"], {**load["total"], "name": "**Total**"}],
                           strict=False):
        assert line == f"| {entry['name']} | {entry['method']} | " + " | ".join(g(entry[k]) for k in keys) + " |"
    assert f"used {100 * load['fakes']['cpu_share']:.1f} % of the run's CPU" in markdown and DROPPED in markdown
    assert f"{load['throttle']['responses_429']} answers 429" in markdown


# ------------------------------------------------------------------------------------------ in Chromium

MEASURE = r"""
(() => {
  const box = el => { const r = el.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
  const fig = document.getElementById('load-chart'), chart = fig.querySelector('svg');
  return {
    page: [document.documentElement.scrollWidth, document.documentElement.clientWidth],
    figure: box(fig), inner: [fig.scrollWidth, fig.clientWidth], svg: box(chart),
    texts: [...chart.querySelectorAll('text')].filter(t => t.getBoundingClientRect().width)
      .map(t => ({text: t.textContent, box: box(t), size: parseFloat(getComputedStyle(t).fontSize)})),
    bars: [...chart.querySelectorAll('rect[class^="bar-"]')].map(box),
    lines: [...chart.querySelectorAll('line.epoch')].map(box),
    loose: [...document.querySelectorAll('#load *')]  // sticking out of the page, not inside a box that scrolls
      .filter(el => !el.closest('svg') && !el.parentElement.closest('.scroll, .load-figure'))
      .filter(el => { const r = el.getBoundingClientRect();
                      return r.width && (r.left < -0.5 || r.right > document.documentElement.clientWidth + 0.5); })
      .map(el => el.tagName + '.' + el.className),
  };
})()
"""


def _long_run(results: dict[str, Any]) -> dict[str, Any]:
    """Two minutes at thousands of requests a second with a clock move every 10 s: many labels competing."""
    doctored = copy.deepcopy(results)
    load = doctored["load"]
    load.update(duration_s=120.0, requests_over_time=[[t, 9000 + 37 * t] for t in range(121)],
                failures_over_time=[[t, 40 * (t % 7)] for t in range(1, 121)], started=1_800_000_000.25,
                epochs=[{"index": k, "wall": 1_800_000_000.25 + 10 * k, "virtual": 1_800_100_000.0 + 3601 * k}
                        for k in range(1, 12)])
    return doctored


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("run", ["fixture", "long"])
def test_chart_fits_its_box_and_its_labels_stay_apart(browser: Chromium, results: dict[str, Any], run: str,
                                                      width: int, tmp_path: Path) -> None:
    document = results if run == "fixture" else _long_run(results)
    path = tmp_path / "report.html"
    path.write_text(reports.render_html(document), encoding="utf-8")
    browser.events.clear()
    browser.open(path.as_uri(), width)
    found = browser.evaluate(MEASURE)
    browser.screenshot(tmp_path / "chart.png", element="#load-chart")  # for a person to look at
    assert not browser.console(), browser.console()
    assert found["page"][0] <= found["page"][1], f"the page is wider than the screen: {found['page']}"
    assert not found["loose"], found["loose"]
    assert found["inner"][0] <= found["inner"][1], f"the chart scrolls in its box: {found['inner']}"
    figure, chart = found["figure"], found["svg"]
    assert inside(chart, figure)
    assert chart[0] - figure[0] <= 80 and figure[2] - chart[2] <= 24, "the plot does not fill its box's width"
    for bar in found["bars"] + found["lines"]:
        assert inside(bar, chart), f"a bar or line outside the plot: {bar} vs {chart}"
    texts = found["texts"]
    assert len(found["lines"]) == len(document["load"]["epochs"])
    for t in texts:
        assert inside(t["box"], figure), f"{t['text']!r} at {t['box']} leaves the figure {figure}"
        assert t["size"] >= 11, f"{t['text']!r} shrank to {t['size']} px"
    for a, b in combinations(texts, 2):
        assert not overlap(a["box"], b["box"]), f"{a['text']!r} {a['box']} overlaps {b['text']!r} {b['box']}"
    shown = sum(1 for t in texts if t["text"] == "tokens expire") - 1  # the legend's
    labels = re.findall(r'class="epoch-label( wide-only)?"', path.read_text(encoding="utf-8"))
    assert shown == (len(labels) if width > 1000 else labels.count(""))  # the wide screen shows the wide-only ones
    if run == "fixture":
        assert shown == len(document["load"]["epochs"])
    else:
        assert 3 <= labels.count("") < len(labels) < len(document["load"]["epochs"]), labels
