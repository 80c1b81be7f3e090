from __future__ import annotations

import json

import pytest

from conformance.cli import main
from flows import AUTHORIZATION_CODE, CLIENT_CREDENTIALS, Role


def test_simulate_human_output_lists_each_visited_step(capsys):
    assert main(["simulate", "client-credentials", "--scenario", "valid-token"]) == 0
    out = capsys.readouterr().out
    measured = out.split("visit 2 of 2: ", 1)[1].splitlines()[1:]  # the visit after the 60 s pause
    cc = CLIENT_CREDENTIALS
    reused = [cc.id_of(r) for r in (Role.ACCESS, Role.CHECK, Role.USE, Role.WORKING)]  # steps 3 to 5 skipped
    assert [line.split()[0] for line in measured] == reused
    assert "Uses the stored access token" in measured[2]


def test_simulate_json_contract(capsys):
    assert main(["simulate", "authorization-code", "--scenario", "signed-in-and-consented", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["flow"] == "authorization_code" and out["scenario"] == "signed-in-and-consented"
    assert [s["number"] for s in out["steps"]] == [1, 2, 3, 6, 7, 8, 9, 10]
    assert out["steps"][0] == {"number": 1, "actor": "User", "text": "Accesses the portal."}


@pytest.mark.parametrize(("argv", "names"), [
    (["simulate", "no-such-flow", "--scenario", "valid-token"], ["client-credentials", "authorization-code"]),
    (["simulate", "client-credentials", "--scenario", "nope"], ["valid-token", "missing-token", "expired-token"]),
    (["diagram", "nope"], ["client-credentials", "authorization-code"]),
])
def test_bad_usage_exits_2_and_lists_valid_names(capsys, argv, names):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert all(n in err for n in names)


def test_diagram_is_generated_from_the_table(capsys):
    assert main(["diagram", "authorization-code"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("stateDiagram-v2")
    for step in AUTHORIZATION_CODE.steps:
        assert f"{AUTHORIZATION_CODE.step_id(step.number)} {step.actor}" in out
    assert "AC2 --> AC9 : skip: token_valid" in out
    assert "AC3 --> AC6 : skip: signed_in and consented" in out
    assert out.count("-->") == len(AUTHORIZATION_CODE.edges)
