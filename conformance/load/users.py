"""The Locust user: one browser session of one Entra account, opening the portal page again and again (and now and
then twice at once, as two tabs do, so a portal can stampede within one session). Its browser is the kit's scripted
``Browser``, which signs in and consents at the fake Authority's pages; every request it sends is timed and reported
to Locust under the name of the flow step it exercises. Import only in the runner process (after locust).
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import gevent
import requests
from locust import User, between, task

from conformance.browser import Browser, Page, TooManyRedirects
from conformance.load.config import RunConfig
from conformance.load.evidence import Timing, Visit
from conformance.redact import redact_text
from conformance.user import Credentials, complete_authorize

SIGN_IN_PAGES = 8  # Authority pages a visit may pass before it counts as a sign-in loop
Sink = Callable[[Visit], None]


class TimedSession(requests.Session):
    """A requests session that reports each request to Locust (``events.request``) and to the current visit."""

    def __init__(self, fire: Callable[..., None], name_of: Callable[[str, str, dict[str, str] | None], str]):
        super().__init__()
        self.fire, self.name_of = fire, name_of
        self.timings: dict[Any, list[Timing]] = {}  # per greenlet: two tabs of one session run at once

    def _note(self, timing: Timing) -> None:
        if (into := self.timings.get(gevent.getcurrent())) is not None:
            into.append(timing)

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        name = self.name_of(str(method), str(url), kwargs.get("data"))
        start, t0 = time.time(), time.perf_counter()
        try:
            resp = super().request(method, url, *args, **kwargs)
        except requests.RequestException as err:
            ms = (time.perf_counter() - t0) * 1000
            self.fire(request_type=str(method), name=name, response_time=ms, response_length=0, exception=err,
                      context={})
            self._note(Timing(name, start, ms, 0, True))
            raise
        ms = (time.perf_counter() - t0) * 1000
        failed = resp.status_code >= 400
        self.fire(request_type=str(method), name=name, response_time=ms, response_length=len(resp.content),
                  exception=requests.HTTPError(f"HTTP {resp.status_code}") if failed else None, context={})
        self._note(Timing(name, start, ms, resp.status_code, failed))
        return resp


def namer(cfg: RunConfig) -> Callable[[str, str, dict[str, str] | None], str]:
    names = cfg.step_names or RunConfig.names_for(cfg.mode)
    portal = urlsplit(cfg.portal_url).netloc

    def name_of(method: str, url: str, data: dict[str, str] | None) -> str:
        parts = urlsplit(url)
        if parts.netloc == portal:
            if parts.path == cfg.redirect_path:
                return names.get("callback", names["other"])
            return names["page"] if parts.path == cfg.page else names["other"]
        if parts.netloc == cfg.authority_host:
            fields = data or {}
            if "username" in fields or "otp" in fields:
                return names.get("login", "Authority")
            if "consent" in fields:
                return names.get("consent", "Authority")
            return names.get("authorize", "Authority")
        return "other host"

    return name_of


def user_class(cfg: RunConfig, sink: Sink) -> type[User]:
    """A Locust ``User`` class for this run; each instance takes the next account of its process's share."""
    counter = itertools.count()
    name_of = namer(cfg)
    slots = max(1, cfg.workers)

    class PortalUser(User):
        wait_time = between(*cfg.wait)

        def on_start(self) -> None:
            local = next(counter)
            index = getattr(self.environment.runner, "worker_index", 0)
            index = max(0, index) + slots * local if cfg.workers else local
            username, password = cfg.accounts[index % len(cfg.accounts)]
            self.label = f"user-{index + 1:03d}"
            self.session_name = f"{self.label}-s{local}"
            self.credentials = Credentials(username, password)
            self.http = TimedSession(self.environment.events.request.fire, name_of)
            self.browser = Browser(self.http, timeout=cfg.request_timeout, verify=cfg.ca_file)
            self.signed_in = False

        @task
        def open_page(self) -> None:
            if self.signed_in and random.random() < cfg.two_tabs:
                tab = gevent.spawn(self.visit, "tab")
                self.visit("visit")
                tab.join()
            else:
                self.visit("visit")

        def visit(self, kind: str) -> None:
            if kind == "visit":
                self.browser.history.clear()  # hops are not kept: a long run must not grow without bound
            record = Visit(self.label, self.session_name, self.credentials.username, kind, time.time(), 0.0)
            timings: list[Timing] = []
            self.http.timings[gevent.getcurrent()] = timings
            try:
                page = self.navigate()
                record.status = page.status
                record.on_portal = urlsplit(page.url).netloc == urlsplit(cfg.portal_url).netloc
                self.signed_in = self.signed_in or (record.on_portal and 200 <= page.status < 300)
            except TooManyRedirects as err:
                record.problem = f"redirect loop: {err}"
            except requests.Timeout as err:
                record.problem = f"no answer within {cfg.request_timeout:g} s: {redact_text(str(err))[:200]}"
            except requests.RequestException as err:
                record.problem = f"{type(err).__name__}: {redact_text(str(err))[:200]}"
            except gevent.GreenletExit:
                record.stopped = True
                raise
            finally:
                record.end = time.time()
                record.requests = timings
                self.http.timings.pop(gevent.getcurrent(), None)
                sink(record)

        def navigate(self) -> Page:
            page = self.browser.get(cfg.portal_url + cfg.page)
            for _ in range(SIGN_IN_PAGES):
                if urlsplit(page.url).netloc != cfg.authority_host or not page.forms:
                    return page
                page = complete_authorize(self.browser, page, self.credentials)
            raise TooManyRedirects(f"still at the Authority after {SIGN_IN_PAGES} pages")

    return PortalUser
