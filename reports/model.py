"""The view of a results document that every renderer shares: grouped per mode, cross-linked, redacted.

Renderers (HTML, Markdown) only format this view, so grouping rules (which check sits under which step,
how an edge is coloured, which trace events are evidence) are decided once, here. Every string taken from
results goes through ``reports.safe.clean``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise
from typing import Any

from flows.tables import FLOWS, MODES
from reports import anchors
from reports.events import EventView, as_int, event_view, step_ref
from reports.load import LoadView, build_load
from reports.refs import DOCUMENT_TITLE, Ref, ref_link, split_url
from reports.safe import clean

OUTCOMES = ("failed", "warning", "passed", "not_applicable", "not_exercised")
"""Check outcomes, most severe first (the order of every list in the report)."""
SUMMARY_ORDER = ("passed", "failed", "warning", "not_applicable", "not_exercised")
LEVELS = ("MUST", "SHOULD", "MAY")
LABELS = {"passed": "passed", "failed": "failed", "warning": "warning", "not_applicable": "not applicable",
          "not_exercised": "not exercised", "error": "error"}
IDLE = "idle"


def label(outcome: str) -> str:
    return LABELS.get(outcome, outcome.replace("_", " "))


def group_steps(steps: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Collapse consecutive step ids (``CC-3, CC-4, CC-5``) to ``CC-3–5``, linking to the first."""
    out: list[tuple[str, str]] = []
    run: list[tuple[str, str, str, int]] = []

    def flush() -> None:
        if len(run) >= 3:
            out.append((f"{run[0][0]}–{run[-1][3]}", run[0][1]))
        else:
            out.extend((text, anchor) for text, anchor, _, _ in run)
        run.clear()

    for text, anchor in steps:
        head, _, tail = text.rpartition("-")
        if not (head and tail.isdigit()):
            flush()
            out.append((text, anchor))
            continue
        if run and (run[-1][2] != head or run[-1][3] + 1 != int(tail)):
            flush()
        run.append((text, anchor, head, int(tail)))
    flush()
    return out


def _severity(outcome: str) -> int:
    return OUTCOMES.index(outcome) if outcome in OUTCOMES else len(OUTCOMES)


@dataclass
class EvidenceView:
    scenario: str
    event: EventView


@dataclass
class CheckView:
    id: str
    title: str
    mode: str
    flow: str
    level: str
    outcome: str
    message: str
    expected: str
    received: str
    replay: str
    anchor: str
    alias: str
    steps: list[tuple[str, str]]  # (step id, anchor)
    refs: list[Ref]
    scenarios: list[tuple[str, str]]  # (name, anchor)
    evidence: list[EvidenceView] = field(default_factory=list)

    @property
    def label(self) -> str:
        return label(self.outcome)

    @property
    def is_problem(self) -> bool:
        return self.outcome in ("failed", "warning")

    @property
    def needs_attention(self) -> bool:
        """Failed, warned, or not exercised: what the summary lists by name and reason."""
        return self.outcome in ("failed", "warning", "not_exercised")

    @property
    def step_groups(self) -> list[tuple[str, str]]:
        """The cited steps for display, runs of three or more written as a range (``AC-1–10``)."""
        return group_steps(self.steps)


@dataclass
class StepView:
    number: Any
    step_id: str
    actor: str
    text: str
    outcome: str
    anchor: str
    checks: list[CheckView] = field(default_factory=list)

    @property
    def label(self) -> str:
        return label(self.outcome)


@dataclass
class EdgeView:
    source: Any
    dest: Any
    kind: str
    label: str
    outcome: str  # "passed" | "failed" | "not_exercised"


@dataclass
class VisitView:
    user: str
    session: str
    steps: list[tuple[str, str]]  # (step id, anchor or "")
    variants: list[str]
    final_status: str
    problem: str = ""


@dataclass
class ViolationView:
    """Distinct violations of a scenario: a portal stuck in a loop repeats one many times."""

    step: str
    step_anchor: str
    message: str
    count: int = 1
    event_anchor: str = ""  # the first event it was seen at, when the monitor said


@dataclass
class ScenarioView:
    mode: str
    name: str
    description: str
    outcome: str
    anchor: str
    visits: list[VisitView]
    violations: list[ViolationView]
    wait: str  # "virtual time: 3601 s (no real waiting)", "real wait: 3.0 s" or "" (no wait)
    clock: str  # why time was real ("real: …" in results), else ""
    wall: str  # "wall time 1.3 s" where results measured it, else ""
    error: str
    events: list[EventView]

    @property
    def label(self) -> str:
        return label(self.outcome)

    @property
    def virtual(self) -> bool:
        """Waits moved a virtual clock (in-process fake clock, libfaketime): gaps in the trace took no time."""
        return not self.clock

    @property
    def filter_outcome(self) -> str:
        """Scenario outcomes mapped onto the filter's vocabulary (an error is a failure to the reader)."""
        return "failed" if self.outcome == "error" else self.outcome


@dataclass
class ModeView:
    name: str
    anchor: str
    diagram_anchor: str
    flow_key: str
    flow_title: str
    prefix: str
    assumption: str
    steps: list[StepView]
    edges: list[EdgeView]
    extra_states: list[Any]
    checks: list[CheckView]
    scenarios: list[ScenarioView]

    @property
    def step_counts(self) -> Counter[str]:
        return Counter(s.outcome for s in self.steps)

    @property
    def check_counts(self) -> Counter[str]:
        return Counter(c.outcome for c in self.checks)

    @property
    def worst(self) -> tuple[str, int]:
        """The mode's headline for the contents bar: failures, else warnings, else ("passed", 0)."""
        counts = self.check_counts
        for outcome in ("failed", "warning"):
            if counts[outcome]:
                return outcome, counts[outcome]
        return "passed", 0


@dataclass
class ReportView:
    target: str
    kit_version: str
    date: str
    modes_run: list[str]
    profile: str
    seed: str
    exit_code: str
    verdict: str
    summary: list[tuple[str, int]]
    by_level: list[tuple[str, list[int]]]  # (level, counts in SUMMARY_ORDER)
    problems: list[CheckView]  # failed and warning checks
    attention: list[CheckView]  # failed, warning and not exercised checks: the report's first section
    broken_scenarios: list[ScenarioView]  # failed or errored
    skipped_scenarios: list[ScenarioView]  # not exercised, with the reason
    modes: list[ModeView]
    load: LoadView | None = None  # the "Under load" section, when results come from ``bc-conformance load``

    def count(self, outcome: str) -> int:
        """Checks with this outcome (failed, warning or not exercised), for the verdict's subtitle."""
        return sum(1 for c in self.attention if c.outcome == outcome)


# ----------------------------------------------------------------------------------------------- helpers


def _date(value: Any) -> str:
    text = clean(value)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    zone = moment.strftime("%Z") if moment.tzinfo else ""
    return moment.strftime("%Y-%m-%d %H:%M:%S") + (f" {zone}" if zone else "")


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if float(value).is_integer() else f"{value:.1f} s"


def wait_label(waited: Any, real: bool) -> str:
    """A scenario's waits, saying whose clock moved: in-process runs and libfaketime move a virtual clock (3601 s
    pass in no time), otherwise the kit really waited. Empty when it did not wait."""
    if isinstance(waited, bool) or not isinstance(waited, int | float) or waited <= 0:
        return ""
    return f"real wait: {float(waited):.1f} s" if real else f"virtual time: {_seconds(waited)} (no real waiting)"


def _wall(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return ""
    return f"wall time {float(value):.1f} s"


def _number(value: Any) -> Any:
    """A step number as results give it: an int stays one (edges refer to it), anything else is printed text."""
    return value if isinstance(value, int) and not isinstance(value, bool) else clean(value)


def _flow_data(results: Mapping[str, Any], key: str) -> dict[str, Any]:
    """The step table of a flow: from results, or (older results) from the kit's own tables."""
    flows = results.get("flows") or {}
    if isinstance(flows, Mapping) and isinstance(flows.get(key), Mapping):
        data = dict(flows[key])
        data["steps"] = [dict(st, number=_number(st.get("number"))) for st in data.get("steps") or []
                         if isinstance(st, Mapping)]
        data["edges"] = [dict(e, source=_number(e.get("source")), dest=_number(e.get("dest")))
                         for e in data.get("edges") or [] if isinstance(e, Mapping)]
        return data
    flow = FLOWS.get(key)
    if flow is None:
        return {"title": key, "prefix": "", "steps": [], "edges": []}
    return {"title": flow.title, "prefix": flow.prefix,
            "steps": [{"number": s.number, "actor": s.actor, "text": s.text} for s in flow.steps],
            "edges": [{"source": e.source, "dest": e.dest, "kind": e.kind, "label": e.label} for e in flow.edges]}


def _assumption(mode: str) -> str:
    known = MODES.get(mode)
    return known.assumption if known else ""


def _mode_flow(results: Mapping[str, Any], mode: str) -> str:
    for key in ("checks", "steps", "scenarios"):
        for item in results.get(key) or []:
            if isinstance(item, Mapping) and item.get("mode") == mode and item.get("flow"):
                return str(item["flow"])
    return MODES[mode].flow.key if mode in MODES else ""


def _refs(refs: list[str]) -> list[Ref]:
    """Links for a check's references; the document's per-step references merge into one
    (``Anywhere Portal authorization flows, CC-1–7``) so a check citing every step stays one line."""
    simple: list[tuple[str, str]] = []
    other: list[str] = []
    out: list[Ref] = []
    at = -1
    for ref in refs:
        text, _ = split_url(ref)
        head, sep, tail = text.partition(",")
        if sep and head.strip().lower() == DOCUMENT_TITLE.lower() and tail.strip():
            tail = tail.strip()
            if re.fullmatch(r"[A-Z]+-\d+", tail):
                simple.append((tail, ""))
            else:
                other.append(tail)
            at = len(out) if at < 0 else at
            continue
        out.append(ref_link(ref))
    if at >= 0:
        parts = [", ".join(t for t, _ in group_steps(simple))] if simple else []
        out.insert(at, ref_link(f"{DOCUMENT_TITLE}, {'; '.join(parts + other)}"))
    return out


def _scenario(sc: Mapping[str, Any], mode: str, prefix: str, events: bool = True) -> ScenarioView:
    name = clean(sc.get("name"))
    trace = [e for e in sc.get("trace") or [] if isinstance(e, Mapping)] if events else []
    times = [e["time"] for e in trace if isinstance(e.get("time"), int | float)]
    t0 = min(times) if times else None
    visits = []
    for v in sc.get("visits") or []:
        if not isinstance(v, Mapping):
            continue
        steps = [step_ref(mode, prefix, s) if isinstance(s, int) else (clean(s), "") for s in v.get("steps") or []]
        visits.append(VisitView(clean(v.get("user")), clean(v.get("session")), steps,
                                [clean(x) for x in v.get("variants") or []], clean(v.get("final_status")),
                                clean(v.get("problem"))))
    violations: dict[tuple[str, str], ViolationView] = {}
    for x in sc.get("violations") or []:
        if not isinstance(x, Mapping):
            continue
        step_id, step_anchor = step_ref(mode, prefix, x.get("step", ""))
        key = (step_id, clean(x.get("message")))
        if key in violations:
            violations[key].count += 1
        else:
            seq = x.get("seq")
            violations[key] = ViolationView(step_id, step_anchor, key[1], 1,
                                            anchors.event_anchor(mode, name, seq) if seq is not None else "")
    clock = clean(sc.get("time_control"))
    clock = clock if clock.startswith("real") else ""
    return ScenarioView(
        mode=mode, name=name, description=clean(sc.get("description")), outcome=clean(sc.get("outcome")) or "passed",
        anchor=anchors.scenario_anchor(mode, name), visits=visits, violations=list(violations.values()),
        wait=wait_label(sc.get("waited"), real=bool(clock)), clock=clock, wall=_wall(sc.get("wall_time")),
        error=clean(sc.get("error")), events=[event_view(e, mode, name, prefix, t0) for e in trace],
    )


def _edges(flow: Mapping[str, Any], steps: list[StepView], scenarios: list[ScenarioView],
           raw_scenarios: list[Mapping[str, Any]]) -> list[EdgeView]:
    """Colour each documented edge: traversed by some visit or not, and red when it leaves a failed step
    (the move out of a failed step is the suspect one: CC-2 → CC-3 when the token was valid)."""
    taken: set[tuple[Any, Any]] = set()
    for sc in raw_scenarios:
        last_by_session: dict[Any, Any] = {}
        for v in sc.get("visits") or []:
            path = list(v.get("steps") or []) if isinstance(v, Mapping) else []
            if not path:
                continue
            session = (v.get("user"), v.get("session"))
            taken.add((last_by_session[session], path[0]) if session in last_by_session else (IDLE, path[0]))
            taken.update(pairwise(path))
            last_by_session[session] = path[-1]
    failed = {s.number for s in steps if s.outcome == "failed"}
    out = []
    for e in flow.get("edges") or []:
        if not isinstance(e, Mapping):
            continue
        source, dest = e.get("source"), e.get("dest")
        outcome = "failed" if source in failed else "passed"
        if (source, dest) not in taken:
            outcome = "not_exercised"
        out.append(EdgeView(source, dest, clean(e.get("kind")) or "next", clean(e.get("label")), outcome))
    return out


def _counts(results: Mapping[str, Any], checks: Iterable[Mapping[str, Any]]) -> list[tuple[str, int]]:
    summary = results.get("summary")
    computed = Counter(str(c.get("outcome")) for c in checks)
    if isinstance(summary, Mapping):
        keys = list(SUMMARY_ORDER) + [k for k in summary if k not in SUMMARY_ORDER]
        return [(k, as_int(summary.get(k, computed.get(k, 0)))) for k in keys]
    return [(k, computed.get(k, 0)) for k in SUMMARY_ORDER]


def _by_level(results: Mapping[str, Any], checks: list[Mapping[str, Any]]) -> list[tuple[str, list[int]]]:
    given = results.get("summary_by_level")
    rows = []
    for level in LEVELS:
        if isinstance(given, Mapping) and isinstance(given.get(level), Mapping):
            rows.append((level, [as_int(given[level].get(o)) for o in SUMMARY_ORDER]))
        else:
            mine = Counter(str(c.get("outcome")) for c in checks if c.get("level") == level)
            rows.append((level, [mine.get(o, 0) for o in SUMMARY_ORDER]))
    return rows


# ----------------------------------------------------------------------------------------------- build


def build(results: Mapping[str, Any], events: bool = True) -> ReportView:
    """The whole report's view of a results document (see the contract in ``reports/__init__.py``).

    ``events=False`` leaves the traces out (no evidence, no sequence diagrams): the Markdown needs neither,
    and a long run's traces are most of the work.
    """
    raw_checks = [c for c in results.get("checks") or [] if isinstance(c, Mapping)]
    raw_steps = [s for s in results.get("steps") or [] if isinstance(s, Mapping)]
    raw_scenarios = [s for s in results.get("scenarios") or [] if isinstance(s, Mapping)]
    modes_run = [str(m) for m in results.get("modes") or []]
    for item in (*raw_checks, *raw_steps, *raw_scenarios):
        if item.get("mode") and str(item["mode"]) not in modes_run:
            modes_run.append(str(item["mode"]))

    used: set[str] = set()
    aliased: set[str] = set()

    def unique(anchor: str) -> str:
        candidate, n = anchor, 2
        while candidate in used:
            candidate, n = f"{anchor}-{n}", n + 1
        used.add(candidate)
        return candidate

    modes: list[ModeView] = []
    for mode in modes_run:
        flow_key = _mode_flow(results, mode)
        flow = _flow_data(results, flow_key)
        prefix = clean(flow.get("prefix"))
        mine_raw = [s for s in raw_scenarios if s.get("mode") == mode]
        scenarios = [_scenario(s, mode, prefix, events) for s in mine_raw]
        by_name = {s.name: s for s in scenarios}

        checks: list[CheckView] = []
        for c in raw_checks:
            if c.get("mode") != mode:
                continue
            cid = clean(c.get("id"))
            outcome = clean(c.get("outcome")) or "not_exercised"
            alias = ""
            if cid not in aliased:
                aliased.add(cid)
                alias = unique(anchors.check_alias(cid))
            view = CheckView(
                id=cid, title=clean(c.get("title")) or cid, mode=mode, flow=clean(c.get("flow")) or flow_key,
                level=clean(c.get("level")) or "MUST", outcome=outcome, message=clean(c.get("message")),
                expected=clean(c.get("expected")), received=clean(c.get("received")), replay=clean(c.get("replay")),
                anchor=unique(anchors.check_anchor(mode, cid)), alias=alias,
                steps=[step_ref(mode, prefix, n) for n in c.get("steps") or []],
                refs=_refs([clean(r) for r in c.get("refs") or []]),
                scenarios=[(clean(n), by_name[clean(n)].anchor if clean(n) in by_name else "")
                           for n in c.get("scenarios") or []],
            )
            wanted = {str(x) for x in c.get("evidence") or []}
            pool = [by_name[n] for n, _ in view.scenarios if n in by_name] or scenarios
            for sc in pool:
                for ev in sc.events:
                    if str(ev.seq) in wanted:
                        view.evidence.append(EvidenceView(sc.name, ev))
                        if view.is_problem:
                            ev.evidence_of.append((view.anchor, f"{view.title} ({view.label})"))
            checks.append(view)
        checks.sort(key=lambda c: (_severity(c.outcome), LEVELS.index(c.level) if c.level in LEVELS else 9))

        given = {_number(s.get("number")): s for s in raw_steps if s.get("mode") == mode}
        steps: list[StepView] = []
        for st in flow.get("steps") or []:
            number = st.get("number")
            res = given.get(number, {})
            cited = {str(x) for x in res.get("checks") or []}
            step = StepView(
                number=number, step_id=f"{prefix}-{number}", actor=clean(res.get("actor") or st.get("actor")),
                text=clean(res.get("text") or st.get("text")), outcome=clean(res.get("outcome")) or "not_exercised",
                anchor=unique(anchors.step_anchor(mode, prefix, number)),
                checks=[c for c in checks if c.id in cited or any(a == anchors.step_anchor(mode, prefix, number)
                                                                  for _, a in c.steps)],
            )
            steps.append(step)

        step_numbers = {s.number for s in steps}
        extra = [e.get(k) for e in flow.get("edges") or [] if isinstance(e, Mapping) for k in ("source", "dest")]
        extra_states = list(dict.fromkeys(x for x in extra if x not in step_numbers and x != IDLE))
        modes.append(ModeView(
            name=clean(mode), anchor=unique(anchors.mode_anchor(mode)),
            diagram_anchor=unique(anchors.diagram_anchor(mode)),
            flow_key=flow_key, flow_title=clean(flow.get("title")) or flow_key, prefix=prefix,
            assumption=clean(_assumption(mode)), steps=steps, edges=_edges(flow, steps, scenarios, mine_raw),
            extra_states=extra_states, checks=checks, scenarios=scenarios,
        ))

    attention = [c for m in modes for c in m.checks if c.needs_attention]
    attention.sort(key=lambda c: (_severity(c.outcome), LEVELS.index(c.level) if c.level in LEVELS else 9))
    problems = [c for c in attention if c.is_problem]
    return ReportView(
        target=clean(results.get("target")), kit_version=clean(results.get("kit_version")),
        date=_date(results.get("date")), modes_run=[clean(m) for m in modes_run], profile=clean(results.get("profile")),
        seed=clean(results.get("seed")), exit_code=clean(results.get("exit_code")),
        verdict=clean(results.get("verdict")) or "unknown", summary=_counts(results, raw_checks),
        by_level=_by_level(results, raw_checks), problems=problems, attention=attention,
        broken_scenarios=[s for m in modes for s in m.scenarios if s.outcome in ("failed", "error")],
        skipped_scenarios=[s for m in modes for s in m.scenarios if s.outcome == "not_exercised"], modes=modes,
        load=build_load(results.get("load"), modes),
    )
