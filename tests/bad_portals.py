"""Misbehaving WSGI portals for the engine tests: the kit must fail their checks, never crash."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

HANG = threading.Event()  # never set: a request to ``hanging`` blocks until the test releases it


def raising(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    raise RuntimeError("portal bug: KeyError in the session code")


def hanging(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    HANG.wait(30)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"too late"]


def garbage(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return [b"\x00\xff\xfe not a page \x89PNG"]


def not_wsgi() -> str:
    return "a factory that returns a string"
