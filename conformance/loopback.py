"""Loopback adapter: serve a sans-IO fake over real HTTPS on 127.0.0.1 (uvicorn + httptools, raw ASGI),
for portals running in their own process, in any language."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable
from typing import Any

import uvicorn

from conformance.tls import TlsFiles
from conformance.wire import Request, Response

Handler = Callable[[Request], Response]


def asgi_app(handler: Handler, scheme: str = "https") -> Callable[..., Any]:
    async def app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers and name != "cookie" else (
                f"{headers[name]}; {value}" if name in headers else value)
        host = headers.get("host") or "{}:{}".format(*scope["server"])
        raw_path = scope.get("raw_path") or scope["path"].encode()
        request = Request(scope["method"], raw_path.decode("latin-1"), scope["query_string"].decode("latin-1"),
                          headers, b"".join(chunks), f"{scheme}://{host}")
        try:
            response = handler(request)
        except Exception:
            response = Response.json(500, {"error": "server_error"})
        if response.delay:
            await asyncio.sleep(response.delay)
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
        if not any(k.lower() == b"content-length" for k, _ in headers):
            headers.append((b"content-length", str(len(response.body)).encode()))
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})

    return app


class LoopbackServer:
    """One uvicorn server in a daemon thread; ``url`` is known once ``start`` returns."""

    def __init__(self, handler: Handler, tls: TlsFiles | None, host: str = "127.0.0.1", port: int = 0):
        self.handler, self.tls, self.host, self.port = handler, tls, host, port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

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
        config = uvicorn.Config(
            asgi_app(self.handler, "https" if self.tls else "http"), log_level="critical", access_log=False,
            lifespan="off", http="httptools", loop="asyncio", timeout_keep_alive=30, timeout_graceful_shutdown=1,
            ssl_certfile=str(self.tls.cert_file) if self.tls else None,
            ssl_keyfile=str(self.tls.key_file) if self.tls else None,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True,
                                        name=f"loopback-{self.port}")
        self._thread.start()
        ready = threading.Event()
        while not ready.wait(0.01):
            if self._server.started:
                break
            if not self._thread.is_alive():
                raise RuntimeError(f"the loopback server on {self.url} stopped while starting")
            timeout -= 0.01
            if timeout <= 0:
                raise TimeoutError(f"the loopback server on {self.url} did not start")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.stop()
