"""The benchmark's phases in order: inputs, bare loop, Framewire on the embedded broker
(start, latency, full speed), with ``--broker kafka`` the same on Apache Kafka and an
exactly_once full speed, then scale-out, then analytics (8 cameras at the demo rate).

Run it with ``framewire bench`` (or ``make bench``); ``--quick`` keeps it under three minutes
(about six with ``--broker kafka``).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from bench.analytics import CAMERAS as ANALYTICS_CAMERAS
from bench.analytics import AnalyticsPlan, measure_analytics
from bench.bare import run_bare
from bench.inputs import CAMERAS, JPEG_QUALITY, cached_frames
from bench.machine import NOT_READABLE, load_average, machine_description
from bench.phases import (
    FullSpeed,
    LatencyRun,
    measure_full_speed,
    measure_inference_scale,
    measure_latency,
)
from bench.stack import (
    BENCH_MAX_LAG_FRAMES,
    TIMELINE,
    BenchSite,
    default_layout,
    environment,
    free_ports,
    site_environment,
)
from bench.stats import (
    BROKER_SITES,
    BenchResult,
    BrokerRun,
    Latency,
    ScalePoint,
    hop_percentiles_ms,
    per_thousand,
    percentiles_ms,
    rss_growth_per_thousand,
)
from framewire.procutil import usable_cores

REPO = Path(__file__).resolve().parent.parent
ANALYTICS_PHASE = f"analytics: {ANALYTICS_CAMERAS} cameras, demo rate"
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
    analytics_s: float


QUICK = Durations(bare_s=12, latency_s=15, full_speed_s=15, scale_s=10, warmup_s=3,
                  frames_per_camera=16, analytics_s=15)
FULL = Durations(bare_s=60, latency_s=60, full_speed_s=60, scale_s=40, warmup_s=8,
                 frames_per_camera=48, analytics_s=60)


@dataclass
class Options:
    """What ``framewire bench`` was asked for."""

    quick: bool = False
    workers: int | None = None  # bare-loop workers; default: one per usable core
    layout: dict[str, int] = field(default_factory=dict)  # replicas over default_layout()'s
    replicas: list[int] = field(default_factory=list)  # scale-out steps; default 1, 2, 4... cores
    broker: str = "embedded"  # kafka: Apache Kafka beside the embedded broker, one run
    cache_dir: Path = REPO / "bench" / ".cache"
    results_dir: Path = REPO / "bench" / "results"  # git-ignored
    docs: Path | None = None  # docs/benchmarks.md, only with --write-docs


# the progress bars' names of each broker site's phases
SITE_TITLES = {"embedded": "Framewire", "kafka": "Kafka",
               "kafka_exactly_once": "Kafka exactly_once"}


def sites_for(broker: str) -> list[str]:
    """The ``BROKER_SITES`` a run measures: the embedded one always, Kafka's beside it."""
    if broker not in ("embedded", "kafka"):
        raise ValueError(f"broker {broker!r}: give embedded or kafka")
    return ["embedded"] if broker == "embedded" else list(BROKER_SITES)


def phase_names(sites: list[str]) -> list[str]:
    """Every phase's progress bar, in order."""
    names = ["inputs", "bare loop"]
    for key in sites:
        title = SITE_TITLES[key]
        names.append(f"{title}: start")
        if key != "kafka_exactly_once":
            names.append(f"{title}: latency at 50 %")
        names.append(f"{title}: full speed")
    return [*names, "scale-out: inference replicas", ANALYTICS_PHASE]


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


@dataclass
class SiteRun:
    """One broker site's measurements: the summary and what the headline needs."""

    run: BrokerRun
    latency: LatencyRun | None
    full: FullSpeed
    settings: Any


def measure_site(key: str, home: Path, layout: dict[str, int], files: dict[str, list[Path]],
                 latency_fps: float, d: Durations, phases: _Phases) -> SiteRun:
    """Start one ``BROKER_SITES`` site, measure it (latency at ``latency_fps`` unless
    exactly_once, then full speed) and stop it."""
    broker, delivery = BROKER_SITES[key]
    title = SITE_TITLES[key]
    # an Apache Kafka node takes the bootstrap port and the next (its controller)
    port = free_ports(2 if broker == "kafka" else 1)
    site = BenchSite(home, layout, site_environment(home, f"127.0.0.1:{port}", embedded=True,
                                                    broker=broker, delivery=delivery))
    phases.tick(f"{title}: start")(0.0)
    site.start()
    try:
        site.wait_ready(tick=phases.tick(f"{title}: start"))
        phases.done(f"{title}: start")
        ready = site.broker_memory_mib()
        stored_at_ready = site.count()
        latency = None
        if delivery == "at_least_once":
            latency = measure_latency(site, files, latency_fps, d.latency_s, d.warmup_s,
                                      phases.tick(f"{title}: latency at 50 %"))
        full = measure_full_speed(site, files, d.full_speed_s, d.warmup_s,
                                  phases.tick(f"{title}: full speed"))
        end = site.broker_memory_mib()
        stored = site.count()
        transactions = site.saw_transactions() if delivery == "exactly_once" else None
    finally:
        site.stop()
    lat = percentiles_ms(latency.latencies_s) if latency and latency.latencies_s else {}
    rss_ready, rss_end, rss_peak = (None if ready is None else ready[0],
                                    None if end is None else end[0],
                                    None if end is None else end[1])
    run = BrokerRun(
        broker=broker, delivery=delivery, fps=round(full.fps, 2), frames=full.frames,
        cpu_s_per_1000=full.cpu_s_per_1000, startup_s=site.startup_s,
        feed_fps=None if latency is None else round(latency.feed_fps, 2),
        p50_ms=lat.get("p50_ms"), p99_ms=lat.get("p99_ms"),
        rss_mib={"ready": rss_ready, "end": rss_end, "peak": rss_peak},
        rss_mib_per_1000_frames=rss_growth_per_thousand(rss_ready, rss_end,
                                                        stored - stored_at_ready),
        frames_stored=stored, partitions=site.settings.topic_partitions,
        transactions=transactions, dead_lettered=full.dead_lettered,
        other_cores=full.other_cores)
    return SiteRun(run, latency, full, site.settings)


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
    sites = sites_for(options.broker)
    names = phase_names(sites)
    tmp = Path(tempfile.mkdtemp(prefix="framewire-bench-"))
    with Progress(TextColumn("{task.description:<32}"), BarColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as progress:
        phases = _Phases(progress, names)
        try:
            phases.tick("inputs")(0.0)
            if "kafka" in sites:  # before anything is measured: Java there, jars resolved
                from framewire.broker.cluster import java_binary, resolve_jars

                java_binary()
                resolve_jars()
            files = cached_frames(options.cache_dir, d.frames_per_camera)
            phases.done("inputs")

            bare_home = tmp / "bare"
            bare_env = site_environment(bare_home, "127.0.0.1:9", embedded=False)
            with environment(bare_env):
                from framewire.config import load_settings
                from framewire.store.db import open_database

                settings = load_settings()
                open_database(settings.resolved_database_url).close()  # tables, once
                bare = run_bare(files, workers, d.bare_s, phases.tick("bare loop"))
            phases.done("bare loop")

            measured = {key: measure_site(key, tmp / key, layout, files, 0.5 * bare.fps, d,
                                          phases) for key in sites}
            embedded = measured["embedded"]
            latency, full = embedded.latency, embedded.full
            assert latency is not None

            inference_ms = max(bare.steps_ms.get("inference", 30.0), 5.0)

            def frames_needed(n: int) -> int:
                fps = 1000.0 / inference_ms * min(n, cores)
                return int(fps * (d.warmup_s + d.scale_s + 25.0) * 1.2)

            points = measure_inference_scale(tmp / "scale", files, replicas, d.scale_s,
                                             d.warmup_s, frames_needed,
                                             phases.tick("scale-out: inference replicas"))
            phases.done("scale-out: inference replicas")

            plan = AnalyticsPlan.from_settings(embedded.settings, d.warmup_s, d.analytics_s)
            analytics = measure_analytics(tmp / "analytics", plan, phases.tick(ANALYTICS_PHASE))
            phases.done(ANALYTICS_PHASE)
        except BaseException:
            console.print(f"[red]benchmark stopped; homes and service logs kept in {tmp}[/]")
            raise
    shutil.rmtree(tmp, ignore_errors=True)

    lat = percentiles_ms(latency.latencies_s)
    s = embedded.settings
    pixel_format = s.preprocess.pixel_format
    notes = []
    windows = [bare.other_cores, *(m.full.other_cores for m in measured.values()),
               analytics.other_cores]
    busiest = max((v for v in windows if v is not None), default=0.0)
    if busiest > BUSY_CORES:
        notes.append(f"other processes kept up to {busiest:.2f} cores busy during the "
                     "measurements: the numbers are noisy (see 'other processes' above)")
    notes.append(f"the letterboxed frame travels as pixel_format={pixel_format} in the "
                 "pipeline; the bare loop hands it to the model in memory")
    for key, m in measured.items():
        if m.full.dead_lettered:
            notes.append(f"{m.full.dead_lettered} record(s) were dead-lettered on the {key} "
                         "site: see the service logs")
    if "kafka" in measured:
        notes.append(f"on Apache Kafka the data topics have {measured['kafka'].run.partitions} "
                     f"partitions (embedded: {embedded.run.partitions}), as framewire run "
                     "makes them; start-up is a first start (a new home: the node's storage "
                     "is formatted first); Kafka's RSS is bounded by its heap "
                     f"(kafka_heap_mb={measured['kafka'].settings.kafka_heap_mb}) and the "
                     "JVM's own memory, so its growth per 1,000 frames is the heap filling "
                     "up, not memory kept per frame as on the embedded broker")
    eos = measured.get("kafka_exactly_once")
    if eos is not None and eos.run.transactions is False:
        notes.append("delivery=exactly_once started no Kafka transaction (the cluster made no "
                     "__transaction_state): the runtime does not use the setting yet, so the "
                     "exactly_once site measured at_least_once again")
    joules = {"bare": None if bare.joules is None else per_thousand(bare.joules, bare.frames),
              "framewire": full.joules_per_1000}
    result = BenchResult(
        started_at=started_at, quick=options.quick, machine=machine,
        config={
            "workers": workers, "layout": layout, "scale_out_replicas": replicas,
            "broker": options.broker,
            "pixel_format": pixel_format, "partitions": s.topic_partitions,
            "batch": {"preprocess": [s.preprocess.batch_size, s.preprocess.batch_linger_ms],
                      "inference": [s.inference.batch_size, s.inference.batch_linger_ms],
                      "storage": [s.storage.batch_size, s.storage.batch_linger_ms]},
            "cameras": [f"{c.camera_id} {c.width}x{c.height}" for c in CAMERAS],
            "jpeg_quality": JPEG_QUALITY, "frames_per_camera": d.frames_per_camera,
            "max_lag_frames": BENCH_MAX_LAG_FRAMES,
            "durations_s": {"bare": d.bare_s, "latency": d.latency_s,
                            "full_speed": d.full_speed_s, "scale_out": d.scale_s,
                            "analytics": d.analytics_s, "warmup": d.warmup_s},
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
                     **{key: m.full.other_cores for key, m in measured.items()
                        if key != "embedded"},
                     **{f"inference x{p.replicas}": p.other_cores for p in points},
                     "analytics": analytics.other_cores},
        brokers={key: m.run for key, m in measured.items()},
        duration_s=round(time.monotonic() - begun, 1), notes=notes, analytics=analytics,
    )
    return result, [x * 1000 for x in latency.latencies_s]
