"""Sides of a line and insides of a polygon, on the image's axes (x right, y down)."""

from __future__ import annotations

import pytest

from framewire.analytics.geometry import anchor, inside, segments_cross, side

BAY = [(0.0, 400.0), (600.0, 400.0), (600.0, 700.0), (0.0, 700.0)]


def test_the_anchor_is_the_middle_of_the_bottom_edge():
    assert anchor(100, 200, 160, 320) == (130, 320)


def test_the_right_hand_side_of_a_line_drawn_downwards_is_the_image_left():
    down = ((640.0, 0.0), (640.0, 720.0))
    assert (side(*down, (100, 300)), side(*down, (1000, 300)), side(*down, (640, 5))) == (
        1, -1, 0)
    right = ((0.0, 400.0), (1280.0, 400.0))
    assert (side(*right, (50, 500)), side(*right, (50, 300))) == (1, -1)


@pytest.mark.parametrize(("p", "q", "crosses"), [
    ((600, 300), (700, 300), True),  # through the middle
    ((600, 100), (700, 100), True),  # through an end (touching counts)
    ((600, 50), (700, 50), False),  # past the end
    ((600, 300), (620, 300), False),  # not reaching it
])
def test_a_move_crosses_a_segment_only_through_it(p, q, crosses):
    assert segments_cross(p, q, (640, 100), (640, 500)) is crosses


@pytest.mark.parametrize(("p", "expected"), [
    ((300, 500), True), ((300, 300), False), ((700, 500), False),
    ((300, 400), True), ((0, 500), True),  # top and left edges: inside
    ((300, 700), False), ((600, 500), False),  # bottom and right edges: outside
])
def test_a_point_is_inside_by_the_even_odd_rule_with_half_open_edges(p, expected):
    assert inside(BAY, p) is expected
