"""A newcomer's first commands: every usage error says what is wrong and how to fix it, exits 2 and writes
nothing; help has examples and exit codes; long commands show progress on stderr (and --quiet silences it)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from conformance.cli import build_parser, main
from conformance.external import free_port
from flows import CLIENT_CREDENTIALS, Role

COMMANDS = ("run", "selftest", "report", "simulate", "diagram", "checks", "serve", "load")


def _usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    return capsys.readouterr().err


def test_no_command_lists_every_command_with_what_it_does(capsys):
    err = _usage_error([], capsys)
    for command in COMMANDS:
        assert f"    {command} " in err, err
    assert "give a COMMAND" in err


def test_an_extra_argument_shows_the_commands_own_usage(capsys):
    err = _usage_error(["run", "extra-arg"], capsys)
    assert err.startswith("usage: bc-conformance run ") and "unrecognized arguments: extra-arg" in err


def test_version(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0 and capsys.readouterr().out.startswith("bc-conformance ")


@pytest.mark.parametrize(("argv", "says"), [
    (["run", "--mode", "azapp"], "did you mean AzApp?"),
    (["run", "--mode", "AzUsr,AzApp"], "did you mean AzUser?"),
    (["run", "--scenario", "valid-tokn"], "did you mean valid-token?"),
    (["run", "--profile", "ful"], "did you mean full?"),
    (["simulate", "client-credential", "--scenario", "valid-token"], "did you mean client-credentials?"),
    (["run", "--portal-cmd", "no-such-program-xyz --port 1"], "'no-such-program-xyz' is not a command on PATH"),
    (["run", "--portal-cmd", "./no/such/server.js"], "does not exist"),
    (["run", "--portal-url", "127.0.0.1:8080"], "must be an http(s) URL such as http://127.0.0.1:8080"),
    (["run", "--examples", "5"], "with --profile full"),
    (["run", "--real-time"], "for --portal-cmd and --portal-url"),
])
def test_near_misses_and_bad_values_say_how_to_fix_them_and_write_nothing(argv, says, capsys, tmp_path):
    out = tmp_path / "out"
    err = _usage_error([*argv, "--out", str(out)] if argv[0] == "run" else argv, capsys)
    assert says in err, err
    assert err.startswith(f"usage: bc-conformance {argv[0]} ")
    assert not out.exists()


def test_an_unwritable_out_folder_stops_the_run_before_any_scenario(capsys):
    started = time.monotonic()
    err = _usage_error(["run", "--out", "/proc/forbidden/results"], capsys)
    assert "--out /proc/forbidden/results: cannot write results there" in err and "choose a writable" in err
    assert time.monotonic() - started < 5  # before any scenario: a full run takes longer
    assert not Path("/proc/forbidden").exists()


def test_a_portal_url_that_never_answers_leaves_nothing_behind(tmp_path, capsys):
    out = tmp_path / "new" / "results"
    err = _usage_error(["run", "--mode", "AzApp", "--portal-url", f"http://127.0.0.1:{free_port()}",
                        "--startup-timeout", "0.5", "--out", str(out)], capsys)
    assert "did not answer within 0.5 s" in err
    assert not (tmp_path / "new").exists()  # no portal.env naming a CA file that is gone, no empty folders


@pytest.mark.parametrize("command", ["run", "selftest", "report", "simulate", "checks", "serve", "load"])
def test_help_has_examples_and_exit_codes(command):
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
    text = sub.format_help()
    assert "example" in text and "exit code" in text, text
    for action in sub._actions:
        assert action.help, f"{command} {action.dest} has no help"


def _run_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "conformance", *argv], capture_output=True, text=True,
                          check=False, timeout=300)


def test_progress_goes_to_stderr_line_by_line_and_quiet_silences_it(tmp_path):
    shown = _run_cli("run", "--mode", "AzApp", "--out", str(tmp_path / "a"))
    assert shown.returncode == 0, shown.stderr
    lines = shown.stderr.splitlines()
    assert lines[0].startswith("bc-conformance run: the reference portal; 13 scenarios in AzApp")
    assert any(line.endswith("AzApp 1/13 valid-token") for line in lines), lines
    assert any("AzApp: 13 done in" in line for line in lines)
    assert "PASSED" in shown.stdout and "PASSED" not in shown.stderr  # results on stdout, progress on stderr
    quiet = _run_cli("run", "--mode", "AzApp", "--quiet", "--out", str(tmp_path / "b"))
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_simulate_labels_every_visit_and_shows_all_of_them(capsys):
    assert main(["simulate", "client-credentials", "--scenario", "valid-token"]) == 0
    out = capsys.readouterr().out
    first, second = out.split("  visit 2 of 2: ")
    request, use = CLIENT_CREDENTIALS.id_of(Role.TOKEN_REQUEST), CLIENT_CREDENTIALS.id_of(Role.USE)
    assert "  visit 1 of 2: alice opens the portal\n" in first and request in first  # the token is fetched
    assert second.startswith("alice opens the portal, 60 s after the previous visit — the visit this scenario "
                             "measures")
    assert request not in second and use in second  # and reused
