"""Links for a check's references: the vendor document and RFC sections are the only places the page
links off itself, so a reader can check the rule a verdict rests on."""

from __future__ import annotations

import re
from dataclasses import dataclass

from flows import DOCUMENT as DOCUMENT_TITLE
from flows import DOCUMENT_URL

RFC_URL = "https://www.rfc-editor.org/rfc/rfc{number}"

ALLOWED = ("https://www.rfc-editor.org/rfc/", "https://datatracker.ietf.org/", "https://docs.staedean.com/")
"""The only places the page may link to: anything else in a reference stays plain text."""
_URL = re.compile(r"\s*<(https?://[^<>\s]+)>\s*$")
_RFC = re.compile(r"\bRFC\s*(\d{3,5})(?:\s*§\s*(\d+(?:\.\d+)*))?", re.IGNORECASE)


@dataclass(frozen=True)
class Ref:
    text: str
    url: str = ""


def split_url(ref: str) -> tuple[str, str]:
    """``"text <https://…>"`` as (text, url); the URL is kept only when the page may link there."""
    match = _URL.search(ref)
    if not match:
        return ref.strip(), ""
    url = match[1] if match[1].startswith(ALLOWED) else ""
    return ref[: match.start()].strip(), url


def ref_link(ref: str) -> Ref:
    """The document (by title) and ``RFC n §x.y`` get a URL; other allowed URLs are kept; the rest is text."""
    ref, given = split_url(ref)
    if ref.lower().startswith(DOCUMENT_TITLE.lower()):
        return Ref(ref, DOCUMENT_URL)
    match = _RFC.search(ref)
    if match:
        url = RFC_URL.format(number=int(match[1]))
        return Ref(ref, f"{url}#section-{match[2]}" if match[2] else url)
    return Ref(ref, given)
