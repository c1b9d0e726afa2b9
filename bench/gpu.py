"""Framewire's inference on a GPU against raw ONNX Runtime batched throughput on the same card.

Run it with ``framewire bench --gpu`` (``make bench-gpu``) on a machine with onnxruntime-gpu.
Four measurements, each the frames/s of the default model on the same prepared frames:

1. **raw**: plain ONNX Runtime sessions (inputs made beforehand, ``run()``) at several batch
   sizes, on the model as exported (float32 NCHW blobs) and with Framewire's uint8 input;
   the best of all is the baseline.
2. **detector**: Framewire's ``Detector`` at the stage's batch size, with and without its
   accelerator features (uint8 pixels normalised in the model, IO binding), boxes decoded.
3. **stage**: the inference stage's ``process()`` in one process: JPEG records in, results
   out (decoding on threads, model, boxes mapped back to the frame).
4. **service**: inference replicas as the supervisor runs them, consuming a pre-filled
   ``frames.ready`` through the embedded broker; frames/s counted at ``detections``.

The headline is ``service / raw`` (target ≥ 0.8). Every phase writes its numbers to the JSON
file as soon as it ends, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import importlib.resources
import json
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.inputs import cached_frames
from bench.machine import machine_description
from bench.phases import preload_ready, prepared_frames
from bench.stack import BenchSite, environment, free_port, site_environment
from framewire.telemetry.energy import GpuEnergyMeter

RAW_BATCHES = (1, 8, 16, 32, 64)
TARGET = 0.8


def timed_rate(step: Callable[[], int], seconds: float, warmup: int = 3) -> float:
    """Frames/s of ``step`` (which returns the frames it handled), after a few warm-up calls."""
    for _ in range(warmup):
        step()
    frames, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        frames += step()
    return frames / (time.perf_counter() - started)


def letterboxed_images(records: list[Any]) -> list[np.ndarray]:
    """The letterboxed BGR pixels of prepared ``frames.ready`` records."""
    from framewire.pixels.encoding import decode_pixels

    return [decode_pixels(r.pixels, r.pixel_format, r.input_width, r.input_height)
            for r in records]


def cycle(items: list[Any], count: int) -> list[Any]:
    return [items[i % len(items)] for i in range(count)]


def measure_raw(model_name: str, providers: list[str], images: list[np.ndarray], seconds: float,
                batches: tuple[int, ...] = RAW_BATCHES) -> dict[str, Any]:
    """Plain sessions, inputs made beforehand, ``run()``: frames/s by batch size, for the model
    as exported (float32 NCHW blobs) and with Framewire's uint8 pixel input; the best of both
    is the baseline, so Framewire is not credited for the smaller input alone."""
    import cv2
    import onnxruntime as ort

    from framewire.models.manifest import load_manifest, model_file
    from framewire.services.inference.models import blob_params, pixel_input, prepare_model

    manifest = load_manifest(model_name)
    pixels = pixel_input(manifest)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    out: dict[str, Any] = {}
    for label, prefix in (("float32 blobs", None), ("uint8 pixels", pixels)):
        with importlib.resources.as_file(model_file(manifest)) as path:
            model = prepare_model(path, manifest.dynamic_input, prefix)
        session = ort.InferenceSession(model.SerializeToString(), sess_options=options,
                                       providers=providers)
        name = session.get_inputs()[0].name
        by_batch = {}
        for batch in batches:
            chunk = cycle(images, batch)
            feed = (np.stack(chunk) if prefix is not None
                    else cv2.dnn.blobFromImagesWithParams(chunk, blob_params(manifest)))

            def step(feed: np.ndarray = feed, batch: int = batch,
                     session: Any = session, name: str = name) -> int:
                session.run(None, {name: feed})
                return batch

            by_batch[str(batch)] = round(timed_rate(step, seconds), 1)
        out[label] = by_batch
        out["provider"] = session.get_providers()[0]
    label, batch = max(((lb, b) for lb in ("float32 blobs", "uint8 pixels") for b in out[lb]),
                       key=lambda key: out[key[0]][key[1]])
    out |= {"best_input": label, "best_batch": int(batch), "best_fps": out[label][batch]}
    return out


def measure_detector(model_name: str, providers: list[str], images: list[np.ndarray],
                     batch: int, seconds: float) -> dict[str, Any]:
    """Framewire's Detector at ``batch`` frames, each accelerator feature on and off."""
    from framewire.models.manifest import load_manifest
    from framewire.services.inference.models import Detector

    manifest = load_manifest(model_name)
    chunk = cycle(images, batch)
    variants = {
        "framewire (uint8 in model, run(), padded sizes)": {},
        "uint8 in model, IO binding": {"io_binding": True},
        "float blobs, run()": {"device_preprocess": False},
        "float blobs, IO binding": {"device_preprocess": False, "io_binding": True},
    }
    out: dict[str, Any] = {}
    for label, overrides in variants.items():
        detector = Detector(manifest, providers, max_batch=batch, **overrides)

        def step(detector: Detector = detector) -> int:
            detector.detect(chunk)
            return batch

        out[label] = round(timed_rate(step, seconds), 1)
        out["provider"] = detector.provider
    return out


def measure_stage(records: list[Any], batch: int, seconds: float,
                  decode_threads: tuple[int, ...] = (1, 0)) -> dict[str, Any]:
    """The inference stage's process() on JPEG records, in this process."""
    from framewire.config import load_settings
    from framewire.services.inference.stage import InferenceStage

    chunk = cycle(records, batch)
    out: dict[str, Any] = {}
    for threads in decode_threads:
        settings = load_settings()
        settings.inference.batch_size = batch
        settings.inference.decode_threads = threads
        stage = InferenceStage(settings)
        try:
            def step(stage: InferenceStage = stage) -> int:
                stage.process(chunk)
                return batch

            label = f"decode threads {threads or 'auto'}"
            out[label] = round(timed_rate(step, seconds), 1)
        finally:
            stage.close()
    return out


def measure_service(home: Path, files: dict[str, list[Path]], replicas: list[int], batch: int,
                    seconds: float, warmup_s: float, expected_fps: float,
                    log: Callable[[str], None]) -> dict[str, Any]:
    """Inference replicas through the embedded broker, ``frames.ready`` pre-filled."""
    from framewire.broker.reading import read_topic

    out: dict[str, Any] = {}
    prepared: list[Any] = []
    for n in replicas:
        site_home = home / f"gpu-inference-{n}"
        env = site_environment(site_home, f"127.0.0.1:{free_port()}", embedded=True)
        env["FRAMEWIRE_INFERENCE__BATCH_SIZE"] = str(batch)
        site = BenchSite(site_home, {"inference": n}, env)
        # enough frames that the replicas never run dry in the window, whatever their speed
        needed = int(min(80_000, max(4_000, expected_fps * 3 * (seconds + warmup_s + 10))))
        site.start()
        try:
            with environment(env):
                prepared = prepared or prepared_frames(files, site.settings)
                started = time.monotonic()
                preload_ready(site.settings, prepared, needed)
                log(f"  {n} replica(s): {needed} frames pre-filled in "
                    f"{time.monotonic() - started:.1f} s")
                site.wait_ready(timeout_s=180)
                time.sleep(warmup_s)
                energy = GpuEnergyMeter()
                t0, j0 = time.time(), energy.read()
                site.watch(time.monotonic(), time.monotonic() + seconds)
                t1, j1 = time.time(), energy.read()
                # Count by the records' produce times: Tansu's end offsets run low (it reports
                # the last batch's base offset + 1, see docs/architecture.md).
                produced = [msg.timestamp()[1] / 1000 for msg in read_topic(
                    site.settings, site.settings.topic("detections"), timeout_s=120)]
            frames = sum(1 for at in produced if t0 <= at < t1)
            fps = frames / (t1 - t0)
            joules = None if j0 is None or j1 is None or not frames else (j1 - j0) / frames * 1000
            # the backlog ran out inside the window when the last detection came before its end
            out[str(n)] = {"fps": round(fps, 1), "frames": frames, "prefilled": needed,
                           "ran_dry": max(produced, default=0.0) < t1 - 1.0,
                           "gpu_joules_per_1000": None if joules is None else round(joules, 1)}
            log(f"  {n} replica(s): {fps:.1f} frames/s")
        except Exception as exc:
            # the site's home (and its logs) goes with the run's temporary folder: keep the ends
            tails = "\n".join(f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace")
                                                             .splitlines()[-15:])
                              for path in sorted((site_home / "logs").glob("*.log")))
            raise RuntimeError(f"{exc}\n{tails}") from exc
        finally:
            site.stop()
    return out


def run_gpu_benchmark(repo: Path, results_dir: Path, *, seconds: float, batch: int,
                      replicas: list[int], log: Callable[[str], None]) -> dict[str, Any]:
    """Every phase in order; the JSON under ``results_dir`` is rewritten after each one."""
    import tempfile

    from framewire.config import load_settings
    from framewire.services.inference.models import choose_providers

    # FRAMEWIRE_INFERENCE__PROVIDERS and __MODEL pick them, for this process and the services
    settings = load_settings()
    providers, model = choose_providers(settings.inference.providers), settings.inference.model
    started = datetime.now(UTC)
    result: dict[str, Any] = {"started_at": started.isoformat(timespec="seconds"),
                              "machine": machine_description(repo), "providers": providers,
                              "batch": batch, "seconds": seconds, "errors": {}}
    results_dir.mkdir(parents=True, exist_ok=True)
    saved = results_dir / f"gpu-{started.strftime('%Y%m%dT%H%M%S')}.json"

    def save() -> None:
        raw, service = result.get("raw", {}), result.get("service", {})
        fps = [v["fps"] for v in service.values() if isinstance(v, dict)]
        if raw.get("best_fps") and fps:
            result["service_over_raw"] = round(max(fps) / raw["best_fps"], 3)
            result["pass"] = result["service_over_raw"] >= TARGET
        saved.write_text(json.dumps(result, indent=2) + "\n")

    with tempfile.TemporaryDirectory(prefix="framewire-gpu-bench-") as tmp:
        home = Path(tmp)
        with environment({"FRAMEWIRE_HOME": str(home / "inproc")}):
            files = cached_frames(repo / "bench" / ".cache", 4)
            records = prepared_frames(files, load_settings(), per_camera=4)
            images = letterboxed_images(records)
            phases: list[tuple[str, Callable[[], Any]]] = [
                ("raw", lambda: measure_raw(model, providers, images, seconds)),
                ("detector", lambda: measure_detector(model, providers, images, batch, seconds)),
                ("stage", lambda: measure_stage(records, batch, seconds)),
            ]
            for name, phase in phases:
                log(f"{name}...")
                try:
                    result[name] = phase()
                    log(f"  {result[name]}")
                except Exception:  # keep measuring: one broken phase must not lose the rest
                    result["errors"][name] = traceback.format_exc()
                    log(result["errors"][name])
                save()
        expected = max([*result.get("stage", {}).values(), 100.0])
        log("service...")
        try:
            result["service"] = measure_service(home, files, replicas, batch, seconds,
                                                warmup_s=5.0, expected_fps=expected, log=log)
        except Exception:
            result["errors"]["service"] = traceback.format_exc()
            log(result["errors"]["service"])
        save()
    result["results_file"] = str(saved)
    return result
