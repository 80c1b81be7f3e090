"""Stable anchors (HTML ids) of the report, so links in tickets and CI summaries keep working across runs.

The scheme, built only from names in results (never from counters that shift when a check is added):

==========================================  =====================================================
``top``, ``summary``, ``failures``          the header (target, verdict); the first section, every check
                                            that failed, warned or was not exercised and every scenario
                                            that did not pass; that list within it
``load``, ``load-chart``                    a load run's section (only when results hold ``load``) and its chart
``counts``                                  the counts by outcome, level and mode
``mode-<mode>``                             a mode's section, e.g. ``mode-AzApp``
``diagram-<mode>``                          a mode's flow diagram
``<mode>-<prefix>-<n>``                     a step of the mode's table, e.g. ``AzApp-CC-3``, ``AzUser-AC-7``
``check-<mode>-<check id>``                 a check as run in one mode, e.g. ``check-AzApp-valid-token-reused``
``check-<check id>``                        the first mode's instance of that check (a short alias)
``scenario-<mode>-<name>``                  a scenario, e.g. ``scenario-AzUser-missing-token``
``scenario-<mode>-<name>-e<seq>``           one trace event of that scenario, by its ``seq``
==========================================  =====================================================

Names are kept as they are when they are made of letters, digits, ``_``, ``.`` and ``-``; anything else
becomes ``-``.
"""

from __future__ import annotations

import re

TOP = "top"
SUMMARY = "summary"
FAILURES = "failures"
COUNTS = "counts"

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def slug(name: object) -> str:
    """An id-safe form of a name from results; never empty."""
    return _UNSAFE.sub("-", str(name)).strip("-") or "x"


def mode_anchor(mode: str) -> str:
    return f"mode-{slug(mode)}"


def diagram_anchor(mode: str) -> str:
    return f"diagram-{slug(mode)}"


def step_anchor(mode: str, prefix: str, number: object) -> str:
    return f"{slug(mode)}-{slug(prefix)}-{slug(number)}"


def check_anchor(mode: str, check_id: str) -> str:
    return f"check-{slug(mode)}-{slug(check_id)}"


def check_alias(check_id: str) -> str:
    return f"check-{slug(check_id)}"


def scenario_anchor(mode: str, name: str) -> str:
    return f"scenario-{slug(mode)}-{slug(name)}"


def event_anchor(mode: str, scenario: str, seq: object) -> str:
    return f"{scenario_anchor(mode, scenario)}-e{slug(seq)}"
