"""The bare loop: the practical limit of this machine for Framewire's work.

One single-threaded worker process per core (ONNX Runtime intra-op threads = 1, OpenCV
threads = 1), each taking its share of the cached frames in turn: the preprocess stage's
``examine`` (decode, letterbox, quality, frozen check), the inference stage's ``infer`` on the
letterboxed image as it is in memory (model, boxes back in frame pixels) one frame at a time,
and the storage stage's ``process`` (the same rows in the same kind of database) in batches of
``storage.batch_size``. The stages' own code, with no broker, no Avro, no runtime loop and no
encoding of the letterboxed frame for the wire in between.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.inputs import read_frames
from bench.machine import EnergyMeter, other_cores, system_busy_seconds


@dataclass
class WorkerReport:
    """What one bare worker did inside the measured window."""

    frames: int
    started: float  # time.monotonic() (system-wide clock, comparable across processes)
    ended: float
    cpu_s: float
    steps_s: dict[str, float] = field(default_factory=dict)


@dataclass
class BareResult:
    """The bare loop's frames/s over all workers, per-frame time and CPU cost."""

    workers: int
    frames: int
    wall_s: float
    fps: float
    frame_ms: float  # one worker's wall time per frame (what a frame costs end to end)
    cpu_s: float
    steps_ms: dict[str, float]
    joules: float | None
    other_cores: float | None = None  # cores busy with other processes meanwhile (noise)


def _worker(index: int, workers: int, files: dict[str, list[Path]], duration_s: float,
            ready: Any, go: Any, out: Any) -> None:
    """One bare worker process: warm up, wait for the start signal, loop for ``duration_s``."""
    import cv2

    from framewire.procutil import keep_freed_memory

    cv2.setNumThreads(1)
    keep_freed_memory()  # as every service does at start
    from framewire.capture.ingestor import FrameIngestor
    from framewire.capture.sources import CapturedImage
    from framewire.config import load_settings
    from framewire.contracts import InferenceResult, utcnow
    from framewire.services.inference.stage import InferenceStage
    from framewire.services.preprocess.stage import PreprocessStage
    from framewire.services.storage.stage import StorageStage
    from framewire.store.blobs import BlobStore

    settings = load_settings()
    settings.inference.intra_op_threads = 1
    frames = read_frames(files)
    cameras = sorted(frames)
    ingestor = FrameIngestor(BlobStore.from_settings(settings), settings.max_upload_bytes,
                             settings.max_inline_bytes)
    preprocess, inference = PreprocessStage(settings), InferenceStage(settings)
    storage = StorageStage(settings)
    steps = {"capture": 0.0, "preprocess": 0.0, "inference": 0.0, "storage": 0.0}
    pending: list[InferenceResult] = []
    clock = time.perf_counter

    def one(n: int) -> None:
        camera = cameras[n % len(cameras)]
        own = frames[camera]
        data = own[(n // len(cameras)) % len(own)]
        t0 = clock()
        captured = ingestor.capture(camera, CapturedImage(data, utcnow(), "bench"))
        t1 = clock()
        seen = preprocess.examine(captured)
        ready_frame = preprocess.describe(captured, seen, "bgr8", None, None, None)
        t2 = clock()
        (result,) = inference.infer([ready_frame], [seen.boxed])
        t3 = clock()
        if not isinstance(result, InferenceResult):
            raise RuntimeError(f"the bare loop's inference failed on a frame: {result!r}")
        pending.append(result)
        if len(pending) >= settings.storage.batch_size:
            storage.process(pending)
            pending.clear()
        t4 = clock()
        for name, took in zip(steps, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            steps[name] += took

    # warm-up (model, caches, database file) outside the window; frame ids differ anyway
    for n in range(index, index + 2 * workers, workers):
        one(n)
    storage.process(pending)
    pending.clear()
    steps = dict.fromkeys(steps, 0.0)
    ready.release()
    go.wait()
    started, cpu0 = time.monotonic(), time.process_time()
    deadline = started + duration_s
    n, count = index, 0
    while time.monotonic() < deadline:
        one(n)
        n += workers
        count += 1
    t = clock()
    storage.process(pending)
    steps["storage"] += clock() - t
    ended, cpu = time.monotonic(), time.process_time() - cpu0
    storage.close()
    out.put(WorkerReport(count, started, ended, cpu, steps))


def run_bare(files: dict[str, list[Path]], workers: int, duration_s: float,
             tick: Any = None) -> BareResult:
    """Run ``workers`` bare workers for ``duration_s`` seconds; frames/s over all of them."""
    ctx = mp.get_context("spawn")
    ready, go, out = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(i, workers, files, duration_s, ready, go, out),
                         name=f"bare-{i}", daemon=True) for i in range(workers)]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            while not ready.acquire(timeout=1.0):
                if not all(p.is_alive() for p in procs):
                    raise RuntimeError("a bare-loop worker died while starting; its error is "
                                       "printed above")
        meter = EnergyMeter()
        energy0, busy0 = meter.read_joules(), system_busy_seconds()
        go.set()
        started = time.monotonic()
        while time.monotonic() - started < duration_s:
            if tick is not None:
                tick(min(1.0, (time.monotonic() - started) / duration_s))
            time.sleep(0.25)
        reports = [out.get(timeout=duration_s + 120) for _ in procs]
        joules = meter.joules_between(energy0, meter.read_joules())
        busy1, waited = system_busy_seconds(), time.monotonic() - started
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
    frames = sum(r.frames for r in reports)
    wall = max(r.ended for r in reports) - min(r.started for r in reports)
    frame_ms = sum((r.ended - r.started) * 1000 / max(r.frames, 1) for r in reports) / len(reports)
    steps_ms = {name: round(sum(r.steps_s[name] for r in reports) * 1000 / max(frames, 1), 2)
                for name in reports[0].steps_s}
    cpu = sum(r.cpu_s for r in reports)
    # the workers' CPU was counted over their window; the machine's over the parent's wait
    return BareResult(workers, frames, wall, frames / wall, frame_ms, cpu, steps_ms, joules,
                      other_cores(busy0, busy1, cpu, waited))
