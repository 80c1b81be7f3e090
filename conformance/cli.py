"""``bc-conformance`` command line. Usage errors exit 2 with a message naming the valid choices."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from conformance.scenarios import SCENARIOS, scenario_named, scenario_plan
from flows import FLOWS, MODES, flow_named
from flows.diagram import mermaid

FLOW_NAMES = [f.cli_name for f in FLOWS.values()]
PROFILES = ("quick", "full")
SERVE_TRACE_KEPT = 2_000  # events `serve` keeps (it writes no report; an authorize event weighs ~2 KB)


class UsageError(Exception):
    """A bad command line or configuration: reported with exit code 2 before anything runs."""


def _simulate(args: argparse.Namespace) -> int:
    from conformance.simulate import describe, simulate

    flow = flow_named(args.flow)
    try:
        scenario = scenario_named(flow, args.scenario)
    except KeyError as err:
        raise UsageError(err.args[0]) from None
    sim = simulate(flow, scenario.name)
    if args.json:
        print(json.dumps(sim.as_dict()))
        return 0 if sim.outcome != "failed" else 1
    print(f"{flow.title} ({sim.mode}, reference portal) — scenario {scenario.name}: {scenario.description}")
    visits = sim.visits
    for visit in visits:
        if len(visits) > 1:
            print(f"  {visit.label(len(visits))}")
        for step in visit.steps:
            print(f"  {flow.step_id(step.number):>5}  {step.actor:<9} {step.text}")
            if args.verbose:
                events = sim.events_of(step, visit.index)
                for event in events:
                    print(f"           {describe(event)}")
                if not events:
                    note = "the answer shown above" if step.actor == "Authority" else "judged by what follows"
                    print(f"           (no wire exchange of its own: {note})")
        if visit.outcome == "denied":
            print("  (the user declined to authorize the app: the flow ends without a token)")
        elif visit.outcome == "failed":
            print(f"  (the flow did not complete{': ' + sim.result.error if sim.result.error else ''})")
    return 0 if sim.outcome != "failed" else 1


def _prepare_out_dir(path: Path) -> list[Path]:
    """Fail before any scenario runs if results could not be written there: create the folder and write a probe
    file. Returns the folders created, for ``_remove_created`` when the run stops without a verdict."""
    missing = [p for p in (path, *path.parents) if not p.exists()][::-1]
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not path.is_dir():
            raise NotADirectoryError(f"{path} is not a directory")
        probe = path / f".bc-conformance-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        _remove_created(missing)
        why = (err.strerror or str(err)).lower()
        raise UsageError(f"--out {path}: cannot write results there ({why}); choose a writable folder, e.g. --out "
                         f"./bc-conformance-results") from None
    return missing


def _remove_created(created: list[Path]) -> None:
    """Remove the folders this run created, deepest first, where they are still empty (never a user's file)."""
    for folder in reversed(created):
        with contextlib.suppress(OSError):
            folder.rmdir()


def _suggest(value: str, choices: Sequence[str]) -> str:
    """' (did you mean X?)' for a near miss, case-insensitive; '' when nothing is close."""
    import difflib

    lowered = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(value.lower(), list(lowered), n=1, cutoff=0.6)
    return f" (did you mean {lowered[close[0]]}?)" if close else ""


def _check_command(cmd: str) -> None:
    """The portal command's program must exist, or every scenario would fail the same way, late."""
    import shlex
    import shutil

    try:
        words = shlex.split(cmd)
    except ValueError as err:
        raise UsageError(f"--portal-cmd {cmd!r}: {err} (quote it as a shell would)") from None
    if not words:
        raise UsageError("--portal-cmd is empty: give the command that starts your portal, e.g. --portal-cmd "
                         "\"node server.js\"")
    program = words[0]
    shell_words = {"cd", "exec", "export", "env", ".", "source", "set", "if", "for", "while", "(", "{", "!"}
    if program in shell_words or "=" in program or any(c in cmd for c in "|&;<>$`"):
        return  # the shell's own syntax: it is the shell's to resolve
    if "/" in program:
        if not Path(program).exists():
            raise UsageError(f"--portal-cmd: {program} does not exist (relative paths are from {Path.cwd()})")
        if not os.access(program, os.X_OK):
            raise UsageError(f"--portal-cmd: {program} is not executable (chmod +x it, or start it with its "
                             f"interpreter, e.g. python3 {program})")
    elif shutil.which(program) is None:
        raise UsageError(f"--portal-cmd: {program!r} is not a command on PATH; give its full path or install it")


def _modes(value: str) -> tuple[str, ...]:
    if value == "all":
        return tuple(MODES)
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    bad = [n for n in names if n not in MODES]
    if bad or not names:
        hint = "".join(_suggest(n, [*MODES, "all"]) for n in bad)
        raise UsageError(f"--mode {value!r}: expected one of {', '.join(MODES)} or all (comma-separated){hint}")
    return names


def _run(args: argparse.Namespace) -> int:
    modes = _modes(args.mode)
    wanted = tuple(s for s in (args.scenario or "").split(",") if s)
    known = {name for per_flow in SCENARIOS.values() for name in per_flow}
    if unknown := [s for s in wanted if s not in known]:
        hint = "".join(_suggest(s, sorted(known)) for s in unknown)
        raise UsageError(f"--scenario: unknown {', '.join(unknown)}{hint}; valid scenarios: {', '.join(sorted(known))}")
    if args.jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {args.jobs}")
    if args.real_time and not (args.portal_cmd or args.portal_url):
        raise UsageError("--real-time is for --portal-cmd and --portal-url: an in-process portal's clock is always "
                         "the kit's")
    if args.request_timeout <= 0:
        raise UsageError("--request-timeout must be a positive number of seconds")
    out = Path(args.out)
    chosen = [flag for flag in ("portal_app", "portal_cmd", "portal_url") if getattr(args, flag)]
    if len(chosen) > 1:
        raise UsageError("give at most one of --portal-app, --portal-cmd and --portal-url")
    if args.portal_cmd is not None:
        _check_command(args.portal_cmd)
    if args.portal_url:
        from urllib.parse import urlsplit

        parts = urlsplit(args.portal_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"--portal-url must be an http(s) URL such as http://127.0.0.1:8080, got "
                             f"{args.portal_url!r}")
    if args.startup_timeout <= 0:
        raise UsageError("--startup-timeout must be a positive number of seconds")
    if not args.redirect_path.startswith("/") or not args.page.startswith("/"):
        raise UsageError("--page and --redirect-path must be absolute paths such as / and /auth/callback")
    # A selection that runs nothing proves nothing: say which scenarios each chosen mode has, before anything starts.
    plan = scenario_plan(modes, wanted, restarts=not args.portal_url)
    if empty := [m for m in modes if not plan[m]]:
        available = scenario_plan(empty, (), restarts=not args.portal_url)
        hint = (" (a portal given by --portal-url is not restarted, so only scenarios that need no fresh portal can "
                "run; --portal-cmd runs them all)" if args.portal_url else "")
        if len(empty) == len(modes) or args.mode != "all":
            raise UsageError(
                f"--scenario {','.join(wanted)} leaves no scenario to run in {', '.join(empty)}{hint}; scenarios of "
                + "; ".join(f"{m} ({MODES[m].flow.cli_name}): {', '.join(available[m])}" for m in empty))
        modes = tuple(m for m in modes if plan[m])
        print(f"bc-conformance run: note: --scenario {','.join(wanted)} has no scenario in {', '.join(empty)}; "
              f"running {', '.join(modes)}", file=sys.stderr)
    if args.examples is not None and (args.examples < 1 or args.profile != "full"):
        raise UsageError(f"--examples {args.examples}: a positive number of random sequences per mode, with "
                         "--profile full")
    created = _prepare_out_dir(out)
    if not args.quiet:  # the first progress line, before the heavy imports
        target_name = (f"portal command {args.portal_cmd!r}" if args.portal_cmd else f"portal at {args.portal_url}"
                       if args.portal_url else args.portal_app or "the reference portal")
        sys.stderr.write(f"bc-conformance run: {target_name}; {sum(map(len, plan.values()))} scenarios in "
                         f"{', '.join(modes)}{' + exploration' if args.profile == 'full' else ''}; results in "
                         f"{out}\n")
        sys.stderr.flush()
    from conformance.errors import InternalError, PortalNotReady
    from conformance.progress import Progress
    from conformance.run import RunOptions, explore_modes, judge, run_modes, write_internal_error, write_outputs
    from conformance.targets import REFERENCE, InProcessTarget, TargetError
    from fake_authority.jwt import SigningKey

    options = RunOptions(modes, wanted, args.profile, args.seed, args.examples, args.request_timeout,
                         stop_when_not_ready=not args.keep_going)
    key = SigningKey()
    finished = False
    try:
        with Progress(quiet=args.quiet) as progress:
            if args.portal_cmd or args.portal_url:
                results = _run_external(args, options, key, plan, progress)
            else:
                try:
                    target = InProcessTarget.load(args.portal_app or REFERENCE)
                except TargetError as err:
                    raise UsageError(str(err)) from None
                per_mode = run_modes(target, modes, options, key, progress)
                explorations = explore_modes(target, options, key, progress) if args.profile == "full" else None
                results = judge(target, per_mode, options, explorations)
            progress.note("writing results and the report")
        try:
            written = write_outputs(results, out)
        except OSError as err:
            raise UsageError(f"--out {out}: cannot write results ({err.strerror})") from None
        finished = True
    except PortalNotReady as err:
        raise UsageError(f"{err}\n  No verdict was written. Fix the portal (its command, files or dependencies), or "
                         f"pass --keep-going to judge every scenario anyway (the checks of a portal that is not ready "
                         f"fail).") from None
    except (UsageError, KeyboardInterrupt):
        raise
    except Exception as err:  # a fake or a check raised, or any other bug of the kit: never a verdict
        internal = InternalError.of(err)
        internal.report = write_internal_error(internal, out, ["bc-conformance", *getattr(args, "argv", [])])
        finished = internal.report is not None
        raise internal from err
    finally:
        if not finished:  # nothing is left behind by a run that stopped without a verdict
            (out / "portal.env").unlink(missing_ok=True)
            _remove_created(created)
    _print_summary(results, written)
    return int(results["exit_code"])


def _run_external(args: argparse.Namespace, options: Any, key: Any, plan: dict[str, list[str]],
                  progress: Any) -> dict[str, Any]:

    from conformance.clock import SystemClock
    from conformance.external import (
        CLIENT_SECRET_VARIABLE,
        ExternalTarget,
        portal_environment,
        stage_for,
        wait_for_url,
    )
    from conformance.portal_time import INSTALL_HINT, ShiftedClock, faketime_library
    from conformance.run import explore_external, judge, run_modes
    from conformance.servers import FakeServers
    from fake_authority import Registry

    target = ExternalTarget(args.portal_cmd or "", args.portal_url or "", args.page, args.redirect_path,
                            args.startup_timeout, real_time=args.real_time)
    # SIGTERM (and a closed terminal) end the run like Ctrl-C: the portal processes are stopped, the keys removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGHUP, lambda *_: sys.exit(129))
    # The client secret is never written to a file: the user chooses it (and gives it to their portal), or the kit
    # makes one and, for --portal-url, prints it once on stderr.
    chosen_secret = os.environ.get(CLIENT_SECRET_VARIABLE) or None
    registry = Registry.default(client_secret=chosen_secret).with_redirect_uris(
        f"http://127.0.0.1{args.redirect_path}", f"http://localhost{args.redirect_path}")
    if args.portal_url:
        registry = registry.with_redirect_uris(args.portal_url.rstrip("/") + args.redirect_path)
    library = faketime_library() if args.portal_cmd else None
    if args.portal_cmd and library is None:
        print(f"bc-conformance run: note: libfaketime is not installed, so the portal's clock cannot be moved: "
              f"scenarios that need time to pass are not exercised"
              f"{' (--real-time: they wait for real)' if args.real_time else ' (or pass --real-time)'}; "
              f"{INSTALL_HINT}", file=sys.stderr)
    count = 1 if args.portal_url else max(1, min(args.jobs, sum(len(v) for v in plan.values())))
    with contextlib.ExitStack() as stack:
        pool = []
        for _ in range(count):  # one set of fakes (own ports, own clock, own trace) per concurrent scenario
            clock = ShiftedClock(library) if library else SystemClock()
            if isinstance(clock, ShiftedClock):
                stack.callback(clock.close)
            pool.append(stack.enter_context(FakeServers(registry, clock=clock)))
        servers = pool[0]
        if args.portal_url:
            # The user starts the portal: tell them the environment it needs, then wait for it.
            env = portal_environment(stage_for(servers, options.modes[0], args.portal_url.rstrip("/"),
                                               args.redirect_path).config, str(servers.ca.ca_file))
            contract = {k: env[k] for k in ("AUTH_MODE", "AUTHORITY", "TENANT_ID", "CLIENT_ID", "REDIRECT_URI",
                                            "BC_API_URL", "BC_SCOPE", "PORTAL_PORT", "SSL_CERT_FILE",
                                            "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS")}
            Path(args.out).mkdir(parents=True, exist_ok=True)
            env_file = Path(args.out) / "portal.env"
            env_file.write_text(f"# CLIENT_SECRET is not in this file: give your portal the value of "
                                f"{CLIENT_SECRET_VARIABLE} (set before the run, or printed on stderr by the kit)\n"
                                + "".join(f"{k}={v}\n" for k, v in contract.items()))
            env_file.chmod(0o600)
            if not chosen_secret:
                print(f"CLIENT_SECRET for this run (shown once, written nowhere): {env['CLIENT_SECRET']}\n"
                      f"  To choose it instead, set {CLIENT_SECRET_VARIABLE} for the kit and give your portal the "
                      f"same value as CLIENT_SECRET.", file=sys.stderr, flush=True)
            print(f"Start the portal with the environment in {env_file} (AUTH_MODE per mode: "
                  f"{', '.join(options.modes)}); waiting for {args.portal_url} …", file=sys.stderr, flush=True)
            problem = wait_for_url(args.portal_url, args.startup_timeout)
            if problem:
                raise UsageError(problem)
        skipped: dict[str, dict[str, str]] = {}
        per_mode = run_modes(target, options.modes, options, key, progress, pool, skipped)
        explorations = (explore_external(target, pool[0], options, progress)
                        if args.profile == "full" else None)
    return judge(target, per_mode, options, explorations, skipped)


def _print_summary(results: dict, written: dict[str, Path]) -> None:
    for check in results["checks"]:
        if check["outcome"] in ("failed", "warning"):
            steps = ",".join(str(n) for n in check["steps"])
            prefix = "CC" if check["flow"] == "client_credentials" else "AC"
            print(f"{check['outcome'].upper():8} {check['level']:6} {check['mode']} {prefix}-{steps} "
                  f"{check['id']}: {check['message']}")
            if check["id"] == "explored-interleavings" and check["outcome"] == "failed":
                print(f"         shrunk sequence: {check['received']}")
            if check["outcome"] == "failed" and check.get("replay"):
                print(f"         replay: {check['replay']}")
    unexercised = [c for c in results["checks"] if c["level"] == "MUST" and c["outcome"] == "not_exercised"]
    if results["verdict"] == "incomplete":
        for check in unexercised:
            steps = ",".join(str(n) for n in check["steps"])
            prefix = "CC" if check["flow"] == "client_credentials" else "AC"
            print(f"NOT EXERCISED {check['level']} {check['mode']} {prefix}-{steps} {check['id']}: {check['message']}")
    counts = ", ".join(f"{n} {k}" for k, n in results["summary"].items() if n)
    line = f"{results['verdict'].upper()}: {counts} ({', '.join(results['modes'])})"
    if results["verdict"] == "incomplete":
        names = ", ".join(f"{c['mode']} {c['id']}" for c in unexercised)
        line += (f"; {len(unexercised)} MUST check{'s' if len(unexercised) != 1 else ''} not exercised, so not "
                 f"verified: {names} (exit code 3)")
    print(line)
    for name, path in written.items():
        print(f"  {name}: {path}")


def _selftest(args: argparse.Namespace) -> int:
    from conformance.progress import Progress
    from conformance.selftest import format_matrix, selftest

    with Progress(quiet=args.quiet, items=False) as progress:  # in a log: a line per mode of each portal
        progress.note(f"bc-conformance selftest: the reference portal, then every mutant ({args.profile} profile)")
        report = selftest(args.profile, progress)
    print(json.dumps(report, indent=2) if args.json else format_matrix(report))
    return 0 if report["passed"] else 1


def _report(args: argparse.Namespace) -> int:
    from conformance.progress import Progress
    from reports import cli_render

    try:
        with Progress(quiet=args.quiet) as progress:
            progress.note(f"bc-conformance report: rendering {args.results}")
            path = cli_render(args.results, args.output)
    except ValueError as err:
        raise UsageError(str(err)) from None
    print(f"report: {path}")
    return 0


def _checks(args: argparse.Namespace) -> int:
    from conformance.catalogue import print_catalogue

    return print_catalogue(json_output=args.json)


def _diagram(args: argparse.Namespace) -> int:
    sys.stdout.write(mermaid(flow_named(args.flow)))
    return 0


def _serve(args: argparse.Namespace) -> int:
    import threading
    from dataclasses import replace

    from conformance.servers import FakeServers
    from conformance.trace import Trace
    from fake_authority.registry import Registry, RegistryError, load

    try:
        registry = load(args.config) if args.config else Registry.default()
    except RegistryError as err:
        raise UsageError(str(err)) from None
    if args.redirect_uri:
        registry = registry.with_redirect_uris(*args.redirect_uri)
    if args.token_lifetime is not None:
        if args.token_lifetime < 1:
            raise UsageError(f"--token-lifetime must be at least 1 second, got {args.token_lifetime}")
        registry = replace(registry, token_lifetime=args.token_lifetime)
    # Nobody reads this trace (serve writes no report): keep only the newest events, however long it serves;
    # the events pushed out are counted (GET /_bc_conformance/stats, and the line printed when serve stops).
    servers = FakeServers(registry, host=args.host, authority_port=args.port, bc_port=args.bc_port,
                          trace=Trace(limit=SERVE_TRACE_KEPT))
    servers.authority.faults.strict_revocation = args.strict_revocation
    try:
        servers.start()
    except OSError as err:
        raise UsageError(f"{err} (choose another --port/--bc-port, or 0 for any free port)") from None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(json.dumps(servers.info()), flush=True)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        servers.stop()
        # Nothing kept is silent: say how many trace events the limit pushed out and what the servers refused.
        stats = servers.stats()
        print(f"bc-conformance serve: stopped; trace events dropped: {stats['trace']['dropped']} "
              f"(only the newest {SERVE_TRACE_KEPT} are kept); stats: {json.dumps(stats, separators=(',', ':'))}",
              file=sys.stderr, flush=True)
    return 0


RUN_EXAMPLES = """examples:
  bc-conformance run                                          # the reference portal, every mode
  bc-conformance run --portal-app mypkg.web:create_app        # a WSGI app (or factory), in-process
  bc-conformance run --portal-cmd "node server.js" --mode AzApp,AzUser   # any language, started per scenario
  bc-conformance run --portal-url http://127.0.0.1:8080 --mode AzApp    # a portal you started (DIR/portal.env)
  bc-conformance run --profile full --portal-cmd "python3 app.py"        # + property-based exploration
  bc-conformance run --mode AzUser --scenario valid-token     # replay one scenario (as a failure's replay says)
"""
RUN_EXIT_CODES = """exit codes:
  0  every applicable MUST check passed
  1  a MUST check failed
  2  no verdict: a usage or configuration error (before any scenario runs), a portal that never
     became ready (--portal-cmd: its command exited or never listened on PORTAL_PORT, unless
     --keep-going; --portal-url: it never answered), or an internal error of the kit (details in
     DIR/internal-error.json); no verdict is written
  3  incomplete: no MUST check failed, but some could not be exercised (listed, with the reason)
  130, 143  interrupted (Ctrl-C, SIGTERM); nothing is written"""


class _Parser(argparse.ArgumentParser):
    """Usage errors exit 2 naming the command they belong to, with its own usage (argparse's default for a
    subcommand's extra argument is the top-level usage)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _choice(name: str, choices: Sequence[str]) -> Any:
    """An argparse type that names the valid values and suggests the nearest one."""
    def parse(value: str) -> str:
        if value in choices:
            return value
        raise argparse.ArgumentTypeError(f"invalid {name} {value!r}{_suggest(value, choices)}; choose from "
                                         f"{', '.join(choices)}")
    parse.__name__ = name
    return parse


def _sub(sub: Any, name: str, help_: str, description: str = "", epilog: str = "") -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help_, description=description or help_[0].upper() + help_[1:] + ".",
                          epilog=epilog or None, formatter_class=argparse.RawDescriptionHelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bc-conformance",
        description="Conformance kit for portals that sign in to Microsoft Entra ID and call Business Central.",
        epilog="Run `bc-conformance COMMAND --help` for a command's options, examples and exit codes.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    run = _sub(sub, "run", "run the conformance scenarios and checks against a portal",
               epilog=f"{RUN_EXAMPLES}\n{RUN_EXIT_CODES}")
    run.add_argument("--mode", default="all", help="AzApp, AzUser, AzDelegate (comma-separated) or all (default)")
    run.add_argument("--portal-app", metavar="MODULE:ATTR",
                     help="a WSGI app (or a factory returning one) to run in-process; default: the reference portal")
    run.add_argument("--portal-cmd", metavar="CMD",
                     help="start this command per scenario (any language) with the environment contract, over HTTPS")
    run.add_argument("--portal-url", metavar="URL",
                     help="a portal you started yourself (the kit writes the environment it needs to DIR/portal.env)")
    run.add_argument("--page", default="/", help="the portal page the user opens (default /)")
    run.add_argument("--redirect-path", default="/auth/callback",
                     help="path of the portal's RedirectURI (default /auth/callback)")
    run.add_argument("--startup-timeout", type=float, default=30.0, metavar="SECONDS",
                     help="how long a started portal may take to listen (default 30)")
    run.add_argument("--keep-going", action="store_true",
                     help="when the portal never becomes ready for a scenario (its command exits or never listens), "
                          "fail that scenario's checks and go on instead of stopping with exit code 2")
    run.add_argument("--out", default="bc-conformance-results", metavar="DIR",
                     help="where to write results.json, junit.xml and the report (default: bc-conformance-results)")
    run.add_argument("--profile", type=_choice("profile", PROFILES), default="quick",
                     help="quick (default): the scenarios; full: the scenarios and property-based exploration")
    run.add_argument("--seed", type=int, default=0, help="seed of the property-based exploration (default 0)")
    run.add_argument("--examples", type=int, metavar="N",
                     help="--profile full: random sequences explored per mode (default 150 in-process, 25 for a "
                          "--portal-cmd portal, which is started afresh for each)")
    run.add_argument("--scenario", metavar="NAMES", help="only these scenarios (comma-separated), e.g. to replay one")
    run.add_argument("--real-time", action="store_true",
                     help="where the portal's clock cannot be moved (--portal-url, no libfaketime, a static binary), "
                          "wait for real instead of leaving time-dependent checks not exercised (about 25 minutes "
                          "per mode)")
    run.add_argument("--jobs", type=int, default=os.cpu_count() or 1, metavar="N",
                     help="--portal-cmd: scenarios played at once, each with its own portal process, port, fakes "
                          "and clock (default: the number of cores)")
    run.add_argument("--request-timeout", type=float, default=10.0, metavar="SECONDS",
                     help="how long a portal may take to answer one request (default 10)")
    run.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr (the summary still prints)")
    run.set_defaults(func=_run)

    st = _sub(sub, "selftest", "prove the kit catches every mutant portal and passes the reference",
              epilog="examples:\n  bc-conformance selftest\n  bc-conformance selftest --profile full --json\n\n"
                     "exit codes:\n  0  the reference portal passes and every mutant is caught by the checks it "
                     "names\n  1  otherwise (the matrix shows which)\n  2  a usage error")
    st.add_argument("--json", action="store_true", help="print the matrix as JSON")
    st.add_argument("--profile", type=_choice("profile", PROFILES), default="quick",
                    help="quick (default): the scenarios; full: also the property-based exploration")
    st.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    st.set_defaults(func=_selftest)

    rep = _sub(sub, "report", "re-render report.html (and report.md) from a saved results.json",
               epilog="examples:\n  bc-conformance report bc-conformance-results\n"
                      "  bc-conformance report old/results.json -o /tmp/report.html\n\n"
                      "exit codes:\n  0  written\n  2  the results cannot be read or the report cannot be written")
    rep.add_argument("results", metavar="DIR_OR_results.json",
                     help="a results folder written by `run`, or its results.json")
    rep.add_argument("-o", "--output", metavar="report.html", help="default: report.html beside the results")
    rep.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    rep.set_defaults(func=_report)

    sim = _sub(sub, "simulate", "walk a documented flow for a scenario, step by step",
               epilog="examples:\n  bc-conformance simulate client-credentials --scenario expired-token\n"
                      "  bc-conformance simulate authorization-code --scenario consent-denied -v\n\n"
                      "exit codes:\n  0  the flow completed (or ended as the scenario intends)\n  1  it did not\n"
                      "  2  a usage error")
    sim.add_argument("flow", type=_choice("flow", FLOW_NAMES), metavar="FLOW", help=f"one of: {', '.join(FLOW_NAMES)}")
    all_scenarios = sorted({s for per_flow in SCENARIOS.values() for s in per_flow})
    sim.add_argument("--scenario", required=True, metavar="S", help=f"one of: {', '.join(all_scenarios)}")
    sim.add_argument("--json", action="store_true", help="print the visited steps as JSON")
    sim.add_argument("--verbose", "-v", action="store_true", help="show each step's wire exchange (redacted)")
    sim.set_defaults(func=_simulate)

    dia = _sub(sub, "diagram", "print a Mermaid state diagram of a flow",
               epilog="example:\n  bc-conformance diagram authorization-code > ac.mmd")
    dia.add_argument("flow", type=_choice("flow", FLOW_NAMES), metavar="FLOW", help=f"one of: {', '.join(FLOW_NAMES)}")
    dia.set_defaults(func=_diagram)

    chk = _sub(sub, "checks", "list every check: id, level, modes, flow steps, references and what exercises it",
               description="List every check the kit judges, generated from its check registry: id, level, modes, "
                           "the flow steps it verifies, its references and what a run needs to exercise it.",
               epilog="examples:\n  bc-conformance checks\n  bc-conformance checks --json | jq '.[].id'\n\n"
                      "exit codes:\n  0  printed")
    chk.add_argument("--json", action="store_true", help="print the catalogue as JSON")
    chk.set_defaults(func=_checks)

    srv = _sub(sub, "serve", "serve the fake Authority and Business Central on loopback HTTPS",
               epilog="examples:\n  bc-conformance serve                     # prints the URLs, client and CA as "
                      "JSON\n  bc-conformance serve --port 8443 --redirect-uri http://127.0.0.1:3000/auth/callback"
                      "\n\nexit codes:\n  0  stopped (Ctrl-C, SIGTERM)\n  2  a usage error or a port in use")
    srv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    srv.add_argument("--port", type=int, default=0, help="Authority port (default: any free port)")
    srv.add_argument("--bc-port", type=int, default=0, help="Business Central port (default: any free port)")
    srv.add_argument("--token-lifetime", type=int, default=None, metavar="SECONDS",
                     help="access token lifetime (default 3600)")
    srv.add_argument("--config", metavar="FILE", help="registry of clients and users (.toml or .json)")
    srv.add_argument("--redirect-uri", action="append", metavar="URI",
                     help="also register this redirect URI for the default client (repeatable)")
    srv.add_argument("--strict-revocation", action="store_true",
                     help="revoke a grant's tokens on code replay or rotated refresh-token reuse (RFC 6749 §4.1.2, "
                          "RFC 9700 §4.14.2); Entra does neither, so off by default")
    srv.set_defaults(func=_serve)

    from conformance.load.command import add_parser as add_load_parser

    add_load_parser(sub, UsageError)  # `bc-conformance load`: Locust runs in its own processes (it patches sockets)
    return parser


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("bc-oauth-conformance")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def main(argv: Sequence[str] | None = None) -> int:
    from conformance.errors import InternalError
    from conformance.printable import printable

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        parser.exit(2, "\nbc-conformance: error: give a COMMAND (listed above)\n")
    command_parser = parser._subparsers._group_actions[0].choices[args.command]  # type: ignore[union-attr]
    if extra:
        command_parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.argv = argv
    try:
        return int(args.func(args))
    except UsageError as err:
        command_parser.print_usage(sys.stderr)
        command_parser.exit(2, f"bc-conformance {args.command}: error: {err}\n")
    except BrokenPipeError:  # e.g. `bc-conformance simulate … | head`: the reader left; nothing to report
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:  # Ctrl-C: the context managers have stopped the servers and portal processes
        print(f"bc-conformance {args.command}: interrupted; no results were written", file=sys.stderr)
        return 130
    except Exception as err:  # a fake or a check raised, or another bug of the kit: exit 2, never a verdict
        internal = InternalError.of(err)
        lines = [f"bc-conformance {args.command}: internal error in the kit (please report it): {internal.error}",
                 f"  where: {internal.where}"]
        if internal.report is not None:
            lines.append(f"  attach {internal.report} to the report (the traceback and the scenario's redacted trace)")
        elif internal.tb:
            lines.append("  " + internal.tb.rstrip().replace("\n", "\n  "))
        if args.command == "run":
            lines.append("  No verdict was written (this is not a finding about the portal).")
        print(printable("\n".join(lines)), file=sys.stderr)
        return 2
