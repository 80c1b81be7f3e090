"""Plain HTTP request and response values: the only thing the sans-IO fakes see and return."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlencode

FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"


def _parse_qs(raw: str) -> tuple[dict[str, str], tuple[str, ...]]:
    """First value of each parameter, and the names that came more than once; never raises on malformed input."""
    out: dict[str, str] = {}
    twice: dict[str, None] = {}
    for key, value in parse_qsl(raw, keep_blank_values=True, errors="replace") if raw else ():
        if key in out:
            twice[key] = None
        else:
            out[key] = value
    return out, tuple(twice)


def media_type(content_type: str) -> str:
    """The media type of a Content-Type value, lower-case, without parameters (RFC 9110 §8.3.1)."""
    return content_type.split(";", 1)[0].strip().lower()


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: str = ""
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    body: bytes = b""
    base: str = "https://localhost"  # scheme://host[:port] the client addressed

    @cached_property
    def _query(self) -> tuple[dict[str, str], tuple[str, ...]]:
        return _parse_qs(self.query)

    @cached_property
    def _body(self) -> tuple[dict[str, str], tuple[str, ...]]:
        return _parse_qs(self.body.decode("utf-8", "replace")) if self.is_form else ({}, ())

    @property
    def params(self) -> dict[str, str]:
        return self._query[0]

    @property
    def is_form(self) -> bool:
        return media_type(self.headers.get("content-type", "")) == FORM_MEDIA_TYPE

    @property
    def form(self) -> dict[str, str]:
        return self._body[0]

    @property
    def repeated(self) -> tuple[str, ...]:
        """Parameters that occur more than once in the query or the form body (RFC 6749 §3.1 forbids it)."""
        return tuple(dict.fromkeys((*self._query[1], *self._body[1])))

    @cached_property
    def cookies(self) -> dict[str, str]:
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(self.headers.get("cookie", ""))
        except CookieError:
            return {}
        return {k: m.value for k, m in jar.items()}

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)

    @property
    def url(self) -> str:
        return f"{self.base}{self.path}" + (f"?{self.query}" if self.query else "")


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    delay: float = 0.0  # seconds an adapter waits before answering (latency faults)

    @classmethod
    def json(cls, status: int, payload: Any, headers: list[tuple[str, str]] | None = None) -> Response:
        body = json.dumps(payload, separators=(",", ":")).encode()
        return cls(status, [("Content-Type", "application/json; charset=utf-8"), *(headers or [])], body)

    @classmethod
    def html(cls, status: int, text: str, headers: list[tuple[str, str]] | None = None) -> Response:
        return cls(status, [("Content-Type", "text/html; charset=utf-8"), *(headers or [])], text.encode())

    @classmethod
    def redirect(cls, location: str, headers: list[tuple[str, str]] | None = None) -> Response:
        return cls(302, [("Location", location), *(headers or [])], b"")

    def header(self, name: str, default: str = "") -> str:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return default

    def json_body(self) -> Any:
        return json.loads(self.body)


def with_query(url: str, params: dict[str, str], sep: str = "?") -> str:
    joiner = "&" if sep == "?" and "?" in url else sep
    return f"{url}{joiner}{urlencode(params)}"
