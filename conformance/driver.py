"""The User driver: one scripted browser per portal session, visiting the portal as a person would — signing
in and consenting at the Authority when sent there — and able to deny consent, tamper with ``state`` or
replay a callback. Every visit is bracketed in the trace, and every portal response is scanned for leaks."""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import requests

from conformance.browser import Browser, Page, TooManyRedirects
from conformance.clock import Clock
from conformance.redact import redact_text
from conformance.trace import Trace
from conformance.user import Credentials, complete_authorize

StateTamper = Callable[[dict[str, str]], dict[str, str]]


def wrong_state(params: dict[str, str]) -> dict[str, str]:
    return {**params, "state": (params.get("state", "") + "x")[::-1] or "forged"}


def missing_state(params: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in params.items() if k != "state"}


@dataclass
class VisitResult:
    user: str
    account: str
    session: str
    kind: str  # "visit" | "replay"
    start_seq: int
    end_seq: int = 0
    status: int = 0
    problem: str = ""
    page_text: str = ""
    callback_url: str = ""
    leaks: list[str] = field(default_factory=list)


def _decoded_variants(value: str) -> Iterable[str]:
    """A cookie or URL value and what it may hide: URL-, base64- and zlib-decoded forms (Flask-style cookies)."""
    yield value
    yield unquote(value)
    for part in value.replace("%3D", "=").split("."):
        chunk = part.lstrip(".")
        for decoder in (base64.urlsafe_b64decode, base64.b64decode):
            try:
                raw = decoder(chunk + "=" * (-len(chunk) % 4))
            except (binascii.Error, ValueError):
                continue
            try:
                yield zlib.decompress(raw).decode("utf-8", "replace")
            except zlib.error:
                yield raw.decode("utf-8", "replace")


class UserDriver:
    """A portal user with their own browser (cookie jar) and Authority credentials."""

    def __init__(self, label: str, credentials: Credentials, portal_url: str, redirect_uri: str, authority_host: str,
                 trace: Trace, clock: Clock, secrets: Callable[[], Iterable[tuple[str, str]]], session: str,
                 http: requests.Session | None = None, timeout: float = 10.0, verify: bool | str = True):
        self.label, self.credentials, self.session_name = label, credentials, session
        self.portal_url, self.redirect_uri = portal_url.rstrip("/"), redirect_uri
        self.authority_host = authority_host
        self.trace, self.clock, self.secrets = trace, clock, secrets
        self.browser = Browser(http, trace=trace, clock=clock, label=label, timeout=timeout, verify=verify)
        self.browser.on_response.append(self._scan)
        self.portal_host = urlsplit(self.portal_url).netloc
        self._leaks: list[str] = []
        self.last_callback = ""  # the last callback URL (query and fragment modes)
        self.last_callback_post: tuple[str, dict[str, str]] | None = None  # (action, fields) of a form_post callback

    def _is_callback(self, url: str) -> bool:
        a, b = urlsplit(url), urlsplit(self.redirect_uri)
        return (a.netloc, a.path) == (b.netloc, b.path)

    def _scan(self, method: str, url: str, resp: requests.Response) -> None:
        """RFC 6749 §10.3–10.4: no secret, access token or refresh token in what the portal sends the browser."""
        if urlsplit(url).netloc != self.portal_host:
            return
        places = [("page", resp.text), ("Location", resp.headers.get("Location", ""))]
        places += [("cookie", c.value or "") for c in resp.cookies]
        decoded = [(where, "\n".join(_decoded_variants(text))) for where, text in places if text]
        for kind, secret in self.secrets():
            for where, text in decoded:
                if secret and secret in text:
                    self._leaks.append(f"{kind} in the {where} of {method} {redact_text(urlsplit(url).path)}")

    def visit(self, path: str = "/", consent: bool = True, tamper: StateTamper | None = None) -> VisitResult:
        """Open a portal page and do what a person does until a page of the portal is shown."""
        return self._navigate(self.portal_url + path, "visit", consent, tamper)

    def replay_callback(self) -> VisitResult:
        """Send the last authorization response to the RedirectURI again, as it came (a GET of the callback URL,
        or the form_post POST re-submitted, as a browser's back button and "resubmit" do)."""
        if self.last_callback_post is not None:
            action, fields = self.last_callback_post
            return self._navigate(action, "replay", True, None, post=dict(fields))
        return self._navigate(self.last_callback or self.portal_url + "/", "replay", True, None)

    def _navigate(self, url: str, kind: str, consent: bool, tamper: StateTamper | None,
                  post: dict[str, str] | None = None) -> VisitResult:
        start = self.trace.append(self.clock.now(), "user", "visit_start", user=self.label,
                                  detail={"session": self.session_name, "kind": kind,
                                          "callback_replayed": kind == "replay" and (post is not None
                                                                                     or bool(self.last_callback))})
        result = VisitResult(self.label, self.credentials.username, self.session_name, kind, start.seq)
        self._leaks = []
        try:
            first = (self.browser.request("POST", url, data=post, stop_at=self._is_callback) if post is not None
                     else self.browser.get(url, stop_at=self._is_callback))
            page = self._follow(first, consent, tamper)
            result.status, result.page_text = page.status, page.text
        except TooManyRedirects as err:
            result.problem = f"redirect loop: {err}"
        except requests.RequestException as err:
            result.problem = _unreachable(err)
        result.leaks = sorted(set(self._leaks))
        result.callback_url = self.last_callback
        end = self.trace.append(self.clock.now(), "user", "visit_end", user=self.label, status=result.status,
                                detail={"session": self.session_name, "kind": kind, "problem": result.problem,
                                        "leaks": result.leaks})
        result.end_seq = end.seq
        return result

    def _follow(self, page: Page, consent: bool, tamper: StateTamper | None) -> Page:
        for _ in range(12):
            at_authority = urlsplit(page.url).netloc == self.authority_host
            form = page.form("form_post") if at_authority else None
            if form is not None and self._is_callback(form.action):
                # response_mode=form_post: the page auto-submits the authorization response to the RedirectURI.
                fields = tamper(dict(form.fields)) if tamper else dict(form.fields)
                self.last_callback, self.last_callback_post = "", (form.action, fields)
                page = self.browser.request("POST", form.action, data=fields, stop_at=self._is_callback)
                continue
            if at_authority and page.forms:
                page = complete_authorize(self.browser, page, self.credentials, consent, stop_at=self._is_callback)
                continue
            if self._is_callback(page.url) and page.status in (301, 302, 303, 307, 308):
                target = page.url
                if tamper:
                    parts = urlsplit(target)
                    params = tamper(dict(parse_qsl(parts.query, keep_blank_values=True)))
                    target = urlunsplit(parts._replace(query=urlencode(params)))
                self.last_callback, self.last_callback_post = target, None
                page = self.browser.get(target, stop_at=lambda _url: False)
                continue
            return page
        raise TooManyRedirects("the sign-in did not finish within 12 pages")


def _unreachable(err: requests.RequestException) -> str:
    """What went wrong on the wire, in words a portal developer can act on."""
    where = urlsplit(err.request.url).path if err.request is not None and err.request.url else ""
    what = f"{type(err).__name__}: {redact_text(str(err))[:200]}"
    at = f" at {where}" if where else ""
    if isinstance(err, requests.Timeout):
        return f"no answer{at} within the request timeout (does the portal hang?): {what}"
    if isinstance(err, requests.ConnectionError) and ("BadStatusLine" in what or "RemoteDisconnected" in what):
        return f"the portal's answer{at} is not HTTP, or the connection closed without one: {what}"
    return f"the portal could not be reached{at}: {what}"
