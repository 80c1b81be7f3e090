"""The Locust process: ``python -m conformance.load.runner CONFIG.json``.

It imports locust before anything else, because locust monkey-patches sockets, ssl and threading with gevent on
import, and ssl or requests imported earlier keep the unpatched versions (``ssl`` warns, and blocking calls stall
every user). That is why the orchestrator — whose fakes are asyncio servers in real threads — runs Locust in this
separate process. ``role`` in the configuration chooses Locust's runner: ``local`` (one process), ``master`` (waits
for ``workers`` workers, aggregates their statistics and collects their visits over Locust's messages) or
``worker`` (connects to the master at ``master_host:master_port``; remote workers run this same module with a
copy of the configuration, ``role`` set to ``worker`` and ``master_host`` set to the orchestrator's address).

Writes to ``out_dir``: ``started`` (the wall time the users started, read by the orchestrator's clock),
``visits.jsonl`` (what the users saw, ``conformance.load.evidence``) and ``stats.json`` (Locust's figures).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import gevent
import locust  # noqa: F401  (before requests and ssl: importing locust patches the standard library with gevent)
from locust.env import Environment
from locust.stats import stats_history

from conformance.load.config import RunConfig
from conformance.load.evidence import Visit
from conformance.load.users import user_class

VISITS_MESSAGE = "bc_conformance_visits"
FLUSH_EVERY = 1.0  # seconds between a worker's batches of visits to the master
FINAL_WAIT = 20.0  # seconds the master waits for the workers' last batches after stopping them
WORKER_WAIT = 60.0  # seconds the master waits for its workers to connect


def figures(env: Environment, started: float, stopped: float) -> dict[str, Any]:
    """Locust's statistics: per request name and in total, percentiles, and failures per second."""

    def entry(e: Any) -> dict[str, Any]:
        return {"name": e.name, "method": e.method, "requests": e.num_requests, "failures": e.num_failures,
                "rps": round(e.num_requests / max(stopped - started, 1e-9), 2),
                "avg_ms": round(e.avg_response_time, 1), "max_ms": round(e.max_response_time or 0, 1),
                "p50_ms": e.get_response_time_percentile(0.5), "p95_ms": e.get_response_time_percentile(0.95),
                "p99_ms": e.get_response_time_percentile(0.99)}

    total = env.stats.total
    base = int(started)
    return {
        "started": started, "stopped": stopped, "user_count": env.runner.user_count if env.runner else 0,
        "entries": [entry(e) for e in sorted(env.stats.entries.values(), key=lambda e: e.name)],
        "total": entry(total),
        "failures_per_second": sorted([int(t) - base, n] for t, n in total.num_fail_per_sec.items()),
        "requests_per_second": sorted([int(t) - base, n] for t, n in total.num_reqs_per_sec.items()),
        "history": [{"time": h.get("time"), "current_rps": h["current_rps"][1], "current_fail_per_sec":
                     h["current_fail_per_sec"][1], "user_count": h["user_count"][1]} for h in env.stats.history],
        "errors": [{"name": e["name"], "error": str(e["error"])[:200], "occurrences": e["occurrences"]}
                   for e in env.stats.serialize_errors().values()],
        "cpu_seconds": _cpu(),
    }


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


def run(cfg: RunConfig) -> int:
    out = Path(cfg.out_dir)
    visits: list[Visit] = []
    env = Environment(user_classes=[user_class(cfg, visits.append)], host=cfg.portal_url,
                      stop_timeout=cfg.request_timeout * 2)
    if cfg.role == "worker":
        return _work(env, cfg, visits)
    runner = env.create_master_runner("127.0.0.1", cfg.master_port) if cfg.role == "master" else \
        env.create_local_runner()
    finals: list[float] = []  # workers' CPU seconds, one per worker that sent its last batch
    if cfg.role == "master":
        def collect(msg: Any, **_: Any) -> None:
            visits.extend(Visit.of(v) for v in msg.data["visits"])
            if msg.data.get("final"):
                finals.append(float(msg.data.get("cpu_seconds", 0.0)))

        runner.register_message(VISITS_MESSAGE, collect)
        deadline = time.monotonic() + WORKER_WAIT
        while runner.worker_count < cfg.workers:
            if time.monotonic() > deadline:
                print(f"bc-conformance load: expected {cfg.workers} Locust workers, {runner.worker_count} connected "
                      f"within {WORKER_WAIT:g} s", file=sys.stderr)
                runner.quit()
                return 2
            gevent.sleep(0.1)
    if cfg.web_port:
        env.create_web_ui("127.0.0.1", cfg.web_port)
    gevent.spawn(stats_history, runner)
    started = time.time()
    (out / "started").write_text(f"{started}\n")
    runner.start(cfg.users, cfg.spawn_rate)
    gevent.sleep(cfg.duration)
    stopped = time.time()
    runner.stop()
    if cfg.role == "master":
        deadline = time.monotonic() + FINAL_WAIT
        while len(finals) < cfg.workers and time.monotonic() < deadline:
            gevent.sleep(0.1)
    stats = figures(env, started, stopped)
    stats["workers_cpu_seconds"] = sum(finals)
    stats["workers_reported"] = len(finals)
    with open(out / "visits.jsonl", "w") as f:
        for visit in visits:
            f.write(json.dumps(visit.as_json()) + "\n")
    (out / "stats.json").write_text(json.dumps(stats))
    if env.web_ui is not None:
        env.web_ui.stop()
    runner.quit()
    return 0


def _work(env: Environment, cfg: RunConfig, visits: list[Visit]) -> int:
    """A worker: runs its share of the users and sends what they saw to the master, in batches."""
    runner = env.create_worker_runner(cfg.master_host, cfg.master_port)

    def send(final: bool) -> None:
        batch = [v.as_json() for v in visits]
        visits.clear()
        runner.send_message(VISITS_MESSAGE, {"visits": batch, "final": final, "cpu_seconds": _cpu()})

    def flush() -> None:
        while True:
            gevent.sleep(FLUSH_EVERY)
            if visits:
                send(False)

    gevent.spawn(flush)
    env.events.test_stop.add_listener(lambda **_: send(True))  # before the worker tells the master it stopped
    runner.greenlet.join()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m conformance.load.runner CONFIG.json", file=sys.stderr)
        return 2
    return run(RunConfig.read(args[0]))


if __name__ == "__main__":
    sys.exit(main())
