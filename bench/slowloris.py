"""Slow clients and a latency probe for the server benchmarks; each runs in its own process (pinned by the caller).

``python -m bench.slowloris hold URL -c N``: hold N connections open against an HTTPS server, each sending a
partial request head and then one more byte every few seconds, reopening as soon as the server closes it. Prints
one JSON line of counters every ``--report`` seconds; stops by itself after ``--duration`` seconds, or (with
``--watch-stdin``) when its stdin closes. Counters: ``open`` (TLS handshake done, not closed yet), ``opened`` (in
total), ``closed`` (by the server, or reset), ``failed`` (connect or handshake refused, reset or timed out),
``status`` (the status line of what the server said before closing, e.g. {"408": 1234}), ``trickled`` (bytes sent
after the head).

``python -m bench.slowloris probe TOKEN_URL --body FORM --ca-file CA -d S [--fresh]``: POST the token form
back to back for S seconds, on one kept-alive connection or (``--fresh``) a new TLS connection per request; prints
one JSON line: latency percentiles, requests, non-200 answers, errors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import resource
import ssl
import sys
import time
from collections import Counter
from http.client import HTTPSConnection
from typing import Any
from urllib.parse import urlsplit

HEAD = "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\nX-Slow: "


class Stats:
    def __init__(self) -> None:
        self.open = self.opened = self.closed = self.failed = self.trickled = 0
        self.status: Counter[str] = Counter()

    def line(self) -> str:
        return json.dumps({"t": round(time.monotonic(), 3), "open": self.open, "opened": self.opened,
                           "closed": self.closed, "failed": self.failed, "trickled": self.trickled,
                           "status": dict(self.status)})


class Slow(asyncio.Protocol):
    def __init__(self, stats: Stats, head: bytes, interval: float, done: asyncio.Future[None]):
        self.stats, self.head, self.interval, self.done = stats, head, interval, done
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.answered = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.stats.open += 1
        self.stats.opened += 1
        transport.write(self.head)  # type: ignore[attr-defined]
        self._schedule()

    def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.interval * random.uniform(0.5, 1.5), self._trickle)

    def _trickle(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"a")
            self.stats.trickled += 1
            self._schedule()

    def data_received(self, data: bytes) -> None:
        if not self.answered and data.startswith(b"HTTP/1.1 "):
            self.answered = True
            self.stats.status[data[9:12].decode("latin-1", "replace")] += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.open -= 1
        self.stats.closed += 1
        if self.timer is not None:
            self.timer.cancel()
        if not self.done.done():
            self.done.set_result(None)


async def _one(url: str, stats: Stats, interval: float, context: ssl.SSLContext, gate: asyncio.Semaphore,
               stop: asyncio.Event) -> None:
    """One slow client, forever: connect, hold, and reconnect when closed."""
    parts = urlsplit(url)
    head = HEAD.format(path=parts.path or "/", host=parts.netloc).encode()
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        done: asyncio.Future[None] = loop.create_future()
        try:
            async with gate:  # a bounded number of handshakes at once
                await asyncio.wait_for(loop.create_connection(
                    lambda d=done: Slow(stats, head, interval, d), parts.hostname, parts.port, ssl=context,
                    server_hostname=parts.hostname), 30)
        except (TimeoutError, OSError, ssl.SSLError):
            stats.failed += 1
            await asyncio.sleep(random.uniform(0.05, 0.2))  # refused: try again soon, not in a hot loop
            continue
        await done


async def _main(args: argparse.Namespace) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # an attacker does not care who answers; saves the client's CPU
    stats, stop = Stats(), asyncio.Event()
    gate = asyncio.Semaphore(args.handshakes)
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda *_: None)  # resets and refusals are what this client expects
    if args.watch_stdin:  # the parent closed our stdin (or went away): stop
        loop.add_reader(sys.stdin.fileno(), stop.set)
    tasks = [loop.create_task(_one(args.url, stats, args.interval, context, gate, stop))
             for _ in range(args.connections)]
    end = time.monotonic() + args.duration
    while not stop.is_set() and time.monotonic() < end:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), args.report)
        print(stats.line(), flush=True)
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def probe(url: str, body: str, ca_file: str, seconds: float, fresh: bool) -> dict[str, Any]:
    """Token requests back to back for ``seconds``; the latency of each, connection setup included when fresh."""
    parts = urlsplit(url)
    context = ssl.create_default_context(cafile=ca_file)
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
    form = body.encode()
    latencies: list[float] = []
    non200 = errors = 0
    conn: HTTPSConnection | None = None
    end = time.perf_counter() + seconds
    while (start := time.perf_counter()) < end:
        try:
            if conn is None:
                conn = HTTPSConnection(parts.hostname, parts.port, context=context, timeout=10)
            conn.request("POST", parts.path, form, headers)
            response = conn.getresponse()
            response.read()
            latencies.append(time.perf_counter() - start)
            non200 += response.status != 200
        except (OSError, ssl.SSLError, Exception):
            errors += 1
            if conn is not None:
                conn.close()
            conn = None
            continue
        if fresh:
            conn.close()
            conn = None
    if conn is not None:
        conn.close()
    latencies.sort()

    def pct(q: float) -> float:
        return 1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else 0.0

    return {"requests": len(latencies), "non200": non200, "errors": errors, "p50_ms": pct(0.50),
            "p99_ms": pct(0.99), "max_ms": 1000 * latencies[-1] if latencies else 0.0, "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.slowloris", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    hold = sub.add_parser("hold", help="hold slow connections open")
    hold.add_argument("url")
    hold.add_argument("-c", "--connections", type=int, default=5000)
    hold.add_argument("--interval", type=float, default=3.0, help="seconds between trickled bytes (jittered)")
    hold.add_argument("--handshakes", type=int, default=256, help="TLS handshakes in flight at once")
    hold.add_argument("-d", "--duration", type=float, default=120.0)
    hold.add_argument("--report", type=float, default=1.0)
    hold.add_argument("--watch-stdin", action="store_true", help="stop when stdin closes")
    lat = sub.add_parser("probe", help="token request latencies")
    lat.add_argument("url")
    lat.add_argument("--body", required=True)
    lat.add_argument("--ca-file", required=True)
    lat.add_argument("-d", "--duration", type=float, default=5.0)
    lat.add_argument("--fresh", action="store_true", help="a new TLS connection per request")
    args = parser.parse_args(argv)
    if args.command == "probe":
        print(json.dumps(probe(args.url, args.body, args.ca_file, args.duration, args.fresh)), flush=True)
        return 0
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(_main(args))
    else:
        uvloop.run(_main(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
