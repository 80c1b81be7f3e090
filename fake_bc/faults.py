"""Switches a scenario flips on the fake BC: revoked tokens, failing responses, latency, missing permissions."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ResponseFault:
    status: int  # 429, 500, 502, 503 or 504
    retry_after: int | None = None


@dataclass
class BCFaults:
    revoked_tokens: set[str] = field(default_factory=set)  # token ids (uti)
    revoked_principals: dict[str, float] = field(default_factory=dict)  # oid/appid -> tokens issued until then
    failures: deque[ResponseFault] = field(default_factory=deque)
    latency: float = 0.0  # seconds added to every response (Response.delay)
    no_permission: set[str] = field(default_factory=set)  # oids/appids whose calls get 403 ("*" = everyone)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def revoke_token(self, uti: str) -> None:
        """The token with this ``uti`` is refused from now on, though unexpired (e.g. its session was revoked)."""
        self.revoked_tokens.add(uti)

    def revoke_principal(self, principal: str, at: float) -> None:
        """Every token of a user or app (by ``oid`` or ``appid``) issued at or before ``at`` is refused;
        tokens issued later work (Entra's revokeSignInSessions)."""
        self.revoked_principals[principal.lower()] = at

    def is_revoked(self, uti: str, oid: str, appid: str, iat: float) -> bool:
        if uti in self.revoked_tokens:
            return True
        for who in (oid.lower(), appid.lower()):
            until = self.revoked_principals.get(who) if who else None
            if until is not None and iat <= until:
                return True
        return False

    def fail_next(self, n: int = 1, status: int = 503, retry_after: int | None = None) -> None:
        """The next ``n`` authenticated requests get ``status`` (500, 502, 503, 504 or 429) with a BC error body.
        503 and 502 carry ``Retry-After`` (documented for them); 429 too."""
        if status not in (429, 500, 502, 503, 504):
            raise ValueError(f"fail_next: status must be 429, 500, 502, 503 or 504, got {status}")
        if retry_after is None and status in (429, 502, 503):
            retry_after = 5
        with self._lock:
            self.failures.extend(ResponseFault(status, retry_after) for _ in range(n))

    def take(self) -> ResponseFault | None:
        with self._lock:
            return self.failures.popleft() if self.failures else None

    def deny_permissions(self, principal: str = "*") -> None:
        """Authenticated, but without a BC permission set: 403 ``Internal_ServerError``."""
        self.no_permission.add(principal.lower())

    def lacks_permission(self, oid: str, appid: str) -> bool:
        return bool(self.no_permission) and ("*" in self.no_permission or oid.lower() in self.no_permission
                                             or appid.lower() in self.no_permission)

    def clear(self) -> None:
        with self._lock:
            self.revoked_tokens.clear()
            self.revoked_principals.clear()
            self.failures.clear()
            self.latency = 0.0
            self.no_permission.clear()
