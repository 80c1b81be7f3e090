from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from reports.chromium import Chromium, find_chromium

ROOT = Path(__file__).resolve().parent.parent
DOCUMENT = ROOT / "flows" / "anywhere-portal-authorization-flows.txt"  # a copy of the vendor's page


@pytest.fixture(scope="session")
def document_text() -> str:
    return DOCUMENT.read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def browser() -> Iterator[Chromium]:
    """Headless Chromium for the report's layout tests; CI installs it, so there its absence fails."""
    if find_chromium() is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is required in CI (apt-get install -y chromium)")
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    with Chromium() as chromium:
        yield chromium


def pytest_configure(config: pytest.Config) -> None:
    """Fixed, reproducible Hypothesis runs; no example database in CI."""
    from hypothesis import settings

    settings.register_profile("ci", database=None, derandomize=True, deadline=None)
    settings.register_profile("dev", deadline=None)
    settings.load_profile("ci" if os.environ.get("CI") else "dev")


# A separate pytest project, run in a subprocess by test_pytest_plugin.py.
collect_ignore = ["plugin_project"]
