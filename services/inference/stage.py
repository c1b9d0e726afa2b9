"""Inference: run the model on micro-batches of letterboxed frames, boxes back in frame pixels."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from opentelemetry import trace

from framewire.config import Settings
from framewire.contracts import Detection, FramePreprocessed, InferenceResult, utcnow
from framewire.errors import DataError
from framewire.models.manifest import check_licence, load_manifest
from framewire.pixels.encoding import decode_pixels
from framewire.pixels.letterbox import Letterbox, unletterbox_boxes
from framewire.procutil import usable_cores
from framewire.runtime import Stage
from framewire.runtime.loop import Outcome
from framewire.services.inference import STAGE
from framewire.services.inference.accel import CPU_PROVIDER
from framewire.services.inference.frames import FrameKeeper, KeptFrame
from framewire.services.inference.models import Detector, choose_providers
from framewire.store.blobs import BlobStore, resolve_payload
from framewire.telemetry.metrics import service_metrics

tracer = trace.get_tracer(__name__)


class InferenceStage(Stage):
    """frames.ready (FramePreprocessed) → detections (InferenceResult)."""

    spec = STAGE

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        cfg = settings.inference
        self.manifest = load_manifest(cfg.model)
        check_licence(self.manifest, settings.accept_agpl_models)
        self.detector = Detector(self.manifest, choose_providers(cfg.providers),
                                 cfg.intra_op_threads, cfg.model_batch,
                                 max_batch=cfg.batch_size, device_preprocess=cfg.device_preprocess,
                                 cache_dir=settings.home / "tensorrt-cache")
        # On a GPU the model takes a fraction of a frame's CPU time, so decoding the JPEGs
        # becomes the stage's work: spread it over threads (cv2 releases the GIL).
        threads = cfg.decode_threads or (
            1 if self.detector.provider == CPU_PROVIDER else min(4, usable_cores()))
        self._decoders = ThreadPoolExecutor(threads, "decode") if threads > 1 else None
        self.blobs = BlobStore.from_settings(settings)
        self.keeper = FrameKeeper(settings, self.manifest, self.blobs)
        service_metrics().model.info({"model": self.manifest.name,
                                      "version": self.manifest.version,
                                      "provider": self.detector.provider})

    def _pixels(self, frame: FramePreprocessed) -> np.ndarray:
        m = self.manifest
        if (frame.input_width, frame.input_height) != (m.input_width, m.input_height):
            raise DataError(
                "input_size_mismatch",
                f"frame letterboxed to {frame.input_width}x{frame.input_height} but model "
                f"{m.name} takes {m.input_width}x{m.input_height}; preprocess and inference must "
                "use the same FRAMEWIRE_INFERENCE__MODEL",
            )
        data = resolve_payload(frame.pixels, frame.pixels_uri, frame.pixels_sha256, self.blobs)
        return decode_pixels(data, frame.pixel_format, frame.input_width, frame.input_height)

    @property
    def uses_gpu(self) -> bool:
        return self.detector.provider != CPU_PROVIDER

    def close(self) -> None:
        if self._decoders is not None:
            self._decoders.shutdown(wait=True)

    def _try_pixels(self, frame: FramePreprocessed) -> np.ndarray | DataError:
        try:
            return self._pixels(frame)
        except DataError as exc:
            return exc

    def process(self, records: list[FramePreprocessed]) -> list[Outcome]:
        outcomes: list[Outcome] = [None] * len(records)
        images, ready = [], []
        decoded = (self._decoders.map(self._try_pixels, records) if self._decoders
                   else map(self._try_pixels, records))
        for i, pixels in enumerate(decoded):
            if isinstance(pixels, DataError):
                outcomes[i] = pixels
            else:
                images.append(pixels)
                ready.append(i)
        for i, result in zip(ready, self.infer([records[i] for i in ready], images),
                             strict=True):
            outcomes[i] = result
        return outcomes

    def infer(self, records: list[FramePreprocessed],
              images: list[np.ndarray]) -> list[InferenceResult]:
        """The model on the records' letterboxed images; one result per record."""
        if not images:
            return []
        with tracer.start_as_current_span("model run", attributes={
                "framewire.model_name": self.manifest.name,
                "framewire.model_version": self.manifest.version,
                "framewire.provider": self.detector.provider,
                "framewire.batch_size": len(images)}):
            found = self.detector.detect(images)
        return [self._result(frame, boxes, self.keeper.keep(frame, image, boxes))
                for frame, image, boxes in zip(records, images, found, strict=True)]

    def _result(self, frame: FramePreprocessed, boxes: np.ndarray,
                kept: KeptFrame) -> InferenceResult:
        lb = Letterbox(frame.scale, frame.pad_x, frame.pad_y, frame.input_width,
                       frame.input_height)
        mapped = unletterbox_boxes(boxes, lb, frame.orig_width, frame.orig_height)
        names = self.manifest.class_names
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
            model_name=self.manifest.name, model_version=self.manifest.version,
            provider=self.detector.provider, too_dark=frame.too_dark, blurred=frame.blurred,
            frozen=frame.frozen, detections=detections, frame_uri=kept.frame_uri,
            thumbnail_uri=kept.thumbnail_uri, faces_blurred=kept.faces_blurred,
        )
