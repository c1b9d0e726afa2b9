"""Track ids over the real tracker (Roboflow's trackers): stable through a crossing of two
objects and through a restart from the exported state; a known scene gives exact counts."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from framewire.analytics.events import CameraAnalyzer, camera_tracker
from framewire.analytics.settings import AnalyticsSettings
from framewire.analytics.synthetic import Mover, SceneFrame, scene
from framewire.analytics.tracking import CameraTracker, Track
from framewire.contracts import Detection

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
FPS = 10.0
# two people walking towards each other across the door line at x = 640, one a little nearer
# the camera (lower, larger): their boxes overlap as they pass, right at the line (t = 5 s)
CROSSING = [Mover((100, 420), (1180, 470), 0, 10, size=(50, 100)),
            Mover((1180, 480), (100, 430), 0, 10, size=(70, 140))]
SETTINGS = AnalyticsSettings.model_validate({"cameras": {"door-1": {
    "lines": [{"name": "door", "points": [[640, 0], [640, 720]]}]}}})


def detections(frame: SceneFrame) -> list[Detection]:
    return [Detection("person", int(r[5]), float(r[4]), *(float(v) for v in r[:4]))
            for r in frame.boxes]


def track_frames(tracker: CameraTracker, frames: list[SceneFrame]) -> list[list[Track]]:
    return [tracker.update(T0 + timedelta(seconds=f.t), detections(f)) for f in frames]


def ids_by_object(frames: list[SceneFrame], tracks: list[list[Track]]) -> dict[int, set[int]]:
    """Each true object's ids, matching a track to the box it was made from."""
    seen: dict[int, set[int]] = {}
    for frame, frame_tracks in zip(frames, tracks, strict=True):
        for t in frame_tracks:
            d = t.detection
            row = next(i for i, r in enumerate(frame.boxes)
                       if tuple(r[:4]) == (d.x1, d.y1, d.x2, d.y2))
            seen.setdefault(frame.truth[row], set()).add(t.track_id)
    return seen


@pytest.fixture(scope="module")
def crossing() -> list[SceneFrame]:
    # 10 % of the boxes missed (a fixed draw), no noise: the answers stay exact
    return scene(CROSSING, FPS, 10.0, miss_rate=0.1, seed=3)


def one_id_each(ids: dict[int, set[int]]) -> dict[int, int]:
    """Each object's one id (asserted: one id per object, none shared)."""
    assert all(len(s) == 1 for s in ids.values()), ids
    mine = {o: next(iter(s)) for o, s in ids.items()}
    assert len(set(mine.values())) == len(mine), ids
    return mine


def test_two_objects_crossing_keep_their_ids(crossing: list[SceneFrame]):
    tracker = camera_tracker(SETTINGS, SETTINGS.cameras["door-1"])
    assert sorted(one_id_each(ids_by_object(crossing, track_frames(tracker, crossing)))) == [
        0, 1]


def test_a_crossing_seen_through_the_tracker_counts_once_in_each_direction(
        crossing: list[SceneFrame]):
    tracker = camera_tracker(SETTINGS, SETTINGS.cameras["door-1"])
    analyzer = CameraAnalyzer("door-1", SETTINGS.cameras["door-1"], SETTINGS)
    tracks = track_frames(tracker, crossing)
    found = [analyzer.observe(f"f{f.seq}", T0 + timedelta(seconds=f.t), frame_tracks)
             for f, frame_tracks in zip(crossing, tracks, strict=True)]
    crossings = [e for f in found for e in f.events if e.type == "line_cross"]
    mine = one_id_each(ids_by_object(crossing, tracks))
    # object 0 walks left to right across a line drawn top to bottom: in
    assert Counter((e.track_id, e.direction) for e in crossings) == {(mine[0], "in"): 1,
                                                                     (mine[1], "out"): 1}


def test_track_ids_survive_a_restart_from_the_exported_state(crossing: list[SceneFrame]):
    straight = camera_tracker(SETTINGS, SETTINGS.cameras["door-1"])
    expected = track_frames(straight, crossing)
    first = camera_tracker(SETTINGS, SETTINGS.cameras["door-1"])
    before = track_frames(first, crossing[:40])  # stopped at 4 s, before the crossing
    state = json.loads(json.dumps(first.export_state()))
    assert len(state["frames"]) <= 31  # replay_s (3 s) of frames, not the whole history
    rebuilt = camera_tracker(SETTINGS, SETTINGS.cameras["door-1"], state)
    after = track_frames(rebuilt, crossing[40:])
    assert one_id_each(ids_by_object(crossing, before + after)) == one_id_each(
        ids_by_object(crossing, expected))
    assert [[t.track_id for t in f] for f in before + after] == \
        [[t.track_id for t in f] for f in expected]


def test_a_new_object_after_a_restart_gets_a_new_id(crossing: list[SceneFrame]):
    first = camera_tracker(SETTINGS, SETTINGS.cameras["door-1"])
    track_frames(first, crossing[:40])
    rebuilt = CameraTracker.from_state(first.export_state())
    later = scene([Mover((200, 300), (400, 300), 0, 2)], FPS, 2.0, t_start=20.0)
    ids = {t.track_id for f in track_frames(rebuilt, later) for t in f}
    assert ids == {3}


def test_detections_below_the_score_or_of_other_labels_are_not_tracked():
    tracker = CameraTracker(min_score=0.4, labels=["person"])
    frames = scene([Mover((100, 300), (300, 300), 0, 1)], FPS, 1.0)
    out = []
    for f in frames:
        x1, y1, x2, y2 = (float(v) for v in f.boxes[0, :4])
        out += tracker.update(T0 + timedelta(seconds=f.t), [
            Detection("person", 0, 0.3, x1, y1, x2, y2),
            Detection("car", 2, 0.9, x1 + 400, y1, x2 + 400, y2)])
    assert out == []


def test_a_state_of_another_version_is_refused_with_what_to_do():
    with pytest.raises(ValueError, match="start the camera's tracks afresh"):
        CameraTracker.from_state({"version": 99, "next_id": 1, "frames": []})


def test_a_frame_older_than_the_last_is_ignored(crossing: list[SceneFrame]):
    tracker = camera_tracker(SETTINGS, SETTINGS.cameras["door-1"])
    analyzer = CameraAnalyzer("door-1", SETTINGS.cameras["door-1"], SETTINGS)
    track_frames(tracker, crossing[:20])
    late = crossing[10]
    at = T0 + timedelta(seconds=late.t)
    assert tracker.update(at, detections(late)) == []
    analyzer.observe("f19", T0 + timedelta(seconds=crossing[19].t), [])
    assert analyzer.observe("f10", at, [Track(1, detections(late)[0])]).events == []
    assert analyzer.tracks == {}
