"""Inference: run the model on micro-batches of letterboxed frames, boxes back in frame pixels."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
from opentelemetry import trace

from framewire.config import Settings
from framewire.contracts import Detection, FramePreprocessed, InferenceResult, utcnow
from framewire.errors import DataError
from framewire.models.control import ModelWatch
from framewire.models.manifest import ModelManifest, check_licence, load_manifest
from framewire.pixels.encoding import decode_pixels
from framewire.pixels.letterbox import Letterbox, content, letterbox, unletterbox_boxes
from framewire.procutil import usable_cores
from framewire.runtime import Stage
from framewire.runtime.heartbeat import Counters
from framewire.runtime.loop import Outcome
from framewire.services.inference import STAGE
from framewire.services.inference.accel import CPU_PROVIDER
from framewire.services.inference.frames import FrameKeeper, KeptFrame
from framewire.services.inference.models import Detector, choose_providers
from framewire.store.blobs import BlobStore, resolve_payload
from framewire.telemetry.metrics import service_metrics

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)


class InferenceStage(Stage):
    """frames.ready (FramePreprocessed) → detections (InferenceResult)."""

    spec = STAGE

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        cfg = settings.inference
        self.blobs = BlobStore.from_settings(settings)
        self.model = self._load(cfg.model)
        # On a GPU the model takes a fraction of a frame's CPU time, so decoding the JPEGs
        # becomes the stage's work: spread it over threads (cv2 releases the GIL).
        threads = cfg.decode_threads or (
            1 if self.detector.provider == CPU_PROVIDER else min(4, usable_cores()))
        self._decoders = ThreadPoolExecutor(threads, "decode") if threads > 1 else None
        self.counters = Counters()
        self._watch: ModelWatch | None = None
        self._report_model()

    @property
    def manifest(self) -> ModelManifest:
        return self.model.manifest

    @property
    def detector(self) -> Detector:
        return self.model.detector

    def _load(self, name_or_path: str) -> LoadedModel:
        """A model ready to run: manifest, licence, ONNX session, frame keeper; ConfigError
        (or the runtime's error) when it cannot be."""
        cfg, settings = self.settings.inference, self.settings
        manifest = load_manifest(name_or_path)
        check_licence(manifest, settings.accept_agpl_models)
        detector = Detector(manifest, choose_providers(cfg.providers), cfg.intra_op_threads,
                            cfg.model_batch, max_batch=cfg.batch_size,
                            device_preprocess=cfg.device_preprocess,
                            cache_dir=settings.home / "tensorrt-cache")
        return LoadedModel(name_or_path, manifest, detector,
                           FrameKeeper(settings, manifest, self.blobs))

    def attach(self, counters: Counters) -> None:
        """Report the model in heartbeats, run the one the control topic asks for, and
        follow it: a switch loads in the watch's thread beside the running model."""
        self.counters = counters
        self._report_model()
        self._watch = ModelWatch(self.settings, self.name, self._switch_to)
        wanted = self._watch.start()
        if wanted != self.model.requested:
            self._switch_to(wanted)
        self._watch.follow()

    def _switch_to(self, name_or_path: str) -> None:
        """Run ``name_or_path`` from the next micro-batch on (the batch in hand finishes
        with the model it began with); a model that fails to load is refused: the one
        running stays, and the heartbeat says why."""
        try:
            loaded = self._load(name_or_path)
        except Exception as exc:  # any failure to load (ONNX, file, licence) refuses it
            log.error("model switch refused: the running model stays", extra={
                "model": name_or_path, "running": self.manifest.name, "error": str(exc)})
            self.counters.set_fault("model_switch", (
                f"model {name_or_path!r} could not be loaded ({exc}); still running "
                f"{self.manifest.name} {self.manifest.version}. Fix the manifest or its "
                "file and switch again (`framewire model switch`)"))
            return
        old, self.model = self.manifest, loaded  # one assignment: a batch reads it once
        self._report_model()
        self.counters.set_fault("model_switch", None)
        log.info("model switched", extra={
            "model": loaded.manifest.name, "model_version": loaded.manifest.version,
            "from": f"{old.name} {old.version}"})

    def _report_model(self) -> None:
        m = self.manifest
        self.counters.model_name, self.counters.model_version = m.name, m.version
        service_metrics().model.info({"model": m.name, "version": m.version,
                                      "provider": self.detector.provider})

    def _pixels(self, model: LoadedModel, frame: FramePreprocessed
                ) -> tuple[FramePreprocessed, np.ndarray]:
        m = model.manifest
        data = resolve_payload(frame.pixels, frame.pixels_uri, frame.pixels_sha256, self.blobs)
        image = decode_pixels(data, frame.pixel_format, frame.input_width, frame.input_height)
        if (frame.input_width, frame.input_height) != (m.input_width, m.input_height):
            # letterboxed for the model before (or after) a switch: fit it to this one
            return refit(frame, image, m.input_width, m.input_height)
        return frame, image

    @property
    def uses_gpu(self) -> bool:
        return self.detector.provider != CPU_PROVIDER

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
        if self._decoders is not None:
            self._decoders.shutdown(wait=True)

    def process(self, records: list[FramePreprocessed]) -> list[Outcome]:
        model = self.model  # one model for the whole micro-batch, whatever a switch does
        outcomes: list[Outcome] = [None] * len(records)
        frames, images, ready = [], [], []

        def pixels(frame: FramePreprocessed) -> tuple[FramePreprocessed, np.ndarray] | DataError:
            try:
                return self._pixels(model, frame)
            except DataError as exc:
                return exc

        decoded = self._decoders.map(pixels, records) if self._decoders else map(pixels, records)
        for i, found in enumerate(decoded):
            if isinstance(found, DataError):
                outcomes[i] = found
            else:
                frames.append(found[0])
                images.append(found[1])
                ready.append(i)
        for i, result in zip(ready, self.infer(frames, images, model), strict=True):
            outcomes[i] = result
        return outcomes

    def infer(self, records: list[FramePreprocessed], images: list[np.ndarray],
              model: LoadedModel | None = None) -> list[InferenceResult]:
        """The model on the records' letterboxed images; one result per record."""
        model = model or self.model
        if not images:
            return []
        m = model.manifest
        with tracer.start_as_current_span("model run", attributes={
                "framewire.model_name": m.name, "framewire.model_version": m.version,
                "framewire.provider": model.detector.provider,
                "framewire.batch_size": len(images)}):
            found = model.detector.detect(images)
        return [self._result(model, frame, boxes, model.keeper.keep(frame, image, boxes))
                for frame, image, boxes in zip(records, images, found, strict=True)]

    def _result(self, model: LoadedModel, frame: FramePreprocessed, boxes: np.ndarray,
                kept: KeptFrame) -> InferenceResult:
        lb = Letterbox(frame.scale, frame.pad_x, frame.pad_y, frame.input_width,
                       frame.input_height)
        mapped = unletterbox_boxes(boxes, lb, frame.orig_width, frame.orig_height)
        m = model.manifest
        names = m.class_names
        detections = [
            Detection(label=names[int(c)] if int(c) < len(names) else str(int(c)),
                      class_id=int(c), score=float(s), x1=float(x1), y1=float(y1),
                      x2=float(x2), y2=float(y2))
            for x1, y1, x2, y2, s, c in mapped[:, :6]
        ]
        return InferenceResult(
            header=frame.header,
            preprocessed_at=frame.preprocessed_at, inferred_at=utcnow(),
            orig_width=frame.orig_width, orig_height=frame.orig_height,
            model_name=m.name, model_version=m.version,
            provider=model.detector.provider, too_dark=frame.too_dark, blurred=frame.blurred,
            frozen=frame.frozen, detections=detections, frame_uri=kept.frame_uri,
            thumbnail_uri=kept.thumbnail_uri, faces_blurred=kept.faces_blurred,
        )


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to run: as requested (a name or a manifest's path), and what it loaded."""

    requested: str
    manifest: ModelManifest
    detector: Detector
    keeper: FrameKeeper


def refit(frame: FramePreprocessed, image: np.ndarray, width: int, height: int
          ) -> tuple[FramePreprocessed, np.ndarray]:
    """A frame letterboxed for another input size, letterboxed again to ``width`` x
    ``height``: the frame inside its padding, resized; its geometry still maps the original."""
    old = Letterbox(frame.scale, frame.pad_x, frame.pad_y, frame.input_width,
                    frame.input_height,
                    min(frame.input_width, max(1, round(frame.orig_width * frame.scale))),
                    min(frame.input_height, max(1, round(frame.orig_height * frame.scale))))
    boxed, lb = letterbox(content(image, old), width, height,
                          source_size=(frame.orig_width, frame.orig_height))
    return replace(frame, input_width=width, input_height=height, scale=lb.scale,
                   pad_x=lb.pad_x, pad_y=lb.pad_y), boxed
