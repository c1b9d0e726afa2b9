"""A camera's analytics set at run time, as the gateway's camera API sets them (the control
topic), reach the running analytics service: a camera set before the worker starts is
analysed from its first frame with the events a configured one gives; one set while it runs
is taken up from its next frame."""

from __future__ import annotations

import json

import pytest

from framewire.analytics.records import AnalyticsEvent
from framewire.analytics.settings import CameraAnalytics
from framewire.config import Settings
from framewire.ops.analytics import set_camera_analytics
from tests.fixtures.kafka import Site, wait_until
from tests.integration.test_analytics_service import (
    ANALYTICS,
    configure,
    events_consumer,
    expected,
    publish,
    read_events,
)
from tests.unit.test_analytics_agent import CAMERA, results

pytestmark = pytest.mark.integration


def taken_up(site: Site, camera_id: str) -> bool:
    """Whether the worker's log says the control topic's settings of ``camera_id`` applied."""
    for path in (site.home / "logs").glob("analytics*.log"):
        for line in path.read_text(errors="replace").splitlines():
            if "analytics settings from the control topic" in line and camera_id in line:
                return True
    return False


def test_cameras_set_on_the_control_topic_before_and_while_the_worker_runs(site: Site):
    settings = configure(site, [])  # nothing in analytics.cameras
    set_camera_analytics(settings, "door-1", CameraAnalytics.model_validate(CAMERA))
    first = results("door-1", duration_s=23.0)
    publish(settings, first)
    site.start("analytics")
    # what the same frames give with the camera in the settings
    configured = Settings.model_validate({**settings.model_dump(), "analytics": {
        **ANALYTICS, "cameras": {"door-1": CAMERA, "door-2": CAMERA}}})
    consumer = events_consumer(settings)
    seen: list[AnalyticsEvent] = []

    def all_of(want: list[AnalyticsEvent]) -> bool:
        read_events(settings, seen, consumer)
        if not site.alive("analytics"):
            pytest.fail(site.logs())
        return {e.event_id for e in want} <= {e.event_id for e in seen}

    try:
        want = expected(configured, first)
        wait_until(lambda: all_of(want), 90, "door-1's events, set on the control topic")
        set_camera_analytics(settings, "door-2", CameraAnalytics.model_validate(CAMERA))
        wait_until(lambda: taken_up(site, "door-2"), 30, "the worker taking up door-2's settings")
        second = results("door-2", duration_s=23.0)
        publish(settings, second)
        want_2 = expected(configured, second)
        wait_until(lambda: all_of(want_2), 60, "door-2's events, set while the worker ran")
    finally:
        consumer.close()
    by_camera = {(e.camera_id, e.type, e.direction) for e in seen if e.type == "line_cross"}
    assert by_camera == {("door-1", "line_cross", "in"), ("door-1", "line_cross", "out"),
                         ("door-2", "line_cross", "in"), ("door-2", "line_cross", "out")}
    assert {e.event_id for e in seen} == {e.event_id for e in want + want_2}
    assert json.loads(site.env["FRAMEWIRE_ANALYTICS"])["cameras"] == {}
