"""pytest fixtures for the fake BC (imported by the kit's pytest11 plugin, ``conformance.pytest_plugin``).

- ``bc_fakes``: a fresh fake Authority and fake BC sharing one ``FakeClock`` and one ``Trace``, both mounted
  in one ``responses.RequestsMock`` at their real host names, so ``requests`` and MSAL Python reach them
  unchanged. Yields a ``BcFakes``.
- ``fake_bc``: the ``BusinessCentral`` of ``bc_fakes`` (its Authority is ``fake_bc.authority``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import pytest
import responses

from conformance.clock import FakeClock
from conformance.inprocess import mount
from conformance.trace import Trace
from fake_authority import LOGIN_HOST, Authority, Registry
from fake_authority.jwt import SigningKey
from fake_bc.core import BC_HOST, BusinessCentral
from fake_bc.data import DEMO_COMPANY


@lru_cache(maxsize=1)
def shared_signing_key() -> SigningKey:
    """One RSA key per test process: generating a 2048-bit key costs ~100 ms, and state, not the key, is
    what must be fresh per test."""
    return SigningKey()


@dataclass
class BcFakes:
    """The two fakes of one test, with what they share."""

    authority: Authority
    bc: BusinessCentral
    clock: FakeClock
    trace: Trace
    rsps: responses.RequestsMock

    @property
    def tenant_id(self) -> str:
        return self.authority.registry.tenant_id

    @property
    def client_id(self) -> str:
        return self.authority.registry.default_client.client_id

    @property
    def client_secret(self) -> str:
        return self.authority.registry.default_client.secrets[0].value

    def app_token(self, **overrides: Any) -> str:
        """A valid app token for BC from the fake Authority (``overrides`` replace claims; None drops one)."""
        return self.authority.issue_app_token(**overrides)

    def api_url(self, path: str = "", environment: str = "Production", tenant: bool = True) -> str:
        """``https://api.businesscentral.dynamics.com/v2.0/{tenant}/{environment}/api/v2.0/{path}``."""
        prefix = f"{BC_HOST}/v2.0/{self.tenant_id}/{environment}" if tenant else f"{BC_HOST}/v2.0/{environment}"
        return f"{prefix}/api/v2.0/{path}".rstrip("/")

    def company_url(self, path: str = "", company: str = DEMO_COMPANY, environment: str = "Production") -> str:
        """The URL of ``path`` under ``companies({id})`` of a company (by name)."""
        base = self.api_url(f"companies({self.bc.company_id(company)})", environment)
        return f"{base}/{path}".rstrip("/")


@contextmanager
def open_bc_fakes(registry: Registry | None = None, **bc_options: Any) -> Iterator[BcFakes]:
    """Build and mount both fakes for the duration of the block (the fixtures' body, reusable elsewhere)."""
    clock, trace = FakeClock(), Trace()
    authority = Authority(registry or Registry.default(), clock, trace, key=shared_signing_key())
    bc = BusinessCentral.for_authority(authority, **bc_options)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        mount(rsps, LOGIN_HOST, authority.handle, clock)
        mount(rsps, BC_HOST, bc.handle, clock)
        for loopback in ("https://127.0.0.1", "http://127.0.0.1", "https://localhost", "http://localhost"):
            rsps.add_passthru(loopback)  # loopback servers stay reachable while the mock is active
        yield BcFakes(authority, bc, clock, trace, rsps)


@pytest.fixture
def bc_fakes() -> Iterator[BcFakes]:
    with open_bc_fakes() as fakes:
        yield fakes


@pytest.fixture
def fake_bc(bc_fakes: BcFakes) -> BusinessCentral:
    return bc_fakes.bc
