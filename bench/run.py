"""The benchmark's phases in order: inputs, bare loop, Framewire (latency, full speed), scale-out.

Run it with ``framewire bench`` (or ``make bench``); ``--quick`` keeps it under three minutes.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from bench.bare import run_bare
from bench.inputs import CAMERAS, JPEG_QUALITY, cached_frames
from bench.machine import NOT_READABLE, load_average, machine_description
from bench.stack import (
    BENCH_MAX_LAG_FRAMES,
    TIMELINE,
    BenchSite,
    default_layout,
    environment,
    free_port,
    measure_full_speed,
    measure_inference_scale,
    measure_latency,
    site_environment,
)
from bench.stats import (
    BenchResult,
    Latency,
    ScalePoint,
    hop_percentiles_ms,
    per_thousand,
    percentiles_ms,
)
from framewire.procutil import usable_cores

REPO = Path(__file__).resolve().parent.parent
BUSY_CORES = 0.1  # other processes using more than this many cores: a noisy run


@dataclass(frozen=True)
class Durations:
    """How long each phase measures, in seconds, and how many distinct frames per camera."""

    bare_s: float
    latency_s: float
    full_speed_s: float
    scale_s: float
    warmup_s: float
    frames_per_camera: int


QUICK = Durations(bare_s=12, latency_s=15, full_speed_s=15, scale_s=10, warmup_s=3,
                  frames_per_camera=16)
FULL = Durations(bare_s=60, latency_s=60, full_speed_s=60, scale_s=40, warmup_s=8,
                 frames_per_camera=48)


@dataclass
class Options:
    """What ``framewire bench`` was asked for."""

    quick: bool = False
    workers: int | None = None  # bare-loop workers; default: one per usable core
    layout: dict[str, int] = field(default_factory=dict)  # replicas over default_layout()'s
    replicas: list[int] = field(default_factory=list)  # scale-out steps; default 1, 2, 4... cores
    cache_dir: Path = REPO / "bench" / ".cache"
    results_dir: Path = REPO / "bench" / "results"
    docs: Path | None = REPO / "docs" / "benchmarks.md"


def scale_steps(cores: int) -> list[int]:
    """Inference replicas to measure: 1, 2, 4... up to the cores, and the cores themselves."""
    steps, n = [], 1
    while n <= max(cores, 2):
        steps.append(n)
        n *= 2
    if cores > 2 and cores not in steps:
        steps.append(cores)
    return steps


class _Phases:
    """One progress bar per phase; ``tick(name)`` gives the phase's progress callback."""

    def __init__(self, progress: Progress, names: list[str]) -> None:
        self.progress = progress
        self.tasks = {name: progress.add_task(name, total=1.0, start=False) for name in names}

    def tick(self, name: str) -> Callable[[float], None]:
        task = self.tasks[name]
        self.progress.start_task(task)

        def update(fraction: float) -> None:
            self.progress.update(task, completed=max(0.0, min(1.0, fraction)))

        return update

    def done(self, name: str) -> None:
        self.tick(name)(1.0)


def run_benchmark(options: Options, console: Console) -> tuple[BenchResult, list[float]]:
    """Every phase; the result and the latency sample (ms) for the chart."""
    d = QUICK if options.quick else FULL
    begun = time.monotonic()
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    load_start = load_average()
    cores = usable_cores()
    workers = options.workers or cores
    layout = {**default_layout(cores), **options.layout}
    replicas = options.replicas or scale_steps(cores)
    machine = machine_description(REPO)
    names = ["inputs", "bare loop", "Framewire: start", "Framewire: latency at 50 %",
             "Framewire: full speed", "scale-out: inference replicas"]
    tmp = Path(tempfile.mkdtemp(prefix="framewire-bench-"))
    with Progress(TextColumn("{task.description:<32}"), BarColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as progress:
        phases = _Phases(progress, names)
        try:
            phases.tick("inputs")(0.0)
            files = cached_frames(options.cache_dir, d.frames_per_camera)
            phases.done("inputs")

            bare_home = tmp / "bare"
            bare_env = site_environment(bare_home, "127.0.0.1:9", embedded=False)
            with environment(bare_env):
                from framewire.config import load_settings
                from framewire.db import open_database

                settings = load_settings()
                open_database(settings.resolved_database_url).close()  # tables, once
                bare = run_bare(files, workers, d.bare_s, phases.tick("bare loop"))
            phases.done("bare loop")

            site = BenchSite(tmp / "framewire", layout, site_environment(
                tmp / "framewire", f"127.0.0.1:{free_port()}", embedded=True))
            site.start()
            try:
                site.wait_ready(tick=phases.tick("Framewire: start"))
                phases.done("Framewire: start")
                latency = measure_latency(site, files, 0.5 * bare.fps, d.latency_s, d.warmup_s,
                                          phases.tick("Framewire: latency at 50 %"))
                full = measure_full_speed(site, files, d.full_speed_s, d.warmup_s,
                                          phases.tick("Framewire: full speed"))
            finally:
                site.stop()

            inference_ms = max(bare.steps_ms.get("inference", 30.0), 5.0)

            def frames_needed(n: int) -> int:
                fps = 1000.0 / inference_ms * min(n, cores)
                return int(fps * (d.warmup_s + d.scale_s + 25.0) * 1.2)

            points = measure_inference_scale(tmp / "scale", files, replicas, d.scale_s,
                                             d.warmup_s, frames_needed,
                                             phases.tick("scale-out: inference replicas"))
            phases.done("scale-out: inference replicas")
        except BaseException:
            console.print(f"[red]benchmark stopped; homes and service logs kept in {tmp}[/]")
            raise
    shutil.rmtree(tmp, ignore_errors=True)

    lat = percentiles_ms(latency.latencies_s)
    pixel_format = site.settings.preprocess.pixel_format
    notes = []
    busiest = max((v for v in (bare.other_cores, full.other_cores) if v is not None), default=0.0)
    if busiest > BUSY_CORES:
        notes.append(f"other processes kept up to {busiest:.2f} cores busy during the "
                     "measurements: the numbers are noisy (see 'other processes' above)")
    notes.append(f"the letterboxed frame travels as pixel_format={pixel_format} in the "
                 "pipeline; the bare loop hands it to the model in memory")
    if full.dead_lettered:
        notes.append(f"{full.dead_lettered} record(s) were dead-lettered: see the service logs")
    joules = {"bare": None if bare.joules is None else per_thousand(bare.joules, bare.frames),
              "framewire": full.joules_per_1000}
    s = site.settings
    result = BenchResult(
        started_at=started_at, quick=options.quick, machine=machine,
        config={
            "workers": workers, "layout": layout, "scale_out_replicas": replicas,
            "pixel_format": pixel_format, "partitions": s.topic_partitions,
            "batch": {"preprocess": [s.preprocess.batch_size, s.preprocess.batch_linger_ms],
                      "inference": [s.inference.batch_size, s.inference.batch_linger_ms],
                      "storage": [s.storage.batch_size, s.storage.batch_linger_ms]},
            "cameras": [f"{c.camera_id} {c.width}x{c.height}" for c in CAMERAS],
            "jpeg_quality": JPEG_QUALITY, "frames_per_camera": d.frames_per_camera,
            "max_lag_frames": BENCH_MAX_LAG_FRAMES,
            "durations_s": {"bare": d.bare_s, "latency": d.latency_s,
                            "full_speed": d.full_speed_s, "scale_out": d.scale_s,
                            "warmup": d.warmup_s},
        },
        bare_fps=bare.fps, bare_frame_ms=bare.frame_ms,
        bare_cpu_s_per_1000=per_thousand(bare.cpu_s, bare.frames),
        bare_steps_ms=bare.steps_ms,
        framewire_fps=full.fps,
        latency=Latency(feed_fps=round(latency.feed_fps, 2), frames=len(latency.latencies_s),
                        p50_ms=lat["p50_ms"], p95_ms=lat["p95_ms"], p99_ms=lat["p99_ms"],
                        hops_ms=hop_percentiles_ms(latency.timelines, TIMELINE)),
        scale_out=[ScalePoint(p.replicas, round(p.fps, 2), p.cpu_s_per_1000, p.other_cores)
                   for p in points],
        cpu_s_per_1000=full.cpu_s_per_1000, bytes_per_frame=full.bytes_per_frame,
        joules_per_1000=joules,
        energy_note=NOT_READABLE if all(v is None for v in joules.values()) else "RAPL",
        load_average={"start": load_start, "end": load_average()},
        other_cores={"bare": bare.other_cores, "framewire": full.other_cores,
                     **{f"inference x{p.replicas}": p.other_cores for p in points}},
        duration_s=round(time.monotonic() - begun, 1), notes=notes,
    )
    return result, [x * 1000 for x in latency.latencies_s]
