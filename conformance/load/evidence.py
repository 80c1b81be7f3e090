"""What a load run leaves behind, as plain values: the users' visits (written by the Locust runner, one JSON line
each), the clock's epochs, the fakes' trace and Locust's figures. The checks read only these, so they can be
judged — and unit-tested — without starting anything.

Visit lines (``visits.jsonl``): ``user``, ``session``, ``account`` (the Entra account that signs in), ``kind``
(``visit``, or ``tab`` for the second of two pages opened at once in one session), ``start`` and ``end``
(``time.time()`` in the runner), ``status`` (the final page's HTTP status; 0 when none came), ``on_portal`` (the
final page is the portal's, not the Authority's), ``problem`` (a connection error, a timeout, a redirect loop;
never a secret), ``stopped`` (cut short by the end of the run: not judged) and ``requests``: Locust's timings of
each request of the visit as ``[name, start, milliseconds, status, failed]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from conformance.trace import TraceEvent


@dataclass
class Timing:
    name: str  # the flow step the request exercises, e.g. "AC-1 portal page"
    start: float
    ms: float
    status: int
    failed: bool


@dataclass
class Visit:
    user: str
    session: str
    account: str
    kind: str
    start: float
    end: float
    status: int = 0
    on_portal: bool = True
    problem: str = ""
    stopped: bool = False
    requests: list[Timing] = field(default_factory=list)

    @classmethod
    def of(cls, raw: dict[str, Any]) -> Visit:
        timings = [Timing(str(n), float(s), float(ms), int(st), bool(f)) for n, s, ms, st, f in raw.get("requests", [])]
        return cls(str(raw["user"]), str(raw["session"]), str(raw["account"]), str(raw.get("kind", "visit")),
                   float(raw["start"]), float(raw["end"]), int(raw.get("status", 0)), bool(raw.get("on_portal", True)),
                   str(raw.get("problem", "")), bool(raw.get("stopped", False)), timings)

    def as_json(self) -> dict[str, Any]:
        return {"user": self.user, "session": self.session, "account": self.account, "kind": self.kind,
                "start": self.start, "end": self.end, "status": self.status, "on_portal": self.on_portal,
                "problem": self.problem, "stopped": self.stopped,
                "requests": [[t.name, t.start, t.ms, t.status, t.failed] for t in self.requests]}


@dataclass(frozen=True)
class Epoch:
    """The clock moved every token past its expiry at ``wall`` (real time); ``virtual`` is the time after."""

    index: int
    wall: float
    virtual: float


@dataclass(frozen=True)
class Throttle:
    """Business Central's per-principal limits during the run (small, so the load crosses them)."""

    calls_per_user: int  # admitted calls per window for each user sharing a principal
    window: float  # seconds of the fakes' (virtual) clock
    max_concurrent: int


@dataclass
class LoadEvidence:
    mode: str
    users: int
    duration: float  # seconds the users ran
    workers: int  # 0: one Locust process; N: a master and N workers
    visits: list[Visit]
    epochs: list[Epoch]
    events: list[TraceEvent]
    stats: dict[str, Any]  # Locust's figures, as the runner wrote them
    throttle: Throttle
    time_control: str  # "virtual (libfaketime)", or why tokens did not expire under load
    expiry: bool  # whether the clock was moved (single-flight renewal can be judged)
    trace_dropped: int = 0
    request_timeout: float = 10.0
    cpu: dict[str, float] = field(default_factory=dict)  # seconds: fakes, runner, portal; share

    @property
    def bc_calls(self) -> list[TraceEvent]:
        return [e for e in self.events if e.server == "bc"]

    @property
    def token_requests(self) -> list[TraceEvent]:
        return [e for e in self.events if e.server == "authority" and e.endpoint == "token"]


def wall(event: TraceEvent) -> float:
    """The real time of a fakes' event (``Trace(record_wall=True)``)."""
    return float(event.detail.get("wall", 0.0))


def principal(event: TraceEvent) -> str:
    """Whom a Business Central call counts against: the user of a delegated token, else the app."""
    return event.user or event.client_id


def uti(event: TraceEvent) -> str:
    return next((r.split(":", 1)[1] for r in event.redeemed if r.startswith("at:")), "")
