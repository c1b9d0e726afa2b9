"""The analytics' settings (the YAML shape of the issue, errors that say what to fix) and their
contracts (AnalyticsEvent, Alert) through the codec and its checks."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from framewire.analytics.records import Alert, AnalyticsEvent, WindowCount
from framewire.config import load_settings
from framewire.contracts import CONTRACTS
from framewire.contracts.codec import Codec
from framewire.errors import ConfigError, DataError

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

YAML = """\
analytics:
  cameras:
    door-1:
      lines: [{name: door, points: [[640, 0], [640, 720]]}]
      zones: [{name: bay, points: [[0, 400], [600, 400], [600, 720], [0, 720]]}]
      alerts: [{when: "zone_count", zone: bay, above: 5, for_s: 10}]
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for key in list(os.environ):
        if key.startswith("FRAMEWIRE_"):
            monkeypatch.delenv(key)


def test_the_yaml_of_the_issue_loads(monkeypatch, tmp_path: Path):
    (tmp_path / "fw.yaml").write_text(YAML)
    monkeypatch.setenv("FRAMEWIRE_CONFIG", str(tmp_path / "fw.yaml"))
    door = load_settings().analytics.cameras["door-1"]
    assert door.lines[0].points == [(640, 0), (640, 720)]
    assert [len(z.points) for z in door.zones] == [4]
    rule = door.alerts[0]
    assert (rule.when, rule.zone, rule.above, rule.for_s, rule.rule_name) == (
        "zone_count", "bay", 5, 10.0, "zone_count:bay:5")
    assert (load_settings().analytics.tumbling_s, load_settings().analytics.hopping_s) == (60,
                                                                                          300)


@pytest.mark.parametrize(("camera", "message"), [
    ({"lines": [{"name": "door", "points": [[640, 0]]}]},
     r"lines.0.points = \[\[640, 0\]\]: .*a line needs exactly 2 points"),
    ({"lines": [{"name": "door", "points": [[5, 5], [5, 5]]}]}, "a line's 2 points must differ"),
    ({"zones": [{"name": "bay", "points": [[0, 0], [10, 0]]}]},
     "zones.0.points .*a zone needs at least 3 points"),
    ({"zones": [{"name": "bay", "points": [[0, 0], [10, 10], [20, 20]]}]},
     "all lie on one line"),
    ({"lines": [{"name": "door", "points": [[0, 0], [1, 1]]}],
      "zones": [{"name": "door", "points": [[0, 0], [10, 0], [0, 10]]}]},
     r"names must be unique per camera: \['door'\] used more than once; rename one"),
    ({"alerts": [{"when": "zone_count", "zone": "dock", "above": 1}]},
     "alert on zone 'dock', which this camera does not have"),
    ({"alerts": [{"when": "line_count", "zone": "dock", "above": 1}]},
     "alerts.0.when = 'line_count'.*zone_count"),
    ({"lines": [{"name": "door", "points": [[0, 0], [1, 1]], "colour": "red"}]},
     "lines.0.colour.*Extra inputs are not permitted"),
])
def test_a_bad_rule_fails_at_start_saying_what_to_fix(camera: dict, message: str):
    with pytest.raises(ConfigError, match=message):
        load_settings(analytics={"cameras": {"door-1": camera}})


def test_hops_must_divide_the_hopping_window():
    with pytest.raises(ConfigError, match=r"hop_s \(70\) must divide analytics.hopping_s"):
        load_settings(analytics={"hopping_s": 300, "hop_s": 70})


def test_a_camera_id_with_bad_characters_is_refused():
    with pytest.raises(ConfigError, match=r"camera ids \['door 1'\]"):
        load_settings(analytics={"cameras": {"door 1": {}}})


EVENT = AnalyticsEvent(
    event_id="door-1:01JF:line_cross:door:7", camera_id="door-1", type="line_cross",
    name="door", at=T0, emitted_at=T0 + timedelta(milliseconds=40), frame_id="01JF",
    track_id=7, label="person", direction="in")
COUNT = AnalyticsEvent(
    event_id="door-1:tumbling:0:60:door:line_cross:in", camera_id="door-1", type="window_count",
    name="door", at=T0 + timedelta(seconds=60), emitted_at=T0 + timedelta(seconds=62),
    window=WindowCount("tumbling", T0, T0 + timedelta(seconds=60), "line_cross", 12, "in"))
ALERT = Alert(
    alert_id="door-1:zone_count:bay:5:1767268800000000", camera_id="door-1",
    rule="zone_count:bay:5", when="zone_count", zone="bay", above=5, for_s=10.0,
    state="firing", started_at=T0, at=T0 + timedelta(seconds=10),
    emitted_at=T0 + timedelta(seconds=10.05), frame_id="01JG", value=6, peak=7)


@pytest.mark.parametrize("record", [EVENT, COUNT, ALERT], ids=["event", "count", "alert"])
def test_the_contracts_round_trip_through_the_codec(record):
    codec = Codec()
    assert codec.decode(codec.encode(record), type(record)) == record
    assert CONTRACTS[record.SCHEMA] is type(record)


@pytest.mark.parametrize(("record", "change", "field"), [
    (EVENT, {"track_id": -1}, "track_id"),
    (EVENT, {"frame_id": "x" * 200}, "frame_id"),
    (EVENT, {"dwell_s": float("nan")}, "dwell_s"),
    (COUNT, {"window": WindowCount("tumbling", T0, T0, "line_cross", -3)}, "window.count"),
    (ALERT, {"at": datetime(1990, 1, 1, tzinfo=UTC)}, "at"),
    (ALERT, {"state": "on fire!"}, "state"),
])
def test_a_bad_field_is_refused_at_decode_naming_it(record, change: dict, field: str):
    from dataclasses import replace

    codec = Codec()
    with pytest.raises(DataError, match=f"field {field} ") as caught:
        codec.decode(codec.encode(replace(record, **change)), type(record))
    assert caught.value.code == "invalid_record"


def test_an_event_on_the_alerts_topic_is_refused():
    codec = Codec()
    with pytest.raises(DataError, match="expected a io.framewire.Alert record"):
        codec.decode(codec.encode(EVENT), Alert)
