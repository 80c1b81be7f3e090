"""The documented step tables as data, and the state machines built from them."""

from flows.machine import FlowMachine, StepNotAllowed, current_step, machine_for, trigger_for
from flows.tables import (
    AUTHORIZATION_CODE,
    CLIENT_CREDENTIALS,
    CONDITIONS,
    DENIED,
    DOCUMENT,
    DOCUMENT_URL,
    FLOWS,
    IDLE,
    MODES,
    Edge,
    Flow,
    Mode,
    Role,
    Step,
    flow_named,
)

__all__ = [
    "AUTHORIZATION_CODE", "CLIENT_CREDENTIALS", "CONDITIONS", "DENIED", "DOCUMENT", "DOCUMENT_URL", "FLOWS", "IDLE",
    "MODES", "Edge", "Flow", "FlowMachine", "Mode", "Role", "Step", "StepNotAllowed", "current_step", "flow_named",
    "machine_for", "trigger_for",
]
