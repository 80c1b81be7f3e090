"""The "Under load" section's view of ``results["load"]`` (the schema is the docstring of
``conformance/load/results.py``), shared by the HTML and Markdown renderers.

Every string goes through ``reports.safe.clean`` and every number through ``figure``: a hand-edited or truncated
results.json still renders (a malformed figure prints as text or "—"), and nothing in it can inject markup.
The load checks are not repeated here: they sit in the mode's check list, and this view only links to them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from reports.safe import clean

if TYPE_CHECKING:  # reports.model imports this module to build its view
    from reports.model import CheckView, ModeView

LOAD_SCENARIO = "load"
"""The scenario name the load checks cite (``conformance.load.results.judge_load``)."""
NONE = "—"
_STEP_ID = re.compile(r"([A-Z]+-\d+)\s*(.*)")


def number(value: Any) -> float | None:
    """A finite number from results, or None (a bool, a string or NaN is not a figure)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def figure(value: Any, digits: int = 2) -> str:
    """A figure as printed: ``37`` not ``37.0``, at most ``digits`` decimals; a non-number is printed as text."""
    n = number(value)
    if n is None:
        return NONE if value is None or value == "" else clean(value)
    if n.is_integer():
        return str(int(n))
    return f"{n:.{digits}f}".rstrip("0").rstrip(".")


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _rows(value: Any) -> list[Mapping[str, Any]]:
    return [row for row in value if isinstance(row, Mapping)] if isinstance(value, list) else []


@dataclass
class RequestRow:
    """One line of Locust's table: a request name is a flow step id and words (``AC-1 portal page``)."""

    step: str  # "AC-1", or "" when the name carries no step id
    anchor: str  # that step's row in the mode's step table, or "" when the report has none
    words: str
    method: str
    requests: str
    failures: str
    rps: str
    p50: str
    p95: str
    p99: str
    failing: bool


@dataclass
class ExpiryRow:
    """One clock move past every token's expiry, with the token requests it caused."""

    epoch: str
    at: str  # seconds since the users started, when known
    virtual: str  # the virtual time after the move
    token_requests: str
    sessions: str
    holder: str
    max_per_holder: str
    worst_holder: str
    over: bool


@dataclass
class ChartData:
    """What the chart draws: counts per second since the start (Locust's buckets), and the clock moves."""

    requests: list[tuple[float, float]]
    failures: list[tuple[float, float]]
    epochs: list[tuple[str, float, float]]  # (epoch index, x on the axis, seconds since the users started)
    duration: float
    estimated: bool  # the start was not in results: epoch positions inferred from their spacing


@dataclass
class LoadView:
    mode: str
    mode_anchor: str
    parameters: list[tuple[str, str]]  # (label, value)
    visits: list[tuple[str, str, str]]  # (label, value, outcome class or "")
    requests: list[RequestRow]
    total: RequestRow | None
    chart: ChartData
    expiries: list[ExpiryRow]
    throttle: tuple[str, str, str]  # calls per user, window (s), 429 answers
    cpu_share: str  # a percentage, "18.8"
    cpu_detail: str
    trace_events: str
    trace_dropped: int | None  # None: results do not say (the page never claims none was dropped then)
    servers: list[tuple[str, str, str, bool]]  # (server, connections accepted, refused, any refused)
    errors: list[tuple[str, str, str]]  # (request name, error, occurrences)
    checks: list[CheckView] = field(default_factory=list)

    @property
    def users(self) -> str:
        return dict(self.parameters).get("Users", NONE)

    @property
    def duration(self) -> str:
        return dict(self.parameters).get("Duration", NONE)


# ----------------------------------------------------------------------------------------------- rows


def _step_anchors(mode: ModeView | None) -> dict[str, str]:
    return {s.step_id: s.anchor for s in mode.steps} if mode else {}


def _request(row: Mapping[str, Any], anchors: Mapping[str, str], total: bool = False) -> RequestRow:
    name = clean(row.get("name"))
    match = None if total else _STEP_ID.fullmatch(name)
    step, words = (match[1], match[2]) if match else ("", "total" if total else name)
    failures = number(row.get("failures"))
    return RequestRow(
        step=step, anchor=anchors.get(step, ""), words=words, method=clean(row.get("method")),
        requests=figure(row.get("requests")), failures=figure(row.get("failures")), rps=figure(row.get("rps")),
        p50=figure(row.get("p50_ms")), p95=figure(row.get("p95_ms")), p99=figure(row.get("p99_ms")),
        failing=bool(failures),
    )


def _series(value: Any) -> list[tuple[float, float]]:
    """``[[second, count], …]`` as pairs of numbers; a malformed entry is left out (the chart cannot place it)."""
    out = []
    for item in value if isinstance(value, list) else []:
        if isinstance(item, list | tuple) and len(item) == 2:
            second, count = number(item[0]), number(item[1])
            if second is not None and count is not None:
                out.append((second, count))
    return out


def _epoch_walls(load: Mapping[str, Any]) -> list[tuple[float, float, Any, Any]]:
    """(index, wall, raw index, raw virtual) of each well-formed clock move, in order."""
    out = []
    for e in _rows(load.get("epochs")):
        index, wall = number(e.get("index")), number(e.get("wall"))
        if index is not None and wall is not None:
            out.append((index, wall, e.get("index"), e.get("virtual")))
    return sorted(out)


def start_time(load: Mapping[str, Any]) -> tuple[float | None, bool]:
    """The wall time the users started, and whether it is an estimate.

    ``load["started"]`` when results carry it; else inferred from the clock moves, which the kit makes at
    start + k × every: two moves give ``every``, one is assumed to split the run evenly (the default spacing).
    """
    given = number(load.get("started"))
    if given is not None:
        return given, False
    epochs = _epoch_walls(load)
    if not epochs:
        return None, True
    (k0, w0, _, _), (k1, w1, _, _) = epochs[0], epochs[-1]
    spread = (number(load.get("duration_s")) or 0.0) / (len(epochs) + 1)
    every = (w1 - w0) / (k1 - k0) if k1 > k0 else spread
    return w0 - k0 * every, True


def _virtual(value: Any, wall: float) -> str:
    """The virtual time after a move, and how far ahead of the wall clock it was."""
    n = number(value)
    if n is None:
        return figure(value)
    try:
        moment = datetime.fromtimestamp(n, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return figure(value)
    return f"{moment} (wall clock + {(n - wall) / 3600:.1f} h)"


def _expiries(load: Mapping[str, Any], start: float | None) -> list[ExpiryRow]:
    """The per-expiry token counts, joined with the clock move (when and to what virtual time) of each."""
    moves = {figure(raw): (wall, virtual) for _, wall, raw, virtual in _epoch_walls(load)}
    rows = []
    for row in _rows(load.get("token_requests_per_expiry")):
        epoch = figure(row.get("epoch"))
        wall, virtual = moves.get(epoch, (None, None))
        at = f"{wall - start:.1f} s" if wall is not None and start is not None else NONE
        rows.append(ExpiryRow(
            epoch=epoch, at=at, virtual=_virtual(virtual, wall) if wall is not None else NONE,
            token_requests=figure(row.get("token_requests")), sessions=figure(row.get("sessions")),
            holder=clean(row.get("holder")) or NONE, max_per_holder=figure(row.get("max_per_holder")),
            worst_holder=clean(row.get("worst_holder")), over=row.get("over") is True,
        ))
    return rows


def _chart(load: Mapping[str, Any]) -> ChartData:
    """The series on Locust's axis (bucket t holds the requests of second int(start) + t) and the moves on it."""
    start, estimated = start_time(load)
    base = math.floor(start) if start is not None else 0.0
    walls = _epoch_walls(load) if start is not None else []
    epochs = [(figure(raw), wall - base, wall - (start or 0.0)) for _, wall, raw, _ in walls]
    return ChartData(_series(load.get("requests_over_time")), _series(load.get("failures_over_time")), epochs,
                     number(load.get("duration_s")) or 0.0, estimated and bool(epochs))


def _parameters(load: Mapping[str, Any]) -> list[tuple[str, str]]:
    workers = number(load.get("workers"))
    duration = number(load.get("duration_s"))
    return [
        ("Users", figure(load.get("users"))),
        ("Workers", "0 (one Locust process)" if workers == 0 else figure(load.get("workers"))),
        ("Duration", f"{figure(duration, 1)} s" if duration is not None else figure(load.get("duration_s"))),
        ("Time control", clean(load.get("time_control")) or NONE),
    ]


def _visits(visits: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    broken = number(visits.get("broken"))
    return [
        ("visits", figure(visits.get("total")), ""),
        ("working", figure(visits.get("working")), "passed"),
        ("clean errors", figure(visits.get("clean_errors")), "warning" if number(visits.get("clean_errors")) else ""),
        ("broken", figure(visits.get("broken")), "failed" if broken else ""),
        ("stopped by the run's end", figure(visits.get("stopped")), ""),
        ("visits per second", figure(visits.get("per_second")), ""),
    ]


def _cpu(fakes: Mapping[str, Any]) -> tuple[str, str]:
    """The fakes' share of the run's CPU as a percentage, and the seconds it came from."""
    share = number(fakes.get("cpu_share"))
    parts = [(what, number(fakes.get(key))) for what, key in (("the fakes", "cpu_seconds"),
             ("the Locust runner", "runner_cpu_seconds"), ("the portal", "portal_cpu_seconds"))]
    detail = ", ".join(f"{what} {figure(s, 3)} s" for what, s in parts if s is not None)
    return (figure(share * 100, 1) if share is not None else NONE), detail


def _count(value: Any) -> int | None:
    n = number(value)
    return int(n) if n is not None and n >= 0 else None


def _servers(servers: Mapping[str, Any]) -> list[tuple[str, str, str, bool]]:
    out = []
    for name, counters in servers.items():
        c = _mapping(counters)
        refused = number(c.get("refused"))
        out.append((clean(name), figure(c.get("accepted")), figure(c.get("refused")), bool(refused)))
    return out


def _load_checks(mode: ModeView | None) -> list[CheckView]:
    """The checks judged on this run (they cite the ``load`` scenario), linked to, not repeated."""
    return [c for c in mode.checks if any(n == LOAD_SCENARIO for n, _ in c.scenarios)] if mode else []


def build_load(raw: Any, modes: list[ModeView]) -> LoadView | None:
    """The section's view, or None when results hold no ``load`` (a ``bc-conformance run`` document)."""
    if not isinstance(raw, Mapping):
        return None
    mode_name = clean(raw.get("mode"))
    mode = next((m for m in modes if m.name == mode_name), None)
    anchors = _step_anchors(mode)
    fakes = _mapping(raw.get("fakes"))
    throttle = _mapping(raw.get("throttle"))
    start, _ = start_time(raw)
    cpu_share, cpu_detail = _cpu(fakes)
    total = _mapping(raw.get("total"))
    return LoadView(
        mode=mode_name or NONE, mode_anchor=mode.anchor if mode else "", parameters=_parameters(raw),
        visits=_visits(_mapping(raw.get("visits"))),
        requests=[_request(row, anchors) for row in _rows(raw.get("requests"))],
        total=_request(total, anchors, total=True) if total else None, chart=_chart(raw),
        expiries=_expiries(raw, start),
        throttle=(figure(throttle.get("calls_per_user")), figure(throttle.get("window_s")),
                  figure(throttle.get("responses_429"))),
        cpu_share=cpu_share, cpu_detail=cpu_detail, trace_events=figure(fakes.get("trace_events")),
        trace_dropped=_count(fakes.get("trace_dropped")), servers=_servers(_mapping(fakes.get("servers"))),
        errors=[(clean(e.get("name")), clean(e.get("error")), figure(e.get("occurrences")))
                for e in _rows(raw.get("errors"))],
        checks=_load_checks(mode),
    )
