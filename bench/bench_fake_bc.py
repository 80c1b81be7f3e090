"""Fake BC: ``GET …/customers?$top=20`` with one valid token.

- in-process: ``requests`` → ``responses`` → ``BusinessCentral.handle``, against a bare ``responses`` callback that
  returns the same body (target ≥ 0.8× the bare callback), in short interleaved samples;
- loopback HTTPS at concurrency 8: the server (conformance.loopback: one event-loop thread of this process, one core) is
  driven by a load generator in a *separate* process (8 keep-alive TLS connections on asyncio, raw HTTP/1.1), so the
  client does not compete with the server for this process's GIL; compared with the same server answering with
  a bare handler (target ≥ 2,500 requests/s).

Each figure comes in wall-clock requests/s and in requests per CPU-second of the serving process: on a shared,
busy machine the second is the stable one (it is what one core of the server achieves undisturbed).
Request counts are bounded; everything stays on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests
import responses

from bench.harness import Figure, rate
from conformance.clock import FakeClock
from conformance.inprocess import mount
from conformance.loopback import LoopbackServer
from conformance.tls import RunCA
from conformance.trace import Trace
from conformance.wire import Request, Response
from fake_authority import Authority
from fake_bc import BC_HOST, BusinessCentral

CONNECTIONS = 8
PER_CONNECTION = 300  # requests per connection per sample
ROUNDS = 5
IN_PROCESS_N = 400
REPEATS = 15  # short interleaved samples: a busy neighbour slows both sides alike


def _fakes() -> tuple[Authority, BusinessCentral, str, str]:
    clock, trace = FakeClock(), Trace()
    authority = Authority(clock=clock, trace=trace)
    bc = BusinessCentral.for_authority(authority)
    bc.set_limits(requests_per_window=10**9)  # the bench's one principal would otherwise meet BC's 6,000 / 5 min
    token = authority.issue_app_token(lifetime=10**7)
    path = f"/v2.0/{authority.registry.tenant_id}/Production/api/v2.0/companies({bc.company_id()})/customers"
    return authority, bc, token, path


def _rates(fn: Any, n: int) -> tuple[float, float]:
    """(calls per wall-clock second, calls per CPU second of this process) over ``n`` calls."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - wall), n / max(time.process_time() - cpu, 1e-9)


def _in_process(bc: BusinessCentral, token: str, path: str) -> dict[str, list[float]]:
    url = f"{BC_HOST}{path}"
    headers = {"Authorization": f"Bearer {token}"}
    params = {"$top": "20"}
    direct = Request("GET", path, "%24top=20", {"authorization": f"Bearer {token}"}, b"", BC_HOST)
    reference = bc.handle(direct)
    assert reference.status == 200, reference.body[:200]

    session = requests.Session()

    def call() -> None:
        response = session.get(url, params=params, headers=headers)
        if response.status_code != 200:
            raise AssertionError(f"{response.status_code}: {response.text[:200]}")

    out: dict[str, list[float]] = {"bare": [], "bare_cpu": [], "fake": [], "fake_cpu": []}
    for _ in range(REPEATS):
        with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
            mount(rsps, BC_HOST, bc.handle, bc.clock)
            call()
            wall, cpu = _rates(call, IN_PROCESS_N)
            out["fake"].append(wall)
            out["fake_cpu"].append(cpu)
        with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
            rsps.add_callback("GET", re.compile(re.escape(BC_HOST) + r"(/.*)?$"),
                              callback=lambda _: (200, reference.headers, reference.body))
            call()
            wall, cpu = _rates(call, IN_PROCESS_N)
            out["bare"].append(wall)
            out["bare_cpu"].append(cpu)
    out["core"] = rate(lambda: bc.handle(direct), 5_000)
    return out


# ---------------------------------------------------------------- loopback load generator (separate process)


async def _connection(host: str, port: int, request: bytes, n: int, context: ssl.SSLContext) -> int:
    reader, writer = await asyncio.open_connection(host, port, ssl=context)
    failures = 0
    try:
        for _ in range(n):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if head[9:12] != b"200":
                failures += 1
            length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
            if length:
                await reader.readexactly(int(length[1]))
                continue
            while True:  # chunked transfer encoding
                size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
                await reader.readexactly(size + 2)
                if size == 0:
                    break
    finally:
        writer.close()
    return failures


async def _round(host: str, port: int, request: bytes, context: ssl.SSLContext, per_connection: int) -> int:
    results = await asyncio.gather(*(_connection(host, port, request, per_connection, context)
                                     for _ in range(CONNECTIONS)))
    return sum(results)


def _load(host: str, port: int, target: str, token: str, ca_file: str, per_connection: int, rounds: int
          ) -> tuple[list[float], int]:
    context = ssl.create_default_context(cafile=ca_file)
    request = (f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
               "Accept: application/json\r\n\r\n").encode()
    asyncio.run(_round(host, port, request, context, min(per_connection, 50)))  # warm-up
    samples, failures = [], 0
    for _ in range(rounds):
        start = time.perf_counter()
        failures += asyncio.run(_round(host, port, request, context, per_connection))
        samples.append(CONNECTIONS * per_connection / (time.perf_counter() - start))
    return samples, failures


def _loopback(handler: Any, target: str, token: str, per_connection: int = PER_CONNECTION,
              rounds: int = ROUNDS) -> tuple[list[float], float]:
    """Requests/s of ``handler`` served by the loopback adapter, loaded from a child process; and requests per CPU
    second of this process (which, while the child loads it, does nothing but serve: one event-loop thread)."""
    ca = RunCA()
    served = [0]

    def counting(request: Request) -> Response:
        served[0] += 1
        return handler(request)

    server = LoopbackServer(counting, ca.issue()).start()
    try:
        args = [server.host, str(server.port), target, token, str(ca.ca_file), str(per_connection), str(rounds)]
        cpu = time.process_time()
        proc = subprocess.run([sys.executable, "-m", "bench.bench_fake_bc", *args], capture_output=True, text=True,
                              timeout=300, cwd=Path(__file__).resolve().parent.parent)
        cpu = time.process_time() - cpu
    finally:
        server.stop()
        ca.close()
    if proc.returncode != 0:
        raise RuntimeError(f"the loopback load generator failed:\n{proc.stderr[-2000:]}")
    samples, failures = json.loads(proc.stdout.strip().splitlines()[-1])
    if failures:
        raise AssertionError(f"{failures} loopback responses were not 200")
    return samples, served[0] / max(cpu, 1e-9)


def run() -> list[Figure]:
    _, bc, token, path = _fakes()
    inproc = _in_process(bc, token, path)
    target = f"{path}?%24top=20"
    reference = bc.handle(Request("GET", path, "%24top=20", {"authorization": f"Bearer {token}"}, b"",
                                  "https://127.0.0.1"))

    def bare_handler(_: Request) -> Response:
        return Response(200, list(reference.headers), reference.body)

    loop: dict[str, list[float]] = {"bare": [], "bare_cpu": [], "fake": [], "fake_cpu": []}
    for _ in range(ROUNDS):  # interleaved, one round each, so a busy neighbour slows both alike
        for name, handler in (("bare", bare_handler), ("fake", bc.handle)):
            wall, cpu = _loopback(handler, target, token, rounds=1)
            loop[name] += wall
            loop[f"{name}_cpu"].append(cpu)
    notes: dict[str, float | str] = {"rsa_verifications": bc.verifier.verifications,
                                     "body_bytes": len(reference.body)}
    bare_in, bare_cpu_in = "fake_bc: in-process, bare responses callback", "fake_bc: in-process CPU, bare callback"
    bare_loop, bare_cpu_loop = "fake_bc: loopback HTTPS c=8, bare handler", "fake_bc: loopback CPU, bare handler"
    return [
        Figure(bare_in, "requests/s", inproc["bare"]),
        Figure("fake_bc: in-process, BusinessCentral.handle", "requests/s", inproc["fake"], baseline=bare_in,
               target="≥ 0.8×", notes=notes),
        Figure(bare_cpu_in, "requests/CPU-s", inproc["bare_cpu"]),
        Figure("fake_bc: in-process CPU, BusinessCentral.handle", "requests/CPU-s", inproc["fake_cpu"],
               baseline=bare_cpu_in, target="≥ 0.8×"),
        Figure("fake_bc: sans-IO handle() called directly", "requests/s", inproc["core"]),
        Figure(bare_loop, "requests/s", loop["bare"]),
        Figure("fake_bc: loopback HTTPS c=8, BusinessCentral", "requests/s", loop["fake"], baseline=bare_loop,
               target="≥ 2,500 requests/s"),
        Figure(bare_cpu_loop, "requests/CPU-s", loop["bare_cpu"]),
        Figure("fake_bc: loopback CPU, BusinessCentral (server core)", "requests/CPU-s", loop["fake_cpu"],
               baseline=bare_cpu_loop, target="≥ 2,500 per core-second"),
    ]


if __name__ == "__main__":  # the load generator's process: python -m bench.bench_fake_bc HOST PORT ...
    host, port, target, token, ca_file, per_connection, rounds = sys.argv[1:8]
    print(json.dumps(_load(host, int(port), target, token, ca_file, int(per_connection), int(rounds))))
