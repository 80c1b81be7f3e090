from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENT = ROOT / "flows" / "anywhere-portal-authorization-flows.txt"  # a copy of the vendor's page


@pytest.fixture(scope="session")
def document_text() -> str:
    return DOCUMENT.read_text(encoding="utf-8")


def pytest_configure(config: pytest.Config) -> None:
    """Fixed, reproducible Hypothesis runs; no example database in CI."""
    import os

    from hypothesis import settings

    settings.register_profile("ci", database=None, derandomize=True, deadline=None)
    settings.register_profile("dev", deadline=None)
    settings.load_profile("ci" if os.environ.get("CI") else "dev")


# A separate pytest project, run in a subprocess by test_pytest_plugin.py.
collect_ignore = ["plugin_project"]
