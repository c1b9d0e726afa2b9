"""The settings topic watches on the embedded broker: TopicWatch (read to the end at start, then
each later record from its own thread, a failing handle never ending it), and the two built on
it, AnalyticsWatch (applies a camera's settings when they change) and ModelWatch (starts with the
requested model, applies later requests)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from framewire.analytics.settings import CameraAnalytics
from framewire.broker.reading import KeyedValue
from framewire.config import Settings
from framewire.models.control import CONTROL_TOPIC, MODEL_KEY, ModelRequest, ModelWatch, model_value
from framewire.ops.analytics import AnalyticsWatch, set_camera_analytics
from framewire.ops.settings_topic import TopicWatch, write_record
from tests.fixtures.kafka import Site, wait_until

pytestmark = pytest.mark.integration

DOOR = {"lines": [{"name": "door", "points": [[0, 0], [10, 10]]}]}


def put(settings: Settings, key: str, value: bytes | None) -> None:
    assert write_record(settings, CONTROL_TOPIC, key, value, 10.0) == []


def request(model: str) -> bytes:
    return model_value(ModelRequest(model=model, requested_at=datetime.now(UTC), by="test"))


@pytest.fixture
def settings(site: Site) -> Settings:
    return site.settings


@pytest.fixture
def handed(settings: Settings) -> Iterator[tuple[TopicWatch, list[KeyedValue]]]:
    """A TopicWatch of ``control`` whose handle keeps the records and raises on b"bad"."""
    seen: list[KeyedValue] = []

    def handle(records: list[KeyedValue]) -> None:
        seen.extend(records)
        if any(value == b"bad" for _, value in records):
            raise ValueError("a handle that fails")

    put(settings, "a", b"1")  # before the watch starts
    watch = TopicWatch(settings, CONTROL_TOPIC, "analytics", handle, thread_name="test-watch")
    yield watch, seen
    watch.close()


def test_topic_watch_hands_over_records_written_before_start_then_later_ones_from_its_thread(
        settings: Settings, handed: tuple[TopicWatch, list[KeyedValue]]) -> None:
    watch, seen = handed
    assert watch.start()
    assert seen == [(b"a", b"1")]
    watch.follow()
    put(settings, "b", b"2")
    wait_until(lambda: (b"b", b"2") in seen, 10, "the record written after start handed over")
    assert seen == [(b"a", b"1"), (b"b", b"2")]
    assert "test-watch" in {t.name for t in threading.enumerate()}


def test_topic_watch_goes_on_following_after_its_handle_raises(
        settings: Settings, handed: tuple[TopicWatch, list[KeyedValue]],
        caplog: pytest.LogCaptureFixture) -> None:
    watch, seen = handed
    watch.start()
    watch.follow()
    put(settings, "b", b"bad")
    wait_until(lambda: (b"b", b"bad") in seen, 10, "the record its handle fails on")
    put(settings, "c", b"3")
    wait_until(lambda: (b"c", b"3") in seen, 10, "the next record, after the handle raised")
    assert "control topic's records not applied" in caplog.text


def test_analytics_watch_applies_only_when_a_cameras_settings_change(settings: Settings) -> None:
    door = CameraAnalytics.model_validate(DOOR)
    set_camera_analytics(settings, "cam-1", door)
    applied: list[dict[str, CameraAnalytics | None]] = []
    watch = AnalyticsWatch(settings, "analytics", applied.append)
    read: list[KeyedValue] = []
    records = watch.watch.handle

    def observed(batch: list[KeyedValue]) -> None:  # what the watch was handed, then it
        read.extend(batch)
        records(batch)

    watch.watch.handle = observed
    try:
        assert watch.start()
        assert applied == [{"cam-1": door}]
        watch.follow()
        set_camera_analytics(settings, "cam-1", door)  # the same settings again
        wait_until(lambda: len(read) == 2, 10, "the repeated record read")
        set_camera_analytics(settings, "cam-1", None)  # a tombstone: back to the config
        wait_until(lambda: len(read) == 3, 10, "the tombstone read")
        assert applied == [{"cam-1": door}, {"cam-1": None}]
        assert "analytics-watch" in {t.name for t in threading.enumerate()}
    finally:
        watch.close()


def test_model_watch_starts_with_the_requested_model_and_applies_later_requests(
        settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    put(settings, MODEL_KEY, request("first"))
    applied: list[str] = []

    def apply(model: str) -> None:
        applied.append(model)
        if model == "broken":
            raise RuntimeError("cannot load it")

    watch = ModelWatch(settings, "inference", apply)
    try:
        assert watch.start() == "first"
        assert applied == []  # the caller loads the first model itself
        watch.follow()
        put(settings, MODEL_KEY, request("broken"))
        wait_until(lambda: applied == ["broken"], 10, "the failing request applied")
        put(settings, MODEL_KEY, request("second"))
        wait_until(lambda: applied == ["broken", "second"], 10, "the next request applied")
        assert "model-watch" in {t.name for t in threading.enumerate()}
    finally:
        watch.close()
    failed = [r for r in caplog.records if r.getMessage() == "model switch failed"]
    assert [getattr(r, "model", None) for r in failed] == ["broken"]
    assert all(r.levelno == logging.ERROR for r in failed)
