"""The conformance engine: the reference passes, faulty variants fail the check naming the broken step."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from conformance.cli import main
from conformance.run import RunOptions, judge, run_mode
from conformance.targets import InProcessTarget
from fake_authority.jwt import SigningKey
from flows import MODES

MUST_ONLY = {"MUST"}


def _run(spec: str, modes=tuple(MODES), scenarios=()) -> dict:
    target = InProcessTarget.load(spec)
    options = RunOptions(modes=modes, scenarios=scenarios)
    key = SigningKey()
    return judge(target, {m: run_mode(target, m, options, key) for m in modes}, options)


def _outcomes(results: dict, mode: str) -> dict[str, str]:
    return {c["id"]: c["outcome"] for c in results["checks"] if c["mode"] == mode}


@pytest.fixture(scope="module")
def reference() -> dict:
    return _run("portals.reference:create_app")


def test_reference_passes_every_must_check_in_every_mode(reference):
    musts = [c for c in reference["checks"] if c["level"] == "MUST"]
    assert {c["mode"] for c in musts} == set(MODES)
    assert [c for c in musts if c["outcome"] != "passed"] == []
    assert reference["exit_code"] == 0 and reference["verdict"] == "passed"
    assert not [c for c in reference["checks"] if c["outcome"] in ("failed", "warning")]


def test_reference_exercises_every_step_of_both_tables(reference):
    assert len(reference["steps"]) == 7 + 10 + 10
    assert [s for s in reference["steps"] if s["outcome"] != "passed"] == []


def test_results_contract(reference):
    assert set(reference) >= {"target", "modes", "summary", "checks", "steps"}
    assert set(reference["summary"]) == {"passed", "failed", "warning", "not_applicable", "not_exercised"}
    for check in reference["checks"]:
        assert set(check) >= {"id", "mode", "flow", "steps", "level", "outcome", "message", "refs"}
        assert check["flow"] in ("client_credentials", "authorization_code") and check["steps"]
        assert check["level"] in ("MUST", "SHOULD", "MAY")
        assert any("Anywhere Portal" in r for r in check["refs"])
        if check["level"] == "SHOULD":
            assert any(r.startswith("RFC") or "assumption" in r for r in check["refs"]), check["id"]
    for step in reference["steps"]:
        assert set(step) >= {"mode", "flow", "number", "actor", "text", "outcome"}


@pytest.mark.parametrize(("mutant", "mode", "broken", "level_outcome"), [
    ("never_reuses_token", "AzApp", {"valid-token-reused"}, "failed"),
    ("reuses_expired_token", "AzApp", {"expired-token-replaced"}, "failed"),
    ("reuses_expired_token", "AzUser", {"expired-token-replaced"}, "failed"),
    ("ignores_state_mismatch", "AzUser", {"state-bound"}, "warning"),
])
def test_faulty_variant_fails_only_the_check_naming_the_broken_step(mutant, mode, broken, level_outcome):
    results = _run(f"portals.mutants:{mutant}", (mode,))
    outcomes = _outcomes(results, mode)
    for check_id in broken:
        assert outcomes[check_id] == level_outcome
    others = {k: v for k, v in outcomes.items() if k not in broken and v in ("failed", "warning")}
    if mutant == "ignores_state_mismatch":  # it also accepts a replayed callback: same root cause
        others.pop("code-used-once", None)
        others.pop("pkce-s256", None)
    assert others == {}
    failing = next(c for c in results["checks"] if c["id"] in broken)
    assert failing["expected"] and failing["received"] and failing["evidence"]
    assert failing["message"].split(":")[0] in {f"{'CC' if mode == 'AzApp' else 'AC'}-{n}" for n in failing["steps"]}


def test_token_in_the_query_string_fails_the_bearer_checks():
    results = _run("portals.mutants:token_in_query", ("AzApp",))
    outcomes = _outcomes(results, "AzApp")
    assert outcomes["bearer-token-used"] == "failed"
    assert outcomes["token-in-header-only"] == "warning"
    assert outcomes["token-request-client-credentials"] == "passed"
    assert outcomes["missing-token-fetched"] == "passed"


@pytest.mark.parametrize(("argv", "needle"), [
    (["--portal-app", "no_such_module:app"], "cannot import 'no_such_module'"),
    (["--portal-app", "bad_portals:nothing_here"], "has no callable 'nothing_here'"),
    (["--portal-app", "nocolon"], "expects MODULE:ATTR"),
    (["--mode", "AzSomething"], "expected one of AzApp, AzUser, AzDelegate or all"),
    (["--scenario", "no-such-scenario"], "unknown no-such-scenario"),
])
def test_run_usage_errors_exit_2_and_write_nothing(tmp_path, capsys, argv, needle):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exited:
        main(["run", "--out", str(out), *argv])
    assert exited.value.code == 2
    assert needle in capsys.readouterr().err
    assert not out.exists()


def test_run_with_an_unwritable_out_exits_2(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(SystemExit) as exited:
        main(["run", "--mode", "AzApp", "--out", str(blocker / "results")])
    assert exited.value.code == 2 and "not a directory" in capsys.readouterr().err
    assert blocker.read_text() == ""


def test_run_writes_results_and_junit(tmp_path, capsys):
    code = main(["run", "--mode", "AzApp", "--out", str(tmp_path)])
    assert code == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["modes"] == ["AzApp"] and results["exit_code"] == 0
    suite = ET.parse(tmp_path / "junit.xml").getroot()
    names = [case.get("name") for case in suite.iter("testcase")]
    assert "AzApp > client_credentials > valid-token-reused" in names
    assert len(names) == len(results["checks"])
    assert "PASSED" in capsys.readouterr().out


def test_run_exit_code_1_when_a_must_check_fails(tmp_path):
    code = main(["run", "--mode", "AzApp", "--portal-app", "portals.mutants:never_reuses_token",
                 "--out", str(tmp_path)])
    assert code == 1
    suite = ET.parse(tmp_path / "junit.xml").getroot()
    failures = [case.get("name") for case in suite.iter("testcase") if case.find("failure") is not None]
    assert failures == ["AzApp > client_credentials > valid-token-reused"]


@pytest.mark.parametrize(("app", "reason"), [
    ("raising", "the portal raised RuntimeError"),
    ("hanging", "did not answer within 0.2 s"),
    ("garbage", "steps CC-1"),
    ("not_wsgi", "could not be built"),
])
def test_a_misbehaving_portal_fails_its_checks_and_never_crashes_the_kit(app, reason):
    import bad_portals

    target = InProcessTarget.load(f"bad_portals:{app}")
    options = RunOptions(modes=("AzApp",), scenarios=("missing-token",), request_timeout=0.2)
    try:
        results = judge(target, {"AzApp": run_mode(target, "AzApp", options, SigningKey())}, options)
    finally:
        bad_portals.HANG.set()
        bad_portals.HANG.clear()
    working = next(c for c in results["checks"] if c["id"] == "working-portal")
    assert working["outcome"] == "failed"
    assert reason in working["received"] + working["message"], working
    assert results["exit_code"] == 1
