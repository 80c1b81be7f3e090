"""pytest plugin of the kit (registered through the ``pytest11`` entry point).

Fixtures:
* ``fake_authority`` — an in-process fake Entra ID at ``https://login.microsoftonline.com`` (through
  ``responses``), fresh state per test, on a ``FakeClock``;
* ``fake_authority_server`` — one loopback HTTPS Authority per test session, its state reset per test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import responses

from conformance.clock import FakeClock
from conformance.inprocess import mount
from conformance.servers import FakeServers
from fake_authority import LOGIN_HOST, Authority


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
