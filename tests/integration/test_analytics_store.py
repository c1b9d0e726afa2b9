"""The analytics' events and alerts through the real broker into the database: published
twice, stored once by the storage service's event_storage and alert_storage stages, and
listed by ``framewire events`` and ``framewire alerts``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from framewire.analytics.records import Alert, AnalyticsEvent, WindowCount
from framewire.broker.client import EmbeddedBroker
from framewire.errors import ConfigError
from framewire.ops.status import site_status
from framewire.runtime.publisher import Publisher
from framewire.store.db import open_database
from framewire.store.tables import alert_table, event_table
from tests.fixtures.kafka import Site, wait_until
from tests.integration.analytics_stub import extra_stages

pytestmark = pytest.mark.integration
T0 = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
STAGES = ("event_storage", "alert_storage")


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def framewire(site: Site, *args: str) -> Ran:
    """The ``framewire`` command run in this process (typer's runner) with the site's
    environment: the command's own code, without a Python start per call."""
    from typer.testing import CliRunner

    from framewire.cli import app

    ran = CliRunner().invoke(app, list(args), env=site.env)
    if isinstance(ran.exception, ConfigError):  # what `framewire`'s main() turns into exit 2
        return Ran(2, ran.stdout, f"{ran.stderr}configuration error: {ran.exception}")
    return Ran(ran.exit_code, ran.stdout, ran.stderr)


def event(n: int, camera: str, type_: str, **fields: object) -> AnalyticsEvent:
    return AnalyticsEvent(event_id=f"ev-{n:03d}", camera_id=camera, type=type_,
                          name=str(fields.pop("name", "door")), at=T0 + timedelta(seconds=n),
                          emitted_at=T0 + timedelta(seconds=n, milliseconds=5),
                          frame_id=f"fr-{n}", **fields)  # type: ignore[arg-type]


EVENTS = [
    event(1, "door-1", "line_cross", track_id=1, label="person", direction="in"),
    event(2, "door-1", "zone_enter", name="bay", track_id=1, label="person"),
    event(3, "door-1", "line_cross", track_id=2, label="person", direction="out"),
    event(4, "dock-2", "dwell", name="bay", track_id=7, label="person", dwell_s=120.0),
    AnalyticsEvent(event_id="ev-win", camera_id="door-1", type="window_count", name="door",
                   at=T0 + timedelta(seconds=60), emitted_at=T0 + timedelta(seconds=62),
                   window=WindowCount("tumbling", T0, T0 + timedelta(seconds=60),
                                      "line_cross", 1, "in")),
]
ALERTS = [Alert(alert_id="al-1", camera_id="door-1", rule="zone_count:bay:5", when="zone_count",
                zone="bay", above=5, for_s=10.0, state=state, started_at=T0,
                at=T0 + timedelta(seconds=s), emitted_at=T0 + timedelta(seconds=s),
                frame_id=f"fr-{s}", value=v, peak=7)
          for state, s, v in (("firing", 10, 6), ("resolved", 30, 4))]


@pytest.fixture(scope="module")
def stored(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A site whose storage stages took every event and alert, each published twice."""
    site = Site(broker, tmp_path_factory.mktemp("analytics") / "home", stages=extra_stages())
    site.create_topics()
    settings = site.settings
    site.start(*STAGES)
    pub = Publisher(settings, "test")
    try:
        for _ in range(2):  # a redelivery: the same records again
            for e in EVENTS:
                pub.publish("events", e, e.camera_id)
            for a in ALERTS:
                pub.publish("alerts", a, a.camera_id)
        pub.flush()
    finally:
        pub.close()

    def all_taken() -> bool:
        assert all(site.alive(s) for s in STAGES), site.logs()
        lags = {s.service: s.lag for s in site_status(settings) if s.service in STAGES}
        return lags == dict.fromkeys(STAGES, 0)

    try:
        wait_until(all_taken, 60, "both storage stages to take every record")
        yield site
    finally:
        site.stop()
    assert all(p.returncode == 0 for s in STAGES for p in site.procs[s]), site.logs()


def test_events_and_alerts_delivered_twice_are_stored_once(stored: Site):
    db = open_database(stored.settings.resolved_database_url)
    try:
        with db.engine.connect() as conn:
            events = conn.execute(sa.select(event_table.c.event_id)).scalars().all()
            alerts = conn.execute(sa.select(alert_table.c.alert_id, alert_table.c.state)).all()
    finally:
        db.close()
    assert sorted(events) == sorted(e.event_id for e in EVENTS)
    assert sorted(map(tuple, alerts)) == [("al-1", "firing"), ("al-1", "resolved")]
    # the repeats were taken as stored already, not refused by the keys and dead-lettered
    from framewire.ops.status import dead_letters

    assert [d.service for _, d in dead_letters(stored.settings)] == []


def test_framewire_events_lists_newest_first_with_filters_and_stable_json(stored: Site):
    listed = framewire(stored, "events", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [r["event_id"] for r in rows] == ["ev-win", "ev-004", "ev-003", "ev-002", "ev-001"]
    assert set(rows[0]) == {"event_id", "camera_id", "type", "name", "at", "emitted_at",
                            "frame_id", "track_id", "label", "direction", "dwell_s", "window",
                            "stored_at"}
    assert rows[0]["window"] == {"kind": "tumbling", "start": T0.isoformat(),
                                 "end": (T0 + timedelta(seconds=60)).isoformat(),
                                 "counted": "line_cross", "direction": "in", "count": 1}
    crossings = json.loads(framewire(stored, "events", "--camera", "door-1", "--type",
                                     "line_cross", "--json").stdout)
    assert [(r["event_id"], r["direction"], r["track_id"]) for r in crossings] == [
        ("ev-003", "out", 2), ("ev-001", "in", 1)]
    newest = json.loads(framewire(stored, "events", "--limit", "1", "--since",
                                  T0.isoformat(), "--json").stdout)
    assert [r["event_id"] for r in newest] == ["ev-win"]
    table = framewire(stored, "events", "--camera", "dock-2")
    assert table.returncode == 0 and "dwell" in table.stderr and "120.0 s" in table.stderr
    wrong = framewire(stored, "events", "--type", "crossing")
    assert wrong.returncode == 2 and "line_cross" in wrong.stderr


def test_framewire_alerts_lists_each_change_of_an_alert(stored: Site):
    listed = framewire(stored, "alerts", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["alert_id"], r["state"], r["value"], r["peak"]) for r in rows] == [
        ("al-1", "resolved", 4, 7), ("al-1", "firing", 6, 7)]
    assert rows[0]["started_at"] == T0.isoformat() and rows[0]["rule"] == "zone_count:bay:5"
    assert json.loads(framewire(stored, "alerts", "--camera", "dock-2", "--json").stdout) == []
    firing = json.loads(framewire(stored, "alerts", "--state", "firing", "--json").stdout)
    assert [r["state"] for r in firing] == ["firing"]


def test_erasure_and_retention_remove_a_cameras_events_and_alerts(stored: Site):
    """(Last of the module's tests on ``stored``: it deletes rows.)"""
    from framewire.ops.sweeper import sweep

    erased = framewire(stored, "erase", "--camera", "dock-2", "--json")
    assert erased.returncode == 0, erased.stderr
    assert json.loads(erased.stdout)["removed"] | {"spans": 0, "blobs": 0} == {
        "results": 0, "detections": 0, "cameras": 0, "events": 1, "alerts": 0, "spans": 0,
        "blobs": 0}
    # the retention sweeper: door-1 has no results (no row in the cameras table), and what
    # is past data_retention (30 days) by frame time goes
    swept = sweep(stored.settings, now=T0 + timedelta(days=30, seconds=20), running={})
    assert (swept["events"], swept["alerts"]) == (3, 1)
    left = json.loads(framewire(stored, "events", "--json").stdout)
    assert [e["event_id"] for e in left] == ["ev-win"]
    alerts = json.loads(framewire(stored, "alerts", "--json").stdout)
    assert [a["state"] for a in alerts] == ["resolved"]


def test_a_stored_database_gains_the_analytics_tables(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE cameras (camera_id VARCHAR PRIMARY KEY)")
    engine.dispose()
    db = open_database(url)
    try:
        assert {"events", "alerts"} <= set(sa.inspect(db.engine).get_table_names())
    finally:
        db.close()


def test_events_and_alerts_are_stored_once_and_read_back_on_postgresql(postgres_db_url: str):
    from framewire.store.analytics import (
        RowPosition,
        alerts_after,
        query_alerts,
        query_events,
        store_alerts,
        store_events,
    )

    with open_database(postgres_db_url) as db:
        assert store_events(db, EVENTS + EVENTS) == len(EVENTS)
        assert store_events(db, EVENTS) == 0
        assert store_alerts(db, ALERTS) == 2 and store_alerts(db, ALERTS) == 0
        window = query_events(db, camera_id="door-1", type_="window_count")
        assert window[0]["window"]["start"] == T0.isoformat()
        assert [a["state"] for a in query_alerts(db, camera_id="door-1")] == ["resolved",
                                                                             "firing"]
        # the column named `when` (a reserved word there) reads back
        assert {a["when"] for a in query_alerts(db)} == {"zone_count"}
        late = datetime.now(UTC) + timedelta(seconds=1)
        first = alerts_after(db, RowPosition(datetime(2000, 1, 1, tzinfo=UTC)), late)
        assert [a["state"] for a, _ in alerts_after(db, first[0][1], late)] == ["resolved"]
