"""BC's operational limits per user or service principal: requests in a sliding window, and concurrency.

Real BC *queues* a principal's requests beyond 5 running (and answers 503 after 8 minutes queued); the fake
refuses them with 429 at once instead, so a scenario can show a portal meeting the limit without waiting.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True)
class LimitSettings:
    """Defaults are BC online's documented limits; tests make them small."""

    requests_per_window: int = 6_000
    window_seconds: float = 300.0
    max_concurrent: int = 5


@dataclass
class RateLimiter:
    """Sliding window: at most ``limit`` admitted requests in any ``window`` seconds. Refused requests do not
    count, so a client that backs off as told by ``Retry-After`` gets through."""

    limit: int
    window: float
    _seen: dict[str, deque[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def admit(self, key: str, now: float) -> float | None:
        """Record the request and return None, or return the seconds to wait (the 429's ``Retry-After``)."""
        with self._lock:
            seen = self._seen.get(key)
            if seen is None:
                seen = self._seen[key] = deque()
            horizon = now - self.window
            while seen and seen[0] <= horizon:
                seen.popleft()
            if len(seen) >= self.limit:
                return max(1.0, math.ceil(seen[0] - horizon))
            seen.append(now)
            return None

    def count(self, key: str, now: float) -> int:
        with self._lock:
            return sum(1 for t in self._seen.get(key, ()) if t > now - self.window)


@dataclass
class ConcurrencyLimiter:
    """Requests in flight per principal. A request is in flight while the core handles it and, when a latency
    fault holds its answer back, until that delay has passed on the shared clock: the loopback server calls the
    core from one event-loop thread, so the delay is where concurrent requests actually overlap."""

    limit: int
    _active: dict[str, int] = field(default_factory=dict)
    _held: dict[str, list[float]] = field(default_factory=dict)  # key -> instants the delayed answers finish
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def in_flight(self, key: str, now: float) -> int:
        held = self._held.get(key)
        if held:
            held[:] = [t for t in held if t > now]
        return self._active.get(key, 0) + (len(held) if held else 0)

    def enter(self, key: str, now: float) -> bool:
        with self._lock:
            if self.in_flight(key, now) >= self.limit:
                return False
            self._active[key] = self._active.get(key, 0) + 1
            return True

    def exit(self, key: str, now: float, delay: float = 0.0) -> None:
        with self._lock:
            self._active[key] = max(0, self._active.get(key, 0) - 1)
            if delay > 0:
                self._held.setdefault(key, []).append(now + delay)


class Limits:
    """Both limits, configured together."""

    def __init__(self, settings: LimitSettings | None = None):
        self.configure(settings or LimitSettings())

    def configure(self, settings: LimitSettings) -> None:
        self.settings = settings
        self.rate = RateLimiter(settings.requests_per_window, settings.window_seconds)
        self.concurrency = ConcurrencyLimiter(settings.max_concurrent)
