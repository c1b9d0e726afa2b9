"""Turning captured images into FrameCaptured records: validation, ids, sequence, claim check."""

from __future__ import annotations

import threading
from collections import defaultdict

from ulid import ULID

from framewire.capture.sources import CapturedImage
from framewire.contracts import FrameCaptured, FrameHeader, utcnow
from framewire.errors import DataError
from framewire.pixels.imageinfo import sniff_image
from framewire.store.blobs import BlobStore, inline_or_reference


class FrameIngestor:
    """Validates captured images and gives each one its frame id and per-camera seq."""

    def __init__(self, blobs: BlobStore, max_upload_bytes: int, max_inline_bytes: int) -> None:
        self.blobs = blobs
        self.max_upload_bytes, self.max_inline_bytes = max_upload_bytes, max_inline_bytes
        self._seq: defaultdict[str, int] = defaultdict(int)
        self._lock = threading.Lock()

    def capture(self, camera_id: str, image: CapturedImage) -> FrameCaptured:
        """A FrameCaptured for one image; DataError when it is not a usable image."""
        size = len(image.data)
        if size > self.max_upload_bytes:
            raise DataError(
                "too_large",
                f"the frame is {size} bytes, over max_upload_bytes={self.max_upload_bytes}; "
                "lower the camera's resolution or quality, or raise FRAMEWIRE_MAX_UPLOAD_BYTES",
            )
        info = sniff_image(image.data)
        with self._lock:
            seq = self._seq[camera_id]
            self._seq[camera_id] = seq + 1
        inline, uri, digest = inline_or_reference(image.data, self.max_inline_bytes, self.blobs)
        return FrameCaptured(
            header=FrameHeader(frame_id=str(ULID()), camera_id=camera_id, seq=seq,
                               captured_at=image.captured_at, ingested_at=utcnow(),
                               image_uri=uri),
            source=image.source, content_type=info.content_type, width=info.width,
            height=info.height, image=inline, image_sha256=digest,
        )
