"""Frames pushed over HTTP: checked, then published to ``frames.raw`` through ingest's code.

What a camera pushes goes the way ingest's own cameras' frames go (``Ingest``: the same
checks and claim check in ``FrameIngestor``, the camera's placed partition, the frame's trace
starting here, counted as published once the broker acknowledges it). The differences: the
size and type are checked before anything else, a refused frame is answered with the reason
(4xx) instead of being dead-lettered (the camera is told), and while the pipeline is behind
the push is refused with 503 and ``Retry-After`` instead of being buffered. Each frame takes
its camera's privacy mode as the site runs it now: the gateway follows the ``cameras`` topic
as ingest does (``CameraWatch``), in a thread of its own.
"""

from __future__ import annotations

import logging
import threading

from framewire.capture.cameras import CameraWatch
from framewire.capture.ingest import Ingest
from framewire.capture.ingestor import BlobWriteFailed
from framewire.capture.sources import CapturedImage
from framewire.config import CameraSettings, Settings
from framewire.contracts import CAMERA_ID_PATTERN, utcnow
from framewire.errors import DataError, TransientError
from framewire.pixels.imageinfo import sniff_image
from framewire.runtime import Publisher, StopSignal

log = logging.getLogger(__name__)

# what the gateway takes: the formats cameras push (others go through `framewire publish`)
PUSH_TYPES = ("image/jpeg", "image/png")
# HTTP status per refusal code of FrameIngestor and the gateway's own checks
_STATUS = {"too_large": 413, "too_many_pixels": 413, "unsupported_type": 415,
           "not_an_image": 415, "type_mismatch": 415, "bad_camera_id": 422}


class PushRefused(Exception):
    """A pushed frame was not accepted: the HTTP status, a stable code and the reason."""

    def __init__(self, status: int, code: str, reason: str,
                 retry_after_s: int | None = None) -> None:
        super().__init__(reason)
        self.status, self.code, self.reason = status, code, reason
        self.retry_after_s = retry_after_s


def ends_whole(data: bytes, content_type: str) -> bool:
    """Whether a JPEG or PNG ends with its end marker (EOI, IEND): a frame cut short in
    transfer is refused here, without decoding it."""
    if content_type == "image/jpeg":
        # some cameras pad after EOI; inside the entropy-coded data FF is never followed by D9
        return b"\xff\xd9" in data[-256:]
    if content_type == "image/png":
        return b"IEND" in data[-64:]
    return True


class FramePusher:
    """The gateway's ingest: one producer (heartbeats as service ``gateway``) for every push."""

    def __init__(self, settings: Settings, stop: StopSignal) -> None:
        self.settings = settings
        self.ingest = Ingest(settings, stop, publisher=Publisher(settings, "gateway"))
        self._send = threading.Lock()
        # the cameras topic, followed for each camera's privacy mode; it becomes the
        # Ingest's view of the cameras once read to its end
        self.watch = CameraWatch(settings, service="gateway")
        self._follower: threading.Thread | None = None
        self._changed = threading.Condition()

    def start(self) -> None:
        """Heartbeats, the pipeline's lag watch (back-pressure), the cameras topic's follower."""
        counters = self.ingest.publisher.counters
        self.ingest.publisher.start_heartbeats()
        self.ingest.start_lag_watch()
        self._follower = threading.Thread(target=self._follow_cameras, name="camera-watch",
                                          daemon=True)
        self._follower.start()
        counters.state = "running"

    def _follow_cameras(self) -> None:
        stop = self.ingest.stop
        self.watch.start()  # the configured cameras alone while the topic cannot be read
        self.ingest.watch = self.watch
        with self._changed:
            self._changed.notify_all()
        while not stop.is_set:
            try:
                changes = self.watch.changes(0.5)
            except TransientError as exc:
                log.warning("cameras topic not readable; retrying", extra={"error": str(exc)})
                stop.wait(2.0)
                continue
            if changes:
                with self._changed:
                    self._changed.notify_all()

    def wait_for_camera(self, camera_id: str, camera: CameraSettings | None,
                        timeout_s: float) -> bool:
        """Wait until the followed cameras show ``camera`` under ``camera_id`` (None: no such
        camera), so a frame pushed next takes its settings; False when not within the time."""
        def shown() -> bool:
            return (self.ingest.watch is not None
                    and self.watch.cameras.get(camera_id) == camera)

        with self._changed:
            return self._changed.wait_for(shown, timeout_s)

    def check_request(self, camera_id: str, content_type: str | None,
                      content_length: int | None) -> None:
        """Refuse from the headers alone, before the body is read."""
        if not CAMERA_ID_PATTERN.match(camera_id):
            raise PushRefused(422, "bad_camera_id", f"camera id {camera_id!r}: use 1 to 128 "
                              "letters, digits and . _ : -")
        kind = (content_type or "").split(";")[0].strip().lower()
        if kind not in PUSH_TYPES:
            raise PushRefused(415, "unsupported_type", f"Content-Type {content_type!r}: send "
                              f"the frame as {' or '.join(PUSH_TYPES)}")
        limit = self.settings.max_upload_bytes
        if content_length is not None and content_length > limit:
            raise PushRefused(413, "too_large", f"the frame is {content_length} bytes, over "
                              f"max_upload_bytes={limit}; send a smaller frame or raise "
                              "FRAMEWIRE_MAX_UPLOAD_BYTES")

    def push(self, camera_id: str, content_type: str, data: bytes) -> str:
        """Publish one frame; its frame id. PushRefused when it is not taken."""
        if self.ingest.is_behind():
            raise PushRefused(503, "pipeline_behind", "the pipeline is behind (frames waiting "
                              "in its stages, or unacknowledged by the broker); retry later",
                              retry_after_s=1)
        self.ingest.publisher.count_in()
        try:
            info = sniff_image(data)  # the header only: no pixel is decoded here
        except DataError as exc:
            raise PushRefused(_STATUS.get(exc.code, 422), exc.code, exc.reason) from None
        declared = content_type.split(";")[0].strip().lower()
        if info.content_type != declared:
            raise PushRefused(415, "type_mismatch", f"the body is {info.content_type} but "
                              f"Content-Type says {declared}; send the right Content-Type")
        if info.width * info.height > self.settings.max_pixels:
            raise PushRefused(413, "too_many_pixels", f"the frame is {info.width}x"
                              f"{info.height} pixels, over max_pixels="
                              f"{self.settings.max_pixels}; send a smaller frame")
        if not ends_whole(data, info.content_type):
            raise PushRefused(422, "truncated_image", f"the {info.content_type} frame ends "
                              f"before its end marker ({len(data)} bytes): the upload was cut "
                              "short or the file is damaged; send the whole frame")
        try:
            frame = self.ingest.ingestor.capture(
                camera_id, CapturedImage(data, utcnow(), f"http push ({camera_id})"))
        except DataError as exc:
            raise PushRefused(_STATUS.get(exc.code, 422), exc.code, exc.reason) from None
        except BlobWriteFailed as exc:
            raise PushRefused(503, exc.key, exc.fault, retry_after_s=10) from None
        with self._send:
            self.ingest.send(frame)
        return frame.frame_id

    def close(self) -> None:
        """Wait for the frames in flight to be acknowledged, final heartbeat."""
        self.ingest.close()  # sets the stop signal: the follower ends within its poll
        if self._follower is not None:
            self._follower.join(self.settings.shutdown_timeout_s)
        self.watch.close()
