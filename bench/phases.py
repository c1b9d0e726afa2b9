"""The benchmark's phases against a running site: latency at a fixed load, full speed,
inference replicas side by side; and the frames they feed."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.machine import EnergyMeter
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
from bench.stats import per_thousand, rate_between


@dataclass
class FullSpeed:
    """Framewire fed as fast as it takes frames."""

    fps: float
    frames: int
    cpu_s_per_1000: dict[str, float | None]
    joules_per_1000: float | None
    bytes_per_frame: dict[str, float]
    dead_lettered: int = 0
    other_cores: float | None = None


@dataclass
class ScaleRun:
    """Inference-bound frames/s with ``replicas`` inference processes, and the CPU cost."""

    replicas: int
    fps: float
    cpu_s_per_1000: dict[str, float | None]
    other_cores: float | None = None


@dataclass
class LatencyRun:
    """Framewire fed at a fixed rate: per stored frame, stored_at - captured_at."""

    feed_fps: float
    timelines: list[tuple[float, ...]] = field(default_factory=list)

    @property
    def latencies_s(self) -> list[float]:
        """stored_at - captured_at of each frame."""
        return [t[-1] - t[0] for t in self.timelines]


def cost(before: Sample, after: Sample) -> tuple[int, dict[str, float | None]]:
    """Frames stored between two samples and each service's CPU-seconds per 1,000 of them."""
    frames = after.rows - before.rows
    per = {service: per_thousand(after.cpu_s.get(service, 0.0) - spent, frames)
           for service, spent in before.cpu_s.items()}
    per["total"] = per_thousand(sum(after.cpu_s.values()) - sum(before.cpu_s.values()), frames)
    return frames, per


def measure_latency(site: BenchSite, files: dict[str, list[Path]], rate_fps: float,
                    seconds: float, warmup_s: float, tick: Tick | None = None) -> LatencyRun:
    """Feed at ``rate_fps`` for warm-up + ``seconds``; latencies of frames after the warm-up."""
    first = now_s() + warmup_s
    already = site.count()
    feeder = site.feeder(files, rate_fps)
    started = time.monotonic()
    site.watch(started, started + warmup_s + seconds, tick, 0.9)
    sent = feeder.stop()
    site.wait_stored(already + sent, timeout_s=60.0)
    if tick is not None:
        tick(1.0)
    return LatencyRun(rate_fps, site.rows(first))


def measure_full_speed(site: BenchSite, files: dict[str, list[Path]], seconds: float,
                       warmup_s: float, tick: Tick | None = None) -> FullSpeed:
    """Feed as fast as Framewire takes frames; frames/s counted at storage after a warm-up."""
    meter = EnergyMeter()
    feeder = site.feeder(files, None)
    started = time.monotonic()
    extra = {"ingest": [feeder.pid]} if feeder.pid else {}
    site.watch(started, started + warmup_s)
    before = site.sample(extra, meter)
    site.watch(started, started + warmup_s + seconds, tick, 0.9)
    after = site.sample(extra, meter)
    sizes = site.bytes_per_frame()
    feeder.stop()
    stamps = [t[-1] for t in site.rows(before.at - 3600)]
    measured = rate_between(stamps, before.at, after.at)
    frames, cpu = cost(before, after)
    joules = meter.joules_between(before.energy, after.energy)
    if tick is not None:
        tick(1.0)
    return FullSpeed(
        fps=measured[0] if measured else 0.0, frames=frames, cpu_s_per_1000=cpu,
        joules_per_1000=None if joules is None else per_thousand(joules, frames),
        bytes_per_frame=sizes, dead_lettered=site.dead_lettered(),
        other_cores=noise_cores(before, after),
    )


def prepared_frames(files: dict[str, list[Path]], settings: Any, per_camera: int = 2) -> list[Any]:
    """FramePreprocessed records made by the preprocess stage's own code from cached frames."""
    from framewire.capture.ingestor import FrameIngestor
    from framewire.capture.sources import CapturedImage
    from framewire.contracts import utcnow
    from framewire.services.preprocess.stage import PreprocessStage
    from framewire.store.blobs import BlobStore

    ingestor = FrameIngestor(BlobStore.from_settings(settings), settings.max_upload_bytes,
                             settings.max_inline_bytes)
    stage = PreprocessStage(settings)
    out = []
    for camera, paths in sorted(files.items()):
        for path in paths[:per_camera]:
            captured = ingestor.capture(camera, CapturedImage(path.read_bytes(), utcnow(), "bench"))
            out.append(stage.prepare(captured))
    return out


def preload_ready(settings: Any, frames: list[Any], count: int) -> None:
    """Publish ``count`` copies of prepared frames (fresh frame ids) to ``frames.ready``."""
    from ulid import ULID

    from framewire.contracts import utcnow
    from framewire.runtime import Publisher

    # its client outlives close() until collected: keep librdkafka's disconnect lines quiet
    quiet = settings.model_copy(update={"kafka": {**settings.kafka, "log_level": 0}})
    publisher = Publisher(quiet, "bench")
    try:
        for n in range(count):
            prepared = frames[n % len(frames)]
            frame = replace(prepared, header=replace(prepared.header, frame_id=str(ULID()),
                                                     captured_at=utcnow()))
            publisher.publish("frames.ready", frame, key=frame.camera_id)
            if n % 256 == 0:
                publisher.producer.poll(0)
        publisher.flush(120.0)
    finally:
        publisher.close()


def measure_inference_scale(home: Path, files: dict[str, list[Path]], replicas: list[int],
                            seconds: float, warmup_s: float, frames_needed: Callable[[int], int],
                            tick: Tick | None = None) -> list[ScaleRun]:
    """Frames/s of 1, 2... inference replicas, inference-bound: ``frames.ready`` pre-filled.

    Only inference and storage run (with the supervisor's embedded broker), and
    ``frames.ready`` holds more frames than they can take in the window, so inference is the
    bottleneck by construction.
    """
    results = []
    prepared: list[Any] = []
    for step, n in enumerate(replicas):
        site_home = home / f"inference-{n}"
        env = site_environment(site_home, f"127.0.0.1:{free_port()}", embedded=True)
        site = BenchSite(site_home, {"inference": n, "storage": 1}, env)
        site.start()
        try:
            with environment(env):
                prepared = prepared or prepared_frames(files, site.settings)
                preload_ready(site.settings, prepared, frames_needed(n))
            part = (lambda f, s=step: tick((s + f) / len(replicas))) if tick else None
            site.wait_ready(tick=part)
            meter = EnergyMeter()
            time.sleep(warmup_s)
            before = site.sample({}, meter)
            started = time.monotonic()
            site.watch(started, started + seconds, part, 0.99)
            after = site.sample({}, meter)
            measured = rate_between([t[-1] for t in site.rows()], before.at, after.at)
            _, cpu = cost(before, after)
            results.append(ScaleRun(n, measured[0] if measured else 0.0, cpu,
                                   noise_cores(before, after)))
        finally:
            site.stop()
    return results
