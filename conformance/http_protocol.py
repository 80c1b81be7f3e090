"""A lean HTTP/1.1 server protocol (asyncio + httptools) for the sans-IO fakes, with the limits that keep a
long-running ``serve`` (and a run's servers) bounded in memory and descriptors under any traffic.

Why not an ASGI server: the fakes' handlers are synchronous and CPU-bound (an RS256 signature per token), so a
task, a scope and two coroutines per request only add cost. Here a parsed request is handed to the handler in the
same callback and the response is written at once. What it keeps from a real server: keep-alive with an idle
timeout, pipelining in order, ``Expect: 100-continue``, chunked request bodies, HEAD, write flow control, and a
JSON error (never a traceback) for anything that is not HTTP/1.x.

Why the limits are built here rather than got by going back to a maintained server (issue 12 weighed it):
uvicorn measured ~1.98x the peer oauth2-mock-server pinned (this server 2.16-2.28x; the floor is 2x), and it would
not bring them all anyway: it has no deadline for headers or a body (its keep-alive timer restarts on every byte;
uvicorn issue #157 lists request-start and request-complete timeouts as not done), ``limit_concurrency`` answers
503 only to connections it has already accepted and, over TLS, shaken hands with, and bounding bodies is left to
the application. hypercorn has a read timeout but parses with h11 (pure Python, uvicorn's slower parser). granian (Rust,
hyper's header-read timeout) would hand every request across threads and the GIL to a handler that is CPU-bound
Python; not measured. The limits below cost ~0.7 us per request (12.5 vs 11.8 us of parsing and framing, measured
side by side; a token costs ~500 us to sign), and the accept that counts descriptors is per connection
(``loopback.py``).

Limits (``Limits``, per server; tests pass short deadlines):
- bodies: ``max_body`` (10 MiB) per request, else 413; ``max_bodies_in_flight`` (64 MiB) for all bodies one server
  is receiving at once, else 503 with ``Retry-After`` -- not 413: the request itself is fine and may be retried,
  it is the server that is busy (RFC 9110 §15.6.4). The error goes out at once; the rest of the body is read and
  dropped for at most ``LINGER`` seconds (so the client reads the answer rather than a reset), then the
  connection closes. A body over ``SPILL`` bytes is buffered in an anonymous mmap, unmapped as soon as the request
  is handled or its connection ends, so its memory goes back to the system (chunks kept in a list stayed in
  malloc's arenas: 40 connections left +399 MB behind).
- deadlines: a request's headers must be complete ``header_timeout`` (10 s) after its first byte (the deadline
  falls at random in the last quarter, so slow clients that came together do not all come back together), its
  body ``body_timeout`` (30 s) after its headers, else 408 and close; a TLS handshake gets ``header_timeout``
  too; a connection silent for ``idle_timeout`` (30 s) with nothing owed to it is closed.
- connections: ``max_connections`` per server, counted from accept to close (TLS handshakes included); past it a
  new connection is closed at once (``loopback.py``). ``connection_cap`` sizes it from RLIMIT_NOFILE.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import mmap
import random
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import httptools

from conformance.wire import Request, Response

Handler = Callable[[Request], Response]

MAX_BODY = 10 * 1024 * 1024  # bytes of one request body; more gets 413
MAX_BODIES_IN_FLIGHT = 64 * 1024 * 1024  # bytes of all bodies one server is receiving; more gets 503
MAX_HEAD = 64 * 1024  # bytes of request line and headers; more gets 431
HEADER_TIMEOUT = 10.0  # seconds from a request's first byte to the end of its headers; then 408
BODY_TIMEOUT = 30.0  # seconds from the end of the headers to the end of the body; then 408
IDLE_TIMEOUT = 30.0  # seconds a kept-alive connection may stay silent
TLS_SHUTDOWN_TIMEOUT = 2.0  # seconds to wait for the client's close_notify before dropping the socket
LINGER = 2.0  # seconds a rejected body (413, 503) is still read and dropped before the connection closes
SPILL = 64 * 1024  # a body larger than this is buffered in an anonymous mmap, not in heap chunks
RETRY_AFTER = "1"  # seconds, on a 503 for bodies over capacity
FD_HEADROOM = 256  # descriptors kept free for the run's files, pipes to portal processes, clients (at least)
MAX_CONNECTIONS_CEILING = 16_384  # per server, whatever RLIMIT_NOFILE allows (memory: 30-60 KB per TLS connection)

_SERVER_ERROR = Response.json(500, {"error": "server_error"})
_REASONS = {status.value: status.phrase for status in HTTPStatus}
_KEEP, _CLOSE, _LINGER = 0, 1, 2  # what follows a queued response: keep reading, close, drop the rest of a body


@dataclass(frozen=True)
class Limits:
    """One server's limits; ``max_connections=None`` means ``connection_cap()`` when the server starts."""

    max_body: int = MAX_BODY
    max_bodies_in_flight: int = MAX_BODIES_IN_FLIGHT
    max_head: int = MAX_HEAD
    header_timeout: float = HEADER_TIMEOUT
    body_timeout: float = BODY_TIMEOUT
    idle_timeout: float = IDLE_TIMEOUT
    tls_shutdown_timeout: float = TLS_SHUTDOWN_TIMEOUT
    linger: float = LINGER
    max_connections: int | None = None


def raise_nofile_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (idempotent); return the soft limit in force."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return 512
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY:
        return 1 << 20
    if soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def connection_cap(servers: int = 1) -> int:
    """Connections each of ``servers`` servers in this process may hold: the descriptor limit (soft raised to
    hard) less a tenth of it (at least ``FD_HEADROOM``) for everything else the process opens, shared out."""
    nofile = raise_nofile_limit()
    spare = nofile - max(FD_HEADROOM, nofile // 10)
    return max(8, min(MAX_CONNECTIONS_CEILING, spare // max(1, servers)))


class _Counts(dict[str, int]):
    """Counters that tell their server state when one changes."""

    def __init__(self, notify: Callable[[], None], values: dict[str, int]):
        super().__init__(values)
        self._notify = notify

    def __setitem__(self, key: str, value: int) -> None:
        super().__setitem__(key, value)
        self._notify()


class ServerState:
    """What one server's connections share: its limits, how many sockets are open, the bytes of bodies being
    received, and counters for the stats endpoint."""

    COUNTERS = ("accepted", "refused", "header_timeouts", "body_timeouts", "bodies_too_large",
                "bodies_over_capacity", "handshake_failures", "accept_errors", "trims", "trim_ms_max")

    def __init__(self, limits: Limits):
        self.limits = limits
        self.connections: set[HttpProtocol] = set()
        self.changed = threading.Condition()  # notified on every change, for ``wait_for`` in other threads
        self._open = 0  # sockets accepted and not closed yet, TLS handshakes included
        self.peak_open = 0
        self._bodies_in_flight = 0  # bytes buffered for requests not handled yet
        self.peak_bodies_in_flight = 0
        self.counts: dict[str, int] = _Counts(self._notify, dict.fromkeys(self.COUNTERS, 0))

    def _notify(self) -> None:
        with self.changed:
            self.changed.notify_all()

    @property
    def open(self) -> int:
        return self._open

    @open.setter
    def open(self, value: int) -> None:
        self._open = value
        self._notify()

    @property
    def bodies_in_flight(self) -> int:
        return self._bodies_in_flight

    @bodies_in_flight.setter
    def bodies_in_flight(self, value: int) -> None:
        self._bodies_in_flight = value
        self._notify()

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Block until ``predicate()`` holds (re-checked at every change of this state) or ``timeout`` passes."""
        with self.changed:
            return self.changed.wait_for(predicate, timeout)

    def stats(self) -> dict[str, Any]:
        return {"connections": self.open, "peak_connections": self.peak_open,
                "max_connections": self.limits.max_connections, "bodies_in_flight": self.bodies_in_flight,
                "peak_bodies_in_flight": self.peak_bodies_in_flight,
                "max_bodies_in_flight": self.limits.max_bodies_in_flight, **self.counts}


def encode_response(response: Response, head_only: bool, keep_alive: bool) -> bytes:
    lines = [f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Unknown')}"]
    has_length = False
    for name, value in response.headers:
        if name.lower() in ("connection", "transfer-encoding"):
            continue  # framing is this server's business
        has_length = has_length or name.lower() == "content-length"
        lines.append(f"{name}: {value}")
    if not has_length:
        lines.append(f"Content-Length: {len(response.body)}")
    if not keep_alive:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
    return head if head_only else head + response.body


def _error(status: int, message: str, error: str = "invalid_request",
           headers: list[tuple[str, str]] | None = None) -> Response:
    return Response.json(status, {"error": error, "error_description": message}, headers)


class HttpProtocol(asyncio.Protocol):
    """One connection. Responses leave in request order; a delayed one (latency fault) holds back those after it.

    One timer per connection, re-armed lazily: it fires at the earliest of the current request's deadline and the
    idle expiry, looks at the state then, and arms itself again."""

    def __init__(self, handler: Handler, scheme: str, state: ServerState):
        self.handler, self.scheme, self.state, self.limits = handler, scheme, state, state.limits
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()  # the factory runs inside the serving loop
        self.pending: deque[list[Any]] = deque()  # [response bytes or None while delayed, _KEEP/_CLOSE/_LINGER]
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = math.inf
        self.active_at = self.loop.time()  # when the last bytes arrived (or a response left)
        self.deadline: float | None = None  # when the request being received must be complete
        self.made = False  # connection_made was called (the TLS handshake, if any, succeeded)
        self.counted = True  # this connection is in state.open (the accept counted it)
        self.closing = False  # the transport is closed or closes after the queued responses
        self.stopped = False  # the parser met the end of what this connection will read
        self.rejected = False  # a body was refused (413/503): the rest of it is dropped, then the connection closes
        self.in_body = False  # the current request's headers are complete; its body is being received
        self.spill: mmap.mmap | None = None
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.body_size = 0
        self.head_size = 0

    # ---------------------------------------------------------------- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.made = True
        self.state.connections.add(self)
        self.active_at = self.loop.time()
        self._arm(self.active_at + self.limits.idle_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.connections.discard(self)
        self.closing = True
        self.pending.clear()
        self._release_body()
        self.release()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def release(self) -> None:
        """This connection's socket is closed: it no longer counts against ``max_connections``."""
        if self.counted:
            self.counted = False
            self.state.open -= 1

    def pause_writing(self) -> None:  # the client does not read its responses: stop reading its requests
        if self.transport is not None:
            with contextlib.suppress(Exception):
                self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.closing:
            with contextlib.suppress(Exception):
                self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.closing or self.stopped:
            return
        self.active_at = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._close_after_pending()  # the request was answered as plain HTTP (RFC 9110 §7.8 lets us ignore
            # Upgrade); the parser cannot read past it, so the connection ends there
        except httptools.HttpParserError as err:
            self._fail(400, f"malformed HTTP request: {err}")  # no-op if a callback already answered

    # ---------------------------------------------------------------- httptools callbacks

    def on_message_begin(self) -> None:
        self._reset()
        self.in_body = False
        # Somewhere in the last quarter of header_timeout: slow clients that came together do not all get their
        # 408 (and come back for a new TLS handshake) in the same instant.
        self.deadline = self.active_at + self.limits.header_timeout * (0.75 + 0.25 * random.random())
        self._arm(self.deadline)

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        self._count_head(len(name) + len(value))

    def on_headers_complete(self) -> None:
        self.in_body = True
        self.deadline = self.active_at + self.limits.body_timeout
        self._arm(self.deadline)
        expect = False
        for name, value in self.headers:
            lower = name.lower()
            if lower == b"content-length" and value.isdigit() and int(value) > self.limits.max_body:
                self._reject(413, f"request body over {self.limits.max_body} bytes", "bodies_too_large")
                return
            if lower == b"expect" and value.lower() == b"100-continue":
                expect = True
        if expect and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self.rejected:
            return  # dropped
        size, state = self.body_size + len(body), self.state
        if size > self.limits.max_body:
            self._reject(413, f"request body over {self.limits.max_body} bytes", "bodies_too_large")
            return
        if state.bodies_in_flight + len(body) > self.limits.max_bodies_in_flight:
            self._reject(503, "the server is receiving too many request bodies at once; retry later",
                         "bodies_over_capacity", "temporarily_unavailable", [("Retry-After", RETRY_AFTER)])
            return
        state.bodies_in_flight += len(body)
        state.peak_bodies_in_flight = max(state.peak_bodies_in_flight, state.bodies_in_flight)
        self.body_size = size
        if self.spill is not None:
            self._spill_write(body)
        elif size <= SPILL:
            self.body.append(body)
        else:
            self._start_spill(body)

    def on_message_complete(self) -> None:
        self.deadline = None
        if self.rejected:
            self._close_after_pending()
            raise httptools.HttpParserCallbackError("body refused")
        keep_alive = self.parser.should_keep_alive()
        method = self.parser.get_method().decode("latin-1")
        body = self._take_body()
        self._queue(self._handle(method, body), method == "HEAD", _KEEP if keep_alive else _CLOSE)
        if not keep_alive:
            self.stopped = True
            raise httptools.HttpParserCallbackError("connection: close")  # ignore anything pipelined after

    # ---------------------------------------------------------------- bodies

    def _start_spill(self, body: bytes) -> None:
        """The body outgrew ``SPILL``: move it to an anonymous mmap sized by Content-Length when given."""
        length = next((int(v) for n, v in self.headers if n.lower() == b"content-length" and v.isdigit()), 0)
        capacity = length if self.body_size <= length <= self.limits.max_body else min(
            max(2 * self.body_size, 1 << 20), self.limits.max_body)
        self.spill = mmap.mmap(-1, capacity)  # pages are committed only when written
        for chunk in self.body:
            self.spill.write(chunk)
        self.body = []
        self._spill_write(body)

    def _spill_write(self, data: bytes) -> None:
        spill = self.spill
        assert spill is not None
        need = spill.tell() + len(data)
        if need > len(spill):
            size = min(max(need, 2 * len(spill)), self.limits.max_body)
            try:
                spill.resize(size)
            except (OSError, SystemError, ValueError):  # no mremap on this system: copy into a larger map
                bigger = mmap.mmap(-1, size)
                bigger.write(spill[:spill.tell()])
                spill.close()
                self.spill = spill = bigger
        spill.write(data)

    def _take_body(self) -> bytes:
        if self.spill is not None:
            body = self.spill[:self.body_size]
        elif len(self.body) == 1:
            body = self.body[0]
        else:
            body = b"".join(self.body)
        self._release_body()
        return body

    def _release_body(self) -> None:
        """Forget the buffered body (and unmap it): its bytes no longer count as in flight."""
        self.state.bodies_in_flight -= self.body_size
        self.body_size = 0
        self.body = []
        if self.spill is not None:
            self.spill.close()
            self.spill = None

    def _reject(self, status: int, message: str, counter: str, error: str = "invalid_request",
                headers: list[tuple[str, str]] | None = None) -> None:
        """Answer a body we will not buffer at once, drop the rest of it for at most ``linger`` s, then close."""
        if self.stopped or self.closing:
            return
        self.state.counts[counter] += 1
        self._release_body()
        self.rejected = True
        self.deadline = self.active_at + self.limits.linger
        self._arm(self.deadline)
        self._queue(_error(status, message, error, headers), False, _LINGER)

    # ---------------------------------------------------------------- internals

    def _count_head(self, size: int) -> None:
        self.head_size += size
        if self.head_size > self.limits.max_head:
            self._fail(431, f"request line and headers over {self.limits.max_head} bytes")
            raise httptools.HttpParserCallbackError("head too large")

    def _handle(self, method: str, body: bytes) -> Response:
        try:
            url = httptools.parse_url(self.url)
        except httptools.HttpParserInvalidURLError:
            return _error(400, "malformed request target")
        headers: dict[str, str] = {}
        for raw_name, raw_value in self.headers:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            if name in headers:
                value = f"{headers[name]}{'; ' if name == 'cookie' else ', '}{value}"
            headers[name] = value
        host = headers.get("host")
        if not host and self.transport is not None:
            address = self.transport.get_extra_info("sockname")
            host = f"{address[0]}:{address[1]}" if address else "localhost"
        request = Request(method, (url.path or b"/").decode("latin-1"), (url.query or b"").decode("latin-1"),
                          headers, body, f"{self.scheme}://{host}")
        try:
            return self.handler(request)
        except Exception:  # the fakes answer errors themselves; this is a bug, and the client still gets JSON
            return _SERVER_ERROR

    def _queue(self, response: Response, head_only: bool, after: int) -> None:
        entry: list[Any] = [None, after]
        self.pending.append(entry)
        data = encode_response(response, head_only, after == _KEEP)
        if response.delay > 0:
            self.loop.call_later(response.delay, self._ready, entry, data)
        else:
            self._ready(entry, data)

    def _ready(self, entry: list[Any], data: bytes) -> None:
        entry[0] = data
        while self.pending and self.pending[0][0] is not None and self.transport is not None:
            out, after = self.pending.popleft()
            if self.closing:
                return
            self.transport.write(out)
            if after == _CLOSE:
                self.closing = True
                self.transport.close()
                return
        self.active_at = self.loop.time()

    def _fail(self, status: int, message: str) -> None:
        """Answer a request that cannot be parsed (or came too slowly), after those already queued, and close."""
        if self.stopped or self.closing:
            return
        if self.rejected:  # already answered (413/503): just end the connection
            self._close_after_pending()
            return
        self.stopped = True
        self._queue(_error(status, message), False, _CLOSE)

    def _close_after_pending(self) -> None:
        self.stopped = True
        if self.pending:
            self.pending[-1][1] = _CLOSE
        elif self.transport is not None and not self.closing:
            self.closing = True
            self.transport.close()

    def _arm(self, at: float) -> None:
        """Make sure the timer fires no later than ``at``."""
        if self.timer is not None:
            if self.timer_at <= at:
                return
            self.timer.cancel()
        if not self.closing:
            self.timer_at = at
            self.timer = self.loop.call_at(at, self._tick)

    def _tick(self) -> None:
        self.timer, self.timer_at = None, math.inf
        if self.closing or self.transport is None:
            return
        now = self.loop.time()
        deadline = self.deadline
        if deadline is not None:
            if now < deadline:
                self._arm(deadline)
            elif self.rejected:
                self.deadline = None
                self._close_after_pending()  # the rejected body did not end within the linger time
            elif not self.stopped:
                self.deadline = None
                if self.in_body:
                    self.state.counts["body_timeouts"] += 1
                    self._fail(408, f"request body not complete within {self.limits.body_timeout:g} s")
                else:
                    self.state.counts["header_timeouts"] += 1
                    self._fail(408, f"request headers not complete within {self.limits.header_timeout:g} s")
            return
        idle_at = self.active_at + self.limits.idle_timeout
        if now < idle_at:
            self._arm(idle_at)
        elif self.pending:  # something is still owed to the client (a delayed response): look again later
            self._arm(now + 0.5)
        else:
            self.closing = True
            self.transport.close()

    def shutdown(self) -> None:
        """Close once what is queued has been written (the server is stopping)."""
        self.closing = True
        if self.transport is not None:
            with contextlib.suppress(Exception):
                self.transport.close()

    def abort(self) -> None:
        """Drop the connection now, whatever is queued (the server stopped and the client did not close)."""
        self.closing = True
        if self.transport is not None:
            with contextlib.suppress(Exception):
                self.transport.abort()
