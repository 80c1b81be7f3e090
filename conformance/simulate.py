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
class Simulation:
    flow: Flow
    scenario: str
    mode: str
    result: ScenarioResult

    @property
    def measured(self) -> Any:
        visits = self.result.monitor.visits
        return visits[self.result.measured_from] if self.result.measured_from < len(visits) else None

    @property
    def steps(self) -> list[Step]:
        return [self.flow.step(s) for s in (self.measured.steps if self.measured else []) if isinstance(s, int)]

    @property
    def outcome(self) -> str:
        if self.measured is None:
            return "failed"
        if DENIED in self.measured.steps:
            return "denied"
        return "completed" if self.measured.completed else "failed"

    def events_of(self, step: Step) -> list[TraceEvent]:
        """The wire exchanges that evidence a step of the measured visit."""
        visit = self.result.visits[self.result.measured_from]
        step_id = self.flow.step_id(step.number)
        return [e for e in self.result.trace.events if visit.start_seq <= e.seq <= visit.end_seq
                and self.result.monitor.step_of.get(e.seq) == step_id]

    def as_dict(self) -> dict[str, Any]:
        return {"flow": self.flow.key, "scenario": self.scenario, "mode": self.mode,
                "steps": [{"number": s.number, "actor": s.actor, "text": s.text} for s in self.steps],
                "outcome": self.outcome}


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
