"""A lean HTTP/1.1 server protocol (asyncio + httptools) for the sans-IO fakes.

Why not an ASGI server: the fakes' handlers are synchronous and CPU-bound (an RS256 signature per token), so a
task, a scope and two coroutines per request only add cost. Here a parsed request is handed to the handler in the
same callback and the response is written at once. What it keeps from a real server: keep-alive with an idle
timeout, pipelining in order, ``Expect: 100-continue``, chunked request bodies, HEAD, a body size limit (413),
and a 400 (never a traceback) for anything that is not HTTP/1.x.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from http import HTTPStatus

import httptools

from conformance.wire import Request, Response

Handler = Callable[[Request], Response]

MAX_BODY = 10 * 1024 * 1024  # bytes; more gets 413
MAX_HEAD = 64 * 1024  # bytes of request line and headers; more gets 431
IDLE_TIMEOUT = 30.0  # seconds a kept-alive connection may stay silent
_SERVER_ERROR = Response.json(500, {"error": "server_error"})


_REASONS = {status.value: status.phrase for status in HTTPStatus}


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


def _error(status: int, message: str) -> Response:
    return Response.json(status, {"error": "invalid_request", "error_description": message})


class HttpProtocol(asyncio.Protocol):
    """One connection. Responses leave in request order; a delayed one (latency fault) holds back those after it."""

    def __init__(self, handler: Handler, scheme: str, connections: set[HttpProtocol]):
        self.handler, self.scheme, self.connections = handler, scheme, connections
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()  # the factory runs inside the serving loop
        self.pending: deque[list[bytes | None]] = deque()  # [response bytes or None while delayed, close?]
        self.idle: asyncio.TimerHandle | None = None  # one timer per connection, not one per request
        self.active_at = self.loop.time()
        self.closing = False  # the transport is closed or closes after the queued responses
        self.stopped = False  # the parser met the end of what this connection will read
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.body_size = 0
        self.head_size = 0
        self.too_large = False

    # ---------------------------------------------------------------- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.connections.add(self)
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self.closing = True
        if self.idle is not None:
            self.idle.cancel()

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

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        self._count_head(len(name) + len(value))

    def on_headers_complete(self) -> None:
        for name, value in self.headers:
            if name.lower() == b"expect" and value.lower() == b"100-continue" and self.transport:
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)
        if self.body_size > MAX_BODY:
            self.too_large = True
        else:
            self.body.append(body)

    def on_message_complete(self) -> None:
        keep_alive = self.parser.should_keep_alive()
        if self.too_large:
            self._fail(413, f"request body over {MAX_BODY} bytes")
            raise httptools.HttpParserCallbackError("body too large")
        method = self.parser.get_method().decode("latin-1")
        self._queue(self._handle(method), method == "HEAD", keep_alive)
        if not keep_alive:
            self.stopped = True
            raise httptools.HttpParserCallbackError("connection: close")  # ignore anything pipelined after

    # ---------------------------------------------------------------- internals

    def _count_head(self, size: int) -> None:
        self.head_size += size
        if self.head_size > MAX_HEAD:
            self._fail(431, f"request line and headers over {MAX_HEAD} bytes")
            raise httptools.HttpParserCallbackError("head too large")

    def _handle(self, method: str) -> Response:
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
                          headers, b"".join(self.body), f"{self.scheme}://{host}")
        try:
            return self.handler(request)
        except Exception:  # the fakes answer errors themselves; this is a bug, and the client still gets JSON
            return _SERVER_ERROR

    def _queue(self, response: Response, head_only: bool, keep_alive: bool) -> None:
        entry: list[bytes | None] = [None, b"" if keep_alive else b"close"]
        self.pending.append(entry)
        data = encode_response(response, head_only, keep_alive)
        if response.delay > 0:
            self.loop.call_later(response.delay, self._ready, entry, data)
        else:
            self._ready(entry, data)

    def _ready(self, entry: list[bytes | None], data: bytes) -> None:
        entry[0] = data
        while self.pending and self.pending[0][0] is not None and self.transport is not None:
            out, close = self.pending.popleft()
            if self.closing:
                return
            self.transport.write(out)  # type: ignore[arg-type]
            if close:
                self.closing = True
                self.transport.close()
                return
        self.active_at = self.loop.time()

    def _fail(self, status: int, message: str) -> None:
        """Answer a request that cannot be parsed, after those already queued, and close."""
        if not self.stopped and not self.closing:
            self.stopped = True
            self._queue(_error(status, message), False, False)

    def _close_after_pending(self) -> None:
        self.stopped = True
        if self.pending:
            self.pending[-1][1] = b"close"
        elif self.transport is not None:
            self.closing = True
            self.transport.close()

    def _arm_idle(self, delay: float | None = None) -> None:
        if not self.closing:
            self.idle = self.loop.call_later(IDLE_TIMEOUT if delay is None else delay, self._close_idle)

    def _close_idle(self) -> None:
        """Close a connection silent for IDLE_TIMEOUT with nothing owed to it; else look again later."""
        silent = self.loop.time() - self.active_at
        if self.transport is not None and not self.pending and silent >= IDLE_TIMEOUT:
            self.closing = True
            self.transport.close()
        else:
            self._arm_idle(max(IDLE_TIMEOUT - silent, 0.5))

    def shutdown(self) -> None:
        """Close once what is queued has been written (the server is stopping)."""
        self.closing = True
        if self.transport is not None:
            with contextlib.suppress(Exception):
                self.transport.close()
