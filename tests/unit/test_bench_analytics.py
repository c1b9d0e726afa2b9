"""The analytics bench's pure parts: its walkers give known events through the analytics core,
the feed's order, the lag of events stamped with their own frame, and its lines in the report."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from bench.analytics import (
    AnalyticsPlan,
    bare_cpu_median_s,
    bare_cpu_s,
    camera_ids,
    camera_scenes,
    detections_record,
    drained_at,
    event_lags_s,
    interleaved,
    processed_records,
    walkers,
)
from bench.report import markdown_section, summary_rows
from bench.stats import AnalyticsRun
from framewire.analytics.records import AnalyticsEvent
from framewire.analytics.service import CameraWork
from framewire.analytics.settings import AnalyticsSettings
from framewire.contracts.codec import Codec
from tests.unit.test_bench import make_result

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def analytics_run() -> AnalyticsRun:
    return AnalyticsRun(
        cameras=8, fps_per_camera=5.0, size="960x540", records=2400, boxes_per_record=3.5,
        events={"line_cross": 300, "zone_enter": 150}, lag_events=450,
        lag_ms={"p50_ms": 250.0, "p95_ms": 700.0, "p99_ms": 760.0},
        emitted_ms={"p50_ms": 240.0, "p95_ms": 690.0, "p99_ms": 750.0},
        group_lag_max=60, group_lag_end=18, drain_s=1.5, cpu_s_per_1000=2.0,
        broker_cpu_s_per_1000=2.2, bare_cpu_s_per_1000=1.0, cpu_ratio=2.0)


def test_bench_walkers_cross_the_line_both_ways_and_walk_through_the_zone() -> None:
    plan = AnalyticsPlan(cameras=1, width=960, height=540, fps=5.0, warmup_s=0.0, seconds=20.0)
    people = walkers(plan.width, plan.height, plan.seconds)
    (camera,) = camera_ids(1)
    frames = camera_scenes([camera], plan.width, plan.height, plan.fps, plan.seconds)[camera]
    codec = Codec()
    work = CameraWork(AnalyticsSettings.model_validate(plan.analytics()), codec)
    saved = None
    found: Counter[tuple[str, str | None]] = Counter()
    records = [detections_record(camera, frame, T0 + timedelta(seconds=frame.t), plan.width,
                                 plan.height) for frame in frames]
    for record in records:  # noise and missed boxes as the bench feeds them
        done = work.handle(record, saved)
        saved = done.state
        found.update((e.type, e.direction) for e in (codec.decode(o.value, AnalyticsEvent)
                                                     for o in done.outgoing))
    windows = found.pop(("window_count", None), 0)
    rightward = len(people[::2])
    assert found == {("line_cross", "in"): rightward, ("line_cross", "out"): len(people[1::2]),
                     ("zone_enter", None): rightward, ("zone_leave", None): rightward}
    assert all(p.t1 <= plan.seconds for p in people) and len(people) == 10
    # the bench's bare loop: the same core, the same events, its warm-up not timed
    assert bare_cpu_s(plan.analytics(), records, warmup=20)[1] == found.total() + windows
    assert bare_cpu_s(plan.analytics(), records[:5], warmup=20)[0] == 0.0  # none timed


def test_the_feed_sends_one_frame_of_each_camera_in_turn() -> None:
    scenes = camera_scenes(camera_ids(3), 960, 540, 5.0, 2.0)
    order = interleaved(scenes)
    assert [c for c, _ in order[:4]] == ["walk-1", "walk-2", "walk-3", "walk-1"]
    assert [f.seq for c, f in order if c == "walk-2"] == list(range(10))


def test_lag_counts_only_events_stamped_with_the_frame_that_made_them() -> None:
    arrivals = [(10.5, "line_cross", 10.0, 10.2), (11.0, "zone_enter", 10.8, 10.9),
                (12.0, "zone_leave", 9.0, 11.9),  # a track's end: stamped when last seen
                (12.0, "window_count", 0.0, 11.9), (9.5, "line_cross", 9.0, 9.1)]
    lags = event_lags_s(arrivals, since=10.0)
    assert [round(a, 3) for a, _ in lags] == [0.5, 0.2]
    assert [round(e, 3) for _, e in lags] == [0.2, 0.1]


def test_every_camera_of_the_plan_has_a_line_and_a_zone() -> None:
    plan = AnalyticsPlan(cameras=8, width=960, height=540, fps=5.0, warmup_s=3, seconds=15)
    settings = AnalyticsSettings.model_validate(plan.analytics())
    assert len(settings.cameras) == 8
    assert all(len(c.lines) == 1 and len(c.zones) == 1 for c in settings.cameras.values())


def test_report_and_json_carry_the_analytics_row_and_its_ratio() -> None:
    result = replace(make_result(), analytics=analytics_run())
    rows = dict(summary_rows(result))
    assert rows["**analytics service / bare, CPU per record**"] == "2.00x"
    assert "p50 250 ms, p95 700 ms" in rows["analytics, 8 cameras at 5 frames/s"]
    assert "analytics service / bare" in markdown_section(result)
    data = json.loads(json.dumps(result.to_json()))
    assert data["analytics"]["cpu_ratio"] == 2.0 and data["analytics"]["group_lag_max"] == 60
    assert not any(m.startswith("analytics") for m, _ in summary_rows(make_result()))


def test_drained_needs_a_lag_of_zero_read_after_the_feed_ended() -> None:
    fed_at = 20.0
    assert drained_at([(19.5, 0)], fed_at) is None  # read before the last records came
    assert drained_at([(19.5, 0), (20.0, 12)], fed_at) is None
    assert drained_at([(19.5, 0), (20.0, 12), (20.5, 0)], fed_at) == 20.5
    assert drained_at([], fed_at) is None


def test_cpu_counts_the_records_still_unprocessed_when_the_window_began() -> None:
    # 600 published in the window, 45 published before it and not yet committed then
    assert processed_records(600, 45) == 645
    assert processed_records(600, 0) == 600


def test_bare_baseline_is_the_median_of_three_runs_with_the_same_events() -> None:
    plan = AnalyticsPlan(cameras=1, width=960, height=540, fps=5.0, warmup_s=0.0, seconds=8.0)
    (camera,) = camera_ids(1)
    frames = camera_scenes([camera], plan.width, plan.height, plan.fps, plan.seconds)[camera]
    records = [detections_record(camera, f, T0 + timedelta(seconds=f.t), plan.width,
                                 plan.height) for f in frames]
    runs = [bare_cpu_s(plan.analytics(), records, warmup=5) for _ in range(3)]
    median_s, events = bare_cpu_median_s(plan.analytics(), records, warmup=5)
    assert events == runs[0][1] > 0
    assert median_s > 0.0
    assert bare_cpu_median_s(plan.analytics(), records[:3], warmup=5)[0] == 0.0
