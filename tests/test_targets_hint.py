"""A portal module that reads the environment contract at import cannot be loaded (the kit sets the contract per
scenario, after loading): the error says so and shows the fix, a factory; other import errors keep their message."""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.cli import main
from conformance.targets import InProcessTarget, TargetError

READS_AT_IMPORT = 'import os\n\nAUTHORITY = os.environ["AUTHORITY"]\n\n\ndef app(environ, start_response):\n    pass\n'


def _module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, source: str) -> str:
    (tmp_path / f"{name}.py").write_text(source, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("AUTHORITY", raising=False)
    return name


def test_a_module_reading_the_contract_at_import_gets_the_factory_hint(tmp_path, monkeypatch):
    name = _module(tmp_path, monkeypatch, "hint_portal_reads_env", READS_AT_IMPORT)
    with pytest.raises(TargetError) as caught:
        InProcessTarget.load(f"{name}:app")
    message = str(caught.value)
    assert f"cannot import {name!r}: KeyError: 'AUTHORITY'" in message
    assert "AUTHORITY" in message and "factory" in message and "create_app" in message
    assert "at import time" in message and "per scenario" in message
    assert f"--portal-app {name}:create_app" in message
    assert f"{name}.py, line 3" in message  # the line to move into the factory


def test_a_kit_config_read_at_import_gets_the_hint_too(tmp_path, monkeypatch):
    source = "from portals.config import PortalConfig\n\nCONFIG = PortalConfig.from_env()\napp = None\n"
    name = _module(tmp_path, monkeypatch, "hint_portal_config_at_import", source)
    for variable in ("AUTH_MODE", "TENANT_ID"):
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(TargetError, match="factory") as caught:
        InProcessTarget.load(f"{name}:app")
    assert "ConfigError" in str(caught.value) and "create_app" in str(caught.value)


@pytest.mark.parametrize("source, error", [
    ("raise KeyError('NOT_IN_THE_CONTRACT')\n", "KeyError: 'NOT_IN_THE_CONTRACT'"),
    ("import a_module_that_does_not_exist_here\n", "ModuleNotFoundError"),
])
def test_other_import_errors_name_the_module_and_the_exception_without_the_hint(tmp_path, monkeypatch, source,
                                                                                 error):
    name = _module(tmp_path, monkeypatch, "hint_portal_other_error", source)
    with pytest.raises(TargetError) as caught:
        InProcessTarget.load(f"{name}:app")
    assert f"cannot import {name!r}: {error}" in str(caught.value)
    assert "factory" not in str(caught.value)


def test_cli_run_exits_2_with_the_hint_and_writes_nothing(tmp_path, monkeypatch, capsys):
    name = _module(tmp_path, monkeypatch, "hint_portal_cli", READS_AT_IMPORT)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(SystemExit) as caught:
        main(["run", "--portal-app", f"{name}:app", "--out", str(out)])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "AUTHORITY" in err and "factory" in err and f"--portal-app {name}:create_app" in err
    assert list(out.iterdir()) == []
