"""The flow machine *acting*: walk a step table for a scenario, performing each step as it is entered.

Until a portal is attached, performing a step records what a correct portal would do (its intent);
the conformance engine plugs real actions in through ``StepActions``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from conformance.scenarios import Scenario
from flows import DENIED, Flow, current_step, machine_for

StepAction = Callable[["Simulation", int], str]


@dataclass
class VisitedStep:
    number: int
    actor: str
    text: str
    did: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"number": self.number, "actor": self.actor, "text": self.text}


@dataclass
class Simulation:
    """A model of the shared flow machine; its attributes are the guards named in ``flows.CONDITIONS``."""

    flow: Flow
    scenario: Scenario
    visited: list[VisitedStep] = field(default_factory=list)
    denied: bool = False

    def __post_init__(self) -> None:
        self.token_valid = self.scenario.token == "valid"
        self.signed_in = self.scenario.signed_in
        self.consented = self.scenario.consented
        self.consent_denied = False

    def perform(self, number: int) -> str:
        """Default action: record what a correct portal does at this step, and its effect on the guards."""
        step = self.flow.step(number)
        if step.sets == "consented" and self.scenario.denies_consent:
            self.consent_denied = True
            return f"{step.actor} declines to authorize the app"
        if step.sets:
            setattr(self, step.sets, True)
        return f"{step.actor}: {step.text}"

    def run(self, action: StepAction | None = None) -> list[VisitedStep]:
        machine = machine_for(self.flow)
        machine.attach(self)
        try:
            last = self.flow.steps[-1].number
            while True:
                self.advance()  # type: ignore[attr-defined]  # bound by transitions
                here = current_step(self)
                if here == DENIED:
                    self.denied = True
                    break
                step = self.flow.step(int(here))
                did = action(self, step.number) if action else self.perform(step.number)
                self.visited.append(VisitedStep(step.number, step.actor, step.text, did))
                if here == last:
                    break
        finally:
            machine.detach(self)
        return self.visited

    def as_dict(self) -> dict[str, Any]:
        return {
            "flow": self.flow.key,
            "scenario": self.scenario.name,
            "steps": [v.as_dict() for v in self.visited],
            "outcome": "denied" if self.denied else "completed",
        }
