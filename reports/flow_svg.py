"""The flow diagram of one mode, drawn from the step-table data in results (never from a hand-made picture),
with steps and edges coloured by outcome.

Layout: the steps in one column, in the document's order. Plain next-step edges run straight down; forward
skips ("If it does, steps 3 to 5 are skipped") run dashed in lanes on the right, each labelled with its
condition in a label column (a dotted leader joins label and lane, so labels never overlap); back edges (the
user accesses the portal again) run dotted on the left; other states (the "denied" end) sit right of the
labels.
"""

from __future__ import annotations

from typing import Any

from reports import svg
from reports.model import IDLE, EdgeView, ModeView, label

NODE_W, NODE_H, PITCH = 236, 42, 62
LEFT, TOP = 46, 40
LANE_GAP, LANE_W = 16, 14
CHAR_W = 5.7  # average width of a 10.5px character, for sizing labels
LABEL_H = 15
TERM_W = 96
GREY = "#8c959f"

ICON = {"passed": "✓", "failed": "✗", "not_exercised": "–", "warning": "!", "not_applicable": "–"}


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


def _place(wanted: list[tuple[int, float, float, float]], blocked: list[tuple[float, float]]) -> dict[int, float]:
    """Label positions near their wanted y (within their lane's extent when possible), never overlapping
    each other nor what else sits in the label column (``blocked`` y ranges: end states and their edges)."""
    placed: dict[int, float] = {}
    for key, want, lo, hi in sorted(wanted, key=lambda w: w[1]):
        candidates = sorted((want + d * s for d in range(0, 400, 2) for s in (1, -1)),
                            key=lambda y: (not lo <= y <= hi, abs(y - want)))
        for y in candidates:
            free = all(abs(y - other) >= LABEL_H for other in placed.values())
            if free and all(y < a - LABEL_H / 2 or y > b + LABEL_H / 2 for a, b in blocked):
                placed[key] = y
                break
        else:
            placed[key] = want
    return placed


def _stroke(edge: EdgeView) -> dict[str, object]:
    ink = GREY if edge.outcome == "not_exercised" else svg.colour(edge.outcome)[0]
    dash = {"skip": "6 4", "cycle": "2 4"}.get(edge.kind)
    return {"stroke": ink, "stroke_width": 1.4 if edge.outcome == "not_exercised" else 2, "fill": "none",
            "stroke_dasharray": dash}


def _edge_title(mode: ModeView, edge: EdgeView) -> str:
    def name(state: Any) -> str:
        return f"{mode.prefix}-{state}" if isinstance(state, int) else str(state)

    kind = {"skip": "skip", "cycle": "next access", "end": "end"}.get(edge.kind, "next")
    cond = f" when {edge.label}" if edge.label else ""
    return f"{name(edge.source)} → {name(edge.dest)} ({kind}{cond}): {label(edge.outcome)}"


def flow_diagram(mode: ModeView) -> str:
    """Inline SVG of the mode's flow; each step box links to its section of the step table."""
    prefix = mode.diagram_anchor
    index = {s.number: i for i, s in enumerate(mode.steps)}
    ys = {s.number: TOP + i * PITCH for i, s in enumerate(mode.steps)}
    mid = {k: y + NODE_H / 2 for k, y in ys.items()}
    cx, right = LEFT + NODE_W / 2, LEFT + NODE_W
    lanes = _lanes(mode.edges, index)
    lane_x = [right + LANE_GAP + k * LANE_W for k in range(max(lanes.values(), default=-1) + 1)]
    column = (lane_x[-1] if lane_x else right) + 22

    def marker(edge: EdgeView) -> str:
        return f"url(#{prefix}-arrow-{edge.outcome if edge.outcome in svg.COLOURS else 'not_exercised'})"

    # End states (e.g. "denied") sit in the label column at their source's height; labels keep clear of them.
    extra_pos: dict[Any, float] = {}
    for e in mode.edges:
        if e.dest in mode.extra_states and e.source in ys:
            extra_pos.setdefault(e.dest, mid[e.source])
    blocked = [(y - NODE_H / 2, y + NODE_H / 2 + 14) for y in extra_pos.values()]
    wanted = []
    for i in lanes:
        e = mode.edges[i]
        if e.label:
            lo, hi = mid[e.source] + 6, mid[e.dest] - 6
            wanted.append((i, (lo + hi) / 2, lo + 4, hi - 4))
    label_y = _place(wanted, blocked)
    label_w = max((len(mode.edges[i].label) * CHAR_W for i in label_y), default=0)
    term_x = column
    far = column + max(label_w, TERM_W if extra_pos else 0) + 10  # the way back up from an end state

    parts: list[str] = [svg.el("defs", "".join(
        svg.arrow_marker(f"{prefix}-arrow-{o}", GREY if o == "not_exercised" else svg.colour(o)[0])
        for o in svg.COLOURS))]
    back_from_extra = any(e.source in extra_pos and e.dest in ys for e in mode.edges)
    width = max(far + (8 if back_from_extra else -6), right + 14)

    cycles = 0
    for i, edge in enumerate(mode.edges):
        stroke, tip = _stroke(edge), svg.title(_edge_title(mode, edge))
        s, d = edge.source, edge.dest
        if s == IDLE and d in ys:
            parts.append(svg.el("circle", cx=cx, cy=12, r=6, fill=svg.INK))
            parts.append(svg.el("line", tip, x1=cx, y1=18, x2=cx, y2=ys[d] - 1, marker_end=marker(edge), **stroke))
        elif s in ys and d in ys and index[d] == index[s] + 1:
            y1, y2 = ys[s] + NODE_H, ys[d]
            parts.append(svg.el("line", tip, x1=cx, y1=y1, x2=cx, y2=y2 - 1, marker_end=marker(edge), **stroke))
            if edge.label:
                parts.append(svg.text(cx + 7, (y1 + y2) / 2 + 4, edge.label, font_size=10, fill=svg.MUTED))
        elif i in lanes:
            x = lane_x[lanes[i]]
            y1, y2 = mid[s] + 6, mid[d] - 6
            parts.append(svg.el("path", tip, d=f"M{right},{y1} H{x} V{y2} H{right + 1}", marker_end=marker(edge),
                                **stroke))
            if i in label_y:
                ly = label_y[i]
                on_lane = min(max(ly, y1), y2)
                leader = f"M{x},{on_lane} V{ly} H{column - 3}" if on_lane != ly else f"M{x},{ly} H{column - 3}"
                parts.append(svg.el("path", d=leader, stroke=stroke["stroke"], stroke_width=0.9, fill="none",
                                    stroke_dasharray="1 2", opacity=0.8))
                parts.append(svg.el("circle", cx=x, cy=on_lane, r=2.2, fill=stroke["stroke"]))
                parts.append(svg.text(column, ly + 3.5, edge.label, font_size=10.5, fill=stroke["stroke"]))
        elif s in ys and d in ys:
            x = LEFT - 14 - cycles * 12
            cycles += 1
            parts.append(svg.el("path", tip, d=f"M{LEFT},{mid[s]} H{x} V{mid[d]} H{LEFT - 1}", marker_end=marker(edge),
                                **stroke))
            ym = (mid[s] + mid[d]) / 2
            parts.append(svg.text(x - 4, ym, "next access", font_size=10, fill=svg.MUTED, text_anchor="middle",
                                  transform=f"rotate(-90 {x - 4} {ym})"))
        elif s in ys and d in extra_pos:
            parts.append(svg.el("path", tip, d=f"M{right},{mid[s]} H{term_x - 1}", marker_end=marker(edge), **stroke))
            if edge.label:
                parts.append(svg.text(term_x + TERM_W / 2, extra_pos[d] + NODE_H / 2 + 12, f"if {edge.label}",
                                      font_size=10, fill=stroke["stroke"], text_anchor="middle"))
        elif s in extra_pos and d in ys:
            y0 = extra_pos[s]
            parts.append(svg.el("path", tip, d=f"M{term_x + TERM_W},{y0} H{far} V{mid[d]} H{right + 1}",
                                marker_end=marker(edge), **stroke))
            parts.append(svg.text(far - 4, mid[d] - 5, "next access", font_size=10, fill=svg.MUTED, text_anchor="end"))

    for state, y in extra_pos.items():
        reached = any(e.dest == state and e.outcome != "not_exercised" for e in mode.edges)
        ink = svg.INK if reached else GREY
        box = svg.el("rect", x=term_x, y=y - NODE_H / 2, width=TERM_W, height=NODE_H, rx=NODE_H / 2, fill="#fff",
                     stroke=ink, stroke_width=1.4, stroke_dasharray=None if reached else "4 3")
        parts.append(svg.el("g", svg.title(f"{state}: the flow ends here ({'reached' if reached else 'not reached'})")
                            + box + svg.text(term_x + TERM_W / 2, y + 4, str(state), font_size=12, fill=ink,
                                             text_anchor="middle")))

    for step in mode.steps:
        ink, fill = svg.colour(step.outcome)
        y = ys[step.number]
        quiet = step.outcome == "not_exercised"
        body = svg.title(f"{step.step_id} · {step.actor}: {step.text} — {step.label}")
        body += svg.el("rect", x=LEFT, y=y, width=NODE_W, height=NODE_H, rx=6, fill=fill, stroke=ink,
                       stroke_width=1.2 if quiet else 1.6, stroke_dasharray="4 3" if quiet else None)
        body += svg.el("rect", x=LEFT, y=y, width=5, height=NODE_H, rx=2, fill=ink)
        head = svg.el("tspan", svg.escape_text(step.step_id), font_weight=700) + svg.escape_text(f"  {step.actor}")
        body += svg.el("text", head, x=LEFT + 12, y=y + 17, font_size=12, fill=svg.INK)
        body += svg.text(right - 10, y + 17, ICON.get(step.outcome, "?"), font_size=13, font_weight=700, fill=ink,
                         text_anchor="end")
        body += svg.text(LEFT + 12, y + 33, svg.truncate(step.text, 40), font_size=10.5, fill=svg.MUTED)
        parts.append(svg.el("a", body, href=f"#{step.anchor}", class_="flow-step"))

    height = TOP + len(mode.steps) * PITCH + 4
    return svg.svg(width, height, "".join(parts), f"{mode.flow_title} ({mode.name}): steps and edges by outcome",
                   class_="flow-diagram")
