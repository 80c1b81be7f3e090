"""``bc-conformance`` command line. Usage errors exit 2 with a message naming the valid choices."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from conformance.scenarios import SCENARIOS, scenario_named
from conformance.simulate import Simulation
from flows import FLOWS, flow_named
from flows.diagram import mermaid

FLOW_NAMES = [f.cli_name for f in FLOWS.values()]


class UsageError(Exception):
    """A bad command line or configuration: reported with exit code 2 before anything runs."""


def _simulate(args: argparse.Namespace) -> int:
    flow = flow_named(args.flow)
    try:
        scenario = scenario_named(flow, args.scenario)
    except KeyError as err:
        raise UsageError(err.args[0]) from None
    sim = Simulation(flow, scenario)
    sim.run()
    if args.json:
        print(json.dumps(sim.as_dict()))
        return 0
    print(f"{flow.title} — scenario {scenario.name}: {scenario.description}")
    for v in sim.visited:
        print(f"  {flow.step_id(v.number):>5}  {v.actor:<9} {v.text}")
    if sim.denied:
        print("  (the user declined to authorize the app: the flow ends without a token)")
    return 0


def _diagram(args: argparse.Namespace) -> int:
    sys.stdout.write(mermaid(flow_named(args.flow)))
    return 0


def _serve(args: argparse.Namespace) -> int:
    import signal
    import threading
    from dataclasses import replace

    from conformance.servers import FakeServers
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
    servers = FakeServers(registry, host=args.host, authority_port=args.port, bc_port=args.bc_port)
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
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bc-conformance",
        description="Conformance kit for portals that sign in to Microsoft Entra ID and call Business Central.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sim = sub.add_parser("simulate", help="walk a documented flow for a scenario, step by step")
    sim.add_argument("flow", choices=FLOW_NAMES, metavar="FLOW", help=f"one of: {', '.join(FLOW_NAMES)}")
    all_scenarios = sorted({s for per_flow in SCENARIOS.values() for s in per_flow})
    sim.add_argument("--scenario", required=True, metavar="S", help=f"one of: {', '.join(all_scenarios)}")
    sim.add_argument("--json", action="store_true", help="print the visited steps as JSON")
    sim.set_defaults(func=_simulate)

    dia = sub.add_parser("diagram", help="print a Mermaid state diagram of a flow")
    dia.add_argument("flow", choices=FLOW_NAMES, metavar="FLOW", help=f"one of: {', '.join(FLOW_NAMES)}")
    dia.set_defaults(func=_diagram)

    srv = sub.add_parser("serve", help="serve the fake Authority and Business Central on loopback HTTPS")
    srv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    srv.add_argument("--port", type=int, default=0, help="Authority port (default: any free port)")
    srv.add_argument("--bc-port", type=int, default=0, help="Business Central port (default: any free port)")
    srv.add_argument("--token-lifetime", type=int, default=None, metavar="SECONDS",
                     help="access token lifetime (default 3600)")
    srv.add_argument("--config", metavar="FILE", help="registry of clients and users (.toml or .json)")
    srv.add_argument("--redirect-uri", action="append", metavar="URI",
                     help="also register this redirect URI for the default client (repeatable)")
    srv.set_defaults(func=_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except UsageError as err:
        parser.exit(2, f"bc-conformance {args.command}: error: {err}\n")
