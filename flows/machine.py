"""Executable step tables: one shared ``transitions`` machine per flow, built from ``flows.tables``.

Triggers (derived from the edges, never listed by hand):

* ``step_<n>`` / ``step_denied`` — "the observed party performed step n": used by the monitor and portals;
* ``advance`` — "do whatever the table says comes next": used by simulations.

Both are guarded by the edge conditions, read from the model's boolean attributes named in
``tables.CONDITIONS``. An event with no edge from the current step, or whose edge's conditions do not hold,
raises ``StepNotAllowed`` and leaves the model where it was.

One machine serves many models (attach with ``attach``, release with ``detach``): building a machine
per model costs several times more (see ``bench/``). A model that acts defines ``on_step(step)``.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from transitions import Event, Machine, MachineError

from flows.observations import VARIANTS
from flows.tables import IDLE, Flow, flow_named


def state_name(state: int | str) -> str:
    return str(state)


def trigger_for(dest: int | str) -> str:
    """Name of the monitor trigger that moves to ``dest``."""
    return f"step_{dest}"


class StepNotAllowed(MachineError):
    """An event the step table has no edge for, from the model's current step."""

    def __init__(self, flow: Flow, current: str, event: str, allowed: list[str], unmet: str = ""):
        self.flow, self.current, self.event, self.allowed, self.unmet = flow, current, event, allowed, unmet
        where = "before step 1" if current == IDLE else f"at step {flow.prefix}-{current}"
        why = f" because {unmet}" if unmet else ""
        super().__init__(
            f"{flow.title}: event {event!r} is not allowed {where}{why}; "
            f"the table allows next: {', '.join(allowed) or 'nothing'}"
        )

    def __str__(self) -> str:
        return str(self.args[0])


class _StepEvent(Event):
    def _is_valid_source(self, state: Any) -> bool:
        if state.name in self.transitions:
            return True
        machine: FlowMachine = self.machine  # type: ignore[assignment]
        raise StepNotAllowed(machine.flow, state.name, self.name, machine.allowed_next(state.name))

    def _trigger(self, event_data: Any) -> bool:
        if super()._trigger(event_data):
            return True
        machine: FlowMachine = self.machine  # type: ignore[assignment]
        here = event_data.state.name
        unmet = "; ".join(
            " and ".join(f"{name} is {not value}" for name, value in edge.when
                         if bool(getattr(event_data.model, name, False)) != value)
            for edge in machine.edges_for(here, self.name)
        )
        raise StepNotAllowed(machine.flow, here, self.name, machine.allowed_next(here), unmet)


def _notify_model(event_data: Any) -> None:
    """Call ``model.on_step(step)`` after every move, for models that act on steps (portals, simulators).

    One machine serves every model, so per-state callbacks (which transitions registers machine-wide) are
    not used: a model without ``on_step`` (e.g. the monitor's) is simply not notified.
    """
    hook = getattr(event_data.model, "on_step", None)
    if hook is not None:
        hook(current_step(event_data.model))


class FlowMachine(Machine):
    """A ``transitions`` machine whose states and edges come from one documented step table."""

    event_cls = _StepEvent

    def __init__(self, flow: Flow):
        self.flow = flow
        transitions: list[dict[str, Any]] = []
        for edge in flow.edges:
            src, dst = state_name(edge.source), state_name(edge.dest)
            guards = {
                "conditions": [name for name, value in edge.when if value],
                "unless": [name for name, value in edge.when if not value],
            }
            for trigger in (trigger_for(edge.dest), "advance"):
                transitions.append({"trigger": trigger, "source": src, "dest": dst, **guards})
        # Accepted variants (flows.observations) that add an edge get a trigger of their own, so the documented
        # triggers (``step_<n>``, ``advance``) keep exactly the table's edges.
        for variant in VARIANTS:
            if variant.dest is not None and variant.applies(flow):
                source = "*" if variant.source is None else state_name(flow.number(variant.source))
                transitions.append({"trigger": variant.trigger, "source": source,
                                    "dest": state_name(flow.number(variant.dest))})
        super().__init__(
            model=None,
            states=[state_name(s) for s in flow.states],
            transitions=transitions,
            initial=IDLE,
            auto_transitions=False,
            send_event=True,
            model_attribute="step",
            after_state_change=[_notify_model],
        )

    def allowed_next(self, current: str) -> list[str]:
        """Steps the table allows after ``current``, as step ids with their condition (e.g. ``CC-6 (token_valid)``)."""
        out = []
        for e in self.flow.edges_from(int(current) if current.isdigit() else current):
            name = self.flow.step_id(e.dest) if isinstance(e.dest, int) else e.dest
            out.append(f"{name} ({e.label})" if e.label else name)
        return out

    def edges_for(self, current: str, trigger: str) -> list[Any]:
        source = int(current) if current.isdigit() else current
        return [e for e in self.flow.edges_from(source) if trigger in ("advance", trigger_for(e.dest))]

    def _get_trigger(self, model: Any, trigger_name: str, *args: Any, **kwargs: Any) -> bool:
        if trigger_name not in self.events:  # an event this flow has no edge for at all
            current = self.get_model_state(model).name
            raise StepNotAllowed(self.flow, current, trigger_name, self.allowed_next(current))
        return super()._get_trigger(model, trigger_name, *args, **kwargs)

    def attach(self, model: Any, initial: int | str = IDLE) -> Any:
        self.add_model(model, initial=state_name(initial))
        return model

    def detach(self, model: Any) -> None:
        self.remove_model(model)


def machine_for(flow: Flow | str) -> FlowMachine:
    """The one shared machine of a flow (built on first use)."""
    return _shared(flow_named(flow).key if isinstance(flow, str) else flow.key)


@cache
def _shared(key: str) -> FlowMachine:
    return FlowMachine(flow_named(key))


def current_step(model: Any) -> int | str:
    value: str = model.step
    return int(value) if value.isdigit() else value
