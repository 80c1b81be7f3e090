"""The load run's results document: the same top-level keys and per-check keys as ``conformance.run.judge`` (so
``write_outputs`` writes results.json, junit.xml and the reports), plus ``load``, Locust's figures and the fakes':

``load`` = {
  ``mode``, ``users``, ``workers`` (0: one Locust process), ``duration_s``, ``time_control``,
  ``visits``: {``total``, ``working``, ``clean_errors``, ``broken``, ``stopped``, ``per_second``},
  ``requests``: [{``name`` (the flow step, e.g. "AC-1 portal page"), ``method``, ``requests``, ``failures``,
                  ``rps``, ``avg_ms``, ``max_ms``, ``p50_ms``, ``p95_ms``, ``p99_ms``}],  ``total``: the same, all,
  ``started``: the wall time the users started,
  ``failures_over_time``: [[second since the start, failures]], ``requests_over_time``: likewise,
  ``errors``: [{``name``, ``error``, ``occurrences``}] (Locust's, redacted),
  ``epochs``: [{``index``, ``wall``, ``virtual``}] (each clock move past every token's expiry),
  ``token_requests_per_expiry``: [{``epoch``, ``token_requests``, ``sessions``, ``tokens_at_bc``, ``holder``
                  ("account", "delegate account", "application" or "session"), ``max_per_holder``, ``over``}],
  ``throttle``: {``calls_per_user``, ``window_s``, ``responses_429``},
  ``fakes``: {``cpu_seconds``, ``runner_cpu_seconds``, ``portal_cpu_seconds``, ``cpu_share`` (the fakes' share of
              the run's CPU), ``trace_events``, ``trace_dropped`` (always 0: the trace is unbounded), ``servers``
              (each fake server's counters: connections, refusals)},
}
"""

from __future__ import annotations

from typing import Any

from conformance.checks import evaluate
from conformance.load.checks import LOAD_CHECKS, per_expiry
from conformance.load.evidence import LoadEvidence
from conformance.printable import printable_value
from conformance.redact import redact_text
from conformance.run import check_doc, document_head, flows_doc, step_docs
from flows import MODES


def judge_load(evidence: LoadEvidence, target: str, replay: str) -> dict[str, Any]:
    """Evaluate every load check on the run's evidence and build the results document."""
    mode, flow = evidence.mode, MODES[evidence.mode].flow
    checks = []
    for check in LOAD_CHECKS:
        if flow.key not in check.steps:
            continue
        verdict = (evaluate(check, evidence, mode) if mode in check.modes else  # type: ignore[arg-type]
                   check.evaluate(evidence, mode))  # type: ignore[arg-type]  # the check says why it does not apply
        checks.append(check_doc(check, verdict, mode, ["load"], replay))

    def exercised(number: int) -> bool:  # a step is shown as passed when a check citing it passed
        return any(c["outcome"] == "passed" for c in checks if number in c["steps"])

    return printable_value({
        **document_head(target, [mode], "load", 0, checks),
        "explorations": [], "steps": step_docs(mode, checks, exercised), "scenarios": [], "flows": flows_doc(),
        "load": load_figures(evidence),
    })


def load_figures(evidence: LoadEvidence) -> dict[str, Any]:
    """The ``load`` key (schema in the module docstring)."""
    stats = evidence.stats
    judged = [v for v in evidence.visits if not v.stopped]
    working = sum(1 for v in judged if v.on_portal and 200 <= v.status < 300 and not v.problem)
    clean = sum(1 for v in judged if v.on_portal and v.status >= 400 and v.status != 500 and not v.problem)
    keys = ("name", "method", "requests", "failures", "rps", "avg_ms", "max_ms", "p50_ms", "p95_ms", "p99_ms")
    return {
        "mode": evidence.mode, "users": evidence.users, "workers": evidence.workers,
        "duration_s": evidence.duration, "time_control": evidence.time_control,
        "visits": {"total": len(evidence.visits), "working": working, "clean_errors": clean,
                   "broken": len(judged) - working - clean, "stopped": len(evidence.visits) - len(judged),
                   "per_second": round(len(judged) / max(evidence.duration, 1e-9), 2)},
        "requests": [{k: e[k] for k in keys} for e in stats.get("entries", [])],
        "total": {k: stats["total"][k] for k in keys} if "total" in stats else {},
        "started": stats.get("started"),  # wall time of the first user: where the chart puts the clock moves
        "failures_over_time": stats.get("failures_per_second", []),
        "requests_over_time": stats.get("requests_per_second", []),
        "errors": [{**e, "error": redact_text(e["error"])} for e in stats.get("errors", [])],
        "epochs": [{"index": e.index, "wall": round(e.wall, 3), "virtual": round(e.virtual, 3)}
                   for e in evidence.epochs],
        "token_requests_per_expiry": [{k: v for k, v in row.items() if k not in ("seqs", "users")}
                                      for row in per_expiry(evidence, evidence.mode)],
        "throttle": {"calls_per_user": evidence.throttle.calls_per_user, "window_s": evidence.throttle.window,
                     "responses_429": sum(1 for e in evidence.bc_calls if e.status == 429)},
        "fakes": {"cpu_seconds": evidence.cpu.get("fakes_seconds", 0.0),
                  "runner_cpu_seconds": evidence.cpu.get("runner_seconds", 0.0),
                  "portal_cpu_seconds": evidence.cpu.get("portal_seconds", 0.0),
                  "cpu_share": evidence.cpu.get("fakes_share", 0.0), "trace_events": len(evidence.events),
                  "trace_dropped": evidence.trace_dropped, "servers": stats.get("fakes_servers", {})},
    }
