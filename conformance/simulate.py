"""``bc-conformance simulate``: the reference portal driven through one scenario against the in-process
fakes; the monitor's reading of the trace says which documented steps the measured visit took."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from conformance.engine import ScenarioResult, run_scenario
from conformance.scenarios import scenario_named
from conformance.targets import REFERENCE, InProcessTarget
from conformance.trace import TraceEvent
from flows import DENIED, Flow, Step

# The mode simulate uses for each flow (AzDelegate runs the same table as AzUser).
SIMULATED_MODE = {"client_credentials": "AzApp", "authorization_code": "AzUser"}


@dataclass
class VisitView:
    """One visit of the scenario, as the monitor read it."""

    index: int
    user: str
    kind: str  # "visit" or "replay" (the browser re-opening a callback URL)
    steps: list[Step]
    path: list[int | str]  # the monitor's reading: step numbers, and markers such as ``DENIED``
    outcome: str  # "completed", "denied" or "failed"
    measured: bool  # the visit the scenario is about (``ctx.measure()``)
    after: float  # seconds of the scenario's clock since the previous visit ended (0 for the first)

    def label(self, count: int) -> str:
        what = "replays the callback URL" if self.kind == "replay" else "opens the portal"
        wait = f", {self.after:g} s after the previous visit" if self.index and self.after >= 1 else ""
        return (f"visit {self.index + 1} of {count}: {self.user} {what}{wait}"
                + (" — the visit this scenario measures" if self.measured and count > 1 else ""))


@dataclass
class Simulation:
    flow: Flow
    scenario: str
    mode: str
    result: ScenarioResult

    @property
    def visits(self) -> list[VisitView]:
        out: list[VisitView] = []
        previous_end = None
        for index, (visit, read) in enumerate(zip(self.result.visits, self.result.monitor.visits, strict=False)):
            times = {e.seq: e.time for e in self.result.trace.events}
            start, end = times.get(visit.start_seq, 0.0), times.get(visit.end_seq, 0.0)
            outcome = "denied" if DENIED in read.steps else "completed" if read.completed else "failed"
            out.append(VisitView(index, visit.user, read.kind,
                                 [self.flow.step(s) for s in read.steps if isinstance(s, int)], list(read.steps),
                                 outcome,
                                 index == self.result.measured_from and self.result.measure_marked,
                                 round(start - previous_end, 3) if previous_end is not None else 0.0))
            previous_end = end
        return out

    @property
    def measured(self) -> VisitView | None:
        """The visit the scenario is about (the first, when it names none)."""
        visits = self.visits
        return next((v for v in visits if v.measured), visits[0] if visits else None)

    @property
    def steps(self) -> list[Step]:
        return self.measured.steps if self.measured else []

    @property
    def outcome(self) -> str:
        return self.measured.outcome if self.measured else "failed"

    def events_of(self, step: Step, visit: int | None = None) -> list[TraceEvent]:
        """The wire exchanges that evidence a step of a visit (default: the measured one)."""
        seen = self.result.visits[self.result.measured_from if visit is None else visit]
        step_id = self.flow.step_id(step.number)
        return [e for e in self.result.trace.events if seen.start_seq <= e.seq <= seen.end_seq
                and self.result.monitor.step_of.get(e.seq) == step_id]

    def as_dict(self) -> dict[str, Any]:
        def steps(view: VisitView) -> list[dict[str, Any]]:
            return [{"number": s.number, "actor": s.actor, "text": s.text} for s in view.steps]

        visits = self.visits
        return {"flow": self.flow.key, "scenario": self.scenario, "mode": self.mode,
                "steps": steps(self.measured) if self.measured else [], "outcome": self.outcome,
                "visits": [{"label": v.label(len(visits)), "user": v.user, "kind": v.kind, "measured": v.measured,
                            "steps": steps(v), "outcome": v.outcome} for v in visits]}


def simulate(flow: Flow, scenario: str) -> Simulation:
    mode = SIMULATED_MODE[flow.key]
    result = run_scenario(InProcessTarget.load(REFERENCE), mode, scenario_named(flow, scenario))
    return Simulation(flow, scenario, mode, result)


def describe(event: TraceEvent) -> str:
    """One redacted line for a trace event (the trace never holds secrets)."""
    if event.server == "authority":
        what = f"{event.grant} " if event.grant else ""
        stage = event.detail.get("stage", "")
        return (f"Authority  {event.method} {event.path} {what}→ {event.status}"
                f"{' ' + event.error if event.error else ''}{' (' + stage + ')' if stage else ''}"
                f"{' issued ' + ', '.join(event.issued) if event.issued else ''}")
    if event.server == "bc":
        token = ", ".join(event.redeemed) or "no token"
        return f"Business Central  {event.method} {event.path} with {token} → {event.status} {event.error}".rstrip()
    if event.endpoint == "visit_end":
        return f"User sees the page: status {event.status}"
    if event.server == "user":
        query = event.detail.get("query", "")
        where = f"{event.detail.get('host', '')}{event.path}{'?' + query if query else ''}"
        if event.endpoint == "response":
            location = event.detail.get("location", "")
            return f"User ← {event.status}{' → ' + location if location else ''}  ({where})"
        return f"User  {event.method} {where}"
    return f"{event.server} {event.endpoint} {event.status}"
