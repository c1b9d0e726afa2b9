"""The cameras of a benchmark: a process that publishes the cached JPEGs through ``Ingest``.

It is Framewire's ingest for the benchmark (the same validation, ids, back-pressure and
producer as ``framewire publish``), with one frame from each camera in turn, either as fast
as the pipeline takes them or at a fixed total rate. Its CPU time is ingest's cost.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.inputs import read_frames, round_robin


@dataclass(frozen=True)
class FeedPlan:
    """What to publish, how fast (None: as fast as the pipeline takes), where to log."""

    files: dict[str, list[Path]]
    rate_fps: float | None
    log_path: Path


def _feed(plan: FeedPlan, stop: Any, published: Any) -> None:
    """Publish until ``stop`` is set; ``published`` counts acknowledged-to-queue frames."""
    plan.log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = plan.log_path.open("ab")
    os.dup2(log_file.fileno(), 2)  # librdkafka and logging write to stderr: keep the terminal clean

    from framewire.capture.ingest import Ingest
    from framewire.capture.sources import CapturedImage
    from framewire.config import load_settings
    from framewire.contracts import utcnow
    from framewire.telemetry.logs import setup_logging

    settings = load_settings()
    setup_logging("ingest", "WARNING", json_lines=True)
    frames = read_frames(plan.files)
    ingest = Ingest(settings)
    ingest.start_lag_watch()
    interval = 1.0 / plan.rate_fps if plan.rate_fps else 0.0
    due, n = time.monotonic(), 0
    try:
        while not stop.is_set() and not ingest.stop.is_set:
            if interval:
                delay = due - time.monotonic()
                if delay > 0 and stop.wait(delay):
                    break
                # more than a second behind: restart the schedule instead of bursting
                due = max(due + interval, time.monotonic() - 1.0)
            ingest.wait_while_behind()
            camera, data = round_robin(frames, n)
            if ingest.offer(camera, CapturedImage(data, utcnow(), "bench")):
                with published.get_lock():
                    published.value += 1
            n += 1
    finally:
        ingest.close()


class Feeder:
    """Starts and stops the feeding process; knows its pid and how many frames it sent."""

    def __init__(self, plan: FeedPlan) -> None:
        ctx = mp.get_context("spawn")
        self.stop_event = ctx.Event()
        self.published = ctx.Value("q", 0)
        self.process = ctx.Process(target=_feed, args=(plan, self.stop_event, self.published),
                                   name="bench-feed", daemon=True)

    def start(self) -> None:
        self.process.start()

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def count(self) -> int:
        return int(self.published.value)

    def alive(self) -> bool:
        return self.process.is_alive()

    def stop(self, timeout_s: float = 30.0) -> int:
        """Stop feeding, wait until every frame is flushed to the broker; frames published."""
        self.stop_event.set()
        self.process.join(timeout_s)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        return self.count
