"""The step diagrams' geometry, read back from the SVG the report embeds: every step's whole text in its box,
every conditional edge labelled once, on its own line, with no label over another or over a box; all of it drawn
from the flow tables in results (a table the kit has never seen draws just as well).

The same properties are measured in a real browser by tests/test_report_layout.py; these run without one."""

from __future__ import annotations

import copy
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from itertools import combinations, pairwise
from typing import Any

import pytest

import reports
from reports.flow_svg import flow_diagram
from reports.model import build
from tests.test_report import SAMPLE

NS = {"s": "http://www.w3.org/2000/svg"}


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    w: float
    h: float

    def overlaps(self, other: Rect, margin: float = 0.5) -> bool:
        return (self.x + margin < other.x + other.w and other.x + margin < self.x + self.w
                and self.y + margin < other.y + other.h and other.y + margin < self.y + self.h)

    @property
    def centre(self) -> tuple[float, float]:
        return self.x + self.w / 2, self.y + self.h / 2


def _rect(el: ET.Element) -> Rect:
    return Rect(*(float(el.get(k, 0)) for k in ("x", "y", "width", "height")))


def _label_box(group: ET.Element) -> Rect:
    """A label's backdrop as drawn: turned a quarter around its centre when the group is rotated."""
    box = _rect(group.find("s:rect", NS))
    if group.get("transform", "").startswith("rotate"):
        cx, cy = box.centre
        return Rect(cx - box.h / 2, cy - box.w / 2, box.h, box.w)
    return box


def _segments(d: str) -> list[tuple[float, float, float, float]]:
    """The straight pieces of a path made of M, H and V commands."""
    tokens = re.findall(r"([MHV])\s*([-\d.]+)(?:,([-\d.]+))?", d)
    x = y = 0.0
    out = []
    for cmd, a, b in tokens:
        if cmd == "M":
            x, y = float(a), float(b)
            continue
        nx, ny = (float(a), y) if cmd == "H" else (x, float(a))
        out.append((x, y, nx, ny))
        x, y = nx, ny
    return out


def _on(line: ET.Element, point: tuple[float, float]) -> bool:
    px, py = point
    if line.tag.endswith("line"):
        pieces = [tuple(float(line.get(k, 0)) for k in ("x1", "y1", "x2", "y2"))]
    else:
        pieces = _segments(line.get("d", ""))
    return any(min(x1, x2) - 0.6 <= px <= max(x1, x2) + 0.6 and min(y1, y2) - 0.6 <= py <= max(y1, y2) + 0.6
               for x1, y1, x2, y2 in pieces)


def _diagrams(results: dict[str, Any]) -> dict[str, tuple[ET.Element, dict[str, Any]]]:
    view = build(results, events=False)
    out = {}
    for mode in view.modes:
        flow = results["flows"][mode.flow_key]
        out[mode.name] = (ET.fromstring(flow_diagram(mode)), flow)
    return out


def _check_diagram(root: ET.Element, flow: dict[str, Any]) -> None:
    prefix = flow["prefix"]
    assert "…" not in ET.tostring(root, encoding="unicode")
    boxes: dict[str, Rect] = {}
    for step in flow["steps"]:
        link = root.find(f".//s:a[@data-step='{prefix}-{step['number']}']", NS)
        assert link is not None, step["number"]
        box = _rect(link.find("s:rect[@class='node']", NS))
        boxes[str(step["number"])] = box
        text = link.find("s:text[@class='step-text']", NS)
        lines = [t.text or "" for t in text.findall("s:tspan", NS)]
        assert "".join("".join(lines).split()) == "".join(step["text"].split()), step["number"]  # whole, in order
        ys = [float(t.get("y")) for t in text.findall("s:tspan", NS)]
        assert box.y + 24 < ys[0] and ys[-1] + 4 <= box.y + box.h, (step["number"], ys, box)  # inside the box
    labels = {g.get("data-edge"): g for g in root.iterfind(".//s:g[@class='edge-label']", NS)}
    lines = {el.get("data-edge"): el for el in root.iter() if el.get("class") == "edge"}
    for edge in flow["edges"]:
        key = f"{edge['source']}-{edge['dest']}"
        assert key in lines, key
        if not edge["label"]:
            continue
        group = labels.get(key)
        assert group is not None, f"edge {key} has no label"
        words = " ".join(t.text or "" for t in group.iterfind(".//s:tspan", NS))
        assert words == edge["label"], key
        assert _on(lines[key], _label_box(group).centre), f"the label of {key} is not on its edge"
    drawn = [(key, _label_box(g)) for key, g in labels.items()]
    for (a, ra), (b, rb) in combinations(drawn, 2):
        assert not ra.overlaps(rb), f"labels of {a} and {b} overlap"
    for key, rect in drawn:
        for number, box in boxes.items():
            assert not rect.overlaps(box), f"the label of {key} overlaps step {number}"
    lanes = sorted({round(s[0], 1) for key, el in lines.items() if el.get("stroke-dasharray") == "6 4"
                    for s in _segments(el.get("d", "")) if s[0] == s[2]})
    assert all(b - a >= 16 for a, b in pairwise(lanes)), lanes  # skip lanes well apart


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    return reports.load_results(SAMPLE)


def test_the_sample_diagrams_hold_whole_texts_and_labels_on_their_edges(results: dict[str, Any]) -> None:
    diagrams = _diagrams(results)
    assert set(diagrams) == {"AzApp", "AzUser", "AzDelegate"}
    for root, flow in diagrams.values():
        _check_diagram(root, flow)


def test_diagrams_are_drawn_from_the_tables_in_results(results: dict[str, Any]) -> None:
    """A table the kit does not know: longer texts, an unbreakable word, more skips, two ways into an end
    state and two back edges; the drawing follows it and keeps its promises."""
    doctored = copy.deepcopy(results)
    flow = doctored["flows"]["authorization_code"]
    flow["steps"][1]["text"] = "A step text far longer than any in the document, " * 4 + "x" * 90
    for step in doctored["steps"]:
        if step["flow"] == "authorization_code" and step["number"] == 2:
            step["text"] = flow["steps"][1]["text"]
    flow["edges"] += [
        {"source": 1, "dest": 4, "kind": "skip", "label": "an invented condition on a long skip"},
        {"source": 2, "dest": 5, "kind": "skip", "label": "another"},
        {"source": 3, "dest": "denied", "kind": "end", "label": "early refusal"},
        {"source": 9, "dest": 2, "kind": "cycle", "label": ""},
    ]
    for mode, (root, table) in _diagrams(doctored).items():
        _check_diagram(root, table)
        if table is flow:
            assert root.find(".//s:g[@data-edge='1-4']", NS) is not None, mode


def test_the_kits_own_tables_draw_the_same_when_results_lack_them(results: dict[str, Any]) -> None:
    older = copy.deepcopy(results)
    flows = older.pop("flows")
    view = build(older, events=False)
    for mode in view.modes:
        _check_diagram(ET.fromstring(flow_diagram(mode)), flows[mode.flow_key])
