"""Serve a WSGI portal in-process at a base URL through ``responses``, so the User driver's browser talks to
it exactly as to an external portal. A portal that raises, hangs past the per-request timeout or answers
garbage gets a response that says so; it never crashes the kit."""

from __future__ import annotations

import io
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

import responses

from conformance.clock import Clock
from conformance.inprocess import METHODS, to_request
from conformance.printable import printable
from conformance.redact import redact_text
from conformance.trace import Trace
from conformance.wire import Request, Response

WsgiApp = Callable[..., Iterable[bytes]]


def _environ(req: Request) -> dict[str, Any]:
    parts = urlsplit(req.base)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": req.method, "SCRIPT_NAME": "", "PATH_INFO": unquote(req.path, "latin-1"),
        "QUERY_STRING": req.query, "SERVER_NAME": parts.hostname or "localhost",
        "SERVER_PORT": str(parts.port or (443 if parts.scheme == "https" else 80)), "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.version": (1, 0), "wsgi.url_scheme": parts.scheme, "wsgi.input": io.BytesIO(req.body),
        "wsgi.errors": sys.stderr, "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False,
        "REMOTE_ADDR": "127.0.0.1", "CONTENT_LENGTH": str(len(req.body)),
    }
    for name, value in req.headers.items():
        key = name.upper().replace("-", "_")
        if key == "CONTENT_TYPE":
            environ["CONTENT_TYPE"] = value
        elif key != "CONTENT_LENGTH":
            environ[f"HTTP_{key}"] = value
    return environ


def call_wsgi(app: WsgiApp, req: Request) -> Response:
    """Run one request through a WSGI app (PEP 3333) and collect the response."""
    started: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[..., None]:
        started["status"], started["headers"] = status, headers
        return lambda _data: None

    result = app(_environ(req), start_response)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close:
            close()
    status = int(str(started.get("status", "500")).split(" ", 1)[0])
    return Response(status, list(started.get("headers", [])), body)


class PortalMount:
    """A WSGI portal at ``base_url``; a raise or a hang is appended to the trace as a ``portal`` problem."""

    def __init__(self, app: WsgiApp, base_url: str, trace: Trace, clock: Clock, timeout: float = 10.0):
        self.app, self.base_url, self.trace, self.clock, self.timeout = app, base_url.rstrip("/"), trace, clock, timeout

    def handle(self, req: Request) -> Response:
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["response"] = call_wsgi(self.app, req)
            except BaseException as err:
                outcome["error"] = f"{type(err).__name__}: {err}"

        worker = threading.Thread(target=run, daemon=True, name="portal-request")
        worker.start()
        worker.join(self.timeout)
        if worker.is_alive():
            problem = f"the portal did not answer within {self.timeout:g} s"
            response = Response(504, [("Content-Type", "text/plain")], f"bc-conformance: {problem}".encode())
        elif "error" in outcome:
            problem = f"the portal raised {redact_text(printable(outcome['error']))[:300]}"  # its text, made safe
            response = Response(500, [("Content-Type", "text/plain")], f"bc-conformance: {problem}".encode())
        else:
            problem = ""
            response = outcome["response"]
        if problem:
            self.trace.append(self.clock.now(), "portal", "problem", method=req.method, path=req.path,
                              status=response.status, detail={"problem": problem})
        return response

    def mount(self, rsps: responses.RequestsMock) -> None:
        import re

        pattern = re.compile(re.escape(self.base_url) + r"(/.*)?$")

        def callback(prepared: Any) -> tuple[int, list[tuple[str, str]], bytes]:
            r = self.handle(to_request(prepared))
            return r.status, r.headers, r.body

        for method in METHODS:
            rsps.add_callback(method, pattern, callback=callback)
