"""The pytest plugin: checks as pytest items named mode > flow > check, in a separate pytest run."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

PROJECT = Path(__file__).parent / "plugin_project"


def _pytest(app: str, tmp_path: Path, *args: str) -> tuple[int, str, ET.Element]:
    junit = tmp_path / "junit.xml"
    env = {**os.environ, "BC_CONFORMANCE_TEST_APP": app}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
                          "--rootdir", str(PROJECT), str(PROJECT), *args],
                         capture_output=True, text=True, env=env, timeout=300)
    return out.returncode, out.stdout + out.stderr, ET.parse(junit).getroot()


def test_the_reference_passes_as_pytest_items(tmp_path):
    code, output, junit = _pytest("portals.reference:create_app", tmp_path)
    assert code == 0, output
    names = [case.get("name") for case in junit.iter("testcase")]
    assert "test_portal[AzApp > client_credentials > valid-token-reused]" in names
    assert "test_portal[AzUser > authorization_code > state-bound]" in names
    assert not [c for c in junit.iter("testcase") if c.find("failure") is not None]


def test_a_mutant_fails_with_the_check_id_in_the_test_name(tmp_path):
    code, output, junit = _pytest("portals.mutants:never_reuses_token", tmp_path, "-k", "AzApp")
    assert code == 1, output
    failed = [c.get("name") for c in junit.iter("testcase") if c.find("failure") is not None]
    assert failed == ["test_portal[AzApp > client_credentials > valid-token-reused]"]
    assert "CC-2" in junit.find(".//failure").get("message")
