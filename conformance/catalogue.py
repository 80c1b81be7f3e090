"""The checks catalogue, generated from the check registry (``conformance.checks.CHECKS``) and the exploration check
``conformance.run`` adds with ``--profile full``: what each check verifies, where, and what it takes to exercise it.

Generated, never written by hand, so the catalogue (``bc-conformance checks [--json]``, the README's table) cannot
drift from the checks that run. ``python -m conformance.catalogue --write-readme`` rewrites the README's block.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from conformance.checks import CHECKS, Check
from conformance.explore import Exploration
from conformance.run import _exploration_check
from conformance.scenarios import SCENARIOS, Scenario
from flows import FLOWS, MODES

README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN, END = "<!-- checks:begin -->", "<!-- checks:end -->"
WRITE_COMMAND = "python -m conformance.catalogue --write-readme"
ANY_TRACE = "any scenario's trace"
WIDTH = 120  # terminal columns the text table fits

# What "time must pass" and "a fresh portal" cost the user, said once for every check (and the exploration).
_CLOCK = "the portal's clock moved by the kit (in-process, or --portal-cmd with libfaketime)"
_FRESH = "a fresh portal (not available with --portal-url)"


@dataclass(frozen=True)
class CatalogueEntry:
    """One check as the catalogue shows it; field order is the JSON key order."""

    id: str
    title: str
    level: str  # MUST | SHOULD | MAY
    profiles: tuple[str, ...]  # the --profile values that evaluate it
    modes: tuple[str, ...]
    steps: dict[str, tuple[str, ...]]  # flow key → step ids ("CC-2"), in FLOWS order
    refs: tuple[str, ...]
    scenarios: tuple[str, ...]  # empty: the check reads every scenario's trace
    needs: str  # what it takes to exercise the check, in one sentence

    @property
    def full_only(self) -> bool:
        return self.profiles == ("full",)


# ------------------------------------------------------------------------------------------ building


def _step_ids(steps: dict[str, Iterable[int]]) -> dict[str, tuple[str, ...]]:
    """Step numbers per flow as the ids the reports use, flows in table order (never a number typed here)."""
    return {key: tuple(flow.step_id(n) for n in steps[key]) for key, flow in FLOWS.items() if key in steps}


def _subject(names: Sequence[str], of: Sequence[str]) -> tuple[str, str]:
    """Who a clause is about, and its verb's ending: "it"/"-s", "both"/"", "valid-token"/"-s", "a, b"/""."""
    if len(of) == 1:
        return "it", "s"
    if len(names) == len(of):
        return ("both" if len(of) == 2 else "all of them"), ""
    return ", ".join(names), "s" if len(names) == 1 else ""


def _scenario(check: Check, name: str) -> Scenario:
    """The scenario a check reads, from the flows the check verifies (a name the registry lacks is a kit bug)."""
    for key in (k for k in FLOWS if k in check.steps):
        if name in SCENARIOS.get(key, {}):
            return SCENARIOS[key][name]
    raise KeyError(f"check {check.id} reads scenario {name!r}, which none of its flows has")


def needs(check: Check) -> str:
    """Which scenarios must run, whether time must pass in them and whether they need a fresh portal."""
    if not check.scenarios:
        return ANY_TRACE
    scenarios = [_scenario(check, name) for name in check.scenarios]
    names = [s.name for s in scenarios]
    parts = [f"scenario{'s' if len(names) > 1 else ''} {', '.join(names)}"]
    timed = [s.name for s in scenarios if s.needs_time]
    if timed:
        waits = [s.name for s in scenarios if s.needs_time and s.real_waits]
        who, s_ = _subject(timed, names)
        parts.append(f"{who} need{s_} time to pass: {_CLOCK}{', or --real-time' if waits else ''}")
        if waits and len(waits) < len(timed):
            who, s_ = _subject([n for n in timed if n not in waits], names)
            parts.append(f"{who} never run{s_} with --real-time (it would wait hours)")
    fresh = [s.name for s in scenarios if s.fresh_portal]
    if fresh:
        who, s_ = _subject(fresh, names)
        parts.append(f"{who} need{s_} {_FRESH}")
    else:
        parts.append("runs with --portal-url too")
    return "; ".join(parts)


def _from_check(check: Check, profiles: tuple[str, ...] = ("quick", "full")) -> CatalogueEntry:
    modes = tuple(m for m in check.modes if check.applies(m, MODES[m].flow.key))
    return CatalogueEntry(check.id, check.title, check.level, profiles, modes, _step_ids(check.steps),
                          tuple(check.refs), tuple(check.scenarios), check.needs or needs(check))


def _exploration() -> CatalogueEntry:
    """The check ``conformance.run`` adds per mode with --profile full, as it reports a passed exploration (which
    cites every step of the mode's flow), merged over the modes."""
    docs = [_exploration_check(mode, Exploration(mode, 0, True)) for mode in MODES]
    first = docs[0]
    steps = {doc["flow"]: doc["steps"] for doc in docs}
    # Each mode's document reference first, then what the modes share (the refs' order within a mode).
    refs = tuple(dict.fromkeys(ref for i in range(max(len(d["refs"]) for d in docs)) for d in docs
                               for ref in d["refs"][i:i + 1]))
    scenarios = tuple(dict.fromkeys(name for doc in docs for name in doc["scenarios"]))
    return CatalogueEntry(
        first["id"], first["title"], first["level"], ("full",), tuple(doc["mode"] for doc in docs), _step_ids(steps),
        refs, scenarios,
        f"--profile full only: random sequences of users, clock jumps and faults (Hypothesis); each example needs "
        f"{_FRESH} and {_CLOCK}; never with --real-time")


def catalogue() -> list[CatalogueEntry]:
    """Every registered check, in registry order, then the exploration check, then the checks of
    ``bc-conformance load`` (profile "load")."""
    from conformance.load.checks import LOAD_CHECKS

    return [*(_from_check(check) for check in CHECKS), _exploration(),
            *(_from_check(check, ("load",)) for check in LOAD_CHECKS)]


# ------------------------------------------------------------------------------------------ rendering


def as_json(entries: Iterable[CatalogueEntry]) -> str:
    """A JSON list, keys in field order (stable for diffs and scripts)."""
    return json.dumps([asdict(e) for e in entries], indent=2, ensure_ascii=False) + "\n"


def _steps_text(entry: CatalogueEntry, sep: str = "; ") -> str:
    return sep.join(", ".join(ids) for ids in entry.steps.values())


def as_text(entries: Iterable[CatalogueEntry]) -> str:
    """One block per check, wrapped to ``WIDTH`` columns, for the terminal; cited URLs are numbered once, at the end,
    so a reference fits its line."""
    label = 15
    urls: list[str] = []

    def field(name: str, value: str) -> list[str]:
        return textwrap.wrap(value, WIDTH, initial_indent=f"  {name:<{label - 2}}", subsequent_indent=" " * label,
                             break_on_hyphens=False) or [f"  {name}"]

    def ref(text: str) -> str:
        match = _LINKED.match(text)
        if not match:
            return text
        if match.group(2) not in urls:
            urls.append(match.group(2))
        return f"{match.group(1)} [{urls.index(match.group(2)) + 1}]"

    blocks = []
    for e in entries:
        head = f"{e.id}  [{e.level}{', --profile full only' if e.full_only else ''}]  {e.title}"
        lines = textwrap.wrap(head, WIDTH, subsequent_indent="  ", break_on_hyphens=False)
        lines += field("modes", ", ".join(e.modes))
        lines += field("steps", _steps_text(e))
        lines += field("exercised by", e.needs)
        lines += field("refs", "; ".join(ref(r) for r in e.refs))
        blocks.append("\n".join(lines))
    links = [f"[{i}] {url}" for i, url in enumerate(urls, 1)]
    return "\n\n".join(blocks + (["\n".join(links)] if links else [])) + "\n"


_LINKED = re.compile(r"^(.*\S)\s+<(https?://[^>]+)>$")


def _md(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


_FLAG = re.compile(r"(?<![\w`-])(--[a-z][a-z-]*)")


def _md_text(text: str) -> str:
    """Prose with its command-line flags as code."""
    return _FLAG.sub(r"`\1`", _md(text))


def _md_ref(ref: str) -> str:
    """``text <url>`` (how the registry cites documents) as a Markdown link."""
    match = _LINKED.match(ref)
    return f"[{_md(match.group(1))}]({match.group(2)})" if match else _md(ref)


def as_markdown(entries: Iterable[CatalogueEntry]) -> str:
    """A Markdown table, one row per check (the README's generated block)."""
    rows = ["| check | level | modes | steps | exercised by | references |", "|---|---|---|---|---|---|"]
    for e in entries:
        level = f"{e.level}, `--profile full` only" if e.full_only else e.level
        rows.append(f"| `{e.id}`<br>{_md(e.title)} | {level} | {', '.join(e.modes)} | {_steps_text(e, '<br>')} | "
                    f"{_md_text(e.needs)} | {'<br>'.join(_md_ref(r) for r in e.refs)} |")
    return "\n".join(rows) + "\n"


# ------------------------------------------------------------------------------------------ README block


def readme_block(entries: Iterable[CatalogueEntry] | None = None) -> str:
    """What belongs between the README's markers: a line naming the generator, then the table."""
    return (f"Generated from the check registry: `bc-conformance checks` prints it (`--json` as JSON); "
            f"`{WRITE_COMMAND}` rewrites this table.\n\n"
            + as_markdown(catalogue() if entries is None else entries))


def readme_section(text: str) -> str | None:
    """The text between the markers (without them), or None when the README has no block."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        return None
    return text[start + len(BEGIN):end].strip("\n") + "\n"


def write_readme(path: Path = README) -> bool:
    """Rewrite the block between the markers; True when the file changed."""
    text = path.read_text(encoding="utf-8")
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"{path}: no {BEGIN} … {END} block to rewrite")
    new = f"{text[:start]}{BEGIN}\n{readme_block()}{text[end:]}"
    if new == text:
        return False
    path.write_text(new, encoding="utf-8")
    return True


# ------------------------------------------------------------------------------------------ entry points


def print_catalogue(json_output: bool = False) -> int:
    """``bc-conformance checks [--json]``: the catalogue on stdout."""
    entries = catalogue()
    sys.stdout.write(as_json(entries) if json_output else as_text(entries))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m conformance.catalogue``: print the catalogue, or keep the README's generated block current."""
    parser = argparse.ArgumentParser(prog="python -m conformance.catalogue", description=__doc__)
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print the catalogue as JSON")
    out.add_argument("--markdown", action="store_true", help="print the Markdown table")
    out.add_argument("--write-readme", action="store_true", help=f"rewrite the README block ({BEGIN} … {END})")
    args = parser.parse_args(argv)
    if args.write_readme:
        changed = write_readme()
        print(f"{README}: {'rewritten' if changed else 'already current'}")
        return 0
    if args.markdown:
        sys.stdout.write(as_markdown(catalogue()))
        return 0
    return print_catalogue(args.json)


if __name__ == "__main__":
    raise SystemExit(main())
