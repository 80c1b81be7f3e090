"""Injectable clocks shared by the fakes: scenarios jump time instead of sleeping."""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...


class SystemClock:
    """Wall-clock time, for fakes serving external portals in real time."""

    def now(self) -> float:
        return time.time()


class FakeClock:
    """A clock that only moves when told. It starts at the wall-clock second by default, so tokens it
    stamps look current to real clients (MSAL validates id_token times against its own clock)."""

    def __init__(self, start: float | None = None):
        self._now = float(int(time.time()) if start is None else start)
        self._lock = threading.Lock()

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError(f"a clock only moves forward; got advance({seconds})")
        with self._lock:
            self._now += seconds
        return self._now

    def set(self, instant: float) -> None:
        with self._lock:
            self._now = float(instant)
