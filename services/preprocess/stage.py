"""Preprocess: decode (with a pixel limit), check quality, letterbox to the model's input size."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from framewire.config import Settings
from framewire.contracts import FrameCaptured, FramePreprocessed, utcnow
from framewire.errors import ConfigError
from framewire.models.control import ModelWatch
from framewire.models.manifest import load_manifest
from framewire.pixels.encoding import decode_for_model, encode_jpeg
from framewire.pixels.letterbox import Letterbox, content, letterbox
from framewire.runtime import Stage, map_records
from framewire.runtime.heartbeat import Counters
from framewire.runtime.loop import Outcome
from framewire.services.preprocess import STAGE
from framewire.services.preprocess.quality import FrozenDetector, Quality, assess_quality
from framewire.store.blobs import BlobStore, inline_or_reference, resolve_payload

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Examined:
    """A frame's pixel work before encoding: the letterboxed image and what was measured."""

    boxed: np.ndarray
    letterbox: Letterbox
    width: int  # the original frame's
    height: int
    quality: Quality
    frozen: bool


class PreprocessStage(Stage):
    """frames.raw (FrameCaptured) → frames.ready (FramePreprocessed)."""

    spec = STAGE

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        # replaced whole by a switch (the model watch's thread): a frame reads it once
        self.manifest = load_manifest(settings.inference.model)
        self.frozen = FrozenDetector()
        self.blobs = BlobStore.from_settings(settings)
        self.counters = Counters()
        self._watch: ModelWatch | None = None

    def attach(self, counters: Counters) -> None:
        """Letterbox for the model the control topic asks for, and follow it: inference
        runs the same one (a frame letterboxed for the model before a switch is fitted to
        the new one there)."""
        self.counters = counters
        self._report_model()
        self._watch = ModelWatch(self.settings, self.name, self._switch_to)
        wanted = self._watch.start()
        if wanted != self.settings.inference.model:
            self._switch_to(wanted)
        self._watch.follow()

    def _switch_to(self, name_or_path: str) -> None:
        """Letterbox for ``name_or_path`` from the next frame on; one whose manifest does not
        load is refused (inference refuses it too, and says so in its status)."""
        try:
            manifest = load_manifest(name_or_path)
        except (ConfigError, OSError) as exc:
            log.error("model switch refused: letterboxing for the running model", extra={
                "model": name_or_path, "error": str(exc)})
            self.counters.set_fault("model_switch", (
                f"model {name_or_path!r} refused ({exc}); still letterboxing for "
                f"{self.manifest.name} {self.manifest.version}"))
            return
        self.manifest = manifest
        self._report_model()
        self.counters.set_fault("model_switch", None)
        log.info("letterboxing for a new model", extra={
            "model": manifest.name, "model_version": manifest.version,
            "input_size": f"{manifest.input_width}x{manifest.input_height}"})

    def _report_model(self) -> None:
        self.counters.model_name = self.manifest.name
        self.counters.model_version = self.manifest.version

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()

    @property
    def output_compression(self) -> str:
        """Raw pixels compress (lz4 costs little); JPEG payloads do not."""
        return "lz4" if self.settings.preprocess.pixel_format == "bgr8" else "none"

    def process(self, records: list[FrameCaptured]) -> list[Outcome]:
        return map_records(self.prepare, records)

    def examine(self, frame: FrameCaptured) -> Examined:
        """Decode (only the pixels the model's size needs), letterbox, measure quality.

        Quality and the frozen check look at the resized frame inside the letterbox: the
        resolution the model sees, and a fixed cost whatever the camera's resolution.
        """
        cfg = self.settings.preprocess
        data = resolve_payload(frame.image, frame.image_uri, frame.image_sha256, self.blobs)
        m = self.manifest
        image, width, height = decode_for_model(data, self.settings.max_pixels, m.input_width,
                                                m.input_height)
        boxed, lb = letterbox(image, m.input_width, m.input_height, source_size=(width, height))
        seen = content(boxed, lb)
        quality = assess_quality(seen, cfg.dark_threshold, cfg.blur_threshold)
        frozen = self.frozen.is_frozen(frame.camera_id, seen)
        return Examined(boxed, lb, width, height, quality, frozen)

    def prepare(self, frame: FrameCaptured) -> FramePreprocessed:
        """One captured frame, decoded, checked, letterboxed and encoded for the wire."""
        cfg = self.settings.preprocess
        seen = self.examine(frame)
        pixels = encode_jpeg(seen.boxed, cfg.jpeg_quality) if cfg.pixel_format == "jpeg" \
            else seen.boxed.tobytes()
        # under privacy mode the letterboxed frame, faces and all, stays off the blob store
        inline, uri, digest = inline_or_reference(pixels, self.settings.max_inline_bytes,
                                                  self.blobs, private=frame.header.privacy)
        return self.describe(frame, seen, cfg.pixel_format, inline, uri, digest)

    def describe(self, frame: FrameCaptured, seen: Examined, pixel_format: str,
                 pixels: bytes | None, uri: str | None, digest: str | None) -> FramePreprocessed:
        """The frames.ready record of an examined frame, with its pixels as given."""
        lb, quality = seen.letterbox, seen.quality
        return FramePreprocessed(
            header=frame.header,
            preprocessed_at=utcnow(), orig_width=seen.width, orig_height=seen.height,
            input_width=lb.input_width, input_height=lb.input_height, scale=lb.scale,
            pad_x=lb.pad_x, pad_y=lb.pad_y, pixel_format=pixel_format,
            brightness=quality.brightness, sharpness=quality.sharpness,
            too_dark=quality.too_dark, blurred=quality.blurred, frozen=seen.frozen,
            pixels=pixels, pixels_uri=uri, pixels_sha256=digest,
        )
