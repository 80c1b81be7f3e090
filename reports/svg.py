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


def truncate(content: str, limit: int) -> str:
    return content if len(content) <= limit else content[: max(limit - 1, 1)].rstrip() + "…"


def arrow_marker(marker_id: str, fill: str) -> str:
    path = el("path", d="M0,0 L8,4 L0,8 z", fill=fill)
    return el("marker", path, id=marker_id, viewBox="0 0 8 8", refX=7, refY=4, markerWidth=7, markerHeight=7,
              orient="auto-start-reverse", markerUnits="userSpaceOnUse")


def svg(width: float, height: float, children: str, label: str, **values: object) -> str:
    return el("svg", title(label) + children, xmlns="http://www.w3.org/2000/svg", width=width, height=height,
              viewBox=f"0 0 {width:.0f} {height:.0f}", role="img", font_family=FONT, **values)
