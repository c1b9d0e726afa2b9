"""A camera's analytics settings from the control topic (set over the gateway's API) over its
configured ones: the service's core takes them from the next frame, keeps the camera's tracks,
and forgets what they knew of a line redrawn; a camera whose settings are taken away is passed
over and its saved state cleared."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from framewire.analytics.records import Alert, AnalyticsEvent
from framewire.analytics.service import CameraWork, Done
from framewire.analytics.settings import AnalyticsSettings, CameraAnalytics
from framewire.contracts import InferenceResult
from framewire.contracts.codec import Codec
from tests.unit.test_analytics_agent import CAMERA, T0, results

SETTINGS = {"tumbling_s": 10, "hopping_s": 20, "hop_s": 10, "lost_after_s": 1}
SWAPPED = {"lines": [{"name": "door", "points": [[640, 720], [640, 0]]}],
           "zones": CAMERA["zones"]}


def run(work: CameraWork, frames: list[InferenceResult], table: dict[str, object],
        change_at: float | None = None, change: dict | None = None,
        alerts: list[Alert] | None = None) -> list[AnalyticsEvent]:
    """The frames through ``work`` with a table as faust keeps it; at frame time
    ``change_at`` the control topic's settings become ``change``. Alerts go to ``alerts``."""
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
        if alerts is not None:
            alerts += [codec.decode(o.value, Alert) for o in done.outgoing if o.topic == "alerts"]
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


# the third walker goes along the bay, x 100 -> 500 at y 500, from 2 s to 6 s: at 4 s it is at
# x 300, in the bay [0, 600) as configured
BAY = CAMERA["zones"][0]
NARROW = {**BAY, "points": [[0, 400], [250, 400], [250, 720], [0, 720]]}  # x 300 is outside
WIDE = {**BAY, "points": [[0, 400], [700, 400], [700, 720], [0, 720]]}  # x 300 is inside
ALERT = {"when": "zone_count", "zone": "bay", "above": 0, "for_s": 0.5}


def bay_events(events: list[AnalyticsEvent]) -> list[tuple[str, int | None]]:
    return [(e.type, e.track_id) for e in events
            if e.name == "bay" and e.type in ("zone_enter", "zone_leave")]


def work_with(camera: dict) -> CameraWork:
    return CameraWork(AnalyticsSettings.model_validate(
        {**SETTINGS, "cameras": {"door-1": camera}}), Codec())


def test_a_zone_redrawn_around_a_track_keeps_its_stay_and_one_redrawn_away_ends_it():
    plain = run(work_with(CAMERA), results("door-1"), {})
    walker = next(tid for _, tid in bay_events(plain))
    assert bay_events(plain) == [("zone_enter", walker), ("zone_leave", walker)]
    wide = run(work_with(CAMERA), results("door-1"), {}, change_at=4.0,
               change={**CAMERA, "zones": [WIDE]})
    # still inside the new polygon: the same stay, left once at its end
    assert bay_events(wide) == bay_events(plain)
    assert [e.dwell_s for e in wide if e.type == "zone_leave"] == [
        e.dwell_s for e in plain if e.type == "zone_leave"]
    narrow = run(work_with(CAMERA), results("door-1"), {}, change_at=4.0,
                 change={**CAMERA, "zones": [NARROW]})
    leave = next(e for e in narrow if e.type == "zone_leave")
    # outside the new polygon: it leaves at the change, stamped when it was last seen
    assert bay_events(narrow) == [("zone_enter", walker), ("zone_leave", walker)]
    assert T0 + timedelta(seconds=3.8) <= leave.at < T0 + timedelta(seconds=4.0)
    # the leave is counted in its window like any other
    windows = {(e.window.counted, e.window.start): e.window.count for e in narrow
               if e.type == "window_count" and e.name == "bay" and e.window
               and e.window.kind == "tumbling"}
    assert windows[("zone_leave", T0)] == 1


def test_a_zone_taken_away_ends_its_stays_with_a_leave():
    events = run(work_with(CAMERA), results("door-1"), {}, change_at=4.0,
                 change={"lines": CAMERA["lines"]})
    assert [t for t, _ in bay_events(events)] == ["zone_enter", "zone_leave"]


def test_a_firing_alert_whose_rule_is_changed_resolves_at_the_change():
    camera = {**CAMERA, "alerts": [ALERT]}
    alerts: list[Alert] = []
    run(work_with(camera), results("door-1"), {}, change_at=4.0,
        change={**camera, "alerts": [{**ALERT, "above": 5}]}, alerts=alerts)
    assert [(a.state, a.rule, a.above) for a in alerts] == [
        ("firing", "zone_count:bay:0", 0), ("resolved", "zone_count:bay:0", 0)]
    firing, resolved = alerts
    assert resolved.alert_id == firing.alert_id and resolved.at == T0 + timedelta(seconds=4.0)
    assert resolved.value == 1  # the walker, still in the bay
    # unchanged, the rule resolves only when the walker leaves (after 6 s)
    same: list[Alert] = []
    run(work_with(camera), results("door-1"), {}, alerts=same)
    assert [a.state for a in same] == ["firing", "resolved"] and same[1].at > T0 + timedelta(
        seconds=6)


def test_a_camera_whose_settings_are_deleted_ends_its_stays_and_alerts_and_clears_its_state():
    camera = {**CAMERA, "alerts": [ALERT]}
    table: dict[str, object] = {}
    frames = results("door-1")
    cut = next(i for i, r in enumerate(frames) if r.header.captured_at >= T0 + timedelta(
        seconds=4.0))
    work = CameraWork(AnalyticsSettings.model_validate(SETTINGS), Codec())  # none configured
    alerts: list[Alert] = []
    events = run(work, frames[:cut], table, change_at=0.0, change=camera, alerts=alerts)
    work.set_overrides({"door-1": None})  # DELETE over the API, nothing configured
    done = work.handle(frames[cut], table["door-1"])  # type: ignore[arg-type]
    codec = Codec()
    ended = [codec.decode(o.value, AnalyticsEvent) for o in done.outgoing if o.topic == "events"]
    resolved = [codec.decode(o.value, Alert) for o in done.outgoing if o.topic == "alerts"]
    assert bay_events(events + ended)[-1][0] == "zone_leave" and len(ended) == 1
    assert [a.state for a in alerts + resolved] == ["firing", "resolved"]
    assert done.clear and done.state is None and "door-1" not in work.cameras


def test_before_the_control_topic_is_read_a_camera_set_only_there_is_passed_over_not_cleared():
    work = CameraWork(AnalyticsSettings.model_validate(SETTINGS), Codec())
    work.set_overrides({"door-1": CameraAnalytics.model_validate(CAMERA)})
    frames, table = results("door-1"), {}
    run(work, frames[:20], table)
    # a worker started while the broker could not be read: it knows no override yet
    other = CameraWork(AnalyticsSettings.model_validate(SETTINGS), Codec())
    other.overrides_read = False
    assert other.handle(frames[20], table["door-1"]) == Done("door-1")  # type: ignore[arg-type]
    other.set_overrides({"door-1": CameraAnalytics.model_validate(CAMERA)})
    taken_up = other.handle(frames[20], table["door-1"])  # type: ignore[arg-type]
    assert taken_up.state is not None and taken_up.state["mark"] == 21
