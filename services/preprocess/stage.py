"""Preprocess: decode (with a pixel limit), check quality, letterbox to the model's input size."""

from __future__ import annotations

from framewire.blobstore import BlobStore, inline_or_reference, resolve_payload
from framewire.config import Settings
from framewire.contracts import FrameCaptured, FramePreprocessed, utcnow
from framewire.runtime import Stage, map_records
from framewire.runtime.loop import Outcome
from framewire.services.inference.models import load_manifest
from framewire.services.preprocess.imaging import (
    FrozenDetector,
    assess_quality,
    decode_image,
    encode_jpeg,
    letterbox,
)


class PreprocessStage(Stage):
    """frames.raw (FrameCaptured) → frames.ready (FramePreprocessed)."""

    name = "preprocess"
    input_topic = "frames.raw"
    input_type = FrameCaptured
    output_topic = "frames.ready"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        manifest = load_manifest(settings.inference.model)
        self.width, self.height = manifest.input_width, manifest.input_height
        self.frozen = FrozenDetector()
        self.blobs = BlobStore(settings.resolved_blob_dir)

    def process(self, records: list[FrameCaptured]) -> list[Outcome]:
        return map_records(self.prepare, records)

    def prepare(self, frame: FrameCaptured) -> FramePreprocessed:
        """One captured frame, decoded, checked and letterboxed."""
        cfg = self.settings.preprocess
        data = resolve_payload(frame.image, frame.image_uri, frame.image_sha256, self.blobs)
        image = decode_image(data, self.settings.max_pixels)
        height, width = image.shape[:2]
        quality = assess_quality(image, cfg.dark_threshold, cfg.blur_threshold)
        frozen = self.frozen.is_frozen(frame.camera_id, image)
        boxed, lb = letterbox(image, self.width, self.height)
        pixels = encode_jpeg(boxed, cfg.jpeg_quality) if cfg.pixel_format == "jpeg" \
            else boxed.tobytes()
        inline, uri, digest = inline_or_reference(pixels, self.settings.max_inline_bytes,
                                                  self.blobs)
        return FramePreprocessed(
            frame_id=frame.frame_id, camera_id=frame.camera_id, seq=frame.seq,
            captured_at=frame.captured_at, ingested_at=frame.ingested_at,
            preprocessed_at=utcnow(), orig_width=width, orig_height=height,
            input_width=lb.input_width, input_height=lb.input_height, scale=lb.scale,
            pad_x=lb.pad_x, pad_y=lb.pad_y, pixel_format=cfg.pixel_format,
            brightness=quality.brightness, sharpness=quality.sharpness,
            too_dark=quality.too_dark, blurred=quality.blurred, frozen=frozen,
            pixels=inline, pixels_uri=uri, pixels_sha256=digest, image_uri=frame.image_uri,
        )
