"""A tiny SVG writer: every attribute and text node is escaped here, so diagrams built from results
cannot inject markup into the page (the text was redacted before it got here)."""

from __future__ import annotations

from html import escape

COLOURS = {
    # outcome: (stroke / text colour, fill)
    "passed": ("#1a7f37", "#e6f4ea"),
    "failed": ("#cf222e", "#ffebe9"),
    "warning": ("#9a6700", "#fff8c5"),
    "not_applicable": ("#6e7781", "#f6f8fa"),
    "not_exercised": ("#8c959f", "#ffffff"),
    "error": ("#cf222e", "#ffebe9"),
}
INK = "#1f2328"
MUTED = "#656d76"
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"


def colour(outcome: str) -> tuple[str, str]:
    return COLOURS.get(outcome, COLOURS["not_exercised"])


def attrs(values: dict[str, object]) -> str:
    """``key="value"`` pairs, escaped; ``None`` values are left out and ``_`` in names becomes ``-``."""
    parts = []
    for key, value in values.items():
        if value is None:
            continue
        name = key.rstrip("_").replace("_", "-")
        if isinstance(value, float):
            value = f"{value:.1f}".rstrip("0").rstrip(".")
        parts.append(f'{name}="{escape(str(value), quote=True)}"')
    return " ".join(parts)


def el(tag: str, children: str = "", **values: object) -> str:
    """An element; ``children`` is trusted markup built by these helpers."""
    head = f"{tag} {attrs(values)}".rstrip()
    return f"<{head}>{children}</{tag}>" if children else f"<{head}/>"


def escape_text(content: str) -> str:
    return escape(content, quote=False)


def text(x: float, y: float, content: str, **values: object) -> str:
    return el("text", escape(content, quote=False), x=x, y=y, **values)


def title(content: str) -> str:
    """A tooltip (and an accessible name) for the enclosing element."""
    return el("title", escape(content, quote=False))


# Advance widths in em, the wider of DejaVu Sans and Liberation Sans (what the font stack falls to on Linux, and
# wider than Segoe UI or SF): text sized with them fits whichever font the reader's browser picks.
_WIDTHS = {ch: width for chars, width in (
    ("'ijl", 0.28), ("I", 0.30), (",. ", 0.32), ("/:;\\|", 0.34), ("f", 0.35), ("-", 0.37), ("()[]rt", 0.40),
    ("!", 0.41), ('"', 0.46), ("*J`", 0.50), ("sz", 0.53), ("c", 0.55), ("?L_", 0.56), ("k", 0.58), ("vxy", 0.60),
    ("FTaeo", 0.62), ("$0123456789bdghnpqu{}", 0.64), ("EKPSY", 0.67), ("BVXZ", 0.69), ("A", 0.71), ("CR", 0.73),
    ("U", 0.74), ("N", 0.75), ("H", 0.76), ("&DG", 0.78), ("OQ", 0.79), ("w", 0.82), ("#+<=>^~", 0.84), ("M", 0.87),
    ("%", 0.96), ("m", 0.98), ("W", 0.99), ("@", 1.02)) for ch in chars}
BOLD = 1.12
"""Bold text is this much wider than regular."""


def text_width(content: str, size: float, bold: bool = False) -> float:
    """Width in px of ``content`` at font size ``size``; an unknown character counts one em (CJK is that wide)."""
    return sum(_WIDTHS.get(ch, 1.0) for ch in content) * size * (BOLD if bold else 1.0)


def wrap(content: str, width: float, size: float, bold: bool = False) -> list[str]:
    """``content`` in lines no wider than ``width`` px, broken at spaces; a word wider than a line is broken
    inside (never cut: the lines hold every character of the text)."""
    lines: list[str] = []
    line = ""
    for word in content.split():
        candidate = f"{line} {word}" if line else word
        if text_width(candidate, size, bold) <= width:
            line = candidate
            continue
        if line:
            lines.append(line)
        line = ""
        for ch in word:  # only a word longer than a whole line gets here
            if line and text_width(line + ch, size, bold) > width:
                lines.append(line)
                line = ""
            line += ch
    if line:
        lines.append(line)
    return lines or [""]


def truncate(content: str, limit: int) -> str:
    return content if len(content) <= limit else content[: max(limit - 1, 1)].rstrip() + "…"


def arrow_marker(marker_id: str, fill: str) -> str:
    path = el("path", d="M0,0 L8,4 L0,8 z", fill=fill)
    return el("marker", path, id=marker_id, viewBox="0 0 8 8", refX=7, refY=4, markerWidth=7, markerHeight=7,
              orient="auto-start-reverse", markerUnits="userSpaceOnUse")


def svg(width: float, height: float, children: str, label: str, **values: object) -> str:
    return el("svg", title(label) + children, xmlns="http://www.w3.org/2000/svg", width=width, height=height,
              viewBox=f"0 0 {width:.0f} {height:.0f}", role="img", font_family=FONT, **values)
