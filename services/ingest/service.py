"""The ingest service: reads cameras and publishes validated frames to ``frames.raw``."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

from framewire.blobstore import BlobStore
from framewire.config import Settings
from framewire.errors import DataError, TransientError
from framewire.runtime import Publisher, StopSignal
from framewire.services.ingest.capture import FrameIngestor
from framewire.services.ingest.sources import CapturedImage

log = logging.getLogger(__name__)
SourceFactory = Callable[[threading.Event], Iterator[CapturedImage]]


class Ingest:
    """Publishes frames from any number of camera sources through one producer."""

    name = "ingest"

    def __init__(self, settings: Settings, stop: StopSignal | None = None,
                 publisher: Publisher | None = None) -> None:
        self.settings = settings
        self.stop = stop or StopSignal()
        self.publisher = publisher or Publisher(settings, self.name)
        self.ingestor = FrameIngestor(BlobStore(settings.resolved_blob_dir),
                                      settings.max_upload_bytes, settings.max_inline_bytes)
        self.lock = threading.Lock()

    def offer(self, camera_id: str, image: CapturedImage) -> bool:
        """Validate and publish one image; a bad one is dead-lettered. True when published."""
        pub = self.publisher
        with self.lock:
            pub.counters.records_in += 1
        try:
            frame = self.ingestor.capture(camera_id, image)
        except DataError as exc:
            with self.lock:
                pub.dead_letter(exc, payload=image.data, key=camera_id.encode(),
                                camera_id=camera_id, source=None)
            return False
        pub.publish("frames.raw", frame, key=camera_id)
        with self.lock:
            pub.counters.records_out += 1
        pub.producer.poll(0)
        return True

    def pump(self, camera_id: str, frames: Iterator[CapturedImage]) -> int:
        """Publish everything a source yields until it ends or a stop; returns frames offered."""
        count = 0
        for image in frames:
            self.offer(camera_id, image)
            count += 1
            if self.stop.is_set:
                break
        return count

    def run(self, sources: dict[str, SourceFactory]) -> None:
        """Run every camera in its own thread until stopped (or all sources end)."""
        pub = self.publisher
        pub.start_heartbeats()
        pub.counters.state = "running"
        pub.counters.partitions = sorted(sources)
        threads = []
        for camera_id, factory in sources.items():
            thread = threading.Thread(target=self._camera, args=(camera_id, factory),
                                      name=f"camera-{camera_id}", daemon=True)
            thread.start()
            threads.append(thread)
        log.info("ingest running", extra={"cameras": sorted(sources)})
        try:
            while any(t.is_alive() for t in threads) and not self.stop.wait(0.5):
                pub.producer.poll(0)
        finally:
            self.stop.set()
            for thread in threads:
                thread.join(self.settings.shutdown_timeout_s)
            self.close()

    def _camera(self, camera_id: str, factory: SourceFactory) -> None:
        try:
            self.pump(camera_id, factory(self.stop.event))
        except Exception:  # one broken camera must not take the others down
            log.exception("camera stopped with an error", extra={"camera_id": camera_id})

    def close(self) -> None:
        pub = self.publisher
        try:
            pub.flush(self.settings.shutdown_timeout_s)
        except TransientError as exc:
            log.error("frames left unpublished at shutdown", extra={"error": str(exc)})
        pub.close()
