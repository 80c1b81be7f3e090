"""In-process adapter: serve a sans-IO fake at a real host name through ``responses`` callbacks, so an
unmodified ``requests``-based client (MSAL Python included) reaches it with no configuration change."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import responses

from conformance.clock import Clock, FakeClock
from conformance.wire import Request, Response

Handler = Callable[[Request], Response]
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


def to_request(prepared: Any) -> Request:
    """Convert a ``requests.PreparedRequest`` into a plain ``Request`` value."""
    parts = urlsplit(prepared.url)
    body = prepared.body or b""
    if isinstance(body, str):
        body = body.encode("utf-8")
    elif not isinstance(body, bytes):  # a generator or file: read it all
        body = b"".join(chunk if isinstance(chunk, bytes) else str(chunk).encode() for chunk in body)
    headers = {k.lower(): v for k, v in prepared.headers.items()}
    return Request(prepared.method.upper(), parts.path or "/", parts.query, headers, body,
                   f"{parts.scheme}://{parts.netloc}")


def mount(rsps: responses.RequestsMock, base_url: str, handler: Handler, clock: Clock | None = None) -> None:
    """Route every request to ``base_url`` through ``handler``; latency faults move a fake clock."""
    pattern = re.compile(re.escape(base_url.rstrip("/")) + r"(/.*)?$")

    def callback(prepared: Any) -> tuple[int, list[tuple[str, str]], bytes]:
        response = handler(to_request(prepared))
        if response.delay and isinstance(clock, FakeClock):
            clock.advance(response.delay)
        return response.status, response.headers, response.body

    for method in METHODS:
        rsps.add_callback(method, pattern, callback=callback)
