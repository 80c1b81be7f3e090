"""The kit proves what it catches: selftest over every mutant, and Hypothesis exploration per mode."""

from __future__ import annotations

import json

import pytest

from conformance.cli import main
from conformance.explore import BUDGETS, explore
from conformance.selftest import LEVEL_OUTCOME, selftest
from conformance.targets import REFERENCE, InProcessTarget
from flows import MODES
from portals.mutants import MUTANTS


@pytest.fixture(scope="module")
def report() -> dict:
    return selftest("quick")


def test_selftest_passes(report):
    assert report["reference"]["passed"], report["reference"]["problems"]
    missed = [r for r in report["mutants"] if not r["caught"]]
    assert missed == []
    assert report["passed"]
    assert len({r["mutant"] for r in report["mutants"]}) == len(MUTANTS) >= 14


def test_each_mutant_is_caught_by_the_checks_it_names_at_their_level(report):
    for mutant in MUTANTS:
        rows = [r for r in report["mutants"] if r["mutant"] == mutant.name]
        named = {(mode, check) for mode, checks in mutant.catches.items() for check in checks}
        assert {(r["mode"], r["check"]) for r in rows} == named
        for row in rows:
            assert row["outcome"] == LEVEL_OUTCOME[row["level"]], row


def test_selftest_cli_json(capsys, monkeypatch, report):
    monkeypatch.setattr("conformance.selftest.selftest", lambda profile, progress=None: report)
    assert main(["selftest", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["passed"] is True


@pytest.mark.parametrize("mode", list(MODES))
def test_exploration_of_the_reference_finds_nothing(mode):
    found = explore(InProcessTarget.load(REFERENCE), mode, BUDGETS["full"], seed=0)
    assert found.passed, (found.failure, found.counterexample)


@pytest.mark.parametrize(("mutant", "mode", "needle"), [
    ("reuses_expired_token", "AzApp", "expired"),
    ("shares_token_across_users", "AzUser", "token during"),
    ("redeems_code_twice", "AzUser", "redeemed twice"),
])
def test_exploration_finds_and_shrinks_a_failure(mutant, mode, needle):
    found = explore(InProcessTarget.load(f"portals.mutants:{mutant}"), mode, BUDGETS["full"], seed=0,
                    replay=f"bc-conformance run --profile full --mode {mode} --portal-app portals.mutants:{mutant}")
    assert not found.passed
    assert needle in found.failure
    assert 1 <= len(found.counterexample) <= 4, found.counterexample  # shrunk to a short, readable sequence
    assert all(step.startswith("state.") for step in found.counterexample)
    assert "--portal-app portals.mutants:" in found.replay


def test_the_exploration_machine_can_be_extended_with_your_own_rules():
    """A subclass adds a rule and an invariant; the exploration runs both, on the reference portal."""
    from hypothesis.stateful import invariant, rule

    from conformance.explore import PortalExploration

    class BobSignsInAtTheAuthority(PortalExploration):
        @rule()
        def bob_signs_in_at_the_authority_first(self) -> None:
            self.ctx.sign_in_at_authority("bob")

        @invariant()
        def nobody_signed_in_at_the_authority_yet(self) -> None:  # false on purpose: proves it runs
            assert not self.ctx.authority.sessions, "someone signed in"

    found = explore(InProcessTarget.load(REFERENCE), "AzUser", 50, seed=0, machine=BobSignsInAtTheAuthority)
    assert not found.passed and found.failure == "someone signed in"
    assert found.counterexample == ["state.bob_signs_in_at_the_authority_first()"]
