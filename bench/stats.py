"""The benchmark's arithmetic and its result: rates, percentiles, ratios, targets, JSON."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

# The targets (informational pass/fail lines, never timed tests).
THROUGHPUT_TARGET = 0.95  # Framewire frames/s over the bare loop's, full speed
LATENCY_TARGET = 3.0  # p99 at 50 % load over the bare loop's per-frame time
SCALE_OUT_TARGET = 1.8  # two inference replicas over one, inference-bound
NAIVE_REFERENCE = 0.84  # the same stages written naively with Quix Streams, on this machine
RESULT_VERSION = 2  # 2: "brokers" and "broker_comparison"
# the sites of ``--broker kafka``: key -> (broker, delivery); ``embedded`` is measured always
BROKER_SITES = {"embedded": ("embedded", "at_least_once"), "kafka": ("kafka", "at_least_once"),
                "kafka_exactly_once": ("kafka", "exactly_once")}


def rate_between(stamps: Sequence[float], start: float, end: float) -> tuple[float, int] | None:
    """Frames/s from completion times (seconds) inside [start, end], and the frames counted.

    Completions come in batches that share a time, so the rate is measured between the
    first and the last distinct time inside the window, counting the frames after the first:
    no partial batch at either edge. None with fewer than two distinct times.
    """
    inside = np.sort(np.asarray([s for s in stamps if start <= s <= end], dtype=np.float64))
    if inside.size == 0:
        return None
    first, last = float(inside[0]), float(inside[-1])
    if last <= first:
        return None
    frames = int(np.count_nonzero(inside > first))
    return frames / (last - first), frames


def percentiles_ms(latencies_s: ArrayLike,
                   qs: Sequence[float] = (50, 95, 99)) -> dict[str, float]:
    """``{"p50_ms": ..., "p95_ms": ..., "p99_ms": ...}`` of latencies given in seconds."""
    seconds = np.asarray(latencies_s, dtype=np.float64)
    if seconds.size == 0:
        raise ValueError("no latencies: no frame was stored during the latency phase")
    values = np.percentile(seconds * 1000.0, list(qs))
    return {f"p{q:g}_ms": round(float(v), 2) for q, v in zip(qs, values, strict=True)}


def hop_percentiles_ms(timelines: Sequence[Sequence[float]], names: Sequence[str],
                       qs: Sequence[float] = (50, 99)) -> dict[str, dict[str, float]]:
    """Percentiles of the time between consecutive timestamps of each frame's timeline.

    ``names`` label the timestamps (captured_at, ingested_at...); a hop is named after the
    timestamp it ends at, so "preprocessed_at" is the wait and work before preprocessing ended.
    """
    if not timelines:
        return {}
    times = np.asarray(timelines, dtype=np.float64)
    return {names[i]: percentiles_ms(times[:, i] - times[:, i - 1], qs)
            for i in range(1, len(names))}


def per_thousand(amount: float, frames: int) -> float | None:
    """``amount`` (CPU-seconds, joules) per 1,000 frames; None when no frame was counted."""
    return None if frames <= 0 else round(amount * 1000.0 / frames, 3)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, None when either is missing or the denominator is not > 0."""
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return round(numerator / denominator, 3)


@dataclass
class Target:
    """One of the issue's targets: what was measured, the limit, and whether it was met."""

    name: str
    value: float | None
    limit: float
    at_least: bool  # True: value must be >= limit; False: value must be <= limit

    @property
    def passed(self) -> bool | None:
        if self.value is None:
            return None
        return self.value >= self.limit if self.at_least else self.value <= self.limit

    def line(self) -> str:
        """``PASS throughput framewire/bare 0.97 >= 0.95`` (or FAIL, or n/a)."""
        verdict = {True: "PASS", False: "FAIL", None: "n/a "}[self.passed]
        sign = ">=" if self.at_least else "<="
        shown = "not measured" if self.value is None else f"{self.value:.2f}"
        return f"{verdict} {self.name}: {shown} (target {sign} {self.limit:g})"


@dataclass
class Latency:
    """End-to-end latency (stored_at - captured_at) while fed at ``feed_fps``."""

    feed_fps: float
    frames: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    hops_ms: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class ScalePoint:
    """Frames/s with ``replicas`` inference processes, inference-bound."""

    replicas: int
    fps: float
    cpu_s_per_1000: dict[str, float | None] = field(default_factory=dict)
    other_cores: float | None = None


@dataclass
class BrokerRun:
    """One Framewire site on one broker (``BROKER_SITES``): start-up, latency at the usual
    load, full speed, and what the broker's own processes cost.

    ``cpu_s_per_1000`` is CPU-seconds per 1,000 stored frames (= CPU-ms per frame) of each
    service, ``broker`` (Tansu, or Apache Kafka's java processes) and ``total``.
    ``rss_mib`` is the broker's resident memory after the services joined (``ready``), at
    the end of the full-speed window (``end``) and its peak (``peak``, VmHWM);
    ``rss_mib_per_1000_frames`` = (end - ready) / frames stored meanwhile × 1,000: what the
    broker keeps in memory per frame it carried (Tansu keeps every record in memory;
    Apache Kafka writes its log to disk, outside its heap).
    """

    broker: str
    delivery: str
    fps: float  # full speed, at storage
    frames: int  # stored in the full-speed window
    cpu_s_per_1000: dict[str, float | None]
    startup_s: float | None = None  # broker process start -> metadata with every topic made
    feed_fps: float | None = None  # the latency phase; None when it did not run
    p50_ms: float | None = None
    p99_ms: float | None = None
    rss_mib: dict[str, float | None] = field(default_factory=dict)
    rss_mib_per_1000_frames: float | None = None
    frames_stored: int = 0  # since the site started, at the end of the full-speed window
    partitions: int | None = None
    transactions: bool | None = None  # exactly_once: the cluster made its transaction log
    dead_lettered: int = 0
    other_cores: float | None = None

    @property
    def broker_cpu_ms(self) -> float | None:
        """The broker's CPU-ms per frame."""
        return self.cpu_s_per_1000.get("broker")

    @property
    def cpu_ms(self) -> float | None:
        """Framewire's CPU-ms per frame, every service and the broker."""
        return self.cpu_s_per_1000.get("total")


@dataclass
class AnalyticsRun:
    """The analytics service at the demo rate: ``cameras`` cameras at ``fps_per_camera``,
    each with a line and a zone, fed synthetic ``detections`` records (``bench.analytics``).

    ``lag_ms``: p50/p95/p99 of an event's arrival on ``events`` less its frame's
    ``captured_at`` (= when its record was published), over the ``lag_events`` events stamped
    with the frame that made them, and ``emitted_ms`` the same to each event's ``emitted_at``
    (the worker's fetch and work; the rest is its send and the reader's fetch);
    ``group_lag_*``: the analytics group's uncommitted ``detections`` records (the largest
    sample in the window, the first after the feed ended), ``drain_s`` the time from the
    feed's end to a lag of 0. ``cpu_s_per_1000``: the worker process's CPU-seconds per 1,000
    records it processed from the window's start to that 0 (the window's records and those
    still uncommitted when it began; the broker's beside it); ``bare_cpu_s_per_1000``: the
    window's records through ``CameraWork.handle`` in one thread, no Kafka, the median of 3
    runs; ``cpu_ratio`` = service / bare.
    """

    cameras: int
    fps_per_camera: float
    size: str
    records: int  # detections records in the window
    boxes_per_record: float
    events: dict[str, int]  # events of frames in the window that arrived, by type
    lag_events: int
    lag_ms: dict[str, float]
    emitted_ms: dict[str, float]  # the same to the event's emitted_at: the worker's part
    group_lag_max: int | None
    group_lag_end: int | None
    drain_s: float | None
    cpu_s_per_1000: float | None
    broker_cpu_s_per_1000: float | None
    bare_cpu_s_per_1000: float | None
    cpu_ratio: float | None
    bare_events: int = 0  # events the bare loop made from the same records (warm-up too)
    other_cores: float | None = None


def rss_growth_per_thousand(ready_mib: float | None, end_mib: float | None,
                            frames: int) -> float | None:
    """MiB of resident memory the broker gained per 1,000 frames (may be negative: a Java
    heap collected; None when not measured)."""
    if ready_mib is None or end_mib is None:
        return None
    return per_thousand(end_mib - ready_mib, frames)


def _compare(measure: str, embedded: float | None, kafka: float | None) -> dict[str, Any]:
    return {"measure": measure, "embedded": embedded, "kafka": kafka,
            "kafka_over_embedded": ratio(kafka, embedded)}


def broker_comparison(runs: dict[str, BrokerRun]) -> dict[str, Any]:
    """The embedded broker against Apache Kafka, and exactly_once against at_least_once.

    Always the same keys; a value is None when its site was not measured (``framewire
    bench`` without ``--broker kafka`` measures the embedded site only).
    """
    emb, kafka, eos = runs.get("embedded"), runs.get("kafka"), runs.get("kafka_exactly_once")

    def pick(run: BrokerRun | None, value: Any) -> Any:
        return None if run is None else value(run)

    def row(measure: str, value: Any) -> dict[str, Any]:
        return _compare(measure, pick(emb, value), pick(kafka, value))

    return {
        "fps": row("full speed, frames/s", lambda r: r.fps),
        "p99_ms": row("p99 at 50 % load, ms", lambda r: r.p99_ms),
        "broker_cpu_ms_per_frame": row("broker CPU-ms per frame", lambda r: r.broker_cpu_ms),
        "cpu_ms_per_frame": row("Framewire CPU-ms per frame (all)", lambda r: r.cpu_ms),
        "broker_rss_mib_peak": row("broker RSS peak, MiB", lambda r: r.rss_mib.get("peak")),
        "broker_rss_mib_per_1000_frames": row("broker RSS growth, MiB per 1,000 frames",
                                              lambda r: r.rss_mib_per_1000_frames),
        "startup_s": row("start-up, s", lambda r: r.startup_s),
        "exactly_once": {
            "fps": pick(eos, lambda r: r.fps),
            "cpu_ms_per_frame": pick(eos, lambda r: r.cpu_ms),
            "broker_cpu_ms_per_frame": pick(eos, lambda r: r.broker_cpu_ms),
            "fps_ratio": ratio(pick(eos, lambda r: r.fps), pick(kafka, lambda r: r.fps)),
            "cpu_ratio": ratio(pick(eos, lambda r: r.cpu_ms), pick(kafka, lambda r: r.cpu_ms)),
            "transactions": pick(eos, lambda r: r.transactions),
        },
    }


@dataclass
class BenchResult:
    """Everything one ``framewire bench`` measured."""

    started_at: str
    quick: bool
    machine: dict[str, Any]
    config: dict[str, Any]
    bare_fps: float
    bare_frame_ms: float
    bare_cpu_s_per_1000: float | None
    bare_steps_ms: dict[str, float]
    framewire_fps: float
    latency: Latency
    scale_out: list[ScalePoint]
    cpu_s_per_1000: dict[str, float | None]
    bytes_per_frame: dict[str, float]
    joules_per_1000: dict[str, float | None]
    energy_note: str
    load_average: dict[str, list[float]]
    # cores kept busy by processes outside the benchmark during each measured window
    other_cores: dict[str, float | None] = field(default_factory=dict)
    # BROKER_SITES measured: "embedded" always, "kafka" and "kafka_exactly_once" with
    # --broker kafka
    brokers: dict[str, BrokerRun] = field(default_factory=dict)
    duration_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    analytics: AnalyticsRun | None = None  # the analytics phase (bench.analytics)

    @property
    def throughput_ratio(self) -> float | None:
        return ratio(self.framewire_fps, self.bare_fps)

    @property
    def cpu_ratio(self) -> float | None:
        """Bare CPU-seconds per frame over Framewire's (all services and the broker).

        What framewire/bare frames/s would be on a CPU-bound machine with nothing else
        running; far less disturbed by other processes than the frames/s themselves.
        """
        return ratio(self.bare_cpu_s_per_1000, self.cpu_s_per_1000.get("total"))

    @property
    def p99_over_bare(self) -> float | None:
        return ratio(self.latency.p99_ms, self.bare_frame_ms)

    @property
    def latency_load(self) -> float | None:
        """The latency phase's feed as a fraction of Framewire's own full speed."""
        return ratio(self.latency.feed_fps, self.framewire_fps)

    @property
    def scale_out_ratio(self) -> float | None:
        """Frames/s with two inference replicas over one (None when not both measured)."""
        by = {p.replicas: p.fps for p in self.scale_out}
        return ratio(by.get(2), by.get(1))

    def targets(self) -> list[Target]:
        return [
            Target("throughput framewire/bare", self.throughput_ratio, THROUGHPUT_TARGET, True),
            Target("ahead of naive Quix Streams (framewire/bare)", self.throughput_ratio,
                   NAIVE_REFERENCE, True),
            Target("p99 latency at 50% load / bare per-frame time", self.p99_over_bare,
                   LATENCY_TARGET, False),
            Target("scale-out 2 vs 1 inference replicas", self.scale_out_ratio,
                   SCALE_OUT_TARGET, True),
        ]

    def to_json(self) -> dict[str, Any]:
        """The result as one JSON object; the headline keys first."""
        data = asdict(self)
        head = {
            "version": RESULT_VERSION,
            "bare_fps": round(self.bare_fps, 2),
            "framewire_fps": round(self.framewire_fps, 2),
            "throughput_ratio": self.throughput_ratio,
            "cpu_ratio": self.cpu_ratio,
            "p50_ms": self.latency.p50_ms,
            "p95_ms": self.latency.p95_ms,
            "p99_ms": self.latency.p99_ms,
            "bare_frame_ms": round(self.bare_frame_ms, 2),
            "p99_over_bare": self.p99_over_bare,
            "scale_out_ratio": self.scale_out_ratio,
            "latency_load": self.latency_load,
            "machine": data.pop("machine"),
            "targets": [{"name": t.name, "value": t.value, "limit": t.limit,
                         "at_least": t.at_least, "passed": t.passed} for t in self.targets()],
            "broker_comparison": broker_comparison(self.brokers),
        }
        for key in ("bare_fps", "framewire_fps", "bare_frame_ms"):
            data.pop(key)
        return {**head, **data}
