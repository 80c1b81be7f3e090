"""The HTML and Markdown reports of a results document (tests/fixtures/sample_results.json)."""

from __future__ import annotations

import copy
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

import reports
from flows.tables import FLOWS, MODES

SAMPLE = Path(__file__).parent / "fixtures" / "sample_results.json"
# Values planted in the sample's traces, checks and errors; none may reach a report.
PLANTED = [
    "abc-planted-9f2",  # client_secret in a form, a URL and a check's "received"
    "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9",  # a JWT in a Bearer header, a detail value and a message
    "c2lnbmF0dXJlLXBsYW50ZWQ",
    "planted-code-7777",  # an authorization code in a redirect Location and an error message
    "planted-refresh-4242",  # a refresh token under its own key
    "opaque-planted-bearer-0123456789",  # a non-JWT bearer token in a headers mapping
    "planted-verifier-123",  # a PKCE verifier in prose
    "hunter2-planted",  # a password in a form and under its own key
]
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
ALLOWED_OFF_PAGE = ("https://www.rfc-editor.org/rfc/", "https://datatracker.ietf.org/", "https://docs.staedean.com/")
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
URL_ATTRS = {"href", "src", "xlink:href", "action", "formaction", "data", "poster", "srcset", "background", "ping"}


class Page(HTMLParser):
    """Elements by id, with the text, links and tags inside each, and every URL-bearing attribute."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, str | None]] = []
        self.sections: dict[str, dict[str, Any]] = {}
        self.ids: list[str] = []
        self.urls: list[tuple[str, str, str]] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(html)
        self.close()

    def _open(self) -> list[dict[str, Any]]:
        return [self.sections[i] for _, i in self.stack if i is not None]

    def _start(self, tag: str, attrs: list[tuple[str, str | None]], void: bool) -> None:
        values = dict(attrs)
        self.tags.append((tag, values))
        for name, value in attrs:
            if name in URL_ATTRS and value is not None:
                self.urls.append((tag, name, value))
        for section in self._open():
            section["tags"].append((tag, values))
            if values.get("href"):
                section["hrefs"].append(values["href"])
        ident = values.get("id")
        if ident:
            self.ids.append(ident)
            self.sections[ident] = {"tag": tag, "attrs": values, "text": [], "hrefs": [], "tags": []}
        if not void:
            self.stack.append((tag, ident))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, attrs, tag in VOID)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, attrs, True)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                del self.stack[i:]
                return

    def handle_data(self, data: str) -> None:
        for section in self._open():
            section["text"].append(data)

    def text(self, ident: str) -> str:
        return " ".join(" ".join(self.sections[ident]["text"]).split())


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    return reports.load_results(SAMPLE)


@pytest.fixture(scope="module")
def html(results: dict[str, Any]) -> str:
    return reports.render_html(results)


@pytest.fixture(scope="module")
def page(html: str) -> Page:
    return Page(html)


@pytest.fixture(scope="module")
def markdown(results: dict[str, Any]) -> str:
    return reports.render_markdown(results)


# ------------------------------------------------------------------------------------------ the sample


def test_sample_follows_the_contract(results: dict[str, Any]) -> None:
    for key in ("target", "kit_version", "date", "modes", "profile", "seed", "exit_code", "verdict", "summary",
                "summary_by_level", "checks", "steps", "scenarios", "flows"):
        assert key in results
    assert results["modes"] == ["AzApp", "AzUser", "AzDelegate"]
    outcomes = {c["outcome"] for c in results["checks"]}
    assert {"passed", "failed", "warning", "not_applicable", "not_exercised"} <= outcomes
    for flow in FLOWS.values():  # the step texts are the document's, word for word
        assert [s["text"] for s in results["flows"][flow.key]["steps"]] == [s.text for s in flow.steps]
    raw = SAMPLE.read_text(encoding="utf-8")
    assert all(value in raw for value in PLANTED), "the sample must keep its planted secrets to prove redaction"


# ------------------------------------------------------------------------------------------ HTML


def test_every_step_of_every_mode_has_its_text_and_a_verdict(results: dict[str, Any], page: Page) -> None:
    for mode in results["modes"]:
        flow = MODES[mode].flow
        mode_text = page.text(f"mode-{mode}")
        for step in flow.steps:
            anchor = f"{mode}-{flow.prefix}-{step.number}"
            assert anchor in page.sections, f"no section {anchor}"
            section = page.sections[anchor]
            assert section["tag"] == "details"
            assert step.text in page.text(anchor) and step.text in mode_text
            outcome = section["attrs"]["data-outcome"]
            assert outcome in ("passed", "failed", "not_exercised")
            assert f"o-{outcome}" in section["attrs"]["class"]
            assert outcome.replace("_", " ") in page.text(anchor)


def test_step_verdicts_are_those_of_the_results(results: dict[str, Any], page: Page) -> None:
    for step in results["steps"]:
        prefix = results["flows"][step["flow"]]["prefix"]
        assert page.sections[f"{step['mode']}-{prefix}-{step['number']}"]["attrs"]["data-outcome"] == step["outcome"]
    assert page.sections["AzApp-CC-2"]["attrs"]["data-outcome"] == "failed"
    assert page.sections["AzDelegate-AC-5"]["attrs"]["data-outcome"] == "not_exercised"


def test_each_mode_has_an_svg_flow_diagram_drawn_from_the_table(results: dict[str, Any], page: Page) -> None:
    for mode in results["modes"]:
        flow = MODES[mode].flow
        figure = page.sections[f"diagram-{mode}"]
        svgs = [attrs for tag, attrs in figure["tags"] if tag == "svg"]
        assert len(svgs) == 1 and "flow-diagram" in (svgs[0].get("class") or "")
        text = page.text(f"diagram-{mode}")
        for step in flow.steps:
            assert f"{flow.prefix}-{step.number}" in text
            assert f"#{mode}-{flow.prefix}-{step.number}" in figure["hrefs"]  # boxes link to their step
        # skip edges are dashed and labelled with their condition
        dashed = [a for tag, a in figure["tags"] if tag == "path" and a.get("stroke-dasharray") == "6 4"]
        assert len(dashed) == sum(1 for e in flow.edges if e.kind == "skip")
        for edge in flow.edges:
            if edge.kind == "skip":
                assert edge.label in text
        # coloured by outcome: the failed steps of AzApp are red, the skip it never took is grey
        if mode == "AzApp":
            strokes = {a.get("stroke") for tag, a in figure["tags"] if tag == "rect"}
            assert "#cf222e" in strokes and "#1a7f37" in strokes
            assert dashed[0]["stroke"] == "#8c959f"


def test_each_scenario_has_a_sequence_diagram(results: dict[str, Any], page: Page) -> None:
    for scenario in results["scenarios"]:
        anchor = f"scenario-{scenario['mode']}-{scenario['name']}"
        section = page.sections[anchor]
        svgs = [a for tag, a in section["tags"] if tag == "svg" and "sequence" in (a.get("class") or "")]
        assert len(svgs) == 1, anchor
        text = page.text(anchor)
        for lane in ("User", "Portal", "Authority", "Business Central"):
            assert lane in text
        steps = {e["step"] for e in scenario["trace"] if e.get("step")}
        assert steps and all(step in text for step in steps)
        for event in scenario["trace"]:  # every event has its row, which the arrows link to
            assert f"{anchor}-e{event['seq']}" in page.sections


def test_failing_check_sits_under_its_step_with_expected_and_received(results: dict[str, Any], page: Page) -> None:
    check = next(c for c in results["checks"] if c["mode"] == "AzApp" and c["id"] == "valid-token-reused")
    assert check["outcome"] == "failed"
    step = page.sections["AzApp-CC-2"]
    assert "open" in step["attrs"]  # a failed step opens by default
    assert "#check-AzApp-valid-token-reused" in step["hrefs"]
    text = page.text("AzApp-CC-2")
    assert "Valid token is reused" in text and "Expected" in text and "Received" in text
    assert check["expected"] in text
    assert "second access: POST" in text and "client_secret=[REDACTED]" in text

    card = page.text("check-AzApp-valid-token-reused")
    assert check["expected"] in card and "Received" in card
    assert check["replay"] in card
    assert "POST" in card and "← 200" in card  # evidence as request/response lines
    evidence = page.sections["check-AzApp-valid-token-reused"]["hrefs"]
    for seq in check["evidence"]:
        assert f"#scenario-AzApp-valid-token-e{seq}" in evidence
    assert "check-valid-token-reused" in page.sections  # the short alias of the first such check


def test_failure_summary_links_to_failing_check_and_step(results: dict[str, Any], page: Page) -> None:
    links = page.sections["failures"]["hrefs"]
    for check in results["checks"]:
        if check["outcome"] in ("failed", "warning"):
            assert f"#check-{check['mode']}-{check['id']}" in links
    assert "#AzApp-CC-2" in links
    assert "#scenario-AzDelegate-consented-not-signed-in" in links  # the scenario that errored
    summary = page.text("top") + page.text("summary") + page.text("counts")
    for word in ("examples.mutants.refetch_token:app", "0.1.0", "2025-05-14", "AzApp, AzUser, AzDelegate", "MUST",
                 "SHOULD", "MAY", "not exercised", "not applicable", "FAILED", "Exit code 1", "quick", "20250514"):
        assert word in summary, word


def test_summary_shows_verdict_exit_code_and_counts(results: dict[str, Any], html: str) -> None:
    assert "FAILED" in html
    assert re.search(r"Exit code</dt><dd>1<", html)
    for outcome, n in results["summary"].items():
        assert re.search(rf'class="tile o-{outcome}[^"]*"><span class="tile-n">{n}<', html), outcome


def test_anchors_are_unique_and_stable(results: dict[str, Any], html: str, page: Page) -> None:
    assert len(page.ids) == len(set(page.ids))
    assert Page(reports.render_html(copy.deepcopy(results))).ids == page.ids
    for href in {h for section in page.sections.values() for h in section["hrefs"] if h.startswith("#")}:
        assert href[1:] in page.sections, f"dangling link {href}"


def test_nothing_points_off_the_page_but_rfcs_and_the_document(page: Page, html: str) -> None:
    off_page = [(tag, attr, url) for tag, attr, url in page.urls if not url.startswith("#")]
    assert off_page, "the RFC and document references should be links"
    for tag, attr, url in off_page:
        assert tag == "a" and attr == "href" and url.startswith(ALLOWED_OFF_PAGE), (tag, attr, url)
    assert not [t for t, a in page.tags if t in ("img", "link", "iframe", "object", "embed", "base")]
    assert all("src" not in attrs for tag, attrs in page.tags if tag == "script")
    assert "@import" not in html and not re.search(r"url\(\s*['\"]?(?:https?:)?//", html)
    csp = next(a["content"] for t, a in page.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy")
    assert "default-src 'none'" in csp


def test_no_planted_secret_reaches_the_html(html: str) -> None:
    for value in PLANTED:
        assert value not in html, value
    assert not JWT.search(html)
    assert "[REDACTED]" in html


def test_redaction_is_defensive_beyond_the_kit(results: dict[str, Any]) -> None:
    doctored = copy.deepcopy(results)
    check = doctored["checks"][0]
    check["message"] = 'body was {"client_secret": "raw-secret-1"} and refresh_token: raw-refresh-2'
    check["received"] = "Authorization: Bearer rawopaquetoken-3456789012 sent; code=raw-code-4"
    event = doctored["scenarios"][0]["trace"][0]
    event["detail"] = {"Client-Secret": "raw-secret-5", "nested": {"access_token": "raw-access-6"},
                       "cookie": "sid=raw-cookie-7"}
    event["path"] = "/cb?client_secret=raw-secret-8"
    out = reports.render_html(doctored) + reports.render_markdown(doctored)
    for n in range(1, 9):
        assert not re.search(rf"raw[a-z-]*{n}\b", out), n


def test_text_from_results_is_escaped(results: dict[str, Any]) -> None:
    doctored = copy.deepcopy(results)
    doctored["target"] = "<script>alert(1)</script>"
    doctored["checks"][0]["message"] = '<img src="https://evil.example/x">'
    doctored["scenarios"][0]["trace"][0]["path"] = "/<svg onload=alert(1)>"
    page = Page(reports.render_html(doctored))
    assert sum(1 for tag, _ in page.tags if tag == "script") == 1
    assert not [t for t, _ in page.tags if t == "img"]
    assert not [a for _, a in page.tags if "onload" in a]


def test_renders_minimal_and_unexpected_results() -> None:
    minimal = {"verdict": "passed", "summary": {}, "checks": []}
    html = reports.render_html(minimal)
    assert "PASSED" in html and "No check failed" in html
    assert "PASSED" in reports.render_markdown(minimal)
    extra = {"verdict": "failed", "summary": {"failed": 1}, "modes": ["AzApp"], "future_key": {"x": 1},
             "checks": [{"id": "x", "mode": "AzApp", "steps": [9], "outcome": "failed", "level": "MUST"}],
             "steps": [], "scenarios": [{"mode": "AzApp", "name": "s", "trace": [{"seq": 1, "server": "odd"}]}]}
    page = Page(reports.render_html(extra))
    assert "AzApp-CC-1" in page.sections  # the table comes from the kit when results lack "flows"
    assert page.sections["AzApp-CC-1"]["attrs"]["data-outcome"] == "not_exercised"


# ------------------------------------------------------------------------------------------ Markdown


def test_markdown_has_verdict_counts_failures_and_step_tables(results: dict[str, Any], markdown: str) -> None:
    assert markdown.startswith("## ❌ BC OAuth conformance: FAILED")
    assert "exit code 1" in markdown
    assert "| MUST | 20 | 1 | 0 | 0 | 1 |" in markdown
    assert "| ❌ failed | MUST | AzApp | CC-2, CC-5 | Valid token is reused `valid-token-reused` |" in markdown
    assert "| ⚠️ warning | SHOULD | AzUser | AC-3, AC-7 | PKCE S256 `pkce-s256` |" in markdown
    assert "| ⚠️ warning | SHOULD | AzDelegate | AC-1–10 |" in markdown
    assert "expected: second access of session s1" in markdown
    assert "replay: `bc-conformance run --mode AzApp --scenario valid-token`" in markdown
    for mode in results["modes"]:
        flow = MODES[mode].flow
        assert f"### {mode} — {flow.title}" in markdown
        for step in flow.steps:
            assert re.search(rf"^\| {flow.prefix}-{step.number} \| .* \| (✅ passed|❌ failed|⏭️ not exercised) \|",
                             markdown, re.MULTILINE)
    assert re.search(r"^\| CC-2 \| Portal \| .* \| ❌ failed \| ❌ `valid-token-reused`", markdown, re.MULTILINE)
    table_rows = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert all(line.endswith("|") for line in table_rows)


def test_no_planted_secret_reaches_the_markdown(markdown: str) -> None:
    for value in PLANTED:
        assert value not in markdown, value
    assert not JWT.search(markdown)


# ------------------------------------------------------------------------------------------ files and CLI


def test_write_reports_writes_both_files(results: dict[str, Any], tmp_path: Path) -> None:
    written = reports.write_reports(results, tmp_path / "out")
    assert set(written) == {"html", "markdown"}
    assert written["html"].name == "report.html" and written["markdown"].name == "report.md"
    assert written["html"].read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert "FAILED" in written["markdown"].read_text(encoding="utf-8")


def test_cli_render_from_a_run_directory_and_a_file(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(SAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    html = reports.cli_render(str(run), None)
    assert html == run / "report.html" and html.is_file() and (run / "report.md").is_file()
    out = reports.cli_render(str(run / "results.json"), str(tmp_path / "site" / "index.html"))
    assert out.is_file() and (tmp_path / "site" / "report.md").is_file()


@pytest.mark.parametrize("content", [None, "", "{not json", "[1, 2]", '{"target": "x"}', '{"verdict": "passed", '
                                     '"summary": {}, "checks": {}}'])
def test_cli_render_rejects_what_is_not_a_results_file(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "results.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=r"^expected a results\.json written by bc-conformance run, got .*results"):
        reports.cli_render(str(path), None)
    assert not (tmp_path / "report.html").exists()


def test_cli_render_rejects_a_directory_without_results(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"expected a results\.json written by bc-conformance run"):
        reports.cli_render(str(tmp_path), None)


# ------------------------------------------------------------------------------------------ shapes of real runs


def _loop_run(results: dict[str, Any]) -> dict[str, Any]:
    """The sample, reshaped the way a portal stuck in a redirect loop reports: repeated violations, long
    evidence, the user driver's visit markers, references carrying their own URL."""
    run = copy.deepcopy(results)
    scenario = next(s for s in run["scenarios"] if s["mode"] == "AzApp" and s["name"] == "valid-token")
    scenario["trace"].insert(0, {"seq": 0, "time": scenario["trace"][0]["time"], "server": "user",
                                 "endpoint": "visit_start", "method": "", "path": "", "status": 0, "error": "",
                                 "grant": "", "client_id": "", "user": "alice", "issued": [], "redeemed": [],
                                 "detail": {"session": "s1", "kind": "visit"}})
    scenario["violations"] = [{"step": "CC-2", "into": "CC-3", "seq": 6, "kind": "not-reused",
                               "message": "asked for a new token"}] * 5
    last = scenario["trace"][-1]
    scenario["trace"] += [dict(last, seq=last["seq"] + n) for n in range(1, 16)]
    check = next(c for c in run["checks"] if c["mode"] == "AzApp" and c["id"] == "valid-token-reused")
    check["evidence"] = [e["seq"] for e in scenario["trace"]]
    check["refs"] = ["Anywhere Portal authorization flows, CC-2,5 <https://docs.staedean.com/>",
                     "OAuth 2.0 Security BCP <https://elsewhere.example/bcp>", "RFC 9700 §2.1.1"]
    return run


def test_loops_and_markers_stay_readable(results: dict[str, Any]) -> None:
    run = _loop_run(results)
    html = reports.render_html(run)
    page = Page(html)
    scenario = page.text("scenario-AzApp-valid-token")
    assert "visit alice · session s1" in scenario  # the visit marker is a separator in the diagram
    assert scenario.count("asked for a new token") == 1 and "×5" in scenario  # repeats are counted, once
    assert "#scenario-AzApp-valid-token-e6" in page.sections["scenario-AzApp-valid-token"]["hrefs"]
    card = page.text("check-AzApp-valid-token-reused")
    assert "more events, marked in the scenarios' traces" in card
    refs = {h for h in page.sections["check-AzApp-valid-token-reused"]["hrefs"] if not h.startswith("#")}
    assert refs == {"https://docs.staedean.com/business-central/docs/bc-anywhere-portal-authorization-flows",
                    "https://www.rfc-editor.org/rfc/rfc9700#section-2.1.1"}
    assert "OAuth 2.0 Security BCP" in card and "elsewhere.example" not in html


def test_markdown_fits_a_pr_comment_whatever_the_run(results: dict[str, Any]) -> None:
    run = _loop_run(results)
    template = next(s for s in run["scenarios"] if s["name"] == "valid-token")
    run["scenarios"] = [dict(template, name=f"loop-{n}", violations=[{"step": "CC-2", "message": f"m{n}-{k} " * 40}
                                                                     for k in range(5)]) for n in range(150)]
    for check in run["checks"]:
        check.update(outcome="failed", received="x" * 5000)
    markdown = reports.render_markdown(run)
    assert len(markdown) <= 60_000
    assert "FAILED" in markdown and "valid-token-reused" in markdown
