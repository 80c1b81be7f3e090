"""The checks catalogue is generated from the registry: every check is listed with the registry's steps, level and
references, and the README's table is the generated one (so it cannot drift from the checks that run)."""

from __future__ import annotations

import json

from conformance.catalogue import (
    ANY_TRACE,
    BEGIN,
    END,
    README,
    WIDTH,
    WRITE_COMMAND,
    as_json,
    as_markdown,
    as_text,
    catalogue,
    readme_block,
    readme_section,
)
from conformance.checks import CHECKS
from conformance.explore import Exploration
from conformance.load.checks import LOAD_CHECKS
from conformance.run import _exploration_check
from flows import FLOWS, MODES

EXPLORED = "explored-interleavings"


def _by_id() -> dict[str, dict]:
    return {doc["id"]: doc for doc in json.loads(as_json(catalogue()))}


def test_json_lists_every_registered_check_then_the_exploration():
    docs = json.loads(as_json(catalogue()))
    assert [d["id"] for d in docs] == [c.id for c in CHECKS] + [EXPLORED] + [c.id for c in LOAD_CHECKS]
    assert {d["id"] for d in docs if d["profiles"] == ["load"]} == {c.id for c in LOAD_CHECKS}
    assert all(d["needs"].startswith("bc-conformance load") for d in docs if d["profiles"] == ["load"])
    assert [list(d) for d in docs] == [list(docs[0])] * len(docs), "every object has the same keys, in one order"


def test_json_steps_level_refs_and_scenarios_come_from_the_registry():
    docs = _by_id()
    for check in CHECKS:
        doc = docs[check.id]
        expected = {key: [flow.step_id(n) for n in check.steps[key]] for key, flow in FLOWS.items()
                    if key in check.steps}
        assert doc["steps"] == expected, check.id
        assert all(i.startswith(f"{FLOWS[key].prefix}-") for key, ids in doc["steps"].items() for i in ids)
        assert (doc["level"], doc["refs"], doc["scenarios"]) == (check.level, list(check.refs), list(check.scenarios))
        assert doc["modes"] == [m for m in check.modes if check.applies(m, MODES[m].flow.key)]
        assert doc["profiles"] == ["quick", "full"]
        assert (doc["needs"] == ANY_TRACE) == (not check.scenarios), check.id
        assert all(name in doc["needs"] for name in check.scenarios), check.id


def test_json_exploration_entry_is_what_the_run_reports_and_full_only():
    doc = _by_id()[EXPLORED]
    reported = [_exploration_check(mode, Exploration(mode, 0, True)) for mode in MODES]
    assert (doc["title"], doc["level"]) == (reported[0]["title"], reported[0]["level"]) == (doc["title"], "MUST")
    assert doc["profiles"] == ["full"] and "--profile full" in doc["needs"]
    assert doc["modes"] == list(MODES)
    for r in reported:
        assert doc["steps"][r["flow"]] == [FLOWS[r["flow"]].step_id(n) for n in r["steps"]]
        assert set(r["refs"]) <= set(doc["refs"])


def test_needs_say_when_time_must_pass_and_a_fresh_portal_is_needed():
    docs = _by_id()
    assert "--real-time" in docs["valid-token-reused"]["needs"]
    assert "never runs with --real-time" in docs["expired-token-replaced"]["needs"]  # expired-by-hours
    assert "--portal-url" in docs["missing-token-fetched"]["needs"]
    assert "runs with --portal-url too" in docs["sessions-isolated"]["needs"]  # two-users needs no fresh portal


def test_text_names_every_check_and_fits_the_terminal():
    text = as_text(catalogue())
    for check_id in [c.id for c in CHECKS] + [EXPLORED]:
        assert any(line.startswith(f"{check_id}  [") for line in text.splitlines()), check_id
    assert "--profile full only" in text
    assert max(len(line) for line in text.splitlines()) <= WIDTH


def test_markdown_has_one_row_per_check():
    rows = [line for line in as_markdown(catalogue()).splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == [c.id for c in CHECKS] + [EXPLORED] + [c.id for c in LOAD_CHECKS]


def test_readme_block_is_the_generated_catalogue():
    text = README.read_text(encoding="utf-8")
    assert text.count(BEGIN) == 1 and text.count(END) == 1, f"README.md needs one {BEGIN} … {END} block"
    assert readme_section(text) == readme_block(), (
        f"README.md's checks table differs from the check registry; regenerate it with `{WRITE_COMMAND}`")
    assert as_markdown(catalogue()) in text
