"""``bc-conformance selftest``: the kit proves it catches what it claims to catch. The reference portal must
pass every check; every mutant (``portals.mutants``) must be caught by each check it names — ``failed`` for
a MUST check, ``warning`` for a SHOULD check."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from conformance.checks import CHECKS
from conformance.progress import Progress
from conformance.run import RunOptions, explore_modes, judge, run_mode
from conformance.targets import REFERENCE, InProcessTarget
from fake_authority.jwt import SigningKey
from flows import MODES
from portals.mutants import MUTANTS

LEVEL_OUTCOME = {"MUST": "failed", "SHOULD": "warning", "MAY": "warning"}


@dataclass
class Row:
    mutant: str
    breaks: str
    mode: str
    check: str
    level: str
    outcome: str
    caught: bool
    message: str


def _results(spec: str, modes: tuple[str, ...], profile: str, key: SigningKey,
             progress: Progress | None) -> dict[str, Any]:
    target = InProcessTarget.load(spec)
    options = RunOptions(modes=modes, profile=profile)
    per_mode = {m: run_mode(target, m, options, key, progress) for m in modes}
    explorations = explore_modes(target, options, key, progress) if profile == "full" else None
    return judge(target, per_mode, options, explorations)


def selftest(profile: str = "quick", progress: Progress | None = None) -> dict[str, Any]:
    key = SigningKey()
    reference = _results(REFERENCE, tuple(MODES), profile, key, progress.scoped("reference") if progress else None)
    bad = [c for c in reference["checks"] if c["outcome"] in ("failed", "warning")]
    levels = {c.id: c.level for c in CHECKS} | {"explored-interleavings": "MUST"}
    rows: list[Row] = []
    for mutant in MUTANTS:
        results = _results(mutant.spec, tuple(mutant.catches), profile, key,
                           progress.scoped(mutant.name) if progress else None)
        for mode, check_ids in mutant.catches.items():
            for check_id in check_ids:
                found = next((c for c in results["checks"] if c["mode"] == mode and c["id"] == check_id), None)
                outcome = found["outcome"] if found else "missing"
                level = levels.get(check_id, "?")
                rows.append(Row(mutant.name, mutant.breaks, mode, check_id, level, outcome,
                                outcome == LEVEL_OUTCOME.get(level), found["message"] if found else ""))
    return {
        "profile": profile,
        "reference": {"passed": not bad, "problems": [f"{c['mode']} {c['id']}: {c['message']}" for c in bad],
                      "summary": reference["summary"]},
        "mutants": [asdict(r) for r in rows],
        "passed": not bad and all(r.caught for r in rows),
    }


def format_matrix(report: dict[str, Any]) -> str:
    ref = report["reference"]
    lines = [f"reference portal: {'passes every check' if ref['passed'] else 'FAILS'} "
             f"({', '.join(f'{n} {k}' for k, n in ref['summary'].items() if n)})"]
    lines += [f"  ✗ {p}" for p in ref["problems"]]
    rows = [("mutant", "mode", "expected check", "level", "outcome", "")]
    rows += [(r["mutant"], r["mode"], r["check"], r["level"], r["outcome"], "caught" if r["caught"] else "MISSED")
             for r in report["mutants"]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    caught = sum(r["caught"] for r in report["mutants"])
    lines.append(f"{'PASSED' if report['passed'] else 'FAILED'}: {caught}/{len(report['mutants'])} expected "
                 f"detections, {len({r['mutant'] for r in report['mutants']})} mutants")
    return "\n".join(lines)
