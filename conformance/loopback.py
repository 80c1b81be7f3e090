"""Loopback adapter: serve a sans-IO fake over real HTTPS on 127.0.0.1, for portals running in their own
process, in any language. One event loop (uvloop when installed) in a daemon thread per server."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading

from conformance.http_protocol import Handler, HttpProtocol
from conformance.tls import TlsFiles

try:
    import uvloop
except ImportError:  # pragma: no cover - optional speed-up (not on Windows)
    uvloop = None


def _new_loop() -> asyncio.AbstractEventLoop:
    return uvloop.new_event_loop() if uvloop is not None else asyncio.new_event_loop()


def _tls_context(tls: TlsFiles) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tls.cert_file, tls.key_file)
    context.set_alpn_protocols(["http/1.1"])
    return context


class LoopbackServer:
    """``url`` is known once ``start`` returns; ``stop`` closes every connection and joins the thread."""

    def __init__(self, handler: Handler, tls: TlsFiles | None, host: str = "127.0.0.1", port: int = 0):
        self.handler, self.tls, self.host, self.port = handler, tls, host, port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[HttpProtocol] = set()

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    def start(self, timeout: float = 10.0) -> LoopbackServer:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # proto IPPROTO_TCP, not 0: asyncio disables Nagle only on sockets whose proto is TCP, and accepted
        # sockets inherit it; with proto 0 every response waited ~40 ms for a delayed ACK.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as err:
            sock.close()
            raise OSError(f"cannot listen on {self.host}:{self.port}: {err.strerror}") from None
        sock.listen(1024)
        self.port = sock.getsockname()[1]
        loop = self._loop = _new_loop()
        scheme = "https" if self.tls else "http"
        context = _tls_context(self.tls) if self.tls else None
        try:
            server = loop.run_until_complete(loop.create_server(
                lambda: HttpProtocol(self.handler, scheme, self._connections), sock=sock, ssl=context))
        except Exception:
            sock.close()
            loop.close()
            raise
        self._thread = threading.Thread(target=self._serve, args=(loop, server), daemon=True,
                                        name=f"loopback-{self.port}")
        self._thread.start()
        return self

    def _serve(self, loop: asyncio.AbstractEventLoop, server: asyncio.Server) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            server.close()
            for connection in list(self._connections):
                connection.shutdown()
            with contextlib.suppress(Exception):
                loop.run_until_complete(asyncio.wait_for(server.wait_closed(), 1))
            loop.close()

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
