"""Boxes measured in Chromium ([left, top, right, bottom] in px), compared with sub-pixel rounding allowed."""

from __future__ import annotations

TOLERANCE = 0.5  # px: sub-pixel rounding of text boxes


def inside(inner: list[float], outer: list[float]) -> bool:
    return (inner[0] >= outer[0] - TOLERANCE and inner[1] >= outer[1] - TOLERANCE
            and inner[2] <= outer[2] + TOLERANCE and inner[3] <= outer[3] + TOLERANCE)


def overlap(a: list[float], b: list[float]) -> bool:
    return (a[0] + TOLERANCE < b[2] and b[0] + TOLERANCE < a[2]
            and a[1] + TOLERANCE < b[3] and b[1] + TOLERANCE < a[3])
