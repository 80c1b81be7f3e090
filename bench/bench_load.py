"""``bc-conformance load`` measured:

- visits per second the kit drives (users, the kit's browser, visit records, the fakes' trace, judging) against a
  trivial portal, beside plain Locust (an ``HttpUser`` getting the same page, no checks) against the same portal,
  both with 20 users and no wait (target: the kit's judging costs ≤ 20 %, a ratio ≥ 0.8);
- token requests per expiry for a correct portal at 50 users (the Flask example in AzUser: target 1 per session,
  2 tolerated for two tabs), and the fakes' share of the run's CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import Figure

ROOT = Path(__file__).resolve().parent.parent
TRIVIAL = f"{sys.executable} {Path(__file__).resolve().parent / 'load_trivial_portal.py'}"
FLASK = f"{sys.executable} {ROOT / 'examples' / 'flask-msal' / 'app.py'}"
USERS, SECONDS = 20, 5.0

PLAIN_LOCUST = """
import json, sys, time
import gevent, locust
from locust import HttpUser, constant, task
from locust.env import Environment

class Plain(HttpUser):
    wait_time = constant(0)
    @task
    def page(self):
        self.client.get("/", name="portal page")

env = Environment(user_classes=[Plain], host=sys.argv[1])
runner = env.create_local_runner()
runner.start(int(sys.argv[2]), float(sys.argv[2]))
gevent.sleep(float(sys.argv[3]))
runner.stop()
print(json.dumps({"requests": env.stats.total.num_requests}))
runner.quit()
"""


def _kit() -> tuple[float, float]:
    """Visits per second of a kit run (judging included) and its fakes' CPU share."""
    from conformance.load.orchestrator import LoadOptions, LoadTarget, run_load
    from conformance.load.results import judge_load

    evidence = run_load(LoadTarget(cmd=TRIVIAL), LoadOptions("AzApp", USERS, 0, SECONDS, wait=(0.0, 0.0),
                                                             two_tabs=0.0))
    judged = time.perf_counter()
    results = judge_load(evidence, "trivial portal", "bench")
    judging = time.perf_counter() - judged
    visits = sum(1 for v in evidence.visits if not v.stopped)
    return visits / (SECONDS + judging), results["load"]["fakes"]["cpu_share"]


def _plain() -> float:
    """Visits per second of plain Locust against the trivial portal started the same way."""
    from conformance.external import free_port

    port = free_port()
    portal = subprocess.Popen(TRIVIAL.split(), env={**os.environ, "PORTAL_PORT": str(port)})
    try:
        time.sleep(0.5)
        with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
            f.write(PLAIN_LOCUST)
        out = subprocess.run([sys.executable, f.name, f"http://127.0.0.1:{port}", str(USERS), str(SECONDS)],
                             check=True, capture_output=True, text=True)
        os.unlink(f.name)
        return json.loads(out.stdout.strip().splitlines()[-1])["requests"] / SECONDS
    finally:
        portal.terminate()
        portal.wait()


def _token_requests_per_expiry() -> tuple[list[float], float]:
    from conformance.load.orchestrator import LoadOptions, LoadTarget, run_load
    from conformance.load.results import load_figures

    evidence = run_load(LoadTarget(cmd=FLASK), LoadOptions("AzUser", 50, 0, 9.0, 3.0))
    figures = load_figures(evidence)
    rows = figures["token_requests_per_expiry"]
    return [row["token_requests"] / max(1, row["sessions"]) for row in rows], figures["fakes"]["cpu_share"]


def run() -> list[Figure]:
    plain = "load: plain Locust against a trivial portal (20 users, no wait)"
    figures = [Figure(plain, "visits/s", [_plain() for _ in range(2)])]
    kit = [_kit() for _ in range(2)]
    figures.append(Figure("load: the kit against the same portal (browser, records, trace, judging)", "visits/s",
                          [v for v, _ in kit], baseline=plain, target="≥ 0.8× (judging costs ≤ 20 %)",
                          notes={"fakes_cpu_share": max(s for _, s in kit)}))
    per_session, share = _token_requests_per_expiry()
    figures.append(Figure("load: token requests per session per expiry, Flask example, AzUser, 50 users", "requests",
                          per_session or [0.0], target="1 (2 tolerated: two tabs)",
                          notes={"fakes_cpu_share": share}))
    return figures
