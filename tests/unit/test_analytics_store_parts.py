"""The pure parts behind stored events and alerts: the upserts' keys, the JSON rows, stream
positions, and a camera's analytics settings read from control-topic records."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from framewire.analytics.records import Alert, AnalyticsEvent, WindowCount
from framewire.errors import ConfigError
from framewire.ops.analytics import analytics_key, camera_overrides, validated_analytics
from framewire.store.analytics import (
    RowPosition,
    alerts_after,
    events_after,
    query_alerts,
    query_events,
    store_alerts,
    store_events,
)
from framewire.store.db import open_database

T0 = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)
LINE = {"lines": [{"name": "door", "points": [[640, 0], [640, 720]]}]}


def crossing(event_id: str, second: int, camera: str = "door-1") -> AnalyticsEvent:
    return AnalyticsEvent(event_id=event_id, camera_id=camera, type="line_cross", name="door",
                          at=T0 + timedelta(seconds=second), emitted_at=T0, track_id=1,
                          label="person", direction="in")


def change(state: str, second: int) -> Alert:
    return Alert(alert_id="al", camera_id="door-1", rule="r", when="zone_count", zone="bay",
                 above=1, for_s=0.0, state=state, started_at=T0,
                 at=T0 + timedelta(seconds=second), emitted_at=T0, frame_id="f", value=2,
                 peak=2)


def test_events_and_alert_changes_are_stored_once_per_key_and_read_back_as_json():
    with open_database("sqlite://") as db:
        window = AnalyticsEvent(event_id="w", camera_id="door-1", type="window_count",
                                name="door", at=T0, emitted_at=T0,
                                window=WindowCount("hopping", T0 - timedelta(minutes=5), T0,
                                                   "line_cross", 4, "out"))
        assert store_events(db, [crossing("a", 1), crossing("a", 1), window]) == 2
        assert store_events(db, [crossing("a", 1), crossing("b", 2)]) == 1
        assert store_alerts(db, [change("firing", 3), change("firing", 3)]) == 1
        assert store_alerts(db, [change("firing", 3), change("resolved", 4)]) == 1
        rows = query_events(db, camera_id="door-1", type_="window_count")
        assert rows[0]["window"] == {"kind": "hopping", "start": "2026-12-02T07:55:00+00:00",
                                     "end": "2026-12-02T08:00:00+00:00",
                                     "counted": "line_cross", "direction": "out", "count": 4}
        assert [e["event_id"] for e in query_events(db)] == ["b", "a", "w"]
        assert [e["event_id"] for e in query_events(db, since=T0 + timedelta(seconds=2))] == [
            "b"]
        assert [a["state"] for a in query_alerts(db, state="resolved")] == ["resolved"]
        json.dumps(query_alerts(db))  # plain JSON: times as ISO text


def test_a_stream_goes_on_after_the_row_its_position_names():
    with open_database("sqlite://") as db:
        store_events(db, [crossing(f"e{i}", i) for i in range(3)])
        store_alerts(db, [change("firing", 1), change("resolved", 2)])
        until = datetime.now(UTC) + timedelta(seconds=1)
        start = RowPosition(datetime(2000, 1, 1, tzinfo=UTC))  # before any stored_at
        events = events_after(db, start, until)
        assert [e["event_id"] for e, _ in events] == ["e0", "e1", "e2"]
        after_first = RowPosition.parse(events[0][1].event_id)
        assert [e["event_id"] for e, _ in events_after(db, after_first, until)] == ["e1", "e2"]
        alerts = alerts_after(db, start, until)
        assert [p.key for _, p in alerts] == ["al.firing", "al.resolved"]
        assert [a["state"] for a, _ in alerts_after(db, alerts[0][1], until)] == ["resolved"]
    for bad in ("", "soon", "x-1", "9" * 30 + "-e1"):
        with pytest.raises(ValueError, match="reconnect without it"):
            RowPosition.parse(bad)


def test_a_cameras_latest_analytics_record_wins_and_a_tombstone_or_bad_one_is_seen():
    key = analytics_key("door-1").encode()
    found = camera_overrides([
        (key, json.dumps(LINE).encode()),
        (b"inference.model", b'{"model": "centerface"}'),
        (analytics_key("dock-2").encode(), json.dumps(LINE).encode()),
        (analytics_key("dock-2").encode(), None),
        (analytics_key("yard").encode(), b'{"lines": [{"name": "x", "points": [[1, 1]]}]}'),
    ])
    assert set(found) == {"door-1", "dock-2"}
    assert found["door-1"] is not None and found["door-1"].lines[0].name == "door"
    assert found["dock-2"] is None  # back to the configured settings
    with pytest.raises(ConfigError, match="a line needs exactly 2 points"):
        validated_analytics({"lines": [{"name": "x", "points": [[1, 1]]}]})
