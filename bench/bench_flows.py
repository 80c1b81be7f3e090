"""State machines: triggers/s through the shared transitions machine vs a plain dict walk of the table."""

from __future__ import annotations

import time

from bench.harness import Figure, rate
from flows import CLIENT_CREDENTIALS, machine_for, trigger_for
from flows.machine import FlowMachine

# One full missing-token cycle of the client-credentials table, from step 1 back to step 1.
_PATH = [2, 3, 4, 5, 6, 7, 1]


class _Model:
    token_valid = False


def run() -> list[Figure]:
    machine = machine_for(CLIENT_CREDENTIALS)
    model = machine.attach(_Model(), initial=1)
    triggers = [getattr(model, trigger_for(n)) for n in _PATH]

    def through_machine() -> None:
        for t in triggers:
            t()

    table = {(e.source, trigger_for(e.dest)): e.dest for e in CLIENT_CREDENTIALS.edges}
    state: list[int | str] = [1]

    def through_dict() -> None:
        for n in _PATH:
            state[0] = table[(state[0], trigger_for(n))]

    n = 2_000
    machine_rate = [r * len(_PATH) for r in rate(through_machine, n)]
    dict_rate = [r * len(_PATH) for r in rate(through_dict, n)]
    machine.detach(model)

    def attach_detach() -> None:
        m = machine.attach(_Model())
        machine.detach(m)

    attach_rate = rate(attach_detach, 2_000)
    build = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(50):
            FlowMachine(CLIENT_CREDENTIALS)
        build.append(50 / (time.perf_counter() - start))
    return [
        Figure("flows: dict lookup of the table", "triggers/s", dict_rate),
        Figure("flows: transitions machine", "triggers/s", machine_rate, baseline="flows: dict lookup of the table"),
        Figure("flows: new machine per model", "models/s", build),
        Figure("flows: attach+detach on shared machine", "models/s", attach_rate,
               baseline="flows: new machine per model", target="several × a new machine"),
    ]
