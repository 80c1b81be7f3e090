"""``bc-conformance run``: every scenario of every mode against one target, then every check; results as
``results.json`` (the contract), ``junit.xml`` and the HTML/Markdown reports."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import queue
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from conformance.checks import CHECKS, OUTCOMES, Check, Verdict, evaluate
from conformance.engine import NotRun, ScenarioResult, ScenarioRun, run_scenario
from conformance.errors import InternalError, PortalNotReady
from conformance.explore import (
    BUDGETS,
    EXTERNAL_EXAMPLES,
    EXTERNAL_SHRINK_SECONDS,
    Exploration,
    Opener,
    explore,
    in_process,
)
from conformance.external import ExternalTarget, exploration_opener, run_external_scenario
from conformance.portal_time import INSTALL_HINT, ShiftedClock
from conformance.printable import printable_value
from conformance.progress import SILENT, Progress
from conformance.redact import redact_text
from conformance.scenarios import SCENARIOS, scenario_plan
from conformance.servers import FakeServers
from conformance.targets import InProcessTarget
from fake_authority.jwt import SigningKey
from flows import DOCUMENT, DOCUMENT_URL, FLOWS, MODES

Target = InProcessTarget | ExternalTarget


@dataclass
class RunOptions:
    modes: tuple[str, ...] = tuple(MODES)
    scenarios: tuple[str, ...] = ()  # empty: all
    profile: str = "quick"
    seed: int = 0
    examples: int | None = None  # exploration examples per mode (None: ``BUDGETS`` in-process, fewer for a process)
    request_timeout: float = 10.0
    # A portal that never became ready for a scenario: raise ``PortalNotReady`` (``run`` without --keep-going), or
    # judge it like any other scenario (its checks fail with the reason: the library's and --keep-going's way).
    stop_when_not_ready: bool = False


EXIT_PASSED, EXIT_FAILED, EXIT_USAGE, EXIT_INCOMPLETE = 0, 1, 2, 3
"""``bc-conformance run`` exit codes: every applicable MUST check passed; a MUST check failed; a usage error, a
portal that never became ready or an internal error of the kit (no verdict written); no MUST check failed but some
were not exercised (the run is *incomplete*)."""


def kit_version() -> str:
    try:
        return metadata.version("bc-oauth-conformance")
    except metadata.PackageNotFoundError:
        return "0+unknown"


class ModeResults(dict[str, ScenarioResult]):
    """A mode's scenario results by name, and the scenarios that were not run with the reason (``skipped``), which
    ``judge`` cites in the checks they leave not exercised."""

    def __init__(self) -> None:
        super().__init__()
        self.skipped: dict[str, str] = {}


def run_mode(target: Target, mode: str, options: RunOptions, key: SigningKey, progress: Progress | None = None,
             servers: FakeServers | Sequence[FakeServers] | None = None,
             skipped: dict[str, str] | None = None) -> ModeResults:
    """Every scenario of the mode's flow, each on a fresh portal; ``skipped`` collects what could not run, and why.
    (``run_modes`` for several modes at once.)"""
    per_mode = run_modes(target, (mode,), options, key, progress, servers, {mode: skipped} if skipped is not None
                         else None)
    return per_mode[mode]


def run_modes(target: Target, modes: Sequence[str], options: RunOptions, key: SigningKey,
              progress: Progress | None = None, servers: FakeServers | Sequence[FakeServers] | None = None,
              skipped: dict[str, dict[str, str]] | None = None) -> dict[str, ModeResults]:
    """The scenarios of each mode. A started portal (``--portal-cmd``) plays scenarios concurrently, one per set of
    ``servers`` (each with its own fakes, clock and trace, and its own portal process and port), so results and
    traces do not depend on the order in which they finish; they come back in plan order.

    Raises ``PortalNotReady`` when the portal never became ready and ``options.stop_when_not_ready`` (the other
    scenarios are abandoned), and ``InternalError`` when a fake raised (a bug in the kit)."""
    external = isinstance(target, ExternalTarget)
    plan = scenario_plan(modes, options.scenarios, restarts=not (external and target.url))
    for mode in modes:  # what a --portal-url run cannot play
        for name in scenario_plan((mode,), options.scenarios)[mode]:
            if name not in plan[mode] and skipped is not None:
                skipped.setdefault(mode, {})[name] = ("needs a fresh portal, and a portal given by --portal-url is "
                                                      "not restarted")
    jobs = [(mode, name) for mode in modes for name in plan[mode]]
    pool = [servers] if isinstance(servers, FakeServers) else list(servers or [])
    done: dict[tuple[str, str], ScenarioResult | NotRun] = {}

    progress = progress or SILENT
    for mode in modes:
        progress.plan(mode, len(plan[mode]))

    def play_one(job: tuple[str, str], servers_: FakeServers | None) -> ScenarioResult | NotRun:
        mode, name = job
        progress.begin(mode, name)
        scenario = SCENARIOS[MODES[mode].flow.key][name]
        if isinstance(target, ExternalTarget):
            assert servers_ is not None, "an external target needs the fakes served (FakeServers)"
            result = run_external_scenario(servers_, target, mode, scenario, options.request_timeout)
        else:
            result = run_scenario(target, mode, scenario, key=key, request_timeout=options.request_timeout)
        progress.end(mode, name, "not run" if isinstance(result, NotRun) else "error" if result.error else "played")
        if isinstance(result, ScenarioResult) and result.not_ready and options.stop_when_not_ready:
            raise PortalNotReady(mode, MODES[mode].flow.cli_name, name, result.not_ready)
        return result

    first = play_one(jobs[0], pool[0] if pool else None) if jobs else None
    if first is not None:
        # The first scenario plays alone: a portal that cannot start (or listens on a fixed port of its own) is told
        # so once, clearly, instead of by scenarios racing each other for its port; with --keep-going, such a portal
        # plays the rest one at a time too.
        done[jobs[0]] = first
        if isinstance(first, ScenarioResult) and first.not_ready:
            pool = pool[:1]
    if len(pool) <= 1:
        for job in jobs[1:]:
            done[job] = play_one(job, pool[0] if pool else None)
    else:
        free: queue.SimpleQueue[FakeServers] = queue.SimpleQueue()
        for each in pool:
            free.put(each)

        def on_free_servers(job: tuple[str, str]) -> ScenarioResult | NotRun:
            servers_ = free.get()
            try:
                return play_one(job, servers_)
            finally:
                free.put(servers_)

        with ThreadPoolExecutor(len(pool), thread_name_prefix="scenario") as executor:
            futures = {job: executor.submit(on_free_servers, job) for job in jobs[1:]}
            try:
                for job, future in futures.items():
                    done[job] = future.result()
            except BaseException:
                for future in futures.values():
                    future.cancel()
                raise
    results = {mode: ModeResults() for mode in modes}
    for mode in modes:
        results[mode].skipped.update((skipped or {}).get(mode, {}))
    for (mode, name), result in done.items():
        if isinstance(result, NotRun):
            results[mode].skipped[name] = result.reason
            if skipped is not None:
                skipped.setdefault(mode, {})[name] = result.reason
        else:
            results[mode][name] = result
    return results


def _replay(mode: str, scenarios: Iterable[str], target: Target) -> str:
    names = ",".join(scenarios)
    portal = f" {target.cli_args}" if target.cli_args else ""
    return f"bc-conformance run --mode {mode}{portal}" + (f" --scenario {names}" if names else "")


def _replay_exploration(mode: str, target: Target, options: RunOptions, examples: int) -> str:
    portal = f" {target.cli_args}" if target.cli_args else ""
    scenarios = f" --scenario {','.join(options.scenarios)}" if options.scenarios else ""
    return (f"bc-conformance run --profile full --mode {mode}{scenarios} --seed {options.seed} --examples {examples}"
            f"{portal}")


def _counted(opener: Opener, progress: Progress, group: str, examples: int) -> Opener:
    """The opener, reporting each example (beyond the budget: Hypothesis shrinking a failure)."""
    count = 0
    progress.plan(group, examples)

    @contextlib.contextmanager
    def counted() -> Iterator[tuple[ScenarioRun, str]]:
        nonlocal count
        count += 1
        progress.begin(group, f"example {count}" if count <= examples else f"shrinking a failure ({count})")
        try:
            with opener() as stage:
                yield stage
        finally:
            if count <= examples:
                progress.end(group, f"example {count}")

    return counted


def explore_modes(target: InProcessTarget, options: RunOptions, key: SigningKey,
                  progress: Progress | None = None) -> dict[str, Exploration]:
    """The ``full`` profile's property-based exploration, one state machine per mode."""
    examples = options.examples or BUDGETS["full"]
    out: dict[str, Exploration] = {}
    for mode in options.modes:
        opener = _counted(in_process(target, mode, key), progress or SILENT, f"{mode} exploration (seed "
                          f"{options.seed})", examples)
        out[mode] = explore(target, mode, examples, options.seed, key,
                            _replay_exploration(mode, target, options, examples), opener=opener)
    return out


def explore_external(target: ExternalTarget, servers: FakeServers, options: RunOptions,
                     progress: Progress | None = None) -> dict[str, Exploration]:
    """The exploration against a portal the kit starts: a fresh process per example, on the virtual clock."""
    examples = options.examples or EXTERNAL_EXAMPLES
    out: dict[str, Exploration] = {}
    for mode in options.modes:
        replay = _replay_exploration(mode, target, options, examples)
        if target.url or not isinstance(servers.clock, ShiftedClock):
            why = ("a portal given by --portal-url is not restarted for each example" if target.url
                   else f"clock jumps need the portal's clock under the kit's control; {INSTALL_HINT}")
            out[mode] = Exploration(mode, 0, False, replay=replay, not_exercised=why)
            continue
        opener = _counted(exploration_opener(servers, target, mode, options.request_timeout), progress or SILENT,
                          f"{mode} exploration (seed {options.seed}, a portal process per example)", examples)
        out[mode] = explore(None, mode, examples, options.seed, replay=replay, opener=opener,
                            shrink_seconds=EXTERNAL_SHRINK_SECONDS)
    return out


def _exploration_check(mode: str, found: Exploration) -> dict[str, Any]:
    flow = MODES[mode].flow
    cited = sorted({int(n) for n in re.findall(rf"{flow.prefix}-(\d+)", found.failure)}) or [
        s.number for s in flow.steps]
    sequence = "; ".join(found.counterexample) or "(no rule call: the first state failed)"
    return {
        "id": "explored-interleavings", "title": "Interleavings of users, clock jumps and faults", "mode": mode,
        "flow": flow.key, "steps": cited, "level": "MUST",
        "outcome": "passed" if found.passed else "not_exercised" if found.not_exercised else "failed",
        "message": (f"{found.examples} random sequences followed the table" if found.passed
                    else f"not explored: {found.not_exercised}" if found.not_exercised
                    else f"Hypothesis found and shrank a failing sequence: {found.failure}"),
        "expected": "the monitor sees no move the table does not allow, every Business Central call carries an "
                    "unexpired token of the right principal, no code or refresh token is redeemed twice",
        "received": "" if found.passed or found.not_exercised else f"{sequence} → {found.failure}",
        "refs": [f"{DOCUMENT}, {flow.title} <{DOCUMENT_URL}>", "Hypothesis stateful testing"],
        "scenarios": [], "evidence": [], "replay": found.replay,
    }


def check_doc(check: Check, verdict: Verdict, mode: str, scenarios: list[str], replay: str,
              secrets: Sequence[str] = ()) -> dict[str, Any]:
    """One check's entry in the results document (``checks``): a failure names the steps its evidence points to."""
    flow, hidden = MODES[mode].flow, list(secrets)
    return {
        "id": check.id, "title": check.title, "mode": mode, "flow": flow.key,
        "steps": verdict.steps if verdict.outcome in ("failed", "warning") and verdict.steps
        else list(check.steps[flow.key]),
        "level": check.level, "outcome": verdict.outcome, "message": redact_text(verdict.message, hidden),
        "expected": redact_text(verdict.expected, hidden), "received": redact_text(verdict.received, hidden),
        "refs": list(check.refs), "scenarios": scenarios, "evidence": verdict.evidence, "replay": replay,
    }


def step_docs(mode: str, checks: list[dict[str, Any]], exercised: Callable[[int], bool]) -> list[dict[str, Any]]:
    """Each step of the mode's flow with its verdict: failed when a check citing it failed, else passed when
    ``exercised``, else not exercised."""
    flow = MODES[mode].flow
    out = []
    for step in flow.steps:
        citing = [c for c in checks if step.number in c["steps"]]
        outcome = ("failed" if any(c["outcome"] == "failed" for c in citing) else
                   "passed" if exercised(step.number) else "not_exercised")
        out.append({"mode": mode, "flow": flow.key, "number": step.number, "actor": step.actor, "text": step.text,
                    "outcome": outcome, "checks": [c["id"] for c in citing]})
    return out


def document_head(target: str, modes: list[str], profile: str, seed: int,
                  checks: list[dict[str, Any]]) -> dict[str, Any]:
    """What every results document starts with: the target, the verdict and exit code, the counts."""
    summary = Counter(c["outcome"] for c in checks)
    by_level: dict[str, dict[str, int]] = {}
    for c in checks:
        by_level.setdefault(c["level"], dict.fromkeys(OUTCOMES, 0))[c["outcome"]] += 1
    failed_must = any(c["outcome"] == "failed" and c["level"] == "MUST" for c in checks)
    unexercised_must = any(c["outcome"] == "not_exercised" and c["level"] == "MUST" for c in checks)
    verdict, exit_code = (("failed", EXIT_FAILED) if failed_must else ("incomplete", EXIT_INCOMPLETE)
                          if unexercised_must else ("passed", EXIT_PASSED))
    return {"target": target, "kit_version": kit_version(),
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "modes": modes, "profile": profile,
            "seed": seed, "exit_code": exit_code, "verdict": verdict,
            "summary": {o: summary.get(o, 0) for o in OUTCOMES}, "summary_by_level": by_level, "checks": checks}


def flows_doc() -> dict[str, Any]:
    """The step tables and their edges, so a report renders from the results alone."""
    return {key: {"title": f.title, "prefix": f.prefix,
                  "steps": [{"number": s.number, "actor": s.actor, "text": s.text} for s in f.steps],
                  "edges": [{"source": e.source, "dest": e.dest, "kind": e.kind, "label": e.label} for e in f.edges]}
            for key, f in FLOWS.items()}


def judge(target: Target, per_mode: dict[str, dict[str, ScenarioResult]], options: RunOptions,
          explorations: dict[str, Exploration] | None = None,
          skipped: dict[str, dict[str, str]] | None = None) -> dict[str, Any]:
    """Evaluate every check and build the results document (contract in the README)."""
    checks: list[dict[str, Any]] = []
    steps: list[dict[str, Any]] = []
    scenarios: list[dict[str, Any]] = []
    skipped = {mode: {**getattr(results, "skipped", {}), **(skipped or {}).get(mode, {})}
               for mode, results in per_mode.items()}
    for mode, results in per_mode.items():
        flow = MODES[mode].flow
        secrets = _secrets_of(results)
        for check in CHECKS:
            if not check.applies(mode, flow.key):
                continue
            verdict = evaluate(check, results, mode)
            used = verdict.scenarios or [s for s in check.scenarios if s in results]
            if verdict.outcome == "not_exercised":
                verdict.message += "".join(f"; scenario {name} was not run: {why}" for name, why in
                                           skipped[mode].items() if name in check.scenarios)
            checks.append(check_doc(check, verdict, mode, used, _replay(mode, used, target), secrets))
        if explorations and mode in explorations:
            checks.append(_exploration_check(mode, explorations[mode]))
        visited = set().union(*(r.monitor.visited for r in results.values())) if results else set()
        steps += step_docs(mode, [c for c in checks if c["mode"] == mode], visited.__contains__)
        for name, sr in results.items():
            scenarios.append(_scenario_doc(mode, name, sr, secrets))
        for name, reason in skipped[mode].items():
            scenarios.append({"mode": mode, "flow": flow.key, "name": name, "outcome": "not_exercised",
                              "description": SCENARIOS[flow.key][name].description, "error": reason, "visits": [],
                              "violations": [], "waited": 0.0, "trace": []})
    # Portal text (its output, pages, headers) reaches messages and traces: made printable here, where the document
    # every output comes from is made (results.json, junit.xml, the reports, the console summary).
    return printable_value({
        **document_head(target.name, list(per_mode), options.profile, options.seed, checks),
        "explorations": [{"mode": e.mode, "examples": e.examples, "passed": e.passed,
                          "counterexample": e.counterexample, "failure": e.failure, "replay": e.replay,
                          "not_exercised": e.not_exercised}
                         for e in (explorations or {}).values()],
        "steps": steps,
        "scenarios": scenarios,
        "flows": flows_doc(),
    })


INTERNAL_ERROR_NAME = "internal-error.json"


def write_internal_error(err: InternalError, out_dir: Path, argv: Iterable[str] = ()) -> Path | None:
    """``DIR/internal-error.json``: what to attach to a bug report (the exception, where, the traceback and the
    redacted trace of the scenario concerned). No verdict is written; returns None if the file cannot be written."""
    secrets = _secrets_of({"_": err.result}) if err.result is not None else []
    doc: dict[str, Any] = {
        "internal_error": "an internal error in the kit (please report it); no verdict was written",
        "error": err.error, "where": err.where, "traceback": redact_text(err.tb, secrets),
        "kit_version": kit_version(), "python": sys.version.split()[0],
        "command": redact_text(" ".join(argv), secrets),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    if err.result is not None:
        doc["scenario"] = _scenario_doc(err.result.mode, err.result.scenario.name, err.result, secrets)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / INTERNAL_ERROR_NAME
        path.write_text(json.dumps(printable_value(doc), indent=2, ensure_ascii=False, default=str) + "\n",
                        encoding="utf-8")
    except OSError:
        return None
    return path


def _secrets_of(results: dict[str, ScenarioResult]) -> list[str]:
    values: set[str] = set()
    for sr in results.values():
        values.add(sr.config.client_secret)
        values |= sr.issued_values
    return sorted(values, key=len, reverse=True)


def _scenario_doc(mode: str, name: str, sr: ScenarioResult, secrets: list[str]) -> dict[str, Any]:
    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return redact_text(value, secrets)
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    trace = []
    for event in sr.trace.events:
        doc = clean(event.as_dict())
        if event.seq in sr.monitor.step_of:
            doc["step"] = sr.monitor.step_of[event.seq]
        trace.append(doc)
    failed = bool(sr.error) or bool(sr.monitor.violations)
    return {
        "mode": mode, "flow": MODES[mode].flow.key, "name": name, "description": sr.scenario.description,
        "outcome": "error" if sr.error else ("failed" if failed else "passed"),
        "visits": [{"user": v.user, "session": v.session, "kind": v.kind, "steps": vs.steps,
                    "variants": vs.variants, "final_status": v.status, "completed": vs.completed,
                    "problem": clean(v.problem)}
                   for v, vs in zip(sr.visits, sr.monitor.visits, strict=False)],
        "violations": [{"step": v.step, "into": v.into, "seq": v.seq, "kind": v.kind,
                        "message": clean(v.message)} for v in sr.monitor.violations],
        "waited": round(sr.waited, 3),
        "time_control": sr.time_control,
        "wall_time": round(sr.wall_time, 3),
        "error": clean(sr.error),
        "trace": trace,
    }


def junit_xml(results: dict[str, Any]) -> bytes:
    """One testcase per check, named ``mode > flow > check``; failures carry the message."""
    suite = ET.Element("testsuite", name="bc-conformance", tests=str(len(results["checks"])),
                       failures=str(sum(c["outcome"] == "failed" for c in results["checks"])),
                       skipped=str(sum(c["outcome"] in ("not_applicable", "not_exercised") for c in results["checks"])))
    for c in results["checks"]:
        name = f"{c['mode']} > {c['flow']} > {c['id']}"
        case = ET.SubElement(suite, "testcase", classname=f"bc_conformance.{c['mode']}", name=name)
        steps = ", ".join(f"{'CC' if c['flow'] == 'client_credentials' else 'AC'}-{n}" for n in c["steps"])
        text = f"[{c['level']}] {steps}: {c['message']}\nexpected: {c['expected']}\nreceived: {c['received']}"
        if c["outcome"] == "failed":
            ET.SubElement(case, "failure", message=c["message"], type=c["level"]).text = text
        elif c["outcome"] in ("not_applicable", "not_exercised"):
            ET.SubElement(case, "skipped", message=f"{c['outcome']}: {c['message']}")
        elif c["outcome"] == "warning":
            ET.SubElement(case, "system-out").text = f"WARNING {text}"
    return ET.tostring(suite, encoding="utf-8", xml_declaration=True)


def write_outputs(results: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write every output to a temporary name first, then rename: a failed write leaves nothing half-done."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes] = {
        "results.json": (json.dumps(results, indent=2, ensure_ascii=False) + "\n").encode(),
        "junit.xml": junit_xml(results),
    }
    try:
        from reports import render_html, render_markdown  # the report package renders results only
    except ImportError:
        pass
    else:
        files["report.html"] = render_html(results).encode()
        files["report.md"] = render_markdown(results).encode()
    written: dict[str, Path] = {}
    temps = []
    try:
        for name, data in files.items():
            tmp = out_dir / f".{name}.tmp"
            tmp.write_bytes(data)
            temps.append((tmp, out_dir / name))
        for tmp, final in temps:
            tmp.replace(final)
            written[final.name] = final
    finally:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)
    return written
