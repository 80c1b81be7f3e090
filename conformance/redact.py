"""Redaction of secrets, codes and tokens in anything the kit prints, traces or exports."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping

SENSITIVE_KEYS = frozenset({
    "client_secret", "code", "refresh_token", "access_token", "id_token", "code_verifier", "password",
    "client_assertion", "assertion", "otp", "secret", "token", "session_state",
})
SENSITIVE_HEADERS = frozenset({"authorization", "cookie", "set-cookie", "proxy-authorization"})
MARK = "[REDACTED]"
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")


def fingerprint(value: str, kind: str = "") -> str:
    """A stable, non-reversible handle for a secret value, to correlate it across the trace."""
    digest = hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()[:12]
    return f"{kind}:{digest}" if kind else digest


def redact_mapping(values: Mapping[str, str]) -> dict[str, str]:
    return {k: (MARK if k.lower() in SENSITIVE_KEYS else _scrub(v)) for k, v in values.items()}


def redact_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    out = []
    for name, value in headers:
        if name.lower() in SENSITIVE_HEADERS:
            scheme = value.split(" ", 1)[0] if " " in value and name.lower().endswith("authorization") else ""
            value = f"{scheme} {MARK}".strip()
        out.append((name, value))
    return out


def _scrub(text: str) -> str:
    return _JWT.sub(MARK, text)


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove JWTs, ``key=value`` pairs of sensitive keys, and any of the given literal secrets."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MARK)
    text = _scrub(text)
    return re.sub(
        r"(?i)\b(" + "|".join(sorted(SENSITIVE_KEYS)) + r")=([^&\s\"'<>]+)", lambda m: f"{m[1]}={MARK}", text
    )
