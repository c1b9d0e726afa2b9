"""A camera's analytics settings from the control topic (set over the gateway's API) over its
configured ones: the service's core takes them from the next frame, keeps the camera's tracks,
and forgets what they knew of a line redrawn; a camera whose settings are taken away is passed
over and its saved state cleared."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from framewire.analytics.records import AnalyticsEvent
from framewire.analytics.service import CameraWork, Done
from framewire.analytics.settings import AnalyticsSettings, CameraAnalytics
from framewire.contracts import InferenceResult
from framewire.contracts.codec import Codec
from tests.unit.test_analytics_agent import CAMERA, T0, results

SETTINGS = {"tumbling_s": 10, "hopping_s": 20, "hop_s": 10, "lost_after_s": 1}
SWAPPED = {"lines": [{"name": "door", "points": [[640, 720], [640, 0]]}],
           "zones": CAMERA["zones"]}


def run(work: CameraWork, frames: list[InferenceResult], table: dict[str, object],
        change_at: float | None = None, change: dict | None = None) -> list[AnalyticsEvent]:
    """The frames through ``work`` with a table as faust keeps it; at frame time
    ``change_at`` the control topic's settings become ``change``."""
    codec, out = Codec(), []
    for result in frames:
        camera_id = result.header.camera_id
        if change_at is not None and result.header.captured_at >= T0 + timedelta(
                seconds=change_at):
            work.set_overrides({camera_id: None if change is None
                                else CameraAnalytics.model_validate(change)})
            change_at = None
        done: Done = work.handle(result, table.get(camera_id))  # type: ignore[arg-type]
        if done.state is not None:
            table[camera_id] = done.state
        elif done.clear:
            del table[camera_id]
        out += [codec.decode(o.value, AnalyticsEvent) for o in done.outgoing
                if o.topic == "events"]
    return out


def crossings(events: list[AnalyticsEvent]) -> Counter:
    return Counter((e.track_id, e.direction) for e in events if e.type == "line_cross")


def test_a_camera_set_only_on_the_control_topic_is_analysed_as_if_configured():
    configured = CameraWork(AnalyticsSettings.model_validate(
        {**SETTINGS, "cameras": {"door-1": CAMERA}}), Codec())
    work = CameraWork(AnalyticsSettings.model_validate(SETTINGS), Codec())
    assert work.config_for("door-1") is None
    work.set_overrides({"door-1": CameraAnalytics.model_validate(CAMERA)})
    frames = results("door-1")
    got, want = run(work, frames, {}), run(configured, frames, {})
    assert [e.event_id for e in got] == [e.event_id for e in want]
    assert crossings(got) == {(1, "in"): 1, (2, "out"): 1}


def test_the_topic_wins_over_the_configured_settings_and_a_tombstone_goes_back_to_them():
    work = CameraWork(AnalyticsSettings.model_validate(
        {**SETTINGS, "cameras": {"door-1": CAMERA}}), Codec())
    work.set_overrides({"door-1": CameraAnalytics.model_validate(SWAPPED)})
    assert work.config_for("door-1") == CameraAnalytics.model_validate(SWAPPED)
    work.set_overrides({"door-1": None})
    assert work.config_for("door-1") == CameraAnalytics.model_validate(CAMERA)


def test_a_line_redrawn_mid_run_keeps_the_tracks_and_counts_the_next_pass_by_the_new_line():
    # walker 1 goes right through x=640 at t=2.4 s (its anchor on the line then), walker 2
    # goes left through it at t=4.1 s; at t=2.4 s the door is redrawn with its points
    # swapped: "in" and "out" swap for both
    work = CameraWork(AnalyticsSettings.model_validate(
        {**SETTINGS, "cameras": {"door-1": CAMERA}}), Codec())
    events = run(work, results("door-1"), {}, change_at=2.4, change=SWAPPED)
    # walker 1's side of the door is taken again, under the new points, from where it was
    # last seen off the line: kept as it was, its pass would look like no crossing at all
    assert crossings(events) == {(1, "out"): 1, (2, "in"): 1}
    assert work.cameras["door-1"].config == CameraAnalytics.model_validate(SWAPPED)
    # the same tracker, so the same track ids as a run without the change
    plain = run(CameraWork(AnalyticsSettings.model_validate(
        {**SETTINGS, "cameras": {"door-1": CAMERA}}), Codec()), results("door-1"), {})
    assert {e.track_id for e in events if e.track_id} == {e.track_id for e in plain
                                                          if e.track_id}


def test_a_worker_taking_over_after_a_change_uses_the_new_settings_from_the_saved_state():
    # one worker runs the first 2.4 s under the old line; another takes the camera over (from
    # the table) with the door redrawn: the same crossings as the worker that saw the change
    frames, table = results("door-1"), {}
    first = CameraWork(AnalyticsSettings.model_validate(
        {**SETTINGS, "cameras": {"door-1": CAMERA}}), Codec())
    cut = next(i for i, r in enumerate(frames) if r.header.captured_at >= T0 + timedelta(
        seconds=2.4))
    before = run(first, frames[:cut], table)
    second = CameraWork(AnalyticsSettings.model_validate(
        {**SETTINGS, "cameras": {"door-1": CAMERA}}), Codec())
    second.set_overrides({"door-1": CameraAnalytics.model_validate(SWAPPED)})
    after = run(second, frames[cut:], table)
    assert crossings(before + after) == {(1, "out"): 1, (2, "in"): 1}


def test_a_camera_whose_settings_are_taken_away_is_passed_over_and_its_state_cleared():
    work = CameraWork(AnalyticsSettings.model_validate(SETTINGS), Codec())
    work.set_overrides({"door-1": CameraAnalytics.model_validate(CAMERA)})
    frames, table = results("door-1"), {}
    run(work, frames[:20], table)
    assert table["door-1"]["mark"] == 20
    work.set_overrides({"door-1": None})
    done = work.handle(frames[20], table["door-1"])  # type: ignore[arg-type]
    assert done == Done("door-1", clear=True) and "door-1" not in work.cameras
    # set again later: the camera starts afresh (no state, new windows)
    del table["door-1"]
    work.set_overrides({"door-1": CameraAnalytics.model_validate(CAMERA)})
    later = work.handle(frames[21], None)
    assert later.state is not None and later.state["mark"] == 1
