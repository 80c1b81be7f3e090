"""Trace events as a reader sees them: request and response lines, a step link, the details that matter.

Shared by the evidence of a check, the trace table and the sequence diagram. Every string goes through
``reports.safe``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from reports import anchors
from reports.safe import clean, clean_value

SERVERS = {"user": "User", "portal": "Portal", "authority": "Authority", "bc": "Business Central"}


@dataclass
class EventView:
    """One trace event, with the request/response lines a reader needs to see what happened."""

    seq: Any
    anchor: str
    server: str
    endpoint: str
    method: str
    path: str
    host: str
    status: int
    error: str
    step: str
    step_anchor: str
    time: str
    request: str
    response: str
    location: str
    details: list[tuple[str, str]]
    user: str = ""
    session: str = ""
    at: float | None = None  # seconds since the scenario's first event
    evidence_of: list[tuple[str, str]] = field(default_factory=list)  # (anchor, title) of problem checks citing it

    @property
    def is_error(self) -> bool:
        return bool(self.error) or self.status >= 400 or (self.endpoint == "response" and self.status == 0)


def as_int(value: Any, default: int = 0) -> int:
    """A number from results that may be missing or malformed (a report never fails on one)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def step_ref(mode: str, prefix: str, step: Any) -> tuple[str, str]:
    """A step id like ``CC-2`` or a number, as (display id, anchor) in the given mode."""
    text = clean(step)
    if isinstance(step, int) or text.isdigit():
        return f"{prefix}-{text}", anchors.step_anchor(mode, prefix, text)
    head, _, tail = text.rpartition("-")
    if head and tail.isdigit():
        return text, anchors.step_anchor(mode, head, tail)
    return text, ""


def _pairs(mapping: Any) -> str:
    """A query or form as ``k=v&k=v`` (redacted), whether results hold it as a mapping or a string."""
    if isinstance(mapping, Mapping):
        return "&".join(f"{k}={v}" for k, v in clean_value(mapping).items() if v not in ("", None))
    return clean(mapping)


def _event_lines(ev: Mapping[str, Any], host: str) -> tuple[str, str]:
    """Request and response lines of an event, as an HTTP log would show them (already redacted)."""
    detail = ev.get("detail") if isinstance(ev.get("detail"), Mapping) else {}
    server = str(ev.get("server", ""))
    if not ev.get("method") and not ev.get("path"):  # a marker, e.g. the user driver's visit_start
        who = [f"{k} {clean(v)}" for k, v in (("user", ev.get("user")), ("session", detail.get("session"))) if v]
        status = as_int(ev.get("status"))
        return " ".join([clean(ev.get("endpoint")), *who]), (str(status) if status else "")
    method, path = clean(ev.get("method")) or "·", clean(ev.get("path"))
    query = _pairs(detail.get("query", ""))
    where = f"{host}{path}" if host else f"{SERVERS.get(server, server)} {path}"
    request = f"{method} {where}" + (f"?{query}" if query else "")
    if isinstance(detail.get("form"), Mapping) and detail["form"]:
        request += f"  form: {_pairs(detail['form'])}"
    if ev.get("redeemed"):
        request += f"  presents {', '.join(clean(x) for x in ev['redeemed'])}"
    if server == "bc" and detail.get("authorization"):
        request += f"  Authorization: {clean_value({'authorization': detail['authorization']})['authorization']}"
    status = as_int(ev.get("status"))
    response = ""
    if server not in ("user", "portal") or ev.get("endpoint") == "response" or status:
        parts = [str(status) if status else "no response"]
        if ev.get("error"):
            parts.append(clean(ev["error"]))
        if detail.get("location"):
            parts.append(f"Location: {clean(detail['location'])}")
        if ev.get("issued"):
            parts.append(f"issued {', '.join(clean(x) for x in ev['issued'])}")
        if detail.get("problem"):
            parts.append(clean(detail["problem"]))
        response = "  ".join(parts)
    if server in ("user", "portal") and ev.get("endpoint") == "response":
        request = f"(answer to) {request}"
    return request, response


# Shown in the request/response lines already, so the details column leaves them out.
_SHOWN = ("method", "path", "status", "error", "seq", "time", "server", "endpoint", "detail", "step", "issued",
          "redeemed")
_SHOWN_DETAIL = ("query", "form", "location", "host", "problem", "authorization")


def _details(ev: Mapping[str, Any]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for key, value in clean_value(dict(ev)).items():
        if key in _SHOWN or value in ("", None, [], {}):
            continue
        rows.append((key, clean(", ".join(map(str, value)) if isinstance(value, list) else value)))
    detail = ev.get("detail")
    if isinstance(detail, Mapping):
        for key, value in clean_value(detail).items():
            if key in _SHOWN_DETAIL or value in ("", None, [], {}):
                continue
            if isinstance(value, Mapping):
                rows.extend((f"{key}.{k}", clean(v)) for k, v in value.items() if v not in ("", None, [], {}))
            else:
                rows.append((key, clean(", ".join(map(str, value)) if isinstance(value, list) else value)))
    return rows


def event_view(ev: Mapping[str, Any], mode: str, scenario: str, prefix: str, t0: float | None) -> EventView:
    detail = ev.get("detail") if isinstance(ev.get("detail"), Mapping) else {}
    host = clean(detail.get("host", ""))
    step_id, step_anchor = step_ref(mode, prefix, ev["step"]) if ev.get("step") else ("", "")
    time = ev.get("time")
    rel = f"+{float(time) - t0:.3f}s" if isinstance(time, int | float) and t0 is not None else clean(time)
    request, response = _event_lines(ev, host)
    seq = ev.get("seq")
    return EventView(
        seq=seq if isinstance(seq, int) and not isinstance(seq, bool) else clean(seq),
        anchor=anchors.event_anchor(mode, scenario, seq), server=clean(ev.get("server")),
        endpoint=clean(ev.get("endpoint")), method=clean(ev.get("method")), path=clean(ev.get("path")), host=host,
        status=as_int(ev.get("status")), error=clean(ev.get("error")), step=step_id, step_anchor=step_anchor,
        time=rel, request=request, response=response, location=clean(detail.get("location", "")),
        details=_details(ev), user=clean(ev.get("user")), session=clean(detail.get("session", "")),
        at=float(time) - t0 if isinstance(time, int | float) and t0 is not None else None,
    )
