"""Preprocess: decode (with a pixel limit), check quality, letterbox to the model's input size."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from framewire.config import Settings
from framewire.contracts import FrameCaptured, FramePreprocessed, utcnow
from framewire.models.manifest import load_manifest
from framewire.pixels.encoding import decode_for_model, encode_jpeg
from framewire.pixels.letterbox import Letterbox, content, letterbox
from framewire.runtime import Stage, map_records
from framewire.runtime.loop import Outcome
from framewire.services.preprocess import STAGE
from framewire.services.preprocess.quality import FrozenDetector, Quality, assess_quality
from framewire.store.blobs import BlobStore, inline_or_reference, resolve_payload


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
        manifest = load_manifest(settings.inference.model)
        self.width, self.height = manifest.input_width, manifest.input_height
        self.frozen = FrozenDetector()
        self.blobs = BlobStore.from_settings(settings)

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
        image, width, height = decode_for_model(data, self.settings.max_pixels, self.width,
                                                self.height)
        boxed, lb = letterbox(image, self.width, self.height, source_size=(width, height))
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
