"""The load run's chart: requests and failures per second as grouped bars, and each clock move past every token's
expiry as a dashed vertical line labelled "tokens expire".

The SVG has no viewBox: every horizontal position of the data is a percentage of the plot's width and every text
keeps its pixel size, so the chart fills its container at any width (1400 px or a 390 px phone) without its
labels shrinking to nothing or growing huge. The plot is the ``<svg>`` box itself; the page's CSS gives it a left
margin for the y-axis labels (drawn at negative x) and a right one for the last tick label. Labels that depend on
the width (x ticks, the "tokens expire" labels) are placed for the narrowest plot, ``MIN_PLOT_W``: labels apart
there are further apart at any wider size (their gaps grow with the width, their sizes do not). "tokens expire"
labels with no room there may still have room on a wide screen: those carry ``wide-only`` (shown by report.css).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from reports import svg
from reports.load import ChartData, figure

MIN_PLOT_W = 240.0
"""px: the plot's width on a 320 px phone; below it the figure scrolls sideways."""
WIDE_PLOT_W = 800.0
"""px: the plot's width at least, on a screen 1000 px wide (report.css shows the ``wide-only`` labels there)."""
RIGHT = 20.0  # px right of the plot: half of the last x tick label
PLOT_H = 170.0
SIZE, SMALL = 12.0, 11.0
ROW, EPOCH_ROW = 18.0, 15.0
EPOCH_ROWS = 2  # rows of "tokens expire" labels; a move with no room in either keeps its line and tooltip
GAP = 6.0
REQUESTS, FAILURES, EPOCH = "#218bff", svg.COLOURS["failed"][0], "#8250df"  # purple: the virtual clock
GRID = "#eaeef2"
TITLE_ID, DESC_ID = "load-chart-title", "load-chart-desc"
EPOCH_LABEL = "tokens expire"


@dataclass
class Axis:
    """The x axis in Locust's seconds: bucket ``t`` spans ``[t, t + 1)``."""

    lo: float
    hi: float

    def pct(self, x: float) -> str:
        return f"{100 * (x - self.lo) / (self.hi - self.lo):.3f}%"

    def fraction(self, x: float) -> float:
        return (x - self.lo) / (self.hi - self.lo)


def _nice(top: float, most: int) -> float:
    """A 1-2-5 step giving at most ``most`` intervals up to ``top``."""
    raw = max(top, 1.0) / max(most, 1)
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def _x_axis(chart: ChartData) -> Axis:
    seconds = [t for t, _ in chart.requests + chart.failures]
    lo = min([0.0, *seconds])
    hi = max([lo + 1.0, chart.duration, *(t + 1 for t in seconds), *(x for _, x, _ in chart.epochs)])
    return Axis(lo, math.ceil(hi))


def _y_ticks(chart: ChartData) -> list[float]:
    top = max([0.0, *(n for _, n in chart.requests + chart.failures)])
    step = _nice(top, 4)
    return [i * step for i in range(math.ceil(max(top, 1.0) / step) + 1)]


def _x_ticks(axis: Axis) -> list[float]:
    widest = svg.text_width(figure(axis.hi), SMALL)
    step = max(_nice(axis.hi - axis.lo, int(MIN_PLOT_W // (widest + 14))), 1.0)
    first = math.ceil(axis.lo / step) * step
    return [first + i * step for i in range(int((axis.hi - first) // step) + 1)]


def left_margin(chart: ChartData) -> float:
    """px left of the plot, for the widest y-axis label."""
    return max(svg.text_width(figure(t), SMALL) for t in _y_ticks(chart)) + GAP + 8


# ----------------------------------------------------------------------------------------------- parts


def _text(x: float | str, y: float, content: str, **values: object) -> str:
    """A text node; ``x`` may be a percentage of the plot's width."""
    return svg.el("text", svg.escape_text(content), x=x, y=y, **values)


def _legend(chart: ChartData, left: float) -> tuple[str, float]:
    """Swatches and names, wrapped to the narrowest chart's width; returns the markup and its height."""
    items = [("bar", REQUESTS, "requests per second"), ("bar", FAILURES, "failures per second")]
    if chart.epochs:
        items.append(("line", EPOCH, EPOCH_LABEL))
    out, x, row = [], -left, 0
    for kind, colour, name in items:
        width = 18 + svg.text_width(name, SIZE)
        if x > -left and x + width > MIN_PLOT_W + RIGHT:
            x, row = -left, row + 1
        y = row * ROW + 13
        swatch = (svg.el("rect", x=x, y=y - 9, width=12, height=10, fill=colour) if kind == "bar" else
                  svg.el("line", x1=x + 6, x2=x + 6, y1=y - 11, y2=y + 2, stroke=colour, stroke_width=2,
                         stroke_dasharray="4 3"))
        out.append(svg.el("g", swatch + svg.text(x + 18, y, name, font_size=SIZE, fill=svg.INK), class_="legend-item"))
        x += width + 16
    return svg.el("g", "".join(out), class_="legend"), (row + 1) * ROW


def _span(fraction: float, plot_w: float, width: float) -> tuple[float, float]:
    """Where a label sits in a plot ``plot_w`` wide: right of its line in the left half, left of it after."""
    at = fraction * plot_w
    return (at + 3, at + 3 + width) if fraction <= 0.5 else (at - 3 - width, at - 3)


def _label_rows(chart: ChartData, axis: Axis) -> list[tuple[int, bool]]:
    """Each move's label row (-1: none) and whether it is shown only on a wide screen: rows are filled for the
    narrowest plot first, then for ``WIDE_PLOT_W``; labels apart at a width stay apart at any wider one."""
    width = svg.text_width(EPOCH_LABEL, SMALL)
    fractions = [axis.fraction(x) for _, x, _ in chart.epochs]
    rows, wide = [-1] * len(fractions), [False] * len(fractions)
    for plot_w, tier in ((MIN_PLOT_W, False), (WIDE_PLOT_W, True)):
        for i, f in enumerate(fractions):
            for row in range(EPOCH_ROWS if rows[i] < 0 else 0):
                spans = [_span(fractions[j], plot_w, width) for j in range(len(fractions)) if rows[j] == row]
                mine = _span(f, plot_w, width)
                if all(mine[1] + GAP <= a or b + GAP <= mine[0] for a, b in spans):
                    rows[i], wide[i] = row, tier
                    break
    return list(zip(rows, wide, strict=True))


def _epochs(chart: ChartData, axis: Axis, top: float, bottom: float) -> str:
    out = []
    for (index, x, since), (row, wide) in zip(chart.epochs, _label_rows(chart, axis), strict=True):
        tip = svg.title(f"{EPOCH_LABEL}: clock move {index}, {since:.1f} s after the start")
        line = svg.el("line", tip, x1=axis.pct(x), x2=axis.pct(x), y1=top + max(row, 0) * EPOCH_ROW, y2=bottom,
                      stroke=EPOCH, stroke_width=1.5, stroke_dasharray="4 3", class_="epoch", data_epoch=index)
        label = "" if row < 0 else _text(
            axis.pct(x), top + row * EPOCH_ROW + 11, EPOCH_LABEL, font_size=SMALL, fill=EPOCH,
            dx=3 if axis.fraction(x) <= 0.5 else -3, text_anchor="start" if axis.fraction(x) <= 0.5 else "end",
            class_="epoch-label wide-only" if wide else "epoch-label")
        out.append(line + label)
    return "".join(out)


def _bars(series: list[tuple[float, float]], axis: Axis, y_of: YScale, offset: float, colour: str,
          what: str, css: str) -> str:
    """One bar per second of ``series``, in its half of the second's slot (requests left, failures right)."""
    slot = 100 / (axis.hi - axis.lo)
    out = []
    for second, count in series:
        x = 100 * axis.fraction(second) + slot * (0.08 + offset)
        out.append(svg.el("rect", svg.title(f"{figure(count)} {what} in second {figure(second)}"), x=f"{x:.3f}%",
                          width=f"{slot * 0.42:.3f}%", y=y_of(count), height=y_of.bottom - y_of(count), fill=colour,
                          class_=css, data_second=figure(second), data_count=figure(count)))
    return "".join(out)


@dataclass
class YScale:
    top: float
    bottom: float
    ymax: float

    def __call__(self, value: float) -> float:
        return self.bottom - (self.bottom - self.top) * value / self.ymax


def _grid(ticks: list[float], y_of: YScale) -> str:
    out = []
    for t in ticks:
        out.append(svg.el("line", x1="0%", x2="100%", y1=y_of(t), y2=y_of(t), stroke=GRID if t else svg.MUTED))
        out.append(svg.text(-GAP, y_of(t) + 4, figure(t), font_size=SMALL, fill=svg.MUTED, text_anchor="end",
                            class_="y-tick"))
    return "".join(out)


def _x_labels(axis: Axis, bottom: float) -> str:
    out = []
    for t in _x_ticks(axis):
        out.append(svg.el("line", x1=axis.pct(t), x2=axis.pct(t), y1=bottom, y2=bottom + 4, stroke=svg.MUTED))
        out.append(_text(axis.pct(t), bottom + 16, figure(t), font_size=SMALL, fill=svg.MUTED,
                            text_anchor="middle", class_="x-tick"))
    out.append(_text("50%", bottom + 34, "seconds since the start", font_size=SMALL, fill=svg.MUTED,
                        text_anchor="middle", class_="axis-title"))
    return "".join(out)


# ----------------------------------------------------------------------------------------------- summary


def _peak(series: list[tuple[float, float]]) -> str:
    if not series:
        return "none recorded"
    second, count = max(series, key=lambda p: p[1])
    return f"{figure(sum(n for _, n in series))} in all, at most {figure(count)} (second {figure(second)})"


def describe(chart: ChartData) -> str:
    """The chart in words, for a screen reader (and as the figure's caption)."""
    moves = ", ".join(f"{since:.1f} s" for _, _, since in chart.epochs)
    text = f"Requests per second: {_peak(chart.requests)}. Failures per second: {_peak(chart.failures)}."
    if chart.epochs:
        estimated = " (positions estimated from the moves' spacing)" if chart.estimated else ""
        text += f" Tokens expire at {moves}{estimated}."
    return text


def load_chart(chart: ChartData) -> str:
    """The chart's ``<svg>``; its box is the plot, so the page's CSS must give it ``style`` from ``chart_style``."""
    axis = _x_axis(chart)
    left = left_margin(chart)
    legend, legend_h = _legend(chart, left)
    band = (EPOCH_ROWS * EPOCH_ROW) if chart.epochs else 0.0
    top = legend_h + 10 + band
    y_of = YScale(top, top + PLOT_H, _y_ticks(chart)[-1])
    body = "".join((
        svg.el("title", svg.escape_text("Requests and failures per second, and when tokens expired"), id=TITLE_ID),
        svg.el("desc", svg.escape_text(describe(chart)), id=DESC_ID),
        legend, _grid(_y_ticks(chart), y_of),
        _bars(chart.requests, axis, y_of, 0.0, REQUESTS, "requests", "bar-requests"),
        _bars(chart.failures, axis, y_of, 0.42, FAILURES, "failures", "bar-failures"),
        _epochs(chart, axis, legend_h + 10, y_of.bottom), _x_labels(axis, y_of.bottom),
    ))
    return svg.el("svg", body, xmlns="http://www.w3.org/2000/svg", class_="load-chart", role="img",
                  aria_labelledby=f"{TITLE_ID} {DESC_ID}", height=y_of.bottom + 42, font_family=svg.FONT,
                  style=chart_style(chart))


def chart_style(chart: ChartData) -> str:
    """The plot's margins: room for the y labels on the left and the last x label on the right."""
    left = left_margin(chart)
    return f"margin-left: {left:.0f}px; width: calc(100% - {left + RIGHT:.0f}px); min-width: {MIN_PLOT_W:.0f}px"
