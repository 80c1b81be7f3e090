"""Switches a scenario flips on the fake Authority: failures, throttling, latency, revocation, denial."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TokenFault:
    status: int
    error: str
    retry_after: int | None = None


@dataclass
class AuthorityFaults:
    token_failures: deque[TokenFault] = field(default_factory=deque)
    latency: float = 0.0  # seconds added to every response
    deny_consent: set[str] = field(default_factory=set)  # usernames whose consent is refused ("*" = all)
    demand_mfa: set[str] = field(default_factory=set)  # usernames who must pass MFA now ("*" = all)
    quirky_token_responses: bool = False  # lower-case token_type, no expires_in, an unknown field
    # RFC 6749 §4.1.2 / RFC 9700 §4.14.2: revoke a grant's tokens when its code is redeemed twice or a rotated refresh
    # token is used again. Entra does neither (its docs: old refresh tokens are not revoked when used), so off.
    strict_revocation: bool = False

    def fail_next_token_requests(self, n: int = 1, status: int = 503, error: str = "temporarily_unavailable") -> None:
        """The next ``n`` token requests get ``status`` with an Entra ``error`` body."""
        self.token_failures.extend(TokenFault(status, error) for _ in range(n))

    def throttle(self, n: int = 1, retry_after: int = 5) -> None:
        """The next ``n`` token requests get 429 with ``Retry-After``."""
        self.token_failures.extend(TokenFault(429, "temporarily_unavailable", retry_after) for _ in range(n))

    def take_token_fault(self) -> TokenFault | None:
        return self.token_failures.popleft() if self.token_failures else None

    @staticmethod
    def _matches(names: set[str], username: str) -> bool:
        return "*" in names or username.lower() in {n.lower() for n in names}

    def consent_denied_for(self, username: str) -> bool:
        return self._matches(self.deny_consent, username)

    def mfa_demanded_for(self, username: str) -> bool:
        return self._matches(self.demand_mfa, username)

    def clear(self) -> None:
        self.token_failures.clear()
        self.latency = 0.0
        self.deny_consent.clear()
        self.demand_mfa.clear()
        self.quirky_token_responses = False
        self.strict_revocation = False
