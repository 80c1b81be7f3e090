"""Run-level outcomes only from evidence (issue 13): an incomplete run is not green, a portal that never became
ready is not a conformance result, a kit error is not a portal verdict, and every output stays valid whatever a
portal prints. Portal commands are real processes; nothing here sleeps to pass."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conformance import checks as checks_module
from conformance import run as run_module
from conformance.cli import main
from conformance.errors import InternalError
from conformance.external import free_port
from conformance.printable import printable, printable_value
from fake_authority.core import Authority
from fake_bc.core import BusinessCentral

PY = sys.executable
ROOT = Path(__file__).resolve().parent.parent
OUTPUTS = ("results.json", "junit.xml", "report.html", "report.md")
# What a careless portal prints: colours, a window title, a bell, NUL, a carriage return, DEL, a C1 control and bytes
# that are not UTF-8.
NOISE = b"\x1b[1;31mERROR\x1b[0m \x1b]0;title\x07 bell\x07 nul\x00 cr\r del\x7f c1\xc2\x9b invalid\xff\xfe\xc3( end"


def _kit(*argv: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run([PY, "-m", "conformance", "run", *argv], cwd=ROOT, capture_output=True, text=True,
                          errors="replace", timeout=timeout, check=False)
    return done, time.monotonic() - started


def _noisy_portal(tmp_path: Path, code: int = 1) -> str:
    """A portal command that prints NOISE on stdout and stderr, then exits before listening."""
    script = tmp_path / "noisy_portal.py"
    script.write_text("import sys\n"
                      f"sys.stdout.buffer.write({NOISE!r} + b'\\n'); sys.stdout.flush()\n"
                      f"sys.stderr.buffer.write({NOISE!r}); sys.stderr.flush()\n"
                      f"sys.exit({code})\n")
    return f"{PY} {script}"


def _assert_outputs_valid(out: Path) -> dict:
    for name in OUTPUTS:
        data = (out / name).read_bytes()
        assert b"\x1b" not in data, name
        text = data.decode("utf-8")  # valid UTF-8
        assert not any(ch in text for ch in "\x00\x07\x7f\x9b\r"), name
    ET.parse(out / "junit.xml")  # raises on a character XML 1.0 forbids
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert "\x1b" not in json.dumps(results, ensure_ascii=False)
    return results


# ------------------------------------------------------------------ a portal that never became ready


def test_a_missing_portal_command_exits_2_at_once_with_its_reason_and_writes_no_verdict(tmp_path):
    out = tmp_path / "out"
    done, elapsed = _kit("--mode", "AzApp", "--portal-cmd", "python nonexistent.py", "--startup-timeout", "60",
                         "--out", str(out))
    assert done.returncode == 2, done.stderr
    assert elapsed < 15  # the command exits at once: the 60 s startup timeout is not waited for
    err = done.stderr
    assert "never became ready" in err and "exited with code 2 before listening" in err
    assert "nonexistent.py" in err and "No such file or directory" in err  # the last lines of its output
    assert "PORTAL_PORT=" in err and "--keep-going" in err
    assert "Traceback" not in err
    assert not any((out / name).exists() for name in OUTPUTS)
    assert done.stdout == ""  # no summary: there is no verdict


def test_keep_going_judges_a_portal_that_never_became_ready_as_before(tmp_path):
    out = tmp_path / "out"
    done, _ = _kit("--mode", "AzApp", "--portal-cmd", "python nonexistent.py", "--scenario",
                   "missing-token,valid-token", "--keep-going", "--out", str(out))
    assert done.returncode == 1, done.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["verdict"] == "failed" and results["exit_code"] == 1
    assert {s["name"] for s in results["scenarios"]} == {"missing-token", "valid-token"}  # the run went on
    working = next(c for c in results["checks"] if c["id"] == "working-portal")
    assert working["outcome"] == "failed"
    assert "exited with code 2 before listening" in working["message"] + working["received"]


def test_a_portal_on_the_wrong_port_is_told_which_port_it_listens_on(tmp_path):
    out = tmp_path / "out"
    wrong = free_port()
    done, _ = _kit("--mode", "AzApp", "--portal-cmd", f"{PY} -m http.server {wrong} --bind 127.0.0.1",
                   "--startup-timeout", "2", "--out", str(out))
    assert done.returncode == 2, done.stderr
    assert "never opened port" in done.stderr and f"listens on port {wrong} instead" in done.stderr
    assert not (out / "results.json").exists()


def test_a_portal_url_that_never_answers_exits_2_without_a_verdict(tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exited:
        main(["run", "--mode", "AzApp", "--portal-url", f"http://127.0.0.1:{free_port()}", "--startup-timeout", "0.3",
              "--out", str(out)])
    assert exited.value.code == 2
    assert "did not answer" in capsys.readouterr().err
    assert not any((out / name).exists() for name in OUTPUTS)


# ------------------------------------------------------------------ selections that run nothing


@pytest.mark.parametrize(("argv", "needles"), [
    (["--mode", "AzApp", "--scenario", "consent-denied"],
     ["leaves no scenario to run in AzApp", "valid-token", "missing-token", "two-users"]),
    (["--mode", "AzApp,AzUser", "--scenario", "consent-denied"], ["leaves no scenario to run in AzApp"]),
    (["--mode", "AzApp", "--portal-url", "http://127.0.0.1:9", "--scenario", "missing-token"],
     ["leaves no scenario to run in AzApp", "--portal-url is not restarted", "valid-token"]),
], ids=["code-flow-scenario-in-AzApp", "one-mode-of-two-runs-nothing", "fresh-portal-scenario-by-url"])
def test_a_selection_that_runs_nothing_is_a_usage_error_before_anything_starts(tmp_path, capsys, argv, needles):
    out = tmp_path / "out"
    started = time.monotonic()
    with pytest.raises(SystemExit) as exited:
        main(["run", *argv, "--out", str(out)])
    assert exited.value.code == 2
    assert time.monotonic() - started < 5  # nothing started: no fake servers, no portal, no wait for a URL
    err = capsys.readouterr().err
    assert all(needle in err for needle in needles), err
    assert not out.exists()  # not even portal.env


def test_mode_all_leaves_out_the_modes_a_selection_has_no_scenario_in(tmp_path, capsys):
    code = main(["run", "--scenario", "consent-denied", "--out", str(tmp_path)])
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["modes"] == ["AzUser", "AzDelegate"]
    assert "no scenario in AzApp" in capsys.readouterr().err
    assert code == results["exit_code"] == 3  # one scenario exercises only a few MUST checks


# ------------------------------------------------------------------ incomplete runs


def test_unexercised_must_checks_make_the_run_incomplete_exit_3(tmp_path, capsys):
    code = main(["run", "--scenario", "missing-token", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    results = json.loads((tmp_path / "results.json").read_text())
    assert code == 3 and results["exit_code"] == 3 and results["verdict"] == "incomplete"
    failed = [c for c in results["checks"] if c["level"] == "MUST" and c["outcome"] == "failed"]
    missing = [c for c in results["checks"] if c["level"] == "MUST" and c["outcome"] == "not_exercised"]
    assert failed == [] and missing
    # The valid-token scenario did not run, so token reuse was verified in no mode.
    assert {c["mode"] for c in missing if c["id"] == "valid-token-reused"} == {"AzApp", "AzUser", "AzDelegate"}
    lines = out.splitlines()
    for check in missing:  # each one listed, with its reason
        assert any(line.startswith(f"NOT EXERCISED MUST {check['mode']} ") and check["id"] in line
                   and check["message"] in line for line in lines), check
    summary = next(line for line in lines if line.startswith("INCOMPLETE: "))
    assert f"{len(missing)} MUST checks not exercised" in summary and "exit code 3" in summary
    assert all(f"{c['mode']} {c['id']}" in summary for c in missing)
    md = (tmp_path / "report.md").read_text()
    attention = md.split("### Failed, warnings and not exercised", 1)[1].split("\n\n", 2)[1]  # the first table
    assert all(f"| ⏭️ not exercised | MUST | {c['mode']} |" in attention and c["id"] in attention for c in missing)
    ET.parse(tmp_path / "junit.xml")


def test_a_failed_must_check_outweighs_unexercised_ones(tmp_path):
    code = main(["run", "--mode", "AzApp", "--portal-app", "portals.mutants:never_reuses_token",
                 "--scenario", "valid-token", "--out", str(tmp_path)])
    results = json.loads((tmp_path / "results.json").read_text())
    assert any(c["level"] == "MUST" and c["outcome"] == "not_exercised" for c in results["checks"])
    assert code == 1 and results["verdict"] == "failed"


def test_a_complete_passing_run_still_exits_0(tmp_path):
    assert main(["run", "--mode", "AzApp", "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "results.json").read_text())["verdict"] == "passed"


# ------------------------------------------------------------------ kit errors are kit errors


def _planted(*_args, **_kwargs):
    raise RuntimeError("planted bug in the kit")


@pytest.mark.parametrize(("owner", "method", "server"), [
    (Authority, "_dispatch", "the fake Authority"),
    (BusinessCentral, "_serve", "the fake Business Central"),
], ids=["authority", "business-central"])
def test_an_exception_inside_a_fake_stops_the_run_as_an_internal_error(tmp_path, capsys, monkeypatch, owner, method,
                                                                       server):
    monkeypatch.setattr(owner, method, _planted)
    code = main(["run", "--mode", "AzApp", "--scenario", "missing-token", "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 2
    assert "internal error in the kit (please report it)" in captured.err
    assert "RuntimeError: planted bug in the kit" in captured.err
    assert server in captured.err and "trace seq" in captured.err and "missing-token" in captured.err
    assert "No verdict was written" in captured.err
    assert captured.out == ""
    assert not any((tmp_path / name).exists() for name in OUTPUTS)
    report = json.loads((tmp_path / "internal-error.json").read_text())
    assert report["error"] == "RuntimeError: planted bug in the kit"
    assert report["scenario"]["name"] == "missing-token" and report["scenario"]["trace"]
    assert any("internal_error" in event["detail"] for event in report["scenario"]["trace"])
    forms = [event["detail"]["form"] for event in report["scenario"]["trace"] if event["detail"].get("form")]
    assert forms and all(form.get("client_secret") in (None, "[REDACTED]") for form in forms)  # a redacted trace


def test_an_exception_inside_a_check_stops_the_run_as_an_internal_error(tmp_path, capsys, monkeypatch):
    broken = [dataclasses.replace(c, evaluate=_planted) if c.id == "working-portal" else c
              for c in run_module.CHECKS]
    monkeypatch.setattr(run_module, "CHECKS", broken)
    code = main(["run", "--mode", "AzApp", "--scenario", "missing-token", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "internal error in the kit (please report it): RuntimeError: planted bug in the kit" in err
    assert "check working-portal in AzApp" in err
    assert not any((tmp_path / name).exists() for name in OUTPUTS)
    report = json.loads((tmp_path / "internal-error.json").read_text())
    assert report["where"] == "check working-portal in AzApp" and "_planted" in report["traceback"]


def test_evaluate_raises_instead_of_failing_the_portal():
    check = dataclasses.replace(checks_module.CHECKS[0], evaluate=_planted)
    with pytest.raises(InternalError) as raised:
        checks_module.evaluate(check, {}, "AzApp")
    assert raised.value.where == f"check {check.id} in AzApp"


# ------------------------------------------------------------------ outputs stay valid whatever a portal prints


def test_a_portal_printing_escapes_and_invalid_utf8_leaves_valid_outputs(tmp_path):
    out = tmp_path / "out"
    done, _ = _kit("--mode", "AzApp", "--portal-cmd", _noisy_portal(tmp_path), "--scenario", "missing-token",
                   "--keep-going", "--out", str(out))
    assert done.returncode == 1, done.stderr
    results = _assert_outputs_valid(out)
    working = next(c for c in results["checks"] if c["id"] == "working-portal")
    text = working["message"] + working["received"]
    assert "ERROR" in text and "invalid" in text and "end" in text  # the words survive, the escapes do not
    assert "\x1b" not in done.stdout


def test_the_not_ready_message_quotes_the_portal_output_without_escapes(tmp_path):
    done, _ = _kit("--mode", "AzApp", "--portal-cmd", _noisy_portal(tmp_path, code=3), "--out", str(tmp_path / "o"))
    assert done.returncode == 2
    assert "exited with code 3" in done.stderr and "ERROR" in done.stderr
    assert "\x1b" not in done.stderr and "\x07" not in done.stderr


def test_a_portal_raising_with_escapes_in_its_message_leaves_valid_outputs(tmp_path, monkeypatch):
    (tmp_path / "noisy_app.py").write_text(
        "def app(environ, start_response):\n"
        f"    raise RuntimeError({NOISE.decode('utf-8', 'surrogateescape')!r})\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "out"
    code = main(["run", "--mode", "AzApp", "--portal-app", "noisy_app:app", "--scenario", "missing-token",
                 "--out", str(out)])
    assert code == 1
    results = _assert_outputs_valid(out)
    assert any("ERROR" in c["received"] + c["message"] and "\ufffd" in c["received"] + c["message"]
               for c in results["checks"])


def test_printable():
    assert printable("\x1b[31mred\x1b[0m\tok\r\n") == "red\tok\n"
    assert printable("\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\") == "link"
    assert printable("a\x00b\x07c\x7fd\x9be\x85f") == "abcdef"
    assert printable("bad \udcff byte") == "bad \ufffd byte"
    assert printable(b"\xff\x1b[0mz") == "\ufffdz"
    assert printable_value({"k\x1b[0m": ["v\x00", 1, None]}) == {"k": ["v", 1, None]}
    plain = "nothing to remove: ünïcödé, tabs\tand\nnewlines"
    assert printable(plain) is plain
