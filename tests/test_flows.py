"""The step tables: word-for-word texts, documented paths, every edge exercised, illegal events refused."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.scenarios import SCENARIOS, scenario_named
from conformance.simulate import Simulation
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
    flow = FLOWS[flow_key]
    sim = Simulation(flow, scenario_named(flow, scenario))
    sim.run()
    return sim


@pytest.mark.parametrize(("scenario", "expected"), [
    ("valid-token", [1, 2, 6, 7]),
    ("missing-token", [1, 2, 3, 4, 5, 6, 7]),
    ("expired-token", [1, 2, 3, 4, 5, 6, 7]),
])
def test_client_credentials_paths(scenario, expected):
    assert [v.number for v in _visit("client_credentials", scenario).visited] == expected


@pytest.mark.parametrize(("scenario", "expected"), [
    ("valid-token", [1, 2, 9, 10]),
    ("not-signed-in", list(range(1, 11))),
    ("signed-in-not-consented", [1, 2, 3, 5, 6, 7, 8, 9, 10]),
    ("signed-in-and-consented", [1, 2, 3, 6, 7, 8, 9, 10]),
])
def test_authorization_code_paths(scenario, expected):
    sim = _visit("authorization_code", scenario)
    assert [v.number for v in sim.visited] == expected
    assert not sim.denied


def test_consent_denied_ends_after_step_5_with_the_denial_recorded():
    sim = _visit("authorization_code", "consent-denied")
    assert [v.number for v in sim.visited][-1] == 5
    assert 7 not in [v.number for v in sim.visited]
    assert sim.denied and sim.as_dict()["outcome"] == "denied"


def _edges_of_walk(path: list[int | str]) -> set[tuple[int | str, int | str]]:
    return set(itertools.pairwise(path))


def test_every_edge_of_each_table_is_taken():
    for key, flow in FLOWS.items():
        taken: set[tuple[int | str, int | str]] = set()
        for name in SCENARIOS[key]:
            sim = _visit(key, name)
            path = [IDLE, *(v.number for v in sim.visited)] + ([DENIED] if sim.denied else [])
            taken |= _edges_of_walk(path)
            # The user comes back: from wherever the walk ended the table's "next access" edge leads to 1.
            machine = machine_for(flow)
            again = machine.attach(Simulation(flow, scenario_named(flow, name)), initial=path[-1])
            again.advance()
            taken.add((path[-1], current_step(again)))
            machine.detach(again)
        assert taken == {(e.source, e.dest) for e in flow.edges}, f"{flow.title}: edges never taken"


class _Bare:
    token_valid = signed_in = consented = consent_denied = False


_EVENTS = sorted({trigger_for(s) for f in FLOWS.values() for s in f.states if s != IDLE} | {"advance"})


@settings(max_examples=200, deadline=None)
@given(flow_key=st.sampled_from(sorted(FLOWS)), events=st.lists(st.sampled_from(_EVENTS), max_size=25))
def test_random_events_move_only_along_edges_and_illegal_ones_leave_the_model_in_place(flow_key, events):
    flow = FLOWS[flow_key]
    machine = machine_for(flow)
    model = machine.attach(_Bare())
    try:
        for event in events:
            before = current_step(model)
            allowed = {e.dest for e in flow.edges_from(before)}
            if event != "advance" and event.removeprefix("step_") not in {str(d) for d in allowed}:
                with pytest.raises(StepNotAllowed) as caught:
                    model.trigger(event)
                assert current_step(model) == before
                message = str(caught.value)
                assert flow.title in message and repr(event) in message
                where = "before step 1" if before == IDLE else f"step {flow.prefix}-{before}"
                assert where in message
                for dest in allowed:
                    assert (flow.step_id(dest) if isinstance(dest, int) else dest) in message
            else:
                model.trigger(event)
                assert current_step(model) in allowed
    finally:
        machine.detach(model)


def test_one_machine_is_shared_and_models_are_released():
    machine = machine_for(CLIENT_CREDENTIALS)
    assert machine is machine_for("client-credentials")
    before = len(machine.models)
    sim = Simulation(CLIENT_CREDENTIALS, scenario_named(CLIENT_CREDENTIALS, "valid-token"))
    sim.run()
    assert len(machine.models) == before
    assert all(m is not sim for m in machine.models)
