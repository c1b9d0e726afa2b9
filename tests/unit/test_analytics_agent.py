"""The analytics agent in faust's own test context (no broker): detections records in give
the known line crossings and window counts out; the state table is written after each frame;
a record that is not a detections record is passed over, and the agent goes on."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from framewire.analytics.app import AnalyticsApp
from framewire.analytics.records import AnalyticsEvent
from framewire.analytics.service import Done
from framewire.analytics.synthetic import Mover, scene
from framewire.config import load_settings
from framewire.contracts import Detection, FrameHeader, InferenceResult
from framewire.contracts.codec import Codec

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)  # on a minute: windows start at T0 + k * 10 s
CAMERA = {"lines": [{"name": "door", "points": [[640, 0], [640, 720]]}],
          "zones": [{"name": "bay", "points": [[0, 400], [600, 400], [600, 720], [0, 720]]}]}
# one walker left to right across the door (in), one right to left (out), both above the bay;
# one walking in the bay from 2 s to 6 s
WALKERS = [Mover((400, 300), (900, 300), 0.0, 5.0), Mover((1000, 350), (300, 350), 1.0, 7.0),
           Mover((100, 500), (500, 500), 2.0, 6.0)]


def results(camera_id: str, fps: float = 10.0, duration_s: float = 13.0) -> list[InferenceResult]:
    """The walkers as detections records, one per frame, captured at T0 + t."""
    out = []
    for frame in scene(WALKERS, fps, duration_s):
        at = T0 + timedelta(seconds=frame.t)
        out.append(InferenceResult(
            header=FrameHeader(frame_id=f"{camera_id}-{frame.seq}", camera_id=camera_id,
                               seq=frame.seq, captured_at=at, ingested_at=at),
            preprocessed_at=at, inferred_at=at, orig_width=1280, orig_height=720,
            model_name="synthetic", model_version="1", provider="none", too_dark=False,
            blurred=False, frozen=False,
            detections=[Detection("person", int(r[5]), float(r[4]), *map(float, r[:4]))
                        for r in frame.boxes]))
    return out


def run_agent(records: list[tuple[bytes, bytes]], home: Path) -> tuple[AnalyticsApp, list[Any]]:
    settings = load_settings(home=home, analytics={"cameras": {"door-1": CAMERA}, "tumbling_s": 10,
                                        "hopping_s": 20, "hop_s": 10, "lost_after_s": 1})
    analytics = AnalyticsApp(settings, partitions=1)
    analytics.sends = False  # faust has no in-memory broker: the test reads the results
    analytics.app.finalize()
    analytics.app.flow_control.resume()

    async def feed() -> list[Any]:
        async with analytics.agent.test_context() as agent:
            for key, value in records:
                await agent.put(value, key=key)
            return [agent.results[i] for i in sorted(agent.results)]

    return analytics, asyncio.run(feed())


def test_agent_counts_both_directions_and_saves_each_frames_state(tmp_path: Path):
    codec = Codec()
    frames = results("door-1")
    analytics, done = run_agent([(b"door-1", codec.encode(r)) for r in frames], tmp_path)
    events = [codec.decode(o.value, AnalyticsEvent) for d in done if d is not None
              for o in d.outgoing if o.topic == "events"]
    found = Counter((e.type, e.name, e.direction) for e in events if e.type != "window_count")
    assert found == {("line_cross", "door", "in"): 1, ("line_cross", "door", "out"): 1,
                     ("zone_enter", "bay", None): 1, ("zone_leave", "bay", None): 1}
    windows = {(e.window.kind, e.name, e.window.counted, e.window.direction, e.window.start):
               e.window.count for e in events if e.type == "window_count" and e.window}
    assert windows[("tumbling", "door", "line_cross", "in", T0)] == 1
    assert windows[("tumbling", "door", "line_cross", "out", T0)] == 1
    assert len(done) == len(frames)
    saved = analytics.table["door-1"]
    assert saved["mark"] == len(frames)


def test_record_that_is_not_detections_is_passed_over_and_the_agent_goes_on(tmp_path: Path):
    codec = Codec()
    frames = results("door-1", duration_s=1.0)
    records = [(b"door-1", b"\x00not avro"), *((b"door-1", codec.encode(r)) for r in frames)]
    _, done = run_agent(records, tmp_path)
    assert done[0] is None
    assert all(isinstance(d, Done) for d in done[1:]) and len(done) == len(records)


def test_camera_without_analytics_settings_is_passed_over(tmp_path: Path):
    codec = Codec()
    analytics, done = run_agent([(b"lobby", codec.encode(r)) for r in results("lobby", 10, 1)],
                               tmp_path)
    assert all(isinstance(d, Done) and not d.outgoing and d.state is None for d in done)
    assert analytics.table.get("lobby") is None


def test_faust_gets_the_group_timing_the_other_stages_get(tmp_path: Path):
    from framewire.analytics.app import faust_options

    # the embedded broker: its quick defaults (a join there takes half the session timeout)
    embedded = faust_options(load_settings(home=tmp_path), 4, 1)
    assert (embedded["broker_session_timeout"], embedded["broker_heartbeat_interval"]) == (6, 1)
    # the user's settings win; on Apache Kafka without them, faust's own defaults
    own = faust_options(load_settings(home=tmp_path, kafka={"session.timeout.ms": 9000}), 4, 1)
    assert own["broker_session_timeout"] == 9
    kafka = faust_options(load_settings(home=tmp_path, broker="kafka"), 4, 1)
    assert "broker_session_timeout" not in kafka
