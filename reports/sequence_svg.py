"""The sequence diagram of one scenario, drawn from its trace: who talked to whom, in order, and which step
each exchange evidences.

Lanes: User, Portal, Authority, Business Central. The user driver's events are the browser's requests and
the answers it got (to the Portal, or to the Authority when the path is one the Authority recorded); an
Authority token event is the Portal's server-side request and its answer; a Business Central event is the
Portal's API call and its answer. An Authority page event that the browser's own events already show is not
drawn twice. Arrows carry the event's ``seq`` (as in the trace table) and step id; each links to its row.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from reports import svg
from reports.events import EventView
from reports.model import ScenarioView

LANES = ("User", "Portal", "Authority", "Business Central")
X0, GAP = 74, 258
TOP, ROW, REPLY_ROW = 50, 28, 22
CHAR_W = 6.3
MAX_EVENTS = 160
GAP_NOTE_S = 60.0  # clock jumps longer than this get a visible "time passes" separator


@dataclass
class Arrow:
    source: int
    dest: int
    text: str
    event: EventView
    reply: bool  # the dashed answer of a request drawn just above it
    note: bool = False  # not an exchange: a separator such as the start of a visit


def _lane_of_host(host: str, authority_hosts: set[str]) -> int:
    lowered = host.lower()
    if host in authority_hosts or "login.microsoftonline" in lowered or lowered.startswith("login."):
        return 2
    if "businesscentral" in lowered:
        return 3
    return 1


def _short_path(ev: EventView) -> str:
    return ev.path or ev.endpoint or ev.server


def _fit(content: str, limit: int) -> str:
    """Shorten to ``limit`` characters keeping what identifies a request: the method and the path's tail
    (``POST …/oauth2/v2.0/token``), or the start of an answer (status, error, redirect target)."""
    if len(content) <= limit:
        return content
    method, _, rest = content.partition(" ")
    if rest.startswith("/") and method.isupper():
        tail = rest[-max(limit - len(method) - 2, 4):]
        cut = tail.find("/")
        return f"{method} …{tail[cut:] if 0 <= cut < len(tail) - 1 else tail}"
    return svg.truncate(content, limit)


def _where(location: str) -> str:
    """A redirect target, short: host, the path's last segment, the query (``login…/…/authorize?client_id=…``)."""
    parts = urlsplit(location)
    segments = [p for p in parts.path.split("/") if p]
    path = f"/…/{segments[-1]}" if len(segments) > 1 else parts.path
    return f"{parts.netloc}{path}" + (f"?{parts.query}" if parts.query else "")


def _reply_text(ev: EventView) -> str:
    parts = [str(ev.status) if ev.status else "no response"]
    if ev.error:
        parts.append(ev.error)
    if ev.location:
        parts.append(f"→ {_where(ev.location)}")
    return " ".join(parts)


def arrows(events: list[EventView]) -> list[Arrow]:
    """The arrows of a trace, in order (see the module docstring for the mapping)."""
    authority_paths = {e.path for e in events if e.server == "authority" and e.path}
    authority_hosts = {e.host for e in events if e.server in ("user", "portal") and e.path in authority_paths
                       and e.host}
    out: list[Arrow] = []
    last_browser_request: dict[str, int] = {}  # path -> lane, for the latest browser request not yet matched
    for ev in events:
        if not ev.method and not ev.path:  # a marker, not an exchange: only the start of a visit is drawn
            if ev.endpoint.endswith("_start"):
                who = " · ".join(x for x in (ev.user, f"session {ev.session}" if ev.session else "") if x)
                name = ev.endpoint.removesuffix("_start").replace("_", " ")
                out.append(Arrow(0, 0, f"{name} {who}".strip(), ev, False, note=True))
            continue
        if ev.server in ("user", "portal"):
            lane = _lane_of_host(ev.host, authority_hosts) if ev.host else (2 if ev.path in authority_paths else 1)
            if ev.endpoint == "response":
                out.append(Arrow(lane, 0, _reply_text(ev), ev, False))
            else:
                out.append(Arrow(0, lane, f"{ev.method} {_short_path(ev)}".strip(), ev, False))
                last_browser_request[ev.path] = lane
        elif ev.server == "authority":
            server_side = ev.endpoint == "token" or ev.path.endswith("/token")
            if not server_side and last_browser_request.pop(ev.path, None) == 2:
                continue  # the browser's own request and answer already show this exchange
            caller = 1 if server_side else 0
            out.append(Arrow(caller, 2, f"{ev.method} {_short_path(ev)}".strip(), ev, False))
            out.append(Arrow(2, caller, _reply_text(ev), ev, True))
        elif ev.server == "bc":
            out.append(Arrow(1, 3, f"{ev.method} {_short_path(ev)}".strip(), ev, False))
            out.append(Arrow(3, 1, _reply_text(ev), ev, True))
    return out


def sequence_diagram(scenario: ScenarioView) -> str:
    """Inline SVG of the scenario's exchanges; empty string when the trace is empty."""
    events = scenario.events[:MAX_EVENTS]
    drawn = arrows(events)
    if not drawn:
        return ""
    width = X0 * 2 + GAP * (len(LANES) - 1)
    marker_base = f"{scenario.anchor}-seq"
    parts = [svg.el("defs", svg.arrow_marker(f"{marker_base}-ink", svg.INK)
                    + svg.arrow_marker(f"{marker_base}-muted", svg.MUTED)
                    + svg.arrow_marker(f"{marker_base}-bad", svg.colour("failed")[0]))]
    body: list[str] = []
    y = TOP
    previous_at: float | None = None
    for arrow in drawn:
        ev = arrow.event
        if not arrow.reply and ev.at is not None and previous_at is not None and ev.at - previous_at > GAP_NOTE_S:
            y += 8
            body.append(svg.el("line", x1=12, y1=y, x2=width - 12, y2=y, stroke="#d0d7de", stroke_dasharray="2 3"))
            gap = f"{ev.at - previous_at:.0f} s later" + (" (virtual time, no real waiting)" if scenario.virtual
                                                          else " (real wait)")
            body.append(svg.text(width / 2, y + 4, f"  {gap}  ", font_size=10.5,
                                 fill=svg.MUTED, text_anchor="middle", stroke="#fff", stroke_width=4,
                                 paint_order="stroke"))
            y += 12
        if ev.at is not None:
            previous_at = ev.at
        if arrow.note:
            y += 22
            body.append(svg.el("a", svg.title(f"#{ev.seq} {ev.request}")
                               + svg.el("line", x1=12, y1=y, x2=width - 12, y2=y, stroke="#afb8c1")
                               + svg.text(X0 - 50, y - 5, f"▸ {arrow.text}", font_size=11, font_weight=600,
                                          fill=svg.MUTED), href=f"#{ev.anchor}"))
            y -= 6
            continue
        y += REPLY_ROW if arrow.reply else ROW
        x1, x2 = X0 + arrow.source * GAP, X0 + arrow.dest * GAP
        bad = bool(ev.evidence_of)
        failed_ink = svg.colour("failed")[0]
        ink = failed_ink if bad else (svg.MUTED if arrow.reply or ev.endpoint == "response" else svg.INK)
        marker = "bad" if bad else ("muted" if ink == svg.MUTED else "ink")
        dashed = arrow.reply or ev.endpoint == "response"
        direction = 1 if x2 > x1 else -1
        group = svg.title(f"#{ev.seq} {ev.step + ' ' if ev.step else ''}{ev.request}  ⇒  {ev.response}".strip())
        group += svg.el("line", x1=x1 + direction * (0 if arrow.reply else 10), y1=y, x2=x2 - direction * 2, y2=y,
                        stroke=ink, stroke_width=2 if bad else 1.3, stroke_dasharray="5 3" if dashed else None,
                        marker_end=f"url(#{marker_base}-{marker})")
        left, span = min(x1, x2), abs(x2 - x1)
        room = int((span - (26 if arrow.reply or direction > 0 else 38)) / CHAR_W)
        status_bad = ev.is_error and (arrow.reply or ev.endpoint == "response")
        label_ink = failed_ink if (bad or status_bad) else (svg.MUTED if dashed else svg.INK)
        spans = ""
        step_room = 0
        if ev.step and not arrow.reply:
            spans += svg.el("tspan", svg.escape_text(ev.step + " "), font_weight=700, fill="#0550ae")
            step_room = len(ev.step) + 1
        spans += svg.escape_text(_fit(arrow.text, max(room - step_room, 8)))
        label_x = left + (16 if direction > 0 and not arrow.reply else 8)
        group += svg.el("text", spans, x=label_x, y=y - 5, font_size=11, fill=label_ink)
        if not arrow.reply:
            group += svg.el("circle", cx=x1, cy=y, r=9, fill=failed_ink if bad else "#0550ae")
            group += svg.text(x1, y + 3.5, str(ev.seq), font_size=9.5 if len(str(ev.seq)) < 3 else 8, fill="#fff",
                              text_anchor="middle", font_weight=700)
        body.append(svg.el("a", group, href=f"#{ev.anchor}"))
    height = y + 24
    if len(scenario.events) > MAX_EVENTS:
        body.append(svg.text(12, height - 6, f"… {len(scenario.events) - MAX_EVENTS} more events in the trace table",
                             font_size=11, fill=svg.MUTED))
        height += 8
    for i, name in enumerate(LANES):
        x = X0 + i * GAP
        parts.append(svg.el("line", x1=x, y1=34, x2=x, y2=height - 6, stroke="#d0d7de", stroke_width=1.2,
                            stroke_dasharray="4 4"))
        parts.append(svg.el("rect", x=x - 62, y=6, width=124, height=28, rx=5, fill="#f6f8fa", stroke="#d0d7de"))
        parts.append(svg.text(x, 24, name, font_size=12, font_weight=600, fill=svg.INK, text_anchor="middle"))
    return svg.svg(width, height, "".join(parts + body),
                   f"Sequence of scenario {scenario.name} ({scenario.mode}), from its trace", class_="sequence")
