"""Redaction of everything the report prints.

The kit redacts its traces already, but a report is what gets pasted into tickets, CI summaries and PR
comments, so every string taken from results passes through here once more: a planted secret, JWT or code
must never reach the page even when some producer forgot to redact it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from conformance.printable import printable
from conformance.redact import MARK, SENSITIVE_HEADERS, SENSITIVE_KEYS, redact_text

__all__ = ["MARK", "clean", "clean_value", "is_sensitive_key"]

_KEY_WORDS = ("secret", "password", "passwd", "assertion", "verifier", "cookie", "credential")
# Keys unambiguous enough to redact in prose written as ``key: value`` (``code: 200`` must survive).
_PROSE_KEYS = ("client_secret", "refresh_token", "access_token", "id_token", "code_verifier", "client_assertion",
               "password", "passwd")
_QUOTED = re.compile(
    r"""(?i)(["'](?:""" + "|".join(sorted(SENSITIVE_KEYS | {"passwd"})) + r""")["']\s*[:=]\s*)(["']?)([^"'\s,}&<>]+)"""
)
_PROSE = re.compile(r"(?i)(\b(?:" + "|".join(_PROSE_KEYS) + r")\s*:\s*)([^\s,;&<>\"']+)")
# A credential after an auth scheme: long, token-like (has a digit or punctuation), not already a mark.
_SCHEME = re.compile(r"(?i)\b(Bearer|Basic)\s+(?!\[REDACTED\])(?=[A-Za-z0-9._~+/=-]*[0-9._~+/=-])"
                     r"[A-Za-z0-9._~+/=-]{16,}")


def is_sensitive_key(key: str) -> bool:
    """True for a field whose value is a credential whatever it looks like (``client_secret``, ``*_token``)."""
    k = str(key).lower().replace("-", "_")
    return (k in SENSITIVE_KEYS or k in SENSITIVE_HEADERS or k.endswith("_token") or k.endswith("_secret")
            or any(word in k for word in _KEY_WORDS))


def _masked_header(key: str, value: Any) -> str:
    """Keep the auth scheme (``Bearer``) of an Authorization value: it is evidence, the credential is not."""
    text = str(value)
    if str(key).lower().endswith("authorization") and " " in text.strip():
        return f"{text.strip().split(' ', 1)[0]} {MARK}"
    return MARK


def clean(value: Any) -> str:
    """The printable, redacted text of any value from results (``None`` prints as nothing)."""
    if value is None:
        return ""
    if isinstance(value, Mapping | list | tuple):
        return _clean_text(json.dumps(clean_value(value), ensure_ascii=False, sort_keys=False, default=str))
    return _clean_text(str(value))


@lru_cache(maxsize=1 << 16)
def _clean_text(text: str) -> str:
    """Cached: a run's trace repeats the same hosts, paths and ids thousands of times. Escape sequences and control
    characters go first (``conformance.printable``): a results.json from anywhere renders to valid HTML/Markdown."""
    text = redact_text(printable(text))
    text = _QUOTED.sub(lambda m: f"{m[1]}{m[2]}{MARK}", text)
    text = _PROSE.sub(lambda m: f"{m[1]}{MARK}", text)
    return _SCHEME.sub(lambda m: f"{m[1]} {MARK}", text)


def clean_value(value: Any) -> Any:
    """A structure with sensitive fields masked and every string cleaned (for nested trace details)."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if is_sensitive_key(key):
                # a flag such as ``secret_in_url: false`` is evidence, not a secret
                keep = isinstance(item, bool) or item is None or item in ("", MARK)
                out[clean(key)] = item if keep else _masked_header(key, item)
            else:
                out[clean(key)] = clean_value(item)
        return out
    if isinstance(value, list | tuple):
        if len(value) == 2 and isinstance(value[0], str) and is_sensitive_key(value[0]) and value[1]:
            return [clean(value[0]), _masked_header(value[0], value[1])]  # a (name, value) header pair
        return [clean_value(item) for item in value]
    if isinstance(value, str):
        return clean(value)
    return value
