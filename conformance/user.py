"""The User actor at the fake Authority: signs in (AC-4) and answers the consent page (AC-5)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from conformance.browser import Browser, Page


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str
    otp: str = "000000"


def starts_with(prefix: str) -> Callable[[str], bool]:
    return lambda url: url.split("?")[0].split("#")[0] == prefix.split("?")[0]


def complete_authorize(browser: Browser, page: Page, user: Credentials, consent: bool = True,
                       stop_at: Callable[[str], bool] | None = None, max_pages: int = 6) -> Page:
    """Fill the fake Authority's login, MFA and consent forms until the browser leaves the Authority.

    ``page`` is the Authority's page already loaded (or a redirect the browser stopped at). Returns the
    first page that has none of the Authority's forms (a form_post page is submitted, as a browser would).
    """
    for _ in range(max_pages):
        if page.form("login"):
            page = browser.submit(page, "login", {"username": user.username, "password": user.password},
                                  stop_at=stop_at)
        elif page.form("mfa"):
            page = browser.submit(page, "mfa", {"otp": user.otp}, stop_at=stop_at)
        elif page.form("consent"):
            page = browser.submit(page, "consent", button=("consent", "accept" if consent else "deny"),
                                  stop_at=stop_at)
        elif page.form("form_post") and not (stop_at and stop_at(page.form("form_post").action)):  # type: ignore[union-attr]
            page = browser.submit(page, "form_post", stop_at=stop_at)
        else:
            return page
    return page


def callback_params(url_or_page: str | Page) -> dict[str, str]:
    """The parameters an Authority sent to the RedirectURI (query, fragment or form_post fields)."""
    if isinstance(url_or_page, Page):
        form = url_or_page.form("form_post")
        if form is not None:
            return dict(form.fields)
        url_or_page = url_or_page.url
    parts = urlsplit(url_or_page)
    return dict(parse_qsl(parts.query or parts.fragment, keep_blank_values=True))
