"""One ordered trace shared by the fakes (and the user driver): the evidence checks read.

Events never hold a secret: tokens appear as their unique id (``uti``), codes and refresh tokens as
fingerprints, requests as redacted summaries.
"""

from __future__ import annotations

import itertools
import threading
import time as _time
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class TraceEvent:
    seq: int
    time: float
    server: str  # "authority" | "bc" | "portal" | "user"
    endpoint: str  # e.g. "token", "authorize", "companies"
    method: str = ""
    path: str = ""
    status: int = 0
    error: str = ""  # protocol error code, e.g. "invalid_client" or "Authentication_InvalidCredentials"
    grant: str = ""
    client_id: str = ""
    user: str = ""  # username for delegated activity; "" for app-only
    issued: tuple[str, ...] = ()  # token ids (uti) / fingerprints of codes and refresh tokens issued
    redeemed: tuple[str, ...] = ()  # ids / fingerprints of what the request presented
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Trace:
    """Append-only, thread-safe list of ``TraceEvent``; ``clear`` starts a new scenario. ``limit`` keeps only the
    newest events (a long-running ``serve`` must not grow without bound); ``seq`` keeps counting, and ``dropped``
    counts the events pushed out that way (0 whenever there is no limit, as in ``run``).

    ``record_wall`` adds the real wall time (``time.time()``) of each event as ``detail["wall"]``: ``time`` is the
    virtual clock, which ``load`` moves while users keep going, so their visit windows can only be compared with the
    fakes' events by the wall clock. Off by default: scenario traces stay byte-for-byte as they were."""

    def __init__(self, limit: int | None = None, record_wall: bool = False) -> None:
        self._events: deque[TraceEvent] = deque(maxlen=limit)
        self._lock = threading.Lock()
        self._seq = itertools.count(1)
        self.limit = limit
        self.dropped = 0
        self.record_wall = record_wall

    def append(self, time: float, server: str, endpoint: str, **fields: Any) -> TraceEvent:
        if self.record_wall:
            fields["detail"] = {**fields.get("detail", {}), "wall": _time.time()}
        with self._lock:
            event = TraceEvent(next(self._seq), time, server, endpoint, **fields)
            if self.limit is not None and len(self._events) == self.limit:
                self.dropped += 1  # the deque pushes its oldest event out
            self._events.append(event)
        return event

    def stats(self) -> dict[str, int | None]:
        with self._lock:
            return {"kept": len(self._events), "limit": self.limit, "dropped": self.dropped}

    @classmethod
    def of(cls, events: list[TraceEvent]) -> Trace:
        """A trace holding a copy of these events (a scenario's slice of a shared trace)."""
        trace = cls()
        trace._events.extend(events)
        return trace

    def clear(self) -> None:
        """A new scenario: no event, and ``seq`` from 1 again (a scenario's trace is the same whichever server
        played it, and after however many others)."""
        with self._lock:
            self._events.clear()
            self._seq = itertools.count(1)

    @property
    def events(self) -> list[TraceEvent]:
        with self._lock:
            return list(self._events)

    def where(self, **match: Any) -> list[TraceEvent]:
        return [e for e in self.events if all(getattr(e, k) == v for k, v in match.items())]

    def __iter__(self) -> Iterator[TraceEvent]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self._events)
