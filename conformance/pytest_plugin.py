"""pytest plugin of the kit (registered through the ``pytest11`` entry point).

Fixtures:
* ``fake_authority`` — an in-process fake Entra ID at ``https://login.microsoftonline.com`` (through
  ``responses``), fresh state per test, on a ``FakeClock``;
* ``fake_authority_server`` — the loopback HTTPS fakes, one per test session, state reset per test;
* ``fake_bc`` and ``bc_fakes`` — Business Central (with the Authority: one trace, one clock), from
  ``fake_bc.pytest_fixtures``.

Conformance checks as pytest items: put one line in a test module of your suite::

    from conformance.pytest_plugin import conformance_tests
    test_portal = conformance_tests("myportal.app:create_app", modes=("AzApp", "AzUser"))

Each check becomes an item named ``test_portal[<mode> > <flow> > <check>]``, so ``-k``, ``--lf``, ``-x``,
JUnit XML and pytest-xdist work as usual. The app and modes may also come from the ini options
``bc_conformance_app`` and ``bc_conformance_modes``.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import responses

from conformance.clock import FakeClock
from conformance.inprocess import mount
from conformance.servers import FakeServers
from fake_authority import LOGIN_HOST, Authority
from flows import MODES

pytest_plugins = ["fake_bc.pytest_fixtures"]

# The checks (and the monitor and engine behind them) are imported where they are used, not here: pytest loads this
# plugin before pytest-cov starts measuring, so a module imported at plugin load would show its module-level lines as
# never run in the kit's own coverage report.


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("bc_conformance_app", "MODULE:ATTR of the WSGI portal (or factory) the conformance items run",
                  default="")
    parser.addini("bc_conformance_modes", "modes the conformance items cover (AzApp AzUser AzDelegate)",
                  type="args", default=[])


@pytest.fixture
def fake_authority() -> Iterator[Authority]:
    authority = Authority(clock=FakeClock())
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        mount(rsps, LOGIN_HOST, authority.handle, authority.clock)
        authority.rsps = rsps  # type: ignore[attr-defined]  # lets a test mount more hosts on the same mock
        yield authority


@pytest.fixture(scope="session")
def _fake_servers_session() -> Iterator[FakeServers]:
    with FakeServers() as servers:
        yield servers


@pytest.fixture
def fake_authority_server(_fake_servers_session: FakeServers) -> Iterator[FakeServers]:
    """Loopback HTTPS fakes shared by the session; the Authority's state and the trace are reset per test."""
    servers = _fake_servers_session
    servers.authority.reset()
    servers.trace.clear()
    yield servers
    servers.authority.reset()


@functools.cache
def _mode_results(app: str, mode: str) -> dict[str, Any]:
    """Every scenario and check of one mode, run once per process (pytest-xdist workers each run their own)."""
    from conformance.run import RunOptions, judge, run_mode
    from conformance.targets import InProcessTarget
    from fake_authority.jwt import SigningKey

    target = InProcessTarget.load(app)
    options = RunOptions(modes=(mode,))
    results = judge(target, {mode: run_mode(target, mode, options, SigningKey())}, options)
    return {c["id"]: c for c in results["checks"]}


def conformance_tests(app: str = "", modes: tuple[str, ...] = ()) -> Callable[..., None]:
    """A parametrized test function: one item per check and mode, named ``mode > flow > check``."""
    from conformance.checks import CHECKS

    chosen = modes or tuple(MODES)
    unknown = [m for m in chosen if m not in MODES]
    if unknown:
        raise ValueError(f"conformance_tests: unknown mode(s) {unknown}; expected some of {list(MODES)}")
    ids = [f"{mode} > {MODES[mode].flow.key} > {check.id}" for mode in chosen for check in CHECKS
           if check.applies(mode, MODES[mode].flow.key)]

    @pytest.mark.parametrize("bc_check", ids)
    def test_conformance(bc_check: str, request: pytest.FixtureRequest) -> None:
        mode, _, check_id = (part.strip() for part in bc_check.split(">"))
        configured = request.config.getini("bc_conformance_modes")
        if not modes and configured and mode not in configured:
            pytest.skip(f"{mode} is not in bc_conformance_modes")
        target = app or request.config.getini("bc_conformance_app")
        if not target:
            pytest.fail("name the portal: conformance_tests('module:attr') or the ini option bc_conformance_app")
        check = _mode_results(target, mode)[check_id]
        steps = ", ".join(f"{'CC' if check['flow'] == 'client_credentials' else 'AC'}-{n}" for n in check["steps"])
        detail = (f"[{check['level']}] {steps}: {check['message']}\n  expected: {check['expected']}\n"
                  f"  received: {check['received']}\n  replay: {check['replay']}")
        if check["outcome"] == "failed":
            pytest.fail(detail, pytrace=False)
        if check["outcome"] == "warning":
            warnings.warn(f"{bc_check}: {detail}", stacklevel=1)
        elif check["outcome"] in ("not_applicable", "not_exercised"):
            pytest.skip(f"{check['outcome']}: {check['message']}")

    return test_conformance
