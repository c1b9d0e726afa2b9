"""Analytics under measurement: the analytics service (its faust worker, started by the
supervisor beside the embedded broker) fed synthetic ``detections`` records of 8 cameras, each
at the demo camera's frame rate, every camera with a line and a zone, against the same records
through the analytics core in a bare loop (``CameraWork.handle``, no Kafka).

Measured: the lag from a record's capture (its ``captured_at``, set as it is published) to the
arrival of its events on ``events``; the group's lag in records; the worker's CPU-seconds per
1,000 ``detections`` records, and the bare loop's.

Run it alone with ``.venv/bin/python -m bench.analytics [--quick]``; ``framewire bench`` runs it
as its last phase.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from bench.stack import (
    BenchSite,
    Sample,
    Tick,
    environment,
    free_port,
    noise_cores,
    now_s,
    site_environment,
)
from bench.stats import AnalyticsRun, per_thousand, percentiles_ms, ratio
from framewire.analytics.synthetic import Mover, SceneFrame, scene

CAMERAS = 8  # as the pipeline phases' cameras
CROSS_S = 6.0  # a walker's time from one side of the view to the other
PERIOD_S = 1.5  # a new walker this often per camera: about four in view at once
NOISE_PX = 2.0
MISS_RATE = 0.05
# events stamped with the frame whose record made them (a zone_leave of a track that ended is
# stamped with the frame it was last seen in, a window count with the window's end)
FRAME_EVENTS = ("line_cross", "zone_enter", "dwell")
LAG_SAMPLE_S = 0.5
DRAIN_TIMEOUT_S = 60.0
BARE_RUNS = 3  # the bare loop's CPU is the median of this many runs


def camera_ids(count: int = CAMERAS) -> list[str]:
    return [f"walk-{n + 1}" for n in range(count)]


def camera_settings(width: int, height: int) -> dict[str, Any]:
    """One camera's ``analytics.cameras`` entry: a line down the middle, a zone bottom left."""
    w, h = float(width), float(height)
    return {"lines": [{"name": "door", "points": [[w / 2, 0.0], [w / 2, h]]}],
            "zones": [{"name": "bay", "points": [[0.0, 0.55 * h], [0.42 * w, 0.55 * h],
                                                 [0.42 * w, h], [0.0, h]]}]}


def walkers(width: int, height: int, duration_s: float, seed: int = 0) -> list[Mover]:
    """People crossing the view, a new one every ``PERIOD_S``, taking ``CROSS_S`` each, all
    finished within ``duration_s``: even ones left to right through the zone (enter, leave,
    cross ``in``), odd ones right to left above it (cross ``out``). The two directions walk
    at heights whose boxes never overlap, so a tracker keeps their ids."""
    rng = np.random.default_rng(seed)
    size = (0.05 * width, 0.2 * height)
    out = []
    for k in range(int((duration_s - CROSS_S) / PERIOD_S) + 1):
        t0 = k * PERIOD_S
        if k % 2 == 0:
            y = height * (0.8 + 0.15 * rng.random())
            start, end = (0.05 * width, y), (0.95 * width, y)
        else:
            y = height * (0.3 + 0.15 * rng.random())
            start, end = (0.95 * width, y), (0.05 * width, y)
        out.append(Mover(start, end, t0, t0 + CROSS_S, size=size))
    return out


def camera_scenes(cameras: Sequence[str], width: int, height: int, fps: float,
                  duration_s: float, *, noise_px: float = NOISE_PX,
                  miss_rate: float = MISS_RATE) -> dict[str, list[SceneFrame]]:
    """Each camera's frames of detections, its walkers drawn with a seed of its own."""
    return {camera: scene(walkers(width, height, duration_s, seed=n), fps, duration_s,
                          noise_px=noise_px, miss_rate=miss_rate, seed=n)
            for n, camera in enumerate(cameras)}


def interleaved(scenes: dict[str, list[SceneFrame]]) -> list[tuple[str, SceneFrame]]:
    """Frames in capture order, cameras in turn, as cameras at one rate send them."""
    longest = max((len(frames) for frames in scenes.values()), default=0)
    return [(camera, frames[i]) for i in range(longest)
            for camera, frames in scenes.items() if i < len(frames)]


def detections_record(camera_id: str, frame: SceneFrame, at: datetime, width: int,
                      height: int) -> Any:
    """A ``detections`` record (``InferenceResult``) of one frame, captured ``at``."""
    from framewire.contracts import Detection, FrameHeader, InferenceResult

    return InferenceResult(
        header=FrameHeader(frame_id=f"{camera_id}-{frame.seq}-{int(at.timestamp() * 1e6)}",
                           camera_id=camera_id, seq=frame.seq, captured_at=at, ingested_at=at),
        preprocessed_at=at, inferred_at=at, orig_width=width, orig_height=height,
        model_name="synthetic", model_version="1", provider="none", too_dark=False,
        blurred=False, frozen=False,
        detections=[Detection("person", int(r[5]), float(r[4]), *map(float, r[:4]))
                    for r in frame.boxes])


Arrival = tuple[float, str, float, float]  # arrived, event type, its at, its emitted_at


def event_lags_s(arrivals: Sequence[Arrival], since: float) -> list[tuple[float, float]]:
    """Per event stamped with the frame that made it (``FRAME_EVENTS``), captured at or after
    ``since``: seconds from capture to arrival on ``events``, and from capture to the worker's
    ``emitted_at``. ``arrivals`` holds (arrival time, type, ``at``, ``emitted_at``), epoch
    seconds."""
    return [(arrived - at, emitted - at) for arrived, kind, at, emitted in arrivals
            if kind in FRAME_EVENTS and at >= since]


def bare_cpu_s(analytics: dict[str, Any], records: Sequence[Any],
               warmup: int = 0) -> tuple[float, int]:
    """CPU-seconds (this thread: the bench process's other threads, rich's refresh among
    them, not counted) of the analytics core over ``records`` in order, as the worker runs it
    (each camera's state handed back as its table would hold it), the first ``warmup`` records
    not counted (as the service's warm-up is not); and the events made."""
    from framewire.analytics.service import CameraWork
    from framewire.analytics.settings import AnalyticsSettings
    from framewire.contracts.codec import Codec

    work = CameraWork(AnalyticsSettings.model_validate(analytics), Codec())
    saved: dict[str, dict[str, Any] | None] = {}
    events = 0
    begun = 0.0
    for n, record in enumerate(records):
        if n == warmup:
            begun = time.thread_time()
        done = work.handle(record, saved.get(record.header.camera_id))
        saved[done.camera_id] = done.state
        events += sum(o.topic == "events" for o in done.outgoing)
    return time.thread_time() - begun if len(records) > warmup else 0.0, events


def bare_cpu_median_s(analytics: dict[str, Any], records: Sequence[Any], warmup: int = 0,
                      runs: int = BARE_RUNS) -> tuple[float, int]:
    """``bare_cpu_s`` run ``runs`` times from a fresh core: the median CPU-seconds (one run's
    few hundred milliseconds move with the machine's other load), and the events made."""
    measured = [bare_cpu_s(analytics, records, warmup) for _ in range(runs)]
    return statistics.median(s for s, _ in measured), measured[0][1]


def drained_at(samples: Sequence[tuple[float, int]], fed_at: float) -> float | None:
    """When the last lag sample read 0, if it was taken at or after ``fed_at`` (the feed's
    end; a 0 read before it says nothing of the records still to come), else None."""
    if samples and samples[-1][0] >= fed_at and samples[-1][1] == 0:
        return samples[-1][0]
    return None


def processed_records(fed_after_mark: int, lag_at_mark: int) -> int:
    """Records the worker processed between the two CPU samples, the second taken when the
    group's lag read 0 after the feed: those published after the first sample, and those
    published before it and not yet committed then (the group's lag at that moment)."""
    return fed_after_mark + lag_at_mark


class _EventsReader(threading.Thread):
    """Reads ``events`` from the start, noting each event's arrival (wall clock) and ``at``."""

    def __init__(self, settings: Any) -> None:
        super().__init__(name="bench-events", daemon=True)
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        from framewire.broker.client import client_config
        from framewire.contracts.codec import Codec

        self.codec = Codec()
        # a short fetch wait: the embedded broker answers a waiting fetch only when it ends
        self.consumer = Consumer(client_config(settings, {"log_level": 0}, **{
            "group.id": "bench-analytics-events", "enable.auto.commit": False,
            "fetch.wait.max.ms": 5}))
        topic = settings.topic("events")
        parts = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        self.arrivals: list[Arrival] = []
        self.last_at = time.monotonic()
        self.stopping = threading.Event()

    def run(self) -> None:
        from framewire.analytics.records import AnalyticsEvent

        try:
            while not self.stopping.is_set():
                message = self.consumer.poll(0.05)
                if message is None or message.error() is not None:
                    continue
                arrived = now_s()
                event = self.codec.decode(message.value(), AnalyticsEvent)
                self.arrivals.append((arrived, event.type, event.at.timestamp(),
                                      event.emitted_at.timestamp()))
                self.last_at = time.monotonic()
        finally:
            self.consumer.close()

    def wait_quiet(self, quiet_s: float, timeout_s: float) -> None:
        """Until no event arrived for ``quiet_s`` (the last ones are in), at most ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() - self.last_at < quiet_s and time.monotonic() < deadline:
            time.sleep(0.1)


class _LagWatch(threading.Thread):
    """The analytics group's lag in records, every ``LAG_SAMPLE_S``."""

    def __init__(self, settings: Any, publisher: Any) -> None:
        super().__init__(name="bench-lag", daemon=True)
        from framewire.broker.reading import LagProbe

        self.probe = LagProbe(settings, "analytics")
        self.publisher = publisher
        self.samples: list[tuple[float, int]] = []  # (time.monotonic(), records)
        self.stopping = threading.Event()
        self.lock = threading.Lock()  # one read of the probe at a time

    def read(self) -> int | None:
        """The group's lag in records now, None when the broker does not answer."""
        with self.lock:
            lags = self.probe.partition_lags(self.publisher.produced_offsets())
        return None if lags is None else sum(lags.values())

    def run(self) -> None:
        try:
            while not self.stopping.wait(LAG_SAMPLE_S):
                lag = self.read()
                if lag is not None:
                    self.samples.append((time.monotonic(), lag))
        finally:
            with self.lock:
                self.probe.close()

    def first_after(self, moment: float) -> int | None:
        return next((n for at, n in self.samples if at >= moment), None)

    def wait_drained(self, fed_at: float, timeout_s: float) -> float | None:
        """Until a sample taken after ``fed_at`` shows no lag; when it did
        (``time.monotonic()``), None on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if (at := drained_at(self.samples, fed_at)) is not None:
                return at
            time.sleep(0.1)
        return None


@dataclass(frozen=True)
class AnalyticsPlan:
    """What the phase feeds: cameras, their size and rate, warm-up and window in seconds."""

    cameras: int
    width: int
    height: int
    fps: float
    warmup_s: float
    seconds: float

    @classmethod
    def from_settings(cls, settings: Any, warmup_s: float, seconds: float) -> AnalyticsPlan:
        """The demo camera's size and rate (``demo_width``, ``demo_height``, ``demo_fps``)."""
        return cls(CAMERAS, settings.demo_width, settings.demo_height, settings.demo_fps,
                   warmup_s, seconds)

    def analytics(self) -> dict[str, Any]:
        """The ``analytics`` settings: every camera with a line and a zone."""
        entry = camera_settings(self.width, self.height)
        return {"cameras": {c: entry for c in camera_ids(self.cameras)}}


def measure_analytics(home: Path, plan: AnalyticsPlan, tick: Tick | None = None) -> AnalyticsRun:
    """The bare loop, then the service: fed at ``plan``'s rate for warm-up + window."""
    duration = plan.warmup_s + plan.seconds
    scenes = camera_scenes(camera_ids(plan.cameras), plan.width, plan.height, plan.fps, duration)
    frames = interleaved(scenes)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    bare_records = [detections_record(c, f, start + timedelta(seconds=f.t), plan.width,
                                      plan.height) for c, f in frames]
    warmup = min(len(frames), round(plan.warmup_s * plan.fps * plan.cameras))
    bare_s, bare_events = bare_cpu_median_s(plan.analytics(), bare_records, warmup)

    env = {**site_environment(home, f"127.0.0.1:{free_port()}", embedded=True),
           "FRAMEWIRE_ANALYTICS": json.dumps(plan.analytics())}
    site = BenchSite(home, {"analytics": 1}, env)
    site.start()
    try:
        site.wait_ready(timeout_s=120.0, tick=None if tick is None else
                        (lambda f: tick(0.1 * f)))
        (pid,) = site.pids()["analytics"]
        with environment(env):
            return _feed(site, pid, plan, frames, per_thousand(bare_s, len(frames) - warmup),
                         bare_events, tick)
    finally:
        site.stop()


def _feed(site: BenchSite, pid: int, plan: AnalyticsPlan,
          frames: list[tuple[str, SceneFrame]], bare: float | None, bare_events: int,
          tick: Tick | None) -> AnalyticsRun:
    from framewire.runtime import Publisher

    settings = site.settings
    quiet = settings.model_copy(update={"kafka": {**settings.kafka, "log_level": 0}})
    publisher = Publisher(quiet, "bench")
    reader, lags = _EventsReader(settings), _LagWatch(settings, publisher)
    reader.start()
    lags.start()
    interval = 1.0 / (plan.fps * plan.cameras)
    begun = time.monotonic()
    marked: tuple[float, int, Sample, int] | None = None
    boxes = 0
    try:
        for n, (camera, frame) in enumerate(frames):
            due = begun + n * interval
            while (wait := due - time.monotonic()) > 0:
                time.sleep(min(wait, 0.05))
            if marked is None and time.monotonic() - begun >= plan.warmup_s:
                site.check_alive()
                sample = _sample(site, pid)
                lag = lags.read()
                if lag is None:
                    raise RuntimeError("the broker did not answer the analytics group's lag at "
                                       "the window's start: see the site's logs")
                marked = (time.monotonic(), n, sample, lag)
            if marked is not None:
                boxes += len(frame.boxes)
            at = datetime.now(UTC)
            publisher.publish("detections", detections_record(camera, frame, at, plan.width,
                                                              plan.height), key=camera)
            publisher.producer.poll(0)
            if n % round(plan.fps * plan.cameras) == 0:  # about once a second
                site.check_alive()
                if tick is not None:
                    tick(0.1 + 0.85 * n / len(frames))
        publisher.flush(30.0)
        fed_at = time.monotonic()
        if marked is None:
            raise ValueError("the feed ended before its warm-up did: give a longer window")
        drained = lags.wait_drained(fed_at, DRAIN_TIMEOUT_S)
        after = _sample(site, pid)
        if drained is None:
            last = lags.samples[-1][1] if lags.samples else "unknown"
            raise RuntimeError(
                f"the analytics worker did not catch up within {DRAIN_TIMEOUT_S:.0f} s of the "
                f"feed's end (its group's lag last read {last} records), so its CPU would be "
                "counted over records it did not process: see the worker's log")
        reader.wait_quiet(2.0, 30.0)  # the last events in
        site.check_alive()
    finally:
        lags.stopping.set()
        reader.stopping.set()
        lags.join(10)
        reader.join(10)
        publisher.close()
    mark, first, before, lag_at_mark = marked
    records = len(frames) - first  # published in the window
    processed = processed_records(records, lag_at_mark)
    lag_s = event_lags_s(reader.arrivals, before.at)
    kinds = Counter(kind for _, kind, at, _ in reader.arrivals if at >= before.at)
    if tick is not None:
        tick(1.0)
    cpu = {name: per_thousand(after.cpu_s[name] - spent, processed)
           for name, spent in before.cpu_s.items()}
    return AnalyticsRun(
        cameras=plan.cameras, fps_per_camera=plan.fps, size=f"{plan.width}x{plan.height}",
        records=records, boxes_per_record=round(boxes / max(records, 1), 2),
        events=dict(sorted(kinds.items())), lag_events=len(lag_s),
        lag_ms=percentiles_ms([a for a, _ in lag_s]) if lag_s else {},
        emitted_ms=percentiles_ms([e for _, e in lag_s]) if lag_s else {},
        group_lag_max=max((n for at, n in lags.samples if at >= mark), default=None),
        group_lag_end=lags.first_after(fed_at),
        drain_s=round(max(0.0, drained - fed_at), 2),
        cpu_s_per_1000=cpu["analytics"], broker_cpu_s_per_1000=cpu.get("broker"),
        bare_cpu_s_per_1000=bare, cpu_ratio=ratio(cpu["analytics"], bare),
        bare_events=bare_events, other_cores=noise_cores(before, after))


def _sample(site: BenchSite, pid: int) -> Sample:
    """CPU-seconds of the worker and the broker now (the rest of a ``Sample`` for noise)."""
    from bench.machine import process_cpu_seconds, system_busy_seconds

    cpu = {"analytics": process_cpu_seconds(pid) or 0.0}
    broker = site.pids().get("broker", [])
    if broker:
        cpu["broker"] = sum(process_cpu_seconds(p) or 0.0 for p in broker)
    return Sample(now_s(), 0, cpu, None, system_busy_seconds(), time.process_time())


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m bench.analytics [--quick]``: this phase alone; prints its JSON."""
    import argparse
    import shutil
    import tempfile
    from dataclasses import asdict

    from bench.run import FULL, QUICK
    from framewire.config import load_settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the --quick windows")
    quick = parser.parse_args(argv).quick
    d = QUICK if quick else FULL
    tmp = Path(tempfile.mkdtemp(prefix="framewire-bench-analytics-"))
    try:
        plan = AnalyticsPlan.from_settings(load_settings(), d.warmup_s, d.analytics_s)
        run = measure_analytics(tmp, plan)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(asdict(run), indent=2))  # noqa: T201 (a command's output)


if __name__ == "__main__":
    main()
