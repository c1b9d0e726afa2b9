"""Prometheus metrics of a service process, served on ``/metrics``.

Names are stable: the Grafana dashboard and ``framewire status`` depend on them. Process CPU
and memory (``process_cpu_seconds_total``, ``process_resident_memory_bytes``) come from
prometheus-client's default collectors.
"""

from __future__ import annotations

import collections
import functools
import logging
from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram, Info, start_http_server

log = logging.getLogger(__name__)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


@dataclass(frozen=True)
class ServiceMetrics:
    records_in: Counter
    records_out: Counter
    dead_lettered: Counter
    dropped: Gauge
    batch_size: Histogram
    batch_seconds: Histogram
    end_to_end_seconds: Histogram
    consumer_lag: Gauge
    camera_frames: Counter
    broker_up: Gauge
    cpu_per_1000: Gauge
    host_watts: Gauge
    gpu_watts: Gauge
    swept: Counter
    model: Info


@functools.cache
def service_metrics() -> ServiceMetrics:
    """The process's metrics (registered once per process)."""
    return ServiceMetrics(
        records_in=Counter("framewire_records_in", "Records received", ["service"]),
        records_out=Counter("framewire_records_out", "Records produced or stored", ["service"]),
        dead_lettered=Counter("framewire_dead_lettered", "Records dead-lettered",
                              ["service", "reason"]),
        dropped=Gauge("framewire_frames_dropped", "Frames dropped by back-pressure or fps cap",
                      ["service"]),
        batch_size=Histogram("framewire_batch_size", "Records per micro-batch", ["service"],
                             buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512)),
        batch_seconds=Histogram("framewire_stage_seconds", "Time to process one micro-batch",
                                ["service"], buckets=_LATENCY_BUCKETS),
        end_to_end_seconds=Histogram("framewire_end_to_end_seconds",
                                     "Captured to stored, per frame", buckets=_LATENCY_BUCKETS),
        consumer_lag=Gauge("framewire_consumer_lag", "Records not yet committed by the group",
                           ["service", "partition"]),
        camera_frames=Counter("framewire_camera_frames", "Frames captured per camera",
                              ["camera"]),
        broker_up=Gauge("framewire_broker_up", "1 while the broker answers", ["service"]),
        cpu_per_1000=Gauge("framewire_cpu_seconds_per_1000_frames",
                           "Process CPU-seconds per 1,000 records put out, over the last minute",
                           ["service"]),
        host_watts=Gauge("framewire_host_power_watts",
                         "Power of this host's CPU packages (RAPL) over the last minute; joules "
                         "per 1,000 frames = watts / frames per second * 1,000", ["service"]),
        gpu_watts=Gauge("framewire_gpu_power_watts",
                        "Power of the GPU this process runs its model on (NVML) over the last "
                        "minute", ["service"]),
        swept=Counter("framewire_swept", "What the retention sweeper deleted, by kind (results, "
                      "detections, cameras, spans, blobs)", ["kind"]),
        model=Info("framewire_model", "Model and ONNX Runtime provider in use"),
    )


def start_metrics_server(port: int | None, host: str = "127.0.0.1") -> int | None:
    """Serve /metrics on ``host``:``port`` (0 = any free port); returns the port, None when
    off."""
    if port is None:
        return None
    server, _thread = start_http_server(port, addr=host)
    bound = int(server.server_address[1])
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    log.info("metrics served", extra={"url": f"http://{shown}:{bound}/metrics",
                                      "listening_on": host})
    return bound


@dataclass(frozen=True)
class RecentCost:
    """What a process's recent records cost: CPU, rate, power of its host and GPU."""

    cpu_s_per_1000_frames: float | None = None
    out_per_s: float | None = None
    host_watts: float | None = None  # RAPL: the whole host's CPU packages
    gpu_watts: float | None = None  # NVML: the GPU this process runs its model on


class CostWindow:
    """Differences of cumulative readings over a sliding window of recent samples.

    The cost figures of ``framewire status`` and ``framewire_cpu_seconds_per_1000_frames``:
    the same measures as ``make bench``'s, for one live process. Start-up (model loading)
    falls out of the window after ``window_s``.
    """

    def __init__(self, window_s: float = 60.0) -> None:
        self.window_s = window_s
        self._samples: collections.deque[tuple[float, float, int, float | None, float | None]] = (
            collections.deque())

    def sample(self, now_s: float, cpu_s: float, records_out: int,
               host_j: float | None = None, gpu_j: float | None = None) -> RecentCost:
        """Add a sample; the costs over the window (None where not measurable yet)."""
        self._samples.append((now_s, cpu_s, records_out, host_j, gpu_j))
        while len(self._samples) > 2 and now_s - self._samples[1][0] >= self.window_s:
            self._samples.popleft()
        t0, cpu0, out0, host0, gpu0 = self._samples[0]
        seconds, frames = now_s - t0, records_out - out0

        def watts(start: float | None, end: float | None) -> float | None:
            return None if start is None or end is None or seconds <= 0 else (end - start) / seconds

        return RecentCost(
            cpu_s_per_1000_frames=(cpu_s - cpu0) * 1000.0 / frames if frames > 0 else None,
            out_per_s=frames / seconds if seconds > 0 else None,
            host_watts=watts(host0, host_j), gpu_watts=watts(gpu0, gpu_j))
