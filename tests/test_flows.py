"""The step tables: word-for-word texts, documented paths, every edge exercised, illegal events refused."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.scenarios import SCENARIOS
from conformance.simulate import Simulation, simulate
from flows import (
    AUTHORIZATION_CODE,
    CLIENT_CREDENTIALS,
    DENIED,
    FLOWS,
    IDLE,
    MODES,
    StepNotAllowed,
    current_step,
    machine_for,
    trigger_for,
)


def _document_rows(text: str, flow_title: str, next_title: str | None) -> list[tuple[int, str, str]]:
    start = text.index(f"In {flow_title}")
    end = text.index(next_title, start) if next_title else len(text)
    section = text[start:end]
    rows = re.findall(r"^(\d+)\n\n(User|Portal|Authority)\n\n(.+?)$", section, flags=re.M)
    return [(int(n), actor, step.strip()) for n, actor, step in rows]


@pytest.mark.parametrize(("flow", "next_title"), [
    (CLIENT_CREDENTIALS, "Note"), (AUTHORIZATION_CODE, None),
])
def test_step_texts_match_the_document_word_for_word(document_text, flow, next_title):
    rows = _document_rows(document_text, flow.title, next_title)
    assert rows == [(s.number, s.actor, s.text) for s in flow.steps]


def test_modes_map_to_flows():
    assert MODES["AzApp"].flow is CLIENT_CREDENTIALS
    assert MODES["AzUser"].flow is AUTHORIZATION_CODE
    assert MODES["AzDelegate"].flow is AUTHORIZATION_CODE
    assert len(CLIENT_CREDENTIALS.steps) == 7 and len(AUTHORIZATION_CODE.steps) == 10


def _visit(flow_key: str, scenario: str) -> Simulation:
    return simulate(FLOWS[flow_key], scenario)


@pytest.mark.parametrize(("scenario", "expected"), [
    ("valid-token", [1, 2, 6, 7]),
    ("missing-token", [1, 2, 3, 4, 5, 6, 7]),
    ("expired-token", [1, 2, 3, 4, 5, 6, 7]),
])
def test_client_credentials_paths(scenario, expected):
    sim = _visit("client_credentials", scenario)
    assert [s.number for s in sim.steps] == expected
    assert sim.outcome == "completed"


@pytest.mark.parametrize(("scenario", "expected"), [
    ("valid-token", [1, 2, 9, 10]),
    ("not-signed-in", list(range(1, 11))),
    ("consented-not-signed-in", [1, 2, 3, 4, 6, 7, 8, 9, 10]),
    ("signed-in-not-consented", [1, 2, 3, 5, 6, 7, 8, 9, 10]),
    ("signed-in-and-consented", [1, 2, 3, 6, 7, 8, 9, 10]),
])
def test_authorization_code_paths(scenario, expected):
    sim = _visit("authorization_code", scenario)
    assert [s.number for s in sim.steps] == expected
    assert sim.outcome == "completed"


def test_consent_denied_ends_after_step_5_with_the_denial_recorded():
    sim = _visit("authorization_code", "consent-denied")
    numbers = [s.number for s in sim.steps]
    assert numbers == [1, 2, 3, 4, 5] and 7 not in numbers
    assert sim.outcome == "denied" and sim.as_dict()["outcome"] == "denied"
    assert sim.measured.path[-1] == DENIED


def test_every_edge_of_each_table_is_taken():
    for key, flow in FLOWS.items():
        edges = {(e.source, e.dest) for e in flow.edges}
        taken: set[tuple[int | str, int | str]] = set()
        for name in SCENARIOS[key]:
            result = _visit(key, name).result
            by_session: dict[str, list[int | str]] = {}
            for visit in result.monitor.visits:
                path = by_session.setdefault(visit.session, [IDLE])
                path += visit.steps
                if not visit.variants:  # a named variant (e.g. retry after a 401) may leave the table on purpose
                    assert set(itertools.pairwise(path)) <= edges, f"{name}: {path}"
            for path in by_session.values():
                taken |= set(itertools.pairwise(path))
        assert edges <= taken, f"{flow.title}: edges never taken: {edges - taken}"


class _Model:
    def __init__(self, conditions: dict[str, bool]):
        self.__dict__.update(conditions)


_EVENTS = sorted({trigger_for(s) for f in FLOWS.values() for s in f.states if s != IDLE} | {"advance"})


def _holds(edge, model) -> bool:
    return all(getattr(model, name) == value for name, value in edge.when)


@settings(max_examples=300, deadline=None)
@given(
    flow_key=st.sampled_from(sorted(FLOWS)),
    steps=st.lists(st.tuples(st.sampled_from(_EVENTS), st.fixed_dictionaries(
        {name: st.booleans() for name in ("token_valid", "signed_in", "consented", "consent_denied")})),
        max_size=25),
)
def test_random_events_move_only_along_edges_and_illegal_ones_leave_the_model_in_place(flow_key, steps):
    flow = FLOWS[flow_key]
    machine = machine_for(flow)
    model = machine.attach(_Model({}))
    try:
        for event, conditions in steps:
            model.__dict__.update(conditions)
            before = current_step(model)
            enabled = [e for e in flow.edges_from(before)
                       if _holds(e, model) and event in ("advance", trigger_for(e.dest))]
            if not enabled:
                with pytest.raises(StepNotAllowed) as caught:
                    model.trigger(event)
                assert current_step(model) == before
                message = str(caught.value)
                assert flow.title in message and repr(event) in message
                where = "before step 1" if before == IDLE else f"step {flow.prefix}-{before}"
                assert where in message
                for edge in flow.edges_from(before):
                    assert (flow.step_id(edge.dest) if isinstance(edge.dest, int) else edge.dest) in message
            else:
                model.trigger(event)
                assert current_step(model) == enabled[0].dest
    finally:
        machine.detach(model)


def test_one_machine_is_shared_and_models_are_released():
    machine = machine_for(CLIENT_CREDENTIALS)
    assert machine is machine_for("client-credentials")
    before = len(machine.models)
    _visit("client_credentials", "valid-token")
    assert len(machine.models) == before
