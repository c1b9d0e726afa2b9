"""Turning captured images into FrameCaptured records: validation, ids, sequence, claim check."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from ulid import ULID

from framewire.capture.sources import CapturedImage
from framewire.contracts import FrameCaptured, FrameHeader, utcnow
from framewire.errors import DataError, SystemicError, TransientError
from framewire.pixels.imageinfo import sniff_image
from framewire.secrets import mask_url
from framewire.store.blobs import NO_SPACE, BlobStore, inline_or_reference

# a write refused for want of room: the disk (or the user's quota) is full


class BlobWriteFailed(SystemicError):
    """A frame's blob could not be written (a full disk, a folder gone): no fault of the frame,
    every frame would fail the same way. ``key`` names the fault (``disk_full``,
    ``blob_store``) in the heartbeat's faults."""

    def __init__(self, key: str, fault: str) -> None:
        super().__init__(fault)
        self.key = key


def blob_write_failed(exc: OSError | TransientError, root: Path) -> BlobWriteFailed:
    """The fault a failed blob write reports: what happened, that capture waits, the fix."""
    cause = exc if isinstance(exc, OSError) else exc.__cause__
    code = cause.errno if isinstance(cause, OSError) else None
    reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else str(exc)
    if code in NO_SPACE:
        return BlobWriteFailed(
            "disk_full", f"{root} is full ({reason}): capture paused, the frames in hand kept; "
            "free space there (or raise the quota, or move FRAMEWIRE_BLOB_DIR) and it resumes "
            "by itself")
    return BlobWriteFailed(
        "blob_store", f"cannot write blobs to {root} ({reason}): capture paused, the frames in "
        "hand kept; check that the folder exists, is mounted and writable (FRAMEWIRE_BLOB_DIR), "
        "and it resumes by itself")


class FrameIngestor:
    """Validates captured images and gives each one its frame id and per-camera seq."""

    def __init__(self, blobs: BlobStore, max_upload_bytes: int, max_inline_bytes: int,
                 privacy_for: Callable[[str], bool] | None = None) -> None:
        self.blobs = blobs
        self.max_upload_bytes, self.max_inline_bytes = max_upload_bytes, max_inline_bytes
        # whether a camera's frames are captured in privacy mode (Settings.privacy_for);
        # unset = all of them
        self.privacy_for = privacy_for or (lambda _camera_id: True)
        self._seq: defaultdict[str, int] = defaultdict(int)
        self._lock = threading.Lock()

    def capture(self, camera_id: str, image: CapturedImage) -> FrameCaptured:
        """A FrameCaptured for one image; DataError when it is not a usable image,
        BlobWriteFailed when its blob cannot be written (the image may be offered again)."""
        size = len(image.data)
        if size > self.max_upload_bytes:
            raise DataError(
                "too_large",
                f"the frame is {size} bytes, over max_upload_bytes={self.max_upload_bytes}; "
                "lower the camera's resolution or quality, or raise FRAMEWIRE_MAX_UPLOAD_BYTES",
            )
        info = sniff_image(image.data)
        private = self.privacy_for(camera_id)
        try:
            # under privacy mode the raw frame travels in its record and is never stored
            inline, uri, digest = inline_or_reference(image.data, self.max_inline_bytes,
                                                      self.blobs, private=private)
        except (OSError, TransientError) as exc:
            raise blob_write_failed(exc, self.blobs.root) from exc
        # the seq is taken once the blob is written: a frame retried after a failed write
        # keeps the camera's sequence without a gap
        with self._lock:
            seq = self._seq[camera_id]
            self._seq[camera_id] = seq + 1
        return FrameCaptured(
            header=FrameHeader(frame_id=str(ULID()), camera_id=camera_id, seq=seq,
                               captured_at=image.captured_at, ingested_at=utcnow(),
                               image_uri=uri, privacy=private),
            # a source masks its URL already; this is the records' guarantee (plug-in sources)
            source=mask_url(image.source), content_type=info.content_type, width=info.width,
            height=info.height, image=inline, image_sha256=digest,
        )
