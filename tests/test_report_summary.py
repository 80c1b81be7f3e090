"""The report's first section names everything that needs attention; waits say whose clock moved; nothing from a
results.json (hand-edited, older, or a portal's coloured output) brings a control character into a report."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

import reports
from reports.model import wait_label
from tests.test_report import SAMPLE, Page

ATTENTION = ("failed", "warning", "not_exercised")
SKIPPED = {"mode": "AzUser", "flow": "authorization_code", "name": "bc-refuses-all", "outcome": "not_exercised",
           "description": "Business Central refuses every call", "error": "needs a fresh portal, and a portal given by "
           "--portal-url is started once", "visits": [], "violations": [], "waited": 0.0, "trace": []}
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    data = reports.load_results(SAMPLE)
    data["scenarios"].append(copy.deepcopy(SKIPPED))
    return data


@pytest.fixture(scope="module")
def html(results: dict[str, Any]) -> str:
    return reports.render_html(results)


def _sections(html: str) -> list[str]:
    main = html[html.index("<main"):]
    return re.findall(r'<section id="([^"]+)"', main)


def test_the_summary_is_the_first_section(html: str) -> None:
    sections = _sections(html)
    assert sections[0] == "summary", sections
    header_end = html.index("</header>")
    assert html.index('<section id="summary"') > header_end  # right after the title and verdict (and contents)
    assert html.index('<section id="summary"') < html.index('<section id="counts"')


def test_the_summary_names_every_check_that_needs_attention(results: dict[str, Any], html: str) -> None:
    page = Page(html)
    text, links = page.text("summary"), set(page.sections["summary"]["hrefs"])
    wanted = [c for c in results["checks"] if c["outcome"] in ATTENTION]
    assert {c["outcome"] for c in wanted} == set(ATTENTION)
    for check in wanted:
        assert f"#check-{check['mode']}-{check['id']}" in links, check["id"]
        prefix = results["flows"][check["flow"]]["prefix"]
        for number in check["steps"][:1]:  # a run of steps is written as a range from its first
            assert f"{prefix}-{number}" in text
        row = _row(html, check)
        for value in (check["title"], check["id"], check["mode"], check["level"], check["outcome"].replace("_", " ")):
            assert value in row, (check["id"], value)
        assert " ".join(check["message"].split()) in " ".join(row.split()), check["id"]  # the reason in full
    assert "<details" not in html[html.index('<section id="summary"'):html.index('<section id="counts"')]


def _row(html: str, check: dict[str, Any]) -> str:
    """The text of the summary row that links to the check."""
    summary = html[html.index('<section id="summary"'):html.index('<section id="counts"')]
    match = re.search(rf'<tr[^>]*>(?:(?!</tr>).)*href="#check-{check["mode"]}-{check["id"]}"(?:(?!</tr>).)*</tr>',
                      summary, re.DOTALL)
    assert match, check["id"]
    return re.sub(r"<[^>]+>", " ", match[0])


def test_the_summary_lists_scenarios_that_did_not_run_with_their_reason(html: str) -> None:
    page = Page(html)
    assert "#scenario-AzUser-bc-refuses-all" in page.sections["summary"]["hrefs"]
    assert "AzUser · bc-refuses-all" in page.text("summary")
    assert "--portal-url is started once" in page.text("summary")
    assert "#scenario-AzDelegate-consented-not-signed-in" in page.sections["summary"]["hrefs"]  # and the errored
    scenario = page.text("scenario-AzUser-bc-refuses-all")
    assert "Not run: needs a fresh portal" in scenario


def test_the_summary_says_so_when_nothing_needs_attention(results: dict[str, Any]) -> None:
    clean = copy.deepcopy(results)
    for check in clean["checks"]:
        check["outcome"] = "passed" if check["outcome"] in ATTENTION else check["outcome"]
    clean["scenarios"] = [dict(s, outcome="passed", error="") for s in clean["scenarios"]]
    page = Page(reports.render_html(clean))
    text = page.text("summary")
    assert "No check failed, none raised a warning and every check was exercised." in text
    assert "Every scenario ran and passed." in text
    assert not [h for h in page.sections["summary"]["hrefs"] if h.startswith("#check-")]
    markdown = reports.render_markdown(clean)
    assert "No check failed, none raised a warning and every check was exercised." in markdown


def test_markdown_lists_not_exercised_checks_and_skipped_scenarios(results: dict[str, Any]) -> None:
    markdown = reports.render_markdown(results)
    assert "| ⏭️ not exercised | MUST | AzDelegate | AC-4, AC-5 | Login and consent only when needed" in markdown
    assert "the delegate account had always consented: AC-5 was not reached" in markdown
    assert "- ⏭️ not exercised **AzUser · bc-refuses-all** — needs a fresh portal" in markdown
    assert markdown.index("### Failed, warnings and not exercised") < markdown.index("| Level |")


# ------------------------------------------------------------------------------------------ waits


@pytest.mark.parametrize(("waited", "control", "wall", "shown", "absent"), [
    (3601.0, "virtual (in-process fake clock)", 1.3, ["virtual time: 3601 s (no real waiting)", "wall time 1.3 s"],
     ["real wait:"]),
    (3601.0, "", 0.0, ["virtual time: 3601 s (no real waiting)"], ["wall time", "real wait:"]),
    (60.0, "virtual (libfaketime)", 2.25, ["virtual time: 60 s (no real waiting)", "wall time 2.2 s"], ["real wait:"]),
    (3.0, "real: libfaketime is not installed", 4.5, ["real wait: 3.0 s", "wall time 4.5 s",
                                                      "Clock: real: libfaketime is not installed"], ["virtual time"]),
    (0.0, "", 0.0, [], ["virtual time", "real wait:", "waited"]),
])
def test_every_wait_says_whether_it_was_virtual_or_real(results: dict[str, Any], waited: float, control: str,
                                                       wall: float, shown: list[str], absent: list[str]) -> None:
    doctored = copy.deepcopy(results)
    scenario = next(s for s in doctored["scenarios"] if s["mode"] == "AzApp" and s["name"] == "missing-token")
    scenario.update(waited=waited, time_control=control, wall_time=wall)
    text = Page(reports.render_html(doctored)).text("scenario-AzApp-missing-token")
    for words in shown:
        assert words in text, words
    for words in absent:
        assert words not in text, words


def test_wait_labels() -> None:
    assert wait_label(3601.0, real=False) == "virtual time: 3601 s (no real waiting)"
    assert wait_label(0.5, real=False) == "virtual time: 0.5 s (no real waiting)"
    assert wait_label(3, real=True) == "real wait: 3.0 s"
    assert wait_label(0, real=True) == wait_label(None, real=False) == wait_label("x", real=False) == ""


def test_gaps_in_a_sequence_diagram_say_the_time_was_virtual(results: dict[str, Any]) -> None:
    doctored = copy.deepcopy(results)
    scenario = next(s for s in doctored["scenarios"] if s["mode"] == "AzApp" and s["name"] == "expired-token")
    half = len(scenario["trace"]) // 2
    for event in scenario["trace"][half:]:
        event["time"] += 3601
    text = Page(reports.render_html(doctored)).text("scenario-AzApp-expired-token")
    assert "s later (virtual time, no real waiting)" in text
    scenario["time_control"] = "real: the portal's Date header ignores libfaketime"
    assert "s later (real wait)" in Page(reports.render_html(doctored)).text("scenario-AzApp-expired-token")


# ------------------------------------------------------------------------------------------ control characters


def _plant_escapes(results: dict[str, Any]) -> dict[str, Any]:
    """Colour codes and bells everywhere a results.json holds text, as an older or hand-edited file may."""
    doctored = copy.deepcopy(results)
    red = "\x1b[31mred\x1b[0m \x07bell \x9b1mcsi \x1b]0;title\x07 \x00nul"
    doctored["target"] = f"portal {red}"
    for check in doctored["checks"][:6]:
        check.update(message=f"{check['message']} {red}", title=f"{check['title']} {red}", received=red,
                     expected=red, replay=red)
    doctored["checks"][0]["outcome"] = "failed"
    for scenario in doctored["scenarios"]:
        scenario["error"] = f"boom {red}"
        scenario["description"] = red
        scenario["time_control"] = f"real: {red}"
        scenario["violations"] = [{"step": "CC-2", "seq": "3\x1b[1m", "message": red}]
        for event in scenario["trace"][:4]:
            event.update(path=f"/x{red}", error=red, seq=f"{event['seq']}\x07", detail={"note\x1b[2m": red})
    flow = doctored["flows"]["authorization_code"]
    flow["steps"][0]["text"] += f" {red}"
    flow["edges"][3]["label"] += f" {red}"
    doctored["steps"][0]["actor"] = red
    return doctored


def test_no_escape_or_control_character_reaches_either_report(results: dict[str, Any], tmp_path: Path) -> None:
    doctored = _plant_escapes(results)
    (tmp_path / "results.json").write_text(json.dumps(doctored), encoding="utf-8")
    html_path = reports.cli_render(str(tmp_path), None)
    for path in (html_path, tmp_path / "report.md"):
        text = path.read_text(encoding="utf-8")
        assert "\x1b" not in text and "\x07" not in text and "\x9b" not in text, path.name
        assert not CONTROL.search(text), (path.name, CONTROL.findall(text)[:5])
        assert "red bell" in text, path.name  # the words stay, only the codes go
    html = html_path.read_text(encoding="utf-8")
    assert "[31m" not in html and "]0;title" not in html
