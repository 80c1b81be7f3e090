"""The report as GitHub-flavoured Markdown, for a CI job summary or a PR comment: the verdict first, then
only what a reviewer acts on (every failed, warning and not exercised check with its reason and step ids, the
counts, a compact step table per mode)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from conformance.printable import printable
from reports.load import LoadView, RequestRow
from reports.model import LEVELS, SUMMARY_ORDER, CheckView, ModeView, build, label

MAX_CHARS = 60_000
"""Under GitHub's 65,536-character limit for a PR comment (a job summary allows 1 MiB)."""
TEXT_CHARS = 600
VIOLATIONS_SHOWN = 3

ICONS = {"passed": "✅", "failed": "❌", "warning": "⚠️", "not_applicable": "➖", "not_exercised": "⏭️",
         "error": "🛑", "incomplete": "⏸️"}


def _cell(text: object) -> str:
    """Text safe inside a table cell: no pipe, newline or raw HTML can break the table or the comment."""
    out = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    out = out.replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*").replace("`", "'")
    return " ".join(out.split())


def _code(text: object) -> str:
    """A code span; pipes stay escaped because GFM splits table cells on them even inside code."""
    return f"`{str(text).replace('`', chr(39)).replace('|', chr(92) + '|')}`" if str(text) else ""


def _short(text: str, limit: int = TEXT_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _mark(outcome: str) -> str:
    return f"{ICONS.get(outcome, '')} {label(outcome)}".strip()


def _steps(check: CheckView) -> str:
    return ", ".join(sid for sid, _ in check.step_groups) or "—"


def _counts_table(view: Any) -> list[str]:
    head = "| Level | " + " | ".join(label(o) for o in SUMMARY_ORDER) + " |"
    rows = [head, "|---|" + "--:|" * len(SUMMARY_ORDER)]
    for level, counts in view.by_level:
        rows.append(f"| {level} | " + " | ".join(str(n) for n in counts) + " |")
    totals = dict(view.summary)
    rows.append("| **All** | " + " | ".join(f"**{totals.get(o, 0)}**" for o in SUMMARY_ORDER) + " |")
    return rows


def _attention(view: Any) -> list[str]:
    """Every failed, warning and not exercised check, by name and reason, most severe first."""
    if not view.attention:
        return ["No check failed, none raised a warning and every check was exercised."]
    rows = ["| | Level | Mode | Steps | Check | Message or reason |", "|---|---|---|---|---|---|"]
    for c in view.attention:
        rows.append(f"| {_mark(c.outcome)} | {c.level} | {c.mode} | {_steps(c)} | {_cell(c.title)} {_code(c.id)} "
                    f"| {_cell(_short(c.message, 300))} |")
    details = []
    for c in view.problems:
        if not (c.expected or c.received or c.replay):
            continue
        details.append(f"- **{c.mode} · {_code(c.id)}** ({_steps(c)})")
        if c.expected:
            details.append(f"  - expected: {_cell(_short(c.expected))}")
        if c.received:
            details.append(f"  - received: {_cell(_short(c.received))}")
        if c.replay:
            details.append(f"  - replay: {_code(c.replay)}")
    if details:
        rows += ["", "<details><summary>Expected vs received, and how to replay</summary>", "", *details, "",
                 "</details>"]
    return rows


def _scenarios(view: Any) -> list[str]:
    """Scenarios that failed, errored or were not run, each with its reason."""
    listed = view.broken_scenarios + view.skipped_scenarios
    if not listed:
        return []
    out = ["", "### Scenarios that did not pass", ""]
    for s in listed:
        detail = f" — {_cell(_short(s.error))}" if s.error else ""
        shown = [f"{v.step}: {_cell(_short(v.message, 200))}" + (f" (×{v.count})" if v.count > 1 else "")
                 for v in s.violations[:VIOLATIONS_SHOWN]]
        if len(s.violations) > VIOLATIONS_SHOWN:
            shown.append(f"{len(s.violations) - VIOLATIONS_SHOWN} more")
        out.append(f"- {_mark(s.outcome)} **{s.mode} · {_cell(s.name)}**{detail}"
                   + (f" ({'; '.join(shown)})" if shown else ""))
    return out


def _mode_table(mode: ModeView) -> list[str]:
    rows = [f"### {mode.name} — {_cell(mode.flow_title)}", "", "| # | Actor | Step | Verdict | Checks |",
            "|--:|---|---|---|---|"]
    for s in mode.steps:
        problems = [f"{ICONS[c.outcome]} {_code(c.id)}" for c in s.checks if c.is_problem]
        passed = sum(1 for c in s.checks if c.outcome == "passed")
        cites = problems + ([f"{passed} ✅"] if passed else [])
        rows.append(f"| {s.step_id} | {_cell(s.actor)} | {_cell(s.text)} | {_mark(s.outcome)} | "
                    f"{' '.join(cites) or '—'} |")
    return rows


def _request_row(q: RequestRow, name: str) -> str:
    figures = (q.method, q.requests, q.failures, q.rps, q.p50, q.p95, q.p99)
    return f"| {name} | " + " | ".join(_cell(f) for f in figures) + " |"


def _dropped(load: LoadView) -> str:
    """The trace's completeness, said outright: a dropped event means the checks judged a partial trace."""
    if load.trace_dropped == 0:
        return f"{_cell(load.trace_events)} trace events, no trace event was dropped"
    if load.trace_dropped:
        return f"⚠️ **{load.trace_dropped} trace events were dropped** ({_cell(load.trace_events)} kept)"
    return f"{_cell(load.trace_events)} trace events (dropped events not reported)"


def _load(load: LoadView | None) -> list[str]:
    """The load run in short: parameters, visits, Locust's table, expiries, throttling and the kit's own load."""
    if load is None:
        return []
    params = " · ".join(f"{name.lower()} {_cell(value)}" for name, value in load.parameters)
    visits = ", ".join(f"{_cell(value)} {name}" for name, value, _ in load.visits)
    rows = ["", "### Under load", "", f"Mode {_cell(load.mode)} · {params}", "", f"Visits: {visits}.", "",
            "| Request | Method | Requests | Failures | Requests/s | p50 ms | p95 ms | p99 ms |",
            "|---|---|--:|--:|--:|--:|--:|--:|"]
    rows += [_request_row(q, _cell(f"{q.step} {q.words}".strip())) for q in load.requests]
    if load.total:
        rows.append(_request_row(load.total, "**Total**"))
    expiries = "; ".join(_cell(f"expiry {e.epoch} at {e.at}: {e.token_requests} token requests for {e.sessions} "
                               f"sessions, at most {e.max_per_holder} per {e.holder}")
                         + (" **(over the limit)**" if e.over else "")
                         for e in load.expiries) or "none (the clock did not move past the tokens' expiry)"
    calls, window, answers = (_cell(f) for f in load.throttle)
    rows += ["", f"Token requests: {expiries}.", "",
             f"Throttling: {calls} calls per user every {window} s; {answers} answers 429.", "",
             f"The fake Authority and Business Central used {_cell(load.cpu_share)} % of the run's CPU; "
             f"{_dropped(load)}."]
    if load.errors:
        rows += ["", "Locust's errors: " + "; ".join(f"{_code(error)} ×{n} on {_cell(name)}"
                                                     for name, error, n in load.errors)]
    return rows


def render_markdown(results: Mapping[str, Any]) -> str:
    """The Markdown report of a results document (see ``reports`` for the contract)."""
    view = build(results, events=False)
    icon = ICONS.get(view.verdict, "❔")
    warnings = view.count("warning")
    lines = [
        f"## {icon} BC OAuth conformance: {view.verdict.upper()} — {_code(view.target)}",
        "",
        f"**{view.count('failed')} failed · {warnings} warning{'s' if warnings != 1 else ''} · "
        f"{view.count('not_exercised')} not exercised** · exit code {view.exit_code} · "
        f"modes {', '.join(view.modes_run)} · profile {view.profile} · seed {view.seed} · kit {view.kit_version} · "
        f"{view.date}",
        "",
        "### Failed, warnings and not exercised",
        "",
        *_attention(view),
        *_load(view.load),
        "",
        *_counts_table(view),
    ]
    scenarios = _scenarios(view)
    tables = [line for mode in view.modes for line in ("", *_mode_table(mode))]
    footer = ["", f"<sub>Levels: {', '.join(LEVELS)}. Step ids: CC = Client Credentials Flow, "
              "AC = Authorization Code Flow, numbered as in the document's tables.</sub>", ""]
    text = "\n".join(lines + scenarios + tables + footer)
    if len(text) > MAX_CHARS:  # keep the verdict, counts, failures and step tables; drop the scenario list
        note = ["", f"_The list of scenarios that did not pass is left out to stay under {MAX_CHARS} characters; "
                "see report.html._"]
        text = "\n".join(lines + note + tables + footer)
    if len(text) > MAX_CHARS:
        text = text[: MAX_CHARS - 80].rsplit("\n", 1)[0] + "\n\n_… cut to stay within a PR comment; see report.html._\n"
    return printable(text)  # as the HTML: nothing from results.json can colour a terminal or a CI log
