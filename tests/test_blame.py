"""A failure is placed on the step its evidence points to: a token that is not reused fails the check step
(CC-2 / AC-2); the store step (CC-5 / AC-8) is blamed too only when the evidence shows there was no session."""

from __future__ import annotations

from typing import Any

import pytest

from conformance.run import RunOptions, judge, run_mode
from conformance.targets import InProcessTarget
from fake_authority.jwt import SigningKey
from flows import MODES, Role
from portals.mutants import MUTANTS
from portals.reference import create_app


def _judged(target: InProcessTarget, mode: str) -> dict[str, Any]:
    options = RunOptions(modes=(mode,), scenarios=("missing-token", "valid-token"))
    return judge(target, {mode: run_mode(target, mode, options, SigningKey())}, options)


def _without_cookies() -> Any:
    """The reference portal behind a proxy that drops every Set-Cookie: it can keep no session."""
    app = create_app()

    def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
        def strip(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            return start_response(status, [(k, v) for k, v in headers if k.lower() != "set-cookie"], exc_info)
        return app(environ, strip)

    return wsgi


@pytest.mark.parametrize("mode", ["AzApp", "AzUser"])
def test_a_portal_that_never_reuses_its_token_fails_the_check_step_not_the_store_step(mode):
    never = next(m for m in MUTANTS if m.name == "never-reuses-token")
    results = _judged(InProcessTarget.load(never.spec), mode)
    flow = MODES[mode].flow
    check = next(c for c in results["checks"] if c["id"] == "valid-token-reused")
    assert check["outcome"] == "failed" and check["steps"] == [flow.number(Role.CHECK)]
    steps = {s["number"]: s["outcome"] for s in results["steps"]}
    assert steps[flow.number(Role.CHECK)] == "failed" and steps[flow.number(Role.STORE)] != "failed"


def test_a_portal_that_keeps_no_session_fails_the_store_step_too():
    results = _judged(InProcessTarget("no-cookies", _without_cookies, False), "AzApp")
    flow = MODES["AzApp"].flow
    check = next(c for c in results["checks"] if c["id"] == "valid-token-reused")
    assert check["outcome"] == "failed"
    assert check["steps"] == [flow.number(Role.CHECK), flow.number(Role.STORE)]
    assert "the portal set no cookie" in check["received"]
