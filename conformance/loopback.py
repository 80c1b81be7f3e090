"""Loopback adapter: serve a sans-IO fake over real HTTPS on 127.0.0.1, for portals running in their own
process, in any language. One event loop (uvloop when installed) in a daemon thread per server.

The server accepts connections itself rather than through ``loop.create_server``: asyncio's accept loop hands a
socket to the TLS layer before the application hears of it, and a handshake that fails or never ends is never
reported, so descriptors cannot be counted there. Here every accepted socket counts against ``max_connections``
until it closes, handshake included; past the cap a new connection is closed at once (over plain HTTP after a
503), so the descriptors left keep serving the connections already held, and the listening socket never stalls.
At most ``ACCEPT_BATCH`` connections are accepted per turn of the loop, so a crowd of new TLS handshakes
(~0.7 ms of CPU each) is spread between the requests of connections already held.

Memory of closed connections: OpenSSL and uvloop allocate tens of KB per TLS connection in many small blocks;
glibc keeps the freed blocks and barely reuses them under churn (measured: +640 MB after 40,000 slow connections
were closed, 300 at a time; all of it free memory that ``malloc_trim`` gives back). So each server calls
``malloc_trim(0)`` (glibc only) once ``TRIM_AFTER`` connections have closed since the last call (or any have, and
10 intervals passed), looking every ``TRIM_INTERVAL`` seconds: a few ms of the loop's time now and then, and
never while connections are simply kept alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from conformance.http_protocol import Handler, HttpProtocol, Limits, ServerState, connection_cap, encode_response
from conformance.tls import TlsFiles
from conformance.wire import Response

try:
    import uvloop
except ImportError:  # pragma: no cover - optional speed-up (not on Windows)
    uvloop = None

ACCEPT_BATCH = 16  # connections accepted per turn of the loop before other work runs
ACCEPT_PAUSE = 0.1  # seconds the accepting stops after EMFILE/ENFILE/ENOBUFS (rather than spin on the backlog)
TRIM_INTERVAL = 1.0  # seconds between looks at how many connections closed
TRIM_AFTER = 256  # connections closed since the last malloc_trim that call for another
_REFUSED = encode_response(Response.json(503, {
    "error": "temporarily_unavailable", "error_description": "too many connections; retry later"},
    [("Retry-After", "1")]), False, False)


def _find_malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(None).malloc_trim  # glibc; absent from musl
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim  # type: ignore[no-any-return]


_malloc_trim = _find_malloc_trim()
_trim_lock = threading.Lock()  # one trim at a time in this process (it walks every arena)


def _new_loop() -> asyncio.AbstractEventLoop:
    return uvloop.new_event_loop() if uvloop is not None else asyncio.new_event_loop()


def _tls_context(tls: TlsFiles) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tls.cert_file, tls.key_file)
    context.set_alpn_protocols(["http/1.1"])
    return context


class LoopbackServer:
    """``url`` is known once ``start`` returns; ``stop`` closes every connection and joins the thread.
    ``limits`` (``http_protocol.Limits``) bound what a client can hold; ``stats()`` reports how they held."""

    def __init__(self, handler: Handler, tls: TlsFiles | None, host: str = "127.0.0.1", port: int = 0,
                 limits: Limits | None = None):
        self.handler, self.tls, self.host, self.port = handler, tls, host, port
        self.limits = limits or Limits()
        self.state = ServerState(self.limits)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._listener: socket.socket | None = None
        self._context: ssl.SSLContext | None = None
        self._handshakes: set[asyncio.Task[None]] = set()
        self._closed_at_trim, self._trimmed_at = 0, 0.0

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    def stats(self) -> dict[str, Any]:
        """Connections held, bytes of bodies in flight, and what the limits refused (a snapshot; any thread)."""
        return self.state.stats()

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> bool:
        """Block until ``predicate(stats())`` holds — re-checked whenever the server's state changes, no polling —
        or ``timeout`` passes; returns whether it held (for tests and tools watching the limits work)."""
        return self.state.wait_for(lambda: predicate(self.stats()), timeout)

    def start(self, timeout: float = 10.0) -> LoopbackServer:
        if self.limits.max_connections is None:
            self.limits = replace(self.limits, max_connections=connection_cap())
        self.state = ServerState(self.limits)
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # proto IPPROTO_TCP, not 0, and TCP_NODELAY on every accepted socket: with Nagle on, every response
        # waited ~40 ms for a delayed ACK.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as err:
            sock.close()
            raise OSError(f"cannot listen on {self.host}:{self.port}: {err.strerror}") from None
        sock.listen(1024)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        loop = self._loop = _new_loop()
        try:
            self._context = _tls_context(self.tls) if self.tls else None
            loop.set_exception_handler(self._exception)
            loop.add_reader(sock.fileno(), self._accept)
            loop.call_soon(self._housekeeping)
        except Exception:
            sock.close()
            loop.close()
            raise
        self._listener = sock
        self._thread = threading.Thread(target=self._serve, args=(loop,), daemon=True, name=f"loopback-{self.port}")
        self._thread.start()
        return self

    # ---------------------------------------------------------------- on the server's loop

    def _accept(self) -> None:
        state, listener, loop = self.state, self._listener, self._loop
        assert listener is not None and loop is not None
        cap = state.limits.max_connections or 0
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                if err.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    state.counts["accept_errors"] += 1  # out of descriptors despite the cap: wait, do not spin
                    loop.remove_reader(listener.fileno())
                    loop.call_later(ACCEPT_PAUSE, self._resume_accepting)
                    return
                continue  # ECONNABORTED and the like: that client is gone
            if state.open >= cap:
                state.counts["refused"] += 1
                if self._context is None:
                    with contextlib.suppress(OSError):
                        conn.send(_REFUSED)
                conn.close()
                continue
            state.open += 1
            state.peak_open = max(state.peak_open, state.open)
            state.counts["accepted"] += 1
            try:
                conn.setblocking(False)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                state.open -= 1
                conn.close()
                continue
            task = loop.create_task(self._connect(conn))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    def _resume_accepting(self) -> None:
        if self._listener is not None and self._loop is not None and self._listener.fileno() >= 0:
            self._loop.add_reader(self._listener.fileno(), self._accept)

    async def _connect(self, conn: socket.socket) -> None:
        """Hand an accepted socket to the protocol (after the TLS handshake, bounded by the header deadline)."""
        made: list[HttpProtocol] = []

        def factory() -> HttpProtocol:
            made.append(HttpProtocol(self.handler, "https" if self._context else "http", self.state))
            return made[0]

        loop = self._loop
        assert loop is not None
        try:
            if self._context is None:
                await loop.connect_accepted_socket(factory, conn)
            else:
                await loop.connect_accepted_socket(
                    factory, conn, ssl=self._context, ssl_handshake_timeout=self.limits.header_timeout,
                    ssl_shutdown_timeout=self.limits.tls_shutdown_timeout)
        except (Exception, asyncio.CancelledError):
            # The handshake failed, timed out, or the server is stopping: the transport closes the socket.
            self.state.counts["handshake_failures"] += 1
            if not made:  # no transport was made (the factory runs first): the socket is still ours to close
                conn.close()
                self.state.open -= 1
            elif not made[0].made:
                made[0].release()
            # else connection_made ran: connection_lost releases it

    def _housekeeping(self) -> None:
        """Give the memory of closed connections back to the system once enough of them have closed."""
        state, loop = self.state, self._loop
        closed = state.counts["accepted"] - state.open
        since, now = closed - self._closed_at_trim, time.monotonic()
        due = since >= TRIM_AFTER or (since > 0 and now - self._trimmed_at >= 10 * TRIM_INTERVAL)  # or gone quiet
        if _malloc_trim is not None and due and _trim_lock.acquire(False):
            try:
                self._closed_at_trim, self._trimmed_at = closed, now
                started = time.perf_counter()
                _malloc_trim(0)
                state.counts["trims"] += 1
                state.counts["trim_ms_max"] = max(state.counts["trim_ms_max"],
                                                  round(1000 * (time.perf_counter() - started)))
            finally:
                _trim_lock.release()
        if loop is not None and loop.is_running():
            loop.call_later(TRIM_INTERVAL, self._housekeeping)

    def _exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """Clients that vanish mid-handshake or mid-write are routine here: not worth a traceback each."""
        if isinstance(context.get("exception"), (OSError, ssl.SSLError, asyncio.CancelledError)):
            return
        loop.default_exception_handler(context)

    def _serve(self, loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            listener = self._listener
            if listener is not None:
                with contextlib.suppress(Exception):
                    loop.remove_reader(listener.fileno())
                listener.close()
            for task in list(self._handshakes):
                task.cancel()
            for connection in list(self.state.connections):
                connection.shutdown()
            with contextlib.suppress(Exception):
                loop.run_until_complete(self._drain(1.0))
                for connection in list(self.state.connections):  # a TLS client that never answers close_notify
                    connection.abort()
                loop.run_until_complete(self._drain(0.2))
            loop.close()

    async def _drain(self, timeout: float) -> None:
        """Let closing connections finish (TLS close_notify, queued bytes) for at most ``timeout`` seconds."""
        end = time.monotonic() + timeout
        while (self.state.open > 0 or self._handshakes) and time.monotonic() < end:
            await asyncio.sleep(0.01)

    # ---------------------------------------------------------------- from any thread

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        self._loop = self._thread = None

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.stop()
