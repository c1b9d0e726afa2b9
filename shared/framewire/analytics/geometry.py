"""Plane geometry in image pixels (x right, y down): which side of a line, inside a polygon.

Sides are told by the sign of the cross product of the line's direction (first point to
second) with the point: positive is on the right-hand side of someone walking along the line
as it is drawn on the image, negative on the left, zero on the line itself.
"""

from __future__ import annotations

from collections.abc import Sequence

Point = tuple[float, float]


def anchor(x1: float, y1: float, x2: float, y2: float) -> Point:
    """The point of a box that stands for the object: the middle of its bottom edge, where a
    person or a vehicle meets the ground, so that lines and zones drawn on the floor work."""
    return ((x1 + x2) / 2, y2)


def cross(a: Point, b: Point, p: Point) -> float:
    """(b - a) x (p - a): > 0 right-hand side of a→b as drawn (y down), < 0 left, 0 on it."""
    return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])


def side(a: Point, b: Point, p: Point) -> int:
    """+1, -1 or 0: the side of the line a→b that ``p`` is on (see ``cross``)."""
    c = cross(a, b, p)
    return (c > 0) - (c < 0)


def segments_cross(p: Point, q: Point, a: Point, b: Point) -> bool:
    """Whether the move p→q passes through the segment a-b (touching an end counts); p and q
    are on opposite sides of the line a→b."""
    if side(a, b, p) * side(a, b, q) >= 0:
        return False
    return side(p, q, a) * side(p, q, b) <= 0


def inside(polygon: Sequence[Point], p: Point) -> bool:
    """Whether ``p`` is inside the polygon (even-odd rule; on the left or top edge counts as
    inside, on the right or bottom edge as outside, so that touching zones do not overlap)."""
    x, y = p
    result = False
    n = len(polygon)
    for i in range(n):
        (xa, ya), (xb, yb) = polygon[i], polygon[(i + 1) % n]
        if (ya > y) != (yb > y) and x < xa + (y - ya) * (xb - xa) / (yb - ya):
            result = not result
    return result
