"""The frames inference keeps: a JPEG of the frame as the model saw it and a thumbnail, every
face the model found blurred first when the frame was captured in privacy mode.

Inference is where a frame's pixels and its detections meet, so it is where a frame is made
safe to keep; the blob store only ever receives the blurred image.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from framewire.config import Settings
from framewire.contracts import FramePreprocessed
from framewire.errors import ConfigError, SystemicError, TransientError
from framewire.models.manifest import ModelManifest
from framewire.pixels.encoding import encode_jpeg
from framewire.pixels.redact import blur_regions, fit_within
from framewire.store.blobs import BlobStore

FACE_LABEL = "face"
THUMBNAIL_SIDE = 320  # pixels, the thumbnail's longer side
FRAME_QUALITY, THUMBNAIL_QUALITY = 85, 75


@dataclass(frozen=True)
class KeptFrame:
    """Where a result's stored frame and thumbnail are, and how many faces they have blurred."""

    frame_uri: str | None = None
    thumbnail_uri: str | None = None
    faces_blurred: int = 0


NOTHING_KEPT = KeptFrame()


class FrameKeeper:
    """Stores the frames ``inference.store_frames`` asks for, faces blurred under privacy."""

    def __init__(self, settings: Settings, manifest: ModelManifest, blobs: BlobStore) -> None:
        self.policy = settings.inference.store_frames
        self.blobs = blobs
        self.face_classes = np.array([i for i, name in enumerate(manifest.class_names)
                                      if name == FACE_LABEL], dtype=np.int64)
        private = settings.privacy_mode or any(c.privacy_mode for c in settings.cameras)
        if self.policy != "none" and private and not self.face_classes.size:
            raise ConfigError(
                f"privacy mode blurs faces before a frame is stored, but model {manifest.name} "
                f"finds no {FACE_LABEL!r} class ({', '.join(manifest.class_names)}); use a model "
                "that finds faces, or set FRAMEWIRE_INFERENCE__STORE_FRAMES=none (no frame "
                "kept), or FRAMEWIRE_PRIVACY_MODE=false (frames kept unblurred)")

    def keep(self, frame: FramePreprocessed, image: np.ndarray, boxes: np.ndarray) -> KeptFrame:
        """Store ``frame``'s letterboxed BGR ``image`` as the policy says, given the model's
        ``boxes`` (rows of x1, y1, x2, y2, score, class in the image's pixels)."""
        if self.policy == "none" or (self.policy == "detections" and not len(boxes)):
            return NOTHING_KEPT
        faces = np.empty((0, 4))
        if frame.header.privacy:
            if not self.face_classes.size:
                return NOTHING_KEPT  # nothing here could blur a face: keep no image at all
            faces = boxes[np.isin(boxes[:, 5].astype(np.int64), self.face_classes), :4]
        shown = blur_regions(image, faces) if len(faces) else image
        seen = self._content(frame, shown)
        try:
            frame_uri, _ = self.blobs.put(encode_jpeg(seen, FRAME_QUALITY))
            thumbnail_uri, _ = self.blobs.put(
                encode_jpeg(fit_within(seen, THUMBNAIL_SIDE), THUMBNAIL_QUALITY))
        except (OSError, TransientError) as exc:
            raise SystemicError(
                f"cannot write stored frames to {self.blobs.root} ({exc}): inference paused, "
                "the frames in hand kept; free space there, check FRAMEWIRE_BLOB_DIR is "
                "mounted and writable, or set FRAMEWIRE_INFERENCE__STORE_FRAMES=none") from exc
        return KeptFrame(frame_uri, thumbnail_uri, len(faces))

    @staticmethod
    def _content(frame: FramePreprocessed, image: np.ndarray) -> np.ndarray:
        """The frame inside the letterbox's padding, never larger than the original."""
        width = min(frame.input_width, max(1, round(frame.orig_width * frame.scale)))
        height = min(frame.input_height, max(1, round(frame.orig_height * frame.scale)))
        left, top = int(frame.pad_x), int(frame.pad_y)
        seen = image[top:top + height, left:left + width]
        if frame.scale > 1:  # the model saw it enlarged: keep it at its own size
            seen = cv2.resize(seen, (frame.orig_width, frame.orig_height),
                              interpolation=cv2.INTER_AREA)
        return seen
