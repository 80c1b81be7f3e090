"""``bc-conformance load``: the command line of a load run (``add_parser`` builds the subcommand, ``load`` runs it).

Distributed: ``--workers N`` starts a Locust master and N local workers. To add workers on other machines, run
``python -m conformance.load.runner CONFIG.json`` there with a copy of the master's configuration whose ``role`` is
``worker`` and ``master_host`` the orchestrator's address (the master binds 127.0.0.1 by default; bind it to an
interface the workers reach, and make the fakes' and the portal's URLs reachable from them too): wall-clock
attribution then needs the machines' clocks in sync (NTP, well under ``WINDOW_TOLERANCE``).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from flows import MODES

EXAMPLES = """examples:
  bc-conformance load --portal-cmd "python3 examples/flask-msal/app.py" --mode AzUser --users 50 --duration 30
  bc-conformance load --portal-cmd "node examples/express-msal-node/server.js" --mode AzApp --users 50 --workers 2
  bc-conformance load --portal-url http://127.0.0.1:8080 --mode AzUser --users 20 --web 8089"""
EXIT_CODES = """exit codes:
  0  every applicable MUST load check passed
  1  a MUST load check failed (sessions isolated, working under load)
  2  no verdict: a usage error, a portal that never became ready, a Locust runner that failed
  3  incomplete: no MUST check failed, but some could not be exercised (listed, with the reason)"""


def add_parser(sub: Any, usage_error: type[Exception]) -> argparse.ArgumentParser:
    """The ``load`` subcommand on ``sub`` (``build_parser``'s subparsers)."""
    p = sub.add_parser("load", help="many concurrent users: token stampedes, session cross-talk, throttling",
                       description="Drive a portal with many simulated users at once (Locust), each signed in with "
                                   "its own Entra account, while tokens expire and Business Central throttles.",
                       epilog=f"{EXAMPLES}\n\n{EXIT_CODES}", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--portal-cmd", metavar="CMD", help="start this command (any language) with the environment "
                   "contract, under the virtual clock")
    p.add_argument("--portal-url", metavar="URL", help="a portal you started (DIR/portal.env says how); its clock "
                   "cannot be moved, so single-flight renewal is not exercised")
    p.add_argument("--portal-app", metavar="MODULE:ATTR", help="not supported by load (see the error)")
    p.add_argument("--mode", default="AzUser", help="AzApp, AzUser or AzDelegate (default AzUser)")
    p.add_argument("--users", type=int, default=10, metavar="N", help="concurrent users (default 10)")
    p.add_argument("--spawn-rate", type=float, default=0.0, metavar="R",
                   help="users started per second (default: all at once)")
    p.add_argument("--duration", type=float, default=20.0, metavar="S", help="seconds the users run (default 20)")
    p.add_argument("--expire-every", type=float, default=0.0, metavar="S",
                   help="seconds between clock moves past every token's expiry (default: a third of --duration)")
    p.add_argument("--workers", type=int, default=0, metavar="N",
                   help="run Locust as a master and N local workers (default: one process)")
    p.add_argument("--web", type=int, default=0, metavar="PORT", help="also serve Locust's web UI on 127.0.0.1:PORT")
    p.add_argument("--page", default="/", help="the portal page the users open (default /)")
    p.add_argument("--redirect-path", default="/auth/callback", help="the portal's RedirectURI path")
    p.add_argument("--startup-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="how long a started portal may take to listen (default 30)")
    p.add_argument("--request-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="how long the portal may take to answer one request (default 10)")
    p.add_argument("--out", default="bc-conformance-load", metavar="DIR",
                   help="where results.json, junit.xml and the report go (default bc-conformance-load)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    p.set_defaults(func=lambda args: load(args, usage_error))
    return p


def load(args: argparse.Namespace, usage_error: type[Exception] = ValueError) -> int:
    """Run the load and write the results; returns the exit code (raises ``usage_error`` for exit 2)."""
    if args.portal_app:
        raise usage_error("--portal-app is not supported by load: an in-process app would share the kit's process "
                          "and clock, so tokens could not expire under load and the fakes' CPU could not be told "
                          "from the portal's. Serve it (flask run, gunicorn, waitress …) with --portal-cmd instead")
    if bool(args.portal_cmd) == bool(args.portal_url):
        raise usage_error("give one of --portal-cmd and --portal-url")
    if args.mode not in MODES:
        from conformance.cli import _suggest

        raise usage_error(f"--mode must be one of {', '.join(MODES)}, got {args.mode!r}{_suggest(args.mode, MODES)}")
    for flag, value, low in (("--users", args.users, 1), ("--duration", args.duration, 1),
                             ("--workers", args.workers, 0), ("--spawn-rate", args.spawn_rate, 0),
                             ("--expire-every", args.expire_every, 0)):
        if value < low:
            raise usage_error(f"{flag} must be at least {low}, got {value:g}")
    if args.workers and args.workers > args.users:
        raise usage_error(f"--workers {args.workers} is more than --users {args.users}: a worker would idle")
    if not args.page.startswith("/") or not args.redirect_path.startswith("/"):
        raise usage_error("--page and --redirect-path must be absolute paths such as / and /auth/callback")
    from conformance.load.orchestrator import LoadError, LoadOptions, LoadTarget, run_load
    from conformance.load.results import judge_load
    from conformance.run import write_outputs

    out = Path(args.out)
    options = LoadOptions(args.mode, args.users, args.spawn_rate, args.duration, args.expire_every, args.page,
                          args.redirect_path, args.startup_timeout, args.request_timeout, args.workers, args.web,
                          out_dir=out)
    target = LoadTarget(args.portal_cmd or "", args.portal_url or "")

    def note(message: str) -> None:
        if not args.quiet:
            print(f"bc-conformance load: {message}", file=sys.stderr, flush=True)

    try:
        evidence = run_load(target, options, note)
    except LoadError as err:
        raise usage_error(str(err)) from None
    replay = "bc-conformance " + " ".join(shlex.quote(a) for a in getattr(args, "argv", []) or ["load"])
    results = judge_load(evidence, target.name, replay)
    try:
        written = write_outputs(results, out)
    except OSError as err:
        raise usage_error(f"--out {out}: cannot write results ({err.strerror})") from None
    if not args.quiet:
        for c in results["checks"]:
            print(f"  {c['outcome']:<14} [{c['level']}] {c['id']}: {c['message']}", file=sys.stderr)
        share = results["load"]["fakes"]["cpu_share"]
        print(f"bc-conformance load: {results['verdict']}; {results['load']['visits']['per_second']} visits/s; "
              f"the fakes used {share:.0%} of the run's CPU; results in {', '.join(map(str, written.values()))}",
              file=sys.stderr)
    return int(results["exit_code"])


def main(argv: list[str] | None = None) -> int:
    """``python -m conformance.load.command …`` (until ``load`` is in ``bc-conformance``)."""
    parser = argparse.ArgumentParser(prog="bc-conformance")
    sub = parser.add_subparsers(dest="command")
    add_parser(sub, SystemExit)
    args = parser.parse_args(["load", *(sys.argv[1:] if argv is None else argv)])
    args.argv = ["load", *(sys.argv[1:] if argv is None else argv)]
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
