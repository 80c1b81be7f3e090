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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except UsageError as err:
        parser.exit(2, f"bc-conformance {args.command}: error: {err}\n")
