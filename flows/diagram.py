"""Mermaid state diagrams drawn from the step tables (skip edges labelled with their condition)."""

from __future__ import annotations

from flows.tables import DENIED, IDLE, Flow


def _node(flow: Flow, state: int | str) -> str:
    if state == IDLE:
        return "[*]"
    return f"{flow.prefix}{state}" if isinstance(state, int) else f"{flow.prefix}_{state}"


def mermaid(flow: Flow) -> str:
    lines = ["stateDiagram-v2", f"    %% {flow.title} — generated from flows/tables.py"]
    for step in flow.steps:
        text = step.text.replace('"', "'").replace(":", " -")
        lines.append(f'    state "{flow.step_id(step.number)} {step.actor} - {text}" as {_node(flow, step.number)}')
    if DENIED in flow.states:
        lines.append(f'    state "access denied (no token)" as {_node(flow, DENIED)}')
    for edge in flow.edges:
        label = edge.label
        if edge.kind == "skip":
            label = f"skip: {label}"
        elif edge.kind == "cycle":
            label = "next access"
        suffix = f" : {label}" if label else ""
        lines.append(f"    {_node(flow, edge.source)} --> {_node(flow, edge.dest)}{suffix}")
    return "\n".join(lines) + "\n"
