"""The layers of the kit: the step tables at the bottom, then the wire values, clock, trace and redaction that the
fakes and the engine share, then the fakes, then the engine. Nothing imports upward: importing a fake loads no
module of the engine (scenarios, monitor, checks, runner), and the step tables load nothing of the kit."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

BOTTOM = {"conformance", "conformance.wire", "conformance.clock", "conformance.trace", "conformance.redact",
          "conformance.errors"}


def _loaded(module: str) -> set[str]:
    code = (f"import sys, json; import {module}; "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('conformance', 'fake_authority', 'fake_bc', 'flows', 'reports', 'portals'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out))


def test_step_tables_load_nothing_of_the_kit():
    assert {m for m in _loaded("flows") if not m.startswith("flows")} == set()


@pytest.mark.parametrize("fake", ["fake_authority", "fake_bc"])
def test_fakes_load_only_the_shared_bottom_layer(fake):
    engine = {m for m in _loaded(fake) if m.startswith("conformance")} - BOTTOM
    assert engine == set(), f"{fake} imports engine modules: {sorted(engine)}"
    assert not any(m.startswith(("reports", "portals")) for m in _loaded(fake))


@pytest.mark.parametrize("bottom", sorted(BOTTOM - {"conformance"}))
def test_the_bottom_layer_imports_no_fake_and_no_engine(bottom):
    above = {m for m in _loaded(bottom) if not m.startswith("flows")} - BOTTOM
    assert above == set(), f"{bottom} imports {sorted(above)}"
