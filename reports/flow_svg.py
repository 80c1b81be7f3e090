"""The flow diagram of one mode, drawn from the step-table data in results (never from a hand-made picture),
with steps and edges coloured by outcome.

Layout: the steps in one column, in the document's order, each box holding the step's whole text wrapped onto
as many lines as it needs. Plain next-step edges run straight down, their condition on the line. Every edge that
leaves a step sideways (a forward skip, "If it does, steps 3 to 5 are skipped", or the way to an end state such
as "denied") leaves from its own port on the box's right side and carries its condition on that first, horizontal
stretch, in a label zone between the boxes and the lanes that no vertical line crosses, so each label sits on
its own edge and no two labels can meet. Skips then run dashed in lanes on the right, spaced well apart (shortest
spans innermost; exits to outer lanes leave above those to inner lanes, so lanes do not cross at their ends);
back edges (the user accesses the portal again) run dotted on the left; end states sit right of the lanes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from reports import svg
from reports.model import IDLE, EdgeView, ModeView, StepView, label

NODE_W, TOP, GAP = 290, 40, 28
PAD = 12  # text inset from the box's left edge (right of the outcome bar)
TEXT_SIZE, HEAD_SIZE, LABEL_SIZE = 11.0, 12.0, 10.5
LINE_H, LABEL_LINE_H = 14, 12.5
LABEL_MAX_W = 118  # an edge condition wraps beyond this
ZONE_GAP = 8  # from a box to its labels
LANE_GAP, LANE_W = 18, 20
PORT_GAP = 6
TERM_H = 40
CYCLE_W = 16  # between back edges on the left, each with its label on it
GREY = "#8c959f"
BACKDROP = "#f6f8fa"  # the diagram's background (reports/templates/report.css, .diagram)

ICON = {"passed": "✓", "failed": "✗", "not_exercised": "–", "warning": "!", "not_applicable": "–"}


@dataclass
class Port:
    """Where an edge meets a box's right side: ``exit`` edges carry their label there."""

    edge: int
    exit: bool
    lines: list[str]
    lane: int = -1  # -1: not in a lane (an end state's edge)
    y: float = 0.0

    @property
    def height(self) -> float:
        return max(len(self.lines), 1) * LABEL_LINE_H + 4 if self.lines else 10


@dataclass
class Box:
    step: StepView
    lines: list[str]
    y: float = 0.0
    height: float = 0.0
    ports: list[Port] = field(default_factory=list)

    @property
    def mid(self) -> float:
        return self.y + self.height / 2


def _is_forward_skip(edge: EdgeView, index: dict[Any, int]) -> bool:
    return edge.source in index and edge.dest in index and index[edge.dest] > index[edge.source] + 1


def _lanes(edges: list[EdgeView], index: dict[Any, int]) -> dict[int, int]:
    """Lane per forward skip (interval colouring, shortest spans innermost, so short skips stay compact)."""
    order = sorted((i for i, e in enumerate(edges) if _is_forward_skip(e, index)),
                   key=lambda i: (index[edges[i].dest] - index[edges[i].source], index[edges[i].source]))
    taken: list[list[tuple[int, int]]] = []
    lanes: dict[int, int] = {}
    for i in order:
        lo, hi = index[edges[i].source], index[edges[i].dest]
        for lane, spans in enumerate(taken):
            if all(hi <= a or lo >= b for a, b in spans):
                spans.append((lo, hi))
                lanes[i] = lane
                break
        else:
            taken.append([(lo, hi)])
            lanes[i] = len(taken) - 1
    return lanes


def _label_lines(edge: EdgeView) -> list[str]:
    return svg.wrap(edge.label, LABEL_MAX_W, LABEL_SIZE) if edge.label else []


def _ports(mode: ModeView, boxes: dict[Any, Box], lanes: dict[int, int]) -> None:
    """Attach each sideways edge to its boxes: entries on top (inner lanes first), then exits (outer lanes
    first, end states last), so a lane's vertical line never crosses the stretch of another lane at its box."""
    for i, e in enumerate(mode.edges):
        if i in lanes:
            boxes[e.source].ports.append(Port(i, True, _label_lines(e), lanes[i]))
            boxes[e.dest].ports.append(Port(i, False, [], lanes[i]))
        elif e.source in boxes and e.dest in mode.extra_states:
            boxes[e.source].ports.append(Port(i, True, _label_lines(e)))
        elif e.source in mode.extra_states and e.dest in boxes:
            boxes[e.dest].ports.append(Port(i, False, []))
    for box in boxes.values():
        box.ports.sort(key=lambda p: (p.exit, p.lane if not p.exit else -p.lane if p.lane >= 0 else 1))


def _layout(mode: ModeView) -> dict[Any, Box]:
    """Boxes sized to their wrapped text and to the ports on their right side, stacked top to bottom."""
    boxes = {s.number: Box(s, svg.wrap(s.text, NODE_W - PAD - 10, TEXT_SIZE)) for s in mode.steps}
    index = {s.number: i for i, s in enumerate(mode.steps)}
    _ports(mode, boxes, _lanes(mode.edges, index))
    y = float(TOP)
    for box in boxes.values():
        ports = sum(p.height for p in box.ports) + PORT_GAP * (len(box.ports) + 1)
        box.y, box.height = y, max(30 + len(box.lines) * LINE_H, ports)
        top = box.mid - (ports - 2 * PORT_GAP) / 2
        for port in box.ports:
            port.y = top + port.height / 2
            top += port.height + PORT_GAP
        y += box.height + GAP
    return boxes


def _stroke(edge: EdgeView) -> dict[str, object]:
    ink = GREY if edge.outcome == "not_exercised" else svg.colour(edge.outcome)[0]
    dash = {"skip": "6 4", "cycle": "2 4"}.get(edge.kind)
    return {"stroke": ink, "stroke_width": 1.4 if edge.outcome == "not_exercised" else 2, "fill": "none",
            "stroke_dasharray": dash, "class_": "edge", "data_edge": _key(edge)}


def _edge_title(mode: ModeView, edge: EdgeView) -> str:
    def name(state: Any) -> str:
        return f"{mode.prefix}-{state}" if isinstance(state, int) else str(state)

    kind = {"skip": "skip", "cycle": "next access", "end": "end"}.get(edge.kind, "next")
    cond = f" when {edge.label}" if edge.label else ""
    return f"{name(edge.source)} → {name(edge.dest)} ({kind}{cond}): {label(edge.outcome)}"


def _key(edge: EdgeView) -> str:
    """The edge's name in the page (``data-edge="3-5"``) on its line and its label: what the layout tests pair."""
    return f"{edge.source}-{edge.dest}"


def _label(x: float, y: float, lines: list[str], ink: str, edge: EdgeView, anchor: str = "start",
           rotate: bool = False) -> str:
    """An edge's condition on the edge itself: text on a backdrop the line runs behind (``x``, ``y``: the middle
    of the text's left edge, or of its centre for ``anchor="middle"``)."""
    width = max(svg.text_width(line, LABEL_SIZE) for line in lines) + 8
    height = len(lines) * LABEL_LINE_H + 3
    left = x - 4 if anchor == "start" else x - width / 2
    rect = svg.el("rect", x=left, y=y - height / 2, width=width, height=height, rx=4, fill=BACKDROP)
    first = y - height / 2 + 1.5 + LABEL_LINE_H - 3
    text = "".join(svg.el("tspan", svg.escape_text(line), x=x, y=first + k * LABEL_LINE_H)
                   for k, line in enumerate(lines))
    body = rect + svg.el("text", text, font_size=LABEL_SIZE, fill=ink, text_anchor=None if anchor == "start"
                         else anchor)
    return svg.el("g", body, class_="edge-label", data_edge=_key(edge),
                  transform=f"rotate(-90 {x} {y})" if rotate else None)


class _Canvas:
    """Geometry shared by the drawing helpers of one diagram."""

    def __init__(self, mode: ModeView) -> None:
        self.mode = mode
        self.boxes = _layout(mode)
        self.index = {s.number: i for i, s in enumerate(mode.steps)}
        backs = sum(1 for e in mode.edges if e.source in self.index and e.dest in self.index
                    and self.index[e.dest] <= self.index[e.source])
        self.left = 14 + CYCLE_W * (max(backs, 1) + 1)  # room for the back edges' lanes on the left
        self.right = self.left + NODE_W
        self.cx = self.left + NODE_W / 2
        labels = [svg.text_width(line, LABEL_SIZE) for b in self.boxes.values() for p in b.ports for line in p.lines]
        self.zone = self.right + ZONE_GAP + (max(labels) + 14 if labels else 0)
        self.lane_count = max((p.lane + 1 for b in self.boxes.values() for p in b.ports), default=0)
        self.lane_x = [self.zone + LANE_GAP + k * LANE_W for k in range(self.lane_count)]
        self.term_x = (self.lane_x[-1] if self.lane_x else self.zone) + 22
        self.terms = self._terminals()
        widths = [w for _, w in self.terms.values()]
        self.far = self.term_x + max(widths, default=0) + 16
        self.cycles = 0

    def port(self, edge: int, exit: bool, state: Any) -> float:
        box = self.boxes[state]
        return next((p.y for p in box.ports if p.edge == edge and p.exit == exit), box.mid)

    def _terminals(self) -> dict[Any, tuple[float, float]]:
        """End states (e.g. "denied"): (centre y, width), at the height of the first edge into them."""
        out: dict[Any, tuple[float, float]] = {}
        for i, e in enumerate(self.mode.edges):
            if e.dest in self.mode.extra_states and e.source in self.boxes and e.dest not in out:
                out[e.dest] = (self.port(i, True, e.source), svg.text_width(str(e.dest), 12) + 36)
        return out

    @property
    def width(self) -> float:
        back = any(e.source in self.terms and e.dest in self.boxes for e in self.mode.edges)
        return max(self.far + (10 if back else -6), self.zone + 4, self.right + 14)

    @property
    def height(self) -> float:
        last = list(self.boxes.values())[-1] if self.boxes else None
        return (last.y + last.height + 8) if last else TOP


def _marker(prefix: str, edge: EdgeView) -> str:
    return f"url(#{prefix}-arrow-{edge.outcome if edge.outcome in svg.COLOURS else 'not_exercised'})"


Drawn = tuple[list[str], list[str]]
"""An edge's lines and its labels (drawn last, so a label's backdrop covers the lines that run behind it)."""


def _edge(c: _Canvas, i: int, edge: EdgeView, marker: str) -> Drawn:
    """One edge's line (with its tooltip) and its label, by kind of route."""
    stroke, tip = _stroke(edge), svg.title(_edge_title(c.mode, edge))
    s, d, boxes = edge.source, edge.dest, c.boxes
    if s == IDLE and d in boxes:
        return [svg.el("circle", cx=c.cx, cy=12, r=6, fill=svg.INK),
                svg.el("line", tip, x1=c.cx, y1=18, x2=c.cx, y2=boxes[d].y - 1, marker_end=marker, **stroke)], []
    if s in boxes and d in boxes and c.index[d] == c.index[s] + 1:
        return _next(c, edge, marker, stroke, tip)
    if s in boxes and d in boxes:
        route = _skip if c.index[d] > c.index[s] else _cycle
        return route(c, i, edge, marker, stroke, tip)
    if s in boxes and d in c.terms:
        return _to_end(c, i, edge, marker, stroke, tip)
    if s in c.terms and d in boxes:
        y0, width = c.terms[s]
        y1 = c.port(i, False, d)
        path = f"M{c.term_x + width},{y0} H{c.far} V{y1} H{c.right + 1}"
        return ([svg.el("path", tip, d=path, marker_end=marker, **stroke)],
                [_label(c.far, (y0 + y1) / 2, ["next access"], svg.MUTED, edge, anchor="middle", rotate=True)])
    return [], []


def _next(c: _Canvas, edge: EdgeView, marker: str, stroke: dict[str, object], tip: str) -> Drawn:
    """Straight down to the next step, the condition (if any) on the line between the boxes."""
    y1, y2 = c.boxes[edge.source].y + c.boxes[edge.source].height, c.boxes[edge.dest].y
    line = svg.el("line", tip, x1=c.cx, y1=y1, x2=c.cx, y2=y2 - 1, marker_end=marker, **stroke)
    labels = [_label(c.cx, (y1 + y2) / 2 - 2, [edge.label], svg.MUTED, edge, anchor="middle")] if edge.label else []
    return [line], labels


def _exit_label(c: _Canvas, edge: EdgeView, y: float, stroke: dict[str, object]) -> list[str]:
    """The condition of an edge leaving a box sideways, on the edge's first stretch (the label zone)."""
    return [_label(c.right + ZONE_GAP + 4, y, _label_lines(edge), str(stroke["stroke"]), edge)] if edge.label else []


def _skip(c: _Canvas, i: int, edge: EdgeView, marker: str, stroke: dict[str, object], tip: str) -> Drawn:
    y1, y2 = c.port(i, True, edge.source), c.port(i, False, edge.dest)
    x = c.lane_x[next(p.lane for p in c.boxes[edge.source].ports if p.edge == i)]
    path = svg.el("path", tip, d=f"M{c.right},{y1} H{x} V{y2} H{c.right + 1}", marker_end=marker, **stroke)
    return [path], _exit_label(c, edge, y1, stroke)


def _to_end(c: _Canvas, i: int, edge: EdgeView, marker: str, stroke: dict[str, object], tip: str) -> Drawn:
    y, (ty, _) = c.port(i, True, edge.source), c.terms[edge.dest]
    jog = f" H{c.term_x - 12} V{ty}" if ty != y else ""  # a second way into the same end state
    path = svg.el("path", tip, d=f"M{c.right},{y}{jog} H{c.term_x - 1}", marker_end=marker, **stroke)
    return [path], _exit_label(c, edge, y, stroke)


def _cycle(c: _Canvas, i: int, edge: EdgeView, marker: str, stroke: dict[str, object], tip: str) -> Drawn:
    x = c.left - CYCLE_W * (c.cycles + 1)
    c.cycles += 1
    y1, y2 = c.boxes[edge.source].mid, c.boxes[edge.dest].mid
    return ([svg.el("path", tip, d=f"M{c.left},{y1} H{x} V{y2} H{c.left - 1}", marker_end=marker, **stroke)],
            [_label(x, (y1 + y2) / 2, ["next access"], svg.MUTED, edge, anchor="middle", rotate=True)])


def _terminal(c: _Canvas, state: Any, y: float, width: float) -> str:
    reached = any(e.dest == state and e.outcome != "not_exercised" for e in c.mode.edges)
    ink = svg.INK if reached else GREY
    box = svg.el("rect", x=c.term_x, y=y - TERM_H / 2, width=width, height=TERM_H, rx=TERM_H / 2, fill="#fff",
                 stroke=ink, stroke_width=1.4, stroke_dasharray=None if reached else "4 3")
    return svg.el("g", svg.title(f"{state}: the flow ends here ({'reached' if reached else 'not reached'})")
                  + box + svg.text(c.term_x + width / 2, y + 4, str(state), font_size=12, fill=ink,
                                   text_anchor="middle"), class_="flow-end")


def _box(box: Box, left: float) -> str:
    step, y = box.step, box.y
    ink, fill = svg.colour(step.outcome)
    quiet = step.outcome == "not_exercised"
    body = svg.title(f"{step.step_id} · {step.actor}: {step.text} — {step.label}")
    body += svg.el("rect", x=left, y=y, width=NODE_W, height=box.height, rx=6, fill=fill, stroke=ink,
                   stroke_width=1.2 if quiet else 1.6, stroke_dasharray="4 3" if quiet else None, class_="node")
    body += svg.el("rect", x=left, y=y, width=5, height=box.height, rx=2, fill=ink)
    head = svg.el("tspan", svg.escape_text(step.step_id), font_weight=700) + svg.escape_text(f"  {step.actor}")
    body += svg.el("text", head, x=left + PAD, y=y + 17, font_size=HEAD_SIZE, fill=svg.INK)
    body += svg.text(left + NODE_W - 10, y + 17, ICON.get(step.outcome, "?"), font_size=13, font_weight=700,
                     fill=ink, text_anchor="end")
    lines = "".join(svg.el("tspan", svg.escape_text(line), x=left + PAD, y=y + 33 + k * LINE_H)
                    for k, line in enumerate(box.lines))
    body += svg.el("text", lines, font_size=TEXT_SIZE, fill=svg.MUTED, class_="step-text")
    return svg.el("a", body, href=f"#{step.anchor}", class_="flow-step", data_step=step.step_id)


def flow_diagram(mode: ModeView) -> str:
    """Inline SVG of the mode's flow; each step box links to its section of the step table."""
    prefix = mode.diagram_anchor
    c = _Canvas(mode)
    parts = [svg.el("defs", "".join(
        svg.arrow_marker(f"{prefix}-arrow-{o}", GREY if o == "not_exercised" else svg.colour(o)[0])
        for o in svg.COLOURS))]
    lines: list[str] = []
    labels: list[str] = []
    for i, edge in enumerate(mode.edges):
        drawn, written = _edge(c, i, edge, _marker(prefix, edge))
        lines += drawn
        labels += written
    parts += lines
    parts += [_terminal(c, state, y, w) for state, (y, w) in c.terms.items()]
    parts += [_box(box, c.left) for box in c.boxes.values()]
    parts += labels  # last: a label's backdrop hides the lines that run behind it
    return svg.svg(c.width, c.height, "".join(parts), f"{mode.flow_title} ({mode.name}): steps and edges by outcome",
                   class_="flow-diagram")
