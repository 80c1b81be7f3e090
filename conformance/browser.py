"""A scripted browser: its own cookie jar, redirects followed one hop at a time and recorded, HTML forms
read and submitted by field name. The User actor of the step tables is built on it."""

from __future__ import annotations

import http.client
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from conformance.clock import Clock
from conformance.redact import redact_text
from conformance.trace import Trace
from conformance.wire import with_query


@dataclass
class Form:
    id: str
    action: str
    method: str
    fields: dict[str, str] = field(default_factory=dict)
    buttons: list[tuple[str, str]] = field(default_factory=list)


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append(Form(a.get("id", ""), a.get("action", ""), (a.get("method") or "get").upper()))
        elif not self.forms:
            return
        elif tag == "input" and a.get("name"):
            if a.get("type", "text").lower() in ("submit", "button", "image"):
                self.forms[-1].buttons.append((a["name"], a.get("value", "")))
            elif a.get("type", "").lower() not in ("checkbox", "radio") or "checked" in a:
                self.forms[-1].fields[a["name"]] = a.get("value", "")
        elif tag == "button" and a.get("name"):
            self.forms[-1].buttons.append((a["name"], a.get("value", "")))

    def handle_endtag(self, tag: str) -> None:
        pass


@dataclass
class Hop:
    method: str
    url: str
    status: int
    location: str = ""

    def redacted(self) -> str:
        arrow = f" → {redact_text(self.location)}" if self.location else ""
        return f"{self.method} {redact_text(self.url)} {self.status}{arrow}"


@dataclass
class Page:
    url: str
    status: int
    headers: dict[str, str]
    text: str

    @property
    def forms(self) -> list[Form]:
        parser = _FormParser()
        try:
            parser.feed(self.text)
        except Exception:
            return []
        for form in parser.forms:
            form.action = urljoin(self.url, form.action) if form.action else self.url
        return parser.forms

    def form(self, form_id: str = "") -> Form | None:
        return next((f for f in self.forms if not form_id or f.id == form_id), None)


class TooManyRedirects(Exception):
    pass


def _stale_connection(err: BaseException) -> bool:
    """The peer closed the connection before answering (not: refused, timed out, TLS failure)."""
    todo, seen = [err], set()
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, http.client.RemoteDisconnected | ConnectionResetError | BrokenPipeError):
            return True
        todo += [x for x in (*e.args, getattr(e, "reason", None), e.__cause__, e.__context__)
                 if isinstance(x, BaseException)]
    return False


class Browser:
    """One user's browser. ``stop_at(url)`` tells which redirect targets to hand back instead of
    following (e.g. the RedirectURI, when a test gives the callback to a client library)."""

    def __init__(self, session: requests.Session | None = None, max_hops: int = 20, timeout: float = 10.0,
                 trace: Trace | None = None, clock: Clock | None = None, label: str = "", verify: bool | str = True):
        self.session = session or requests.Session()
        self.verify = verify  # passed on every request: a session's own verify loses to REQUESTS_CA_BUNDLE
        self.max_hops, self.timeout = max_hops, timeout
        self.history: list[Hop] = []
        self.trace, self.clock, self.label = trace, clock, label
        self.on_response: list[Callable[[str, str, requests.Response], None]] = []

    def _record(self, endpoint: str, method: str, url: str, **fields: Any) -> None:
        if self.trace is not None and self.clock is not None:
            parts = urlsplit(url)
            self.trace.append(self.clock.now(), "user", endpoint, method=method, path=parts.path,
                              user=self.label, detail={"host": parts.netloc, "query": redact_text(parts.query)[:600],
                                                       **fields.pop("detail", {})}, **fields)

    def get(self, url: str, stop_at: Callable[[str], bool] | None = None) -> Page:
        return self.request("GET", url, stop_at=stop_at)

    def request(self, method: str, url: str, data: dict[str, str] | None = None,
                stop_at: Callable[[str], bool] | None = None) -> Page:
        for _ in range(self.max_hops):
            cookie = requests.cookies.get_cookie_header(self.session.cookies, requests.Request(method, url))
            self._record("request", method, url, detail={"form_keys": sorted(data or {}), "cookie": bool(cookie)})
            try:
                resp = self._send(method, url, data)
            except requests.RequestException as err:
                self._record("response", method, url, status=0, error=type(err).__name__,
                             detail={"problem": redact_text(str(err))[:300]})
                raise
            location = resp.headers.get("Location", "")
            self.history.append(Hop(method, url, resp.status_code, location))
            self._record("response", method, url, status=resp.status_code,
                         detail={"location": redact_text(location)[:600],
                                 "referrer_policy": resp.headers.get("Referrer-Policy", ""),
                                 "content_type": resp.headers.get("Content-Type", "")[:80]})
            for hook in self.on_response:
                hook(method, url, resp)
            if resp.status_code in (301, 302, 303, 307, 308) and location:
                target = urljoin(url, location)
                if stop_at and stop_at(target):
                    return Page(target, resp.status_code, dict(resp.headers), "")
                if resp.status_code in (301, 302, 303):
                    method, data = "GET", None
                url = target
                continue
            return Page(resp.url, resp.status_code, dict(resp.headers), resp.text)
        raise TooManyRedirects(f"more than {self.max_hops} redirects, last at {redact_text(url.split('?')[0])}")

    def _send(self, method: str, url: str, data: dict[str, str] | None) -> requests.Response:
        """One request. A GET that fails because the server closed a kept-alive connection just as it was reused
        is sent once more on a new connection, as browsers do (Node, for one, closes idle sockets after 5 s)."""
        try:
            return self.session.request(method, url, data=data, allow_redirects=False, timeout=self.timeout,
                                        verify=self.verify)
        except requests.ConnectionError as err:
            if method != "GET" or not _stale_connection(err):
                raise
            self._record("response", method, url, status=0, error="closed before answering; sent again",
                         detail={"problem": redact_text(str(err))[:300]})
            self._record("request", method, url, detail={"form_keys": []})
            return self.session.request(method, url, allow_redirects=False, timeout=self.timeout, verify=self.verify)

    def submit(self, page: Page, form_id: str = "", fields: dict[str, str] | None = None,
               button: tuple[str, str] | None = None, stop_at: Callable[[str], bool] | None = None) -> Page:
        form = page.form(form_id)
        if form is None:
            raise LookupError(f"no form {form_id!r} on {redact_text(page.url)} (status {page.status})")
        data = {**form.fields, **(fields or {})}
        if button:
            data[button[0]] = button[1]
        if form.method == "GET":
            return self.request("GET", with_query(form.action.split("?")[0], data), stop_at=stop_at)
        return self.request("POST", form.action, data=data, stop_at=stop_at)
