"""Text that is safe in every output, whatever a portal prints.

A portal's output and answers reach messages, traces and reports: terminal colour codes (ANSI escapes), other
control characters and undecodable bytes among them. JSON escapes them, but XML 1.0 (``junit.xml``) forbids most
control characters outright, a Markdown job summary shows them raw and a terminal obeys them. ``printable`` is the
one place that removes them: ANSI/VT escape sequences (7-bit, as terminals read UTF-8 text) are dropped whole, every
other control character except
``\\n`` and ``\\t`` (C0, DEL, C1 — ``\\r`` included) is dropped, lone surrogates (undecodable bytes read with
``surrogateescape``) become U+FFFD, and the non-characters U+FFFE/U+FFFF are dropped. Text decoded with
``errors="replace"`` already carries U+FFFD for invalid UTF-8, which every output accepts.

Applied where the results document is made (``conformance.run.judge``: results.json, junit.xml, the reports and
the console summary all come from it), where the report renders any results.json (``reports.safe``), and to the
portal output the kit quotes on the terminal (``conformance.external``).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["printable", "printable_value"]

_ESCAPES = re.compile(
    r"""
      \x1b\[[0-?]*[ -/]*[@-~]?              # CSI: colours, cursor moves (ESC [ ... final byte)
    | \x1b\][^\x07\x1b\n]*(?:\x07|\x1b\\)?  # OSC: window titles, hyperlinks (ended by BEL or ST)
    | \x1b[PX^_][^\x1b\n]*(?:\x1b\\)?       # DCS, SOS, PM, APC strings
    | \x1b[ -/]*[0-~]?                      # any other escape sequence (or a lone ESC)
    """,
    re.VERBOSE,
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ufffe\uffff]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_ANY = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def printable(text: str | bytes) -> str:
    """``text`` without escape sequences and control characters (``\\n`` and ``\\t`` stay); bytes are read as
    UTF-8 with U+FFFD for what does not decode."""
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode("utf-8", "replace")
    if not _ANY.search(text):  # the common case: nothing to remove
        return text
    text = _ESCAPES.sub("", text)
    text = _SURROGATE.sub("\ufffd", text)
    return _CONTROL.sub("", text)


def printable_value(value: Any) -> Any:
    """A JSON-like structure with every string (keys included) made ``printable``; other values unchanged."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {printable(k) if isinstance(k, str) else k: printable_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [printable_value(v) for v in value]
    return value
