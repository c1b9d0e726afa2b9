"""Ingest: reads cameras and publishes validated frames to ``frames.raw``.

Back-pressure: each camera's frames wait in a small bounded buffer; a sender publishes them
while the pipeline keeps up. When it falls behind (more than ``max_lag_frames`` frames waiting
in the whole pipeline: the lags of preprocess, inference and storage together; or more than
``max_in_flight`` frames unacknowledged, e.g. while the broker is away) the buffers
fill and the camera's policy applies: drop the oldest, drop the newest, or block the source.

A frame counts as published (``records_out``) when the broker acknowledges it. Every dropped
frame is counted by its reason (heartbeat ``dropped`` and ``drop_reasons``, ``framewire
status``): ``back_pressure`` (a full buffer), ``fps_cap`` (over ``ingest.max_fps``, per camera),
``publish_failed`` (refused by the broker or never acknowledged; logged once per burst).

A frame whose blob cannot be written (a full disk) is kept: its camera pauses, reading no new
frame, and writes it again with backoff until it goes; meanwhile the heartbeat says state
``paused`` with the fault (``disk_full``, else ``blob_store``), which clears when capture
resumes by itself. Only a stop while paused drops the frame in hand (counted under the
fault's name).

Cameras come and go while ingest runs: ``add_camera`` starts one (or restarts it with a new
source), ``remove_camera`` stops it, its frames already captured still sent. Given a
``CameraWatch``, ``run`` starts the cameras the ``cameras`` topic and settings name and
applies the topic's changes as they come (``framewire.capture.cameras``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from opentelemetry.trace import SpanKind

from framewire.broker.placement import CameraPlacement
from framewire.broker.reading import LagProbe
from framewire.capture.backpressure import CameraBuffer, RateCap
from framewire.capture.cameras import CameraWatch, SourceFactory, camera_source
from framewire.capture.ingestor import BlobWriteFailed, FrameIngestor, blob_write_failed
from framewire.capture.sources import CapturedImage
from framewire.config import Settings
from framewire.contracts import FrameCaptured
from framewire.errors import DataError, TransientError
from framewire.retry import Backoff
from framewire.runtime import Publisher, StopSignal
from framewire.runtime.producer import Delivery
from framewire.secrets import mask_url
from framewire.store.blobs import BlobStore
from framewire.telemetry.tracing import inject
from framewire.topology import topology

log = logging.getLogger(__name__)
__all__ = ["Ingest", "SourceFactory"]
# how long a change from the cameras topic waits for a stopped camera's reader
FOLLOW_STOP_WAIT_S = 2.0


@dataclass
class LiveCamera:
    """A camera being read: its thread, and the event that stops it alone."""

    thread: threading.Thread
    stop: threading.Event


class Ingest:
    """Publishes frames from any number of camera sources through one producer."""

    name = "ingest"

    def __init__(self, settings: Settings, stop: StopSignal | None = None,
                 publisher: Publisher | None = None) -> None:
        self.settings = settings
        self.stop = stop or StopSignal()
        self.publisher = publisher or Publisher(settings, self.name)
        self.ingestor = FrameIngestor(BlobStore.from_settings(settings),
                                      settings.max_upload_bytes, settings.max_inline_bytes,
                                      self.privacy_for)
        self.placement = CameraPlacement(settings.home / "camera-partitions.json")
        self.lock = threading.Lock()
        self.buffers: dict[str, CameraBuffer[FrameCaptured]] = {}
        self.last_frame: dict[str, float] = {}
        # the cameras being read (``lock``); a removed camera's buffer stays until it is sent
        self.cameras: dict[str, LiveCamera] = {}
        # the cameras topic's view of the site's cameras, while ``run`` follows it
        self.watch: CameraWatch | None = None
        # cameras waiting for their frame's blob to be written, and the faults reported for it
        self.paused: set[str] = set()
        self._blob_faults: set[str] = set()
        # frames handed to the producer, and those the broker answered for (acknowledged or
        # failed). A lock of their own: the answers (delivery reports) arrive inside producer
        # calls, some made while ``lock`` is held (a dead letter's)
        self._tally = threading.Lock()
        self.sent = self.settled = 0
        self._failed_in_burst = 0
        self.acks = Delivery(on_result=self._frame_settled)
        # the pipeline's lag at the last probe and how many frames were answered for then:
        # frames sent since, or still unanswered then, count as waiting too, so ingest stops
        # at the limit between probes
        self._lag_seen = 0
        self._settled_at_probe = 0
        self._monitor: threading.Thread | None = None

    # -- one frame -----------------------------------------------------------------------

    def capture(self, camera_id: str, image: CapturedImage) -> FrameCaptured | None:
        """Validate an image into a record; a bad one is dead-lettered and None returned.

        While its blob cannot be written (a full disk) the camera waits here, the image kept
        and written again with backoff until it goes; None if stopped meanwhile (dropped).
        """
        pub = self.publisher
        with self.lock:
            pub.count_in()
            self.last_frame[camera_id] = time.monotonic()
        pub.metrics.camera_frames.labels(camera_id).inc()
        backoff = Backoff(first_s=0.5, cap_s=10.0)
        while True:
            try:
                frame = self._capture_once(camera_id, image)
            except BlobWriteFailed as exc:
                self._pause(camera_id, exc)
                if self.stop.wait(backoff.next_delay()):
                    self._drop(exc.key)
                    log.warning("stopped while capture was paused: the frame in hand is dropped",
                                extra={"camera_id": camera_id, "reason": exc.key})
                    return None
                continue
            self._resume(camera_id)
            return frame

    def _capture_once(self, camera_id: str, image: CapturedImage) -> FrameCaptured | None:
        """One try: the record, or None when dead-lettered; BlobWriteFailed to retry."""
        try:
            return self.ingestor.capture(camera_id, image)
        except DataError as exc:
            try:
                # a frame refused as too large is not kept: its bytes would fill the disk
                payload = None if exc.code == "too_large" else image.data
                with self.lock:
                    self.publisher.dead_letter(exc, payload=payload, key=camera_id.encode(),
                                               camera_id=camera_id, source=None,
                                               private=self.privacy_for(camera_id))
            except (OSError, TransientError) as write_exc:  # the letter's payload blob
                raise blob_write_failed(write_exc, self.ingestor.blobs.root) from write_exc
            return None

    def _pause(self, camera_id: str, exc: BlobWriteFailed) -> None:
        """Report the fault of a frame that could not be written (logged once per fault)."""
        with self.lock:
            self.paused.add(camera_id)
            first = exc.key not in self._blob_faults
            self._blob_faults.add(exc.key)
            counters = self.publisher.counters
            counters.set_fault(exc.key, exc.fault)
            if counters.state == "running":
                counters.state = "paused"
        if first:
            log.error("capture paused: a frame's blob cannot be written", extra={
                "camera_id": camera_id, "fault": exc.fault, "error": str(exc.__cause__)})

    def _resume(self, camera_id: str) -> None:
        """A frame was written: its camera goes on, and any blob fault is over."""
        if camera_id not in self.paused:
            return
        with self.lock:
            self.paused.discard(camera_id)
            # paused is not stalled: the stall clock starts again now
            self.last_frame[camera_id] = time.monotonic()
            cleared, self._blob_faults = self._blob_faults, set()
            counters = self.publisher.counters
            for key in cleared:
                counters.set_fault(key, None)
            if not self.paused and counters.state == "paused":
                counters.state = "running"
        if cleared:
            log.warning("blobs written again: capture resumed",
                        extra={"camera_id": camera_id, "cleared": sorted(cleared)})

    def _drop(self, reason: str, count: int = 1) -> None:
        counters = self.publisher.counters
        with self._tally:
            counters.drop(reason, count)

    def send(self, frame: FrameCaptured) -> None:
        """Publish a captured frame. It counts as published when the broker acknowledges it
        (``close`` waits for all), as dropped (``publish_failed``) when the broker does not."""
        pub = self.publisher
        # the frame's trace starts here; every later service continues it from the headers
        span = pub.telemetry.start("ingest frame", kind=SpanKind.PRODUCER, attributes={
            "framewire.frame_id": frame.frame_id, "framewire.camera_id": frame.camera_id,
            "framewire.seq": frame.seq, "framewire.source": frame.source,
            "messaging.system": "kafka", "messaging.operation.type": "send",
            "messaging.destination.name": self.settings.topic("frames.raw")})
        with self._tally:
            self.sent += 1
        try:
            pub.publish("frames.raw", frame, key=frame.camera_id, headers=inject(span),
                        delivery=self.acks, partition=self.partition_for(frame.camera_id))
        except KafkaException as exc:  # refused before it left (too large, unknown partition)
            self._frame_settled(exc.args[0])
        finally:
            span.end()
        pub.producer.poll(0)

    def _frame_settled(self, err: KafkaError | None) -> None:
        """The broker's answer for one frame (its delivery report): published, or dropped."""
        if err is None:
            with self._tally:
                self.settled += 1
                self.publisher.count_out()
                recovered, self._failed_in_burst = self._failed_in_burst, 0
            if recovered:
                log.warning("frames published again", extra={"dropped_meanwhile": recovered})
            return
        with self._tally:
            self.settled += 1
            self._failed_in_burst += 1
            first = self._failed_in_burst == 1
        self._drop("publish_failed")
        if first:  # once per burst: the heartbeat's drop_reasons count the rest
            log.error("frames not published: the broker did not acknowledge them; each is "
                      "dropped (publish_failed) until frames go through again", extra={
                          "error": err.str(), "topic": self.settings.topic("frames.raw"),
                          "check": "is the broker reachable, does the topic exist? "
                                   "framewire status, framewire topics"})

    def partition_for(self, camera_id: str) -> int | None:
        """The camera's placed partition of ``frames.raw``; None (key hash) while the topic's
        partition count is unknown."""
        count = self.publisher.partition_count(self.settings.topic("frames.raw"))
        return None if count is None else self.placement.partition_for(camera_id, count)

    def offer(self, camera_id: str, image: CapturedImage) -> bool:
        """Validate and publish one image now; True when handed to the producer (counted as
        published once the broker acknowledges it)."""
        frame = self.capture(camera_id, image)
        if frame is not None:
            self.send(frame)
        return frame is not None

    # -- back-pressure -------------------------------------------------------------------

    def is_behind(self) -> bool:
        """True while the pipeline cannot take more frames."""
        in_flight = len(self.publisher.producer)
        return in_flight > self.settings.ingest.max_in_flight or \
            self.lag_estimate() > self.settings.ingest.max_lag_frames

    def lag_estimate(self) -> int:
        """Frames waiting in the pipeline: the last probe's count plus those sent since, or
        not yet acknowledged then (the probe sees acknowledged frames only)."""
        return self._lag_seen + self.sent - self._settled_at_probe

    def pipeline_lag(self, probes: dict[str, LagProbe]) -> dict[str, int]:
        """Frames waiting before each stage whose group has ever committed.

        Back-pressure watches the whole pipeline, not only the first hop: a fast preprocess in
        front of a slow inference would otherwise pile frames up in ``frames.ready`` without
        limit while ingest saw no lag. A group that never committed is not counted (that
        stage is not deployed here, or has not started). Later topics' ends come from the
        broker's high watermark, which the embedded broker may under-report by up to one
        producer batch per partition: close enough to decide "behind".
        """
        produced = self.publisher.produced_offsets()
        lags = {}
        for service, probe in probes.items():
            found = probe.partition_lags(produced)
            if found is not None and probe.committed_any:
                lags[service] = sum(found.values())
        return lags

    def _watch_lag(self) -> None:
        # the backlog of every stage on the frames' path counts as the pipeline falling
        # behind; a branch's (analytics) does not: a slow or stopped branch never stops capture
        probes = {spec.name: LagProbe(self.settings, spec.name, timeout_s=2.0)
                  for spec in topology(self.settings).frame_path}
        was_behind = False
        try:
            while not self.stop.wait(0.5):
                settled = self.settled
                lags = self.pipeline_lag(probes)
                lag = sum(lags.values())
                with self.lock:
                    self._lag_seen, self._settled_at_probe = lag, settled
                behind = lag > self.settings.ingest.max_lag_frames
                if behind != was_behind:
                    was_behind = behind
                    log.warning("pipeline behind: applying back-pressure" if was_behind
                                else "pipeline caught up",
                                extra={"pipeline_lag": lag, "lag_by_stage": lags})
        finally:
            for probe in probes.values():
                probe.close()

    def start_lag_watch(self) -> None:
        self._monitor = threading.Thread(target=self._watch_lag, name="lag-watch", daemon=True)
        self._monitor.start()

    def wait_while_behind(self) -> None:
        while self.is_behind() and not self.stop.is_set:
            self.publisher.producer.poll(0.05)

    def pump(self, camera_id: str, frames: Iterator[CapturedImage]) -> int:
        """Publish everything a finite source yields, waiting (never dropping) while behind."""
        count = 0
        for image in frames:
            self.wait_while_behind()
            self.offer(camera_id, image)
            count += 1
            if self.stop.is_set:
                break
        return count

    # -- live cameras --------------------------------------------------------------------

    def run(self, sources: dict[str, SourceFactory], idle_when_done: bool = False,
            watch: CameraWatch | None = None) -> None:
        """Run every camera in its own thread until stopped, or until all sources end.

        ``idle_when_done``: with no camera, or once every source has ended (files read to
        the end), stay up and keep sending heartbeats until stopped, instead of returning (a
        service that exits is restarted by the supervisor: a restart storm for nothing).
        ``watch``: the cameras it names run beside ``sources``, and its changes are applied
        while running (a camera of the same id as a source replaces it).
        """
        pub, cfg = self.publisher, self.settings.ingest
        pub.start_heartbeats(self._update_health)
        self.start_lag_watch()
        pub.counters.state = "running"
        self.watch = watch
        managed = {c.camera_id: camera_source(c) for c in watch.start().values()} \
            if watch is not None else {}
        for camera_id, factory in {**sources, **managed}.items():
            self.add_camera(camera_id, factory, quiet=True)
        follower = None
        if watch is not None:
            follower = threading.Thread(target=self._follow, args=(watch,),
                                        name="camera-watch", daemon=True)
            follower.start()
        log.info("ingest running", extra={"cameras": sorted(self.cameras),
                                          "backpressure": cfg.backpressure})
        if not self.cameras:
            log.warning("no cameras configured: nothing to read; add cameras (`framewire "
                        "cameras add`, the `cameras` setting), start with --demo, or publish "
                        "with `framewire publish`")
        idle = False
        try:
            while not self.stop.is_set:
                if self._send_buffered() or self._reading():
                    if idle and pub.counters.state == "idle":  # a camera was added
                        idle = False
                        pub.counters.state = "running"
                    continue
                if not idle_when_done:
                    break
                if not idle:
                    idle = True
                    pub.counters.state = "idle"
                    log.info("every camera source ended: ingest idles until stopped")
                self.stop.wait(0.5)
        finally:
            self.stop.set()
            if follower is not None:  # first: it starts no camera after this
                follower.join(self.settings.shutdown_timeout_s)
            if watch is not None:
                watch.close()
            with self.lock:
                live = list(self.cameras.values())
            for camera in live:
                camera.stop.set()
            for camera in live:
                camera.thread.join(self.settings.shutdown_timeout_s)
            self._send_buffered(drain=True)
            self.close()

    def privacy_for(self, camera_id: str) -> bool:
        """Whether a frame of ``camera_id`` is captured in privacy mode: the camera's own
        setting as the site runs it now (the cameras topic over the setting), else the site's."""
        watch = self.watch
        return self.settings.privacy_for(camera_id, watch.cameras if watch is not None else None)

    def add_camera(self, camera_id: str, factory: SourceFactory, quiet: bool = False,
                   wait_s: float | None = None) -> None:
        """Start reading a camera in a thread of its own; one of the same id is stopped
        first (its new settings take over; ``wait_s`` as for ``remove_camera``)."""
        self.remove_camera(camera_id, quiet=True, wait_s=wait_s)
        cfg = self.settings.ingest
        stop = threading.Event()
        camera = LiveCamera(threading.Thread(target=self._camera, args=(camera_id, factory, stop),
                                             name=f"camera-{camera_id}", daemon=True), stop)
        with self.lock:
            self.buffers.setdefault(camera_id, CameraBuffer(cfg.buffer_frames, cfg.backpressure))
            self.last_frame[camera_id] = time.monotonic()
            self.cameras[camera_id] = camera
            self.publisher.counters.partitions = sorted(self.cameras)
        camera.thread.start()
        if not quiet:
            log.info("camera started", extra={"camera_id": camera_id})

    def remove_camera(self, camera_id: str, quiet: bool = False,
                      wait_s: float | None = None) -> bool:
        """Stop reading a camera, waiting up to ``wait_s`` (default: the shutdown timeout)
        for its thread; the frames it captured are still sent. False when no such camera
        was being read."""
        with self.lock:
            camera = self.cameras.pop(camera_id, None)
            self.last_frame.pop(camera_id, None)
            self.paused.discard(camera_id)
            self.publisher.counters.partitions = sorted(self.cameras)
        if camera is None:
            return False
        camera.stop.set()
        camera.thread.join(self.settings.shutdown_timeout_s if wait_s is None else wait_s)
        if camera.thread.is_alive():  # a read that does not return: it ends when it does
            log.warning("camera's reader still busy after its stop; it ends with its read",
                        extra={"camera_id": camera_id})
        if not quiet:
            log.info("camera stopped", extra={"camera_id": camera_id})
        return True

    def _follow(self, watch: CameraWatch) -> None:
        """Apply the cameras topic's changes until stopped."""
        while not self.stop.is_set:
            try:
                changes = watch.changes(0.5)
            except TransientError as exc:
                log.warning("cameras topic not readable; retrying", extra={"error": str(exc)})
                self.stop.wait(2.0)
                continue
            # a reader stuck opening a dead stream must not hold up the other changes: it
            # ends by itself once its read returns (its stop is set)
            for camera_id in changes.removed:
                self.remove_camera(camera_id, wait_s=FOLLOW_STOP_WAIT_S)
            for camera in [*changes.changed, *changes.added]:
                log.info("camera changed: restarting it" if camera in changes.changed
                         else "camera added", extra={"camera_id": camera.camera_id,
                                                     "url": mask_url(camera.url)})
                self.add_camera(camera.camera_id, camera_source(camera),
                                wait_s=FOLLOW_STOP_WAIT_S)

    def _reading(self) -> bool:
        """Whether any camera's source is still delivering."""
        with self.lock:
            return any(c.thread.is_alive() for c in self.cameras.values())

    def _send_buffered(self, drain: bool = False) -> bool:
        """Publish one frame per camera if the pipeline keeps up; False when nothing waited."""
        if not drain and self.is_behind():
            self.publisher.producer.poll(0.05)
            return True
        sent = False
        with self.lock:
            buffers = list(self.buffers.items())
        for _, buffer in buffers:
            while (frame := buffer.take()) is not None:
                self.send(frame)
                sent = True
                if not drain:
                    break
        with self.lock:  # a removed camera's buffer goes once sent
            for camera_id, buffer in buffers:
                if camera_id not in self.cameras and not len(buffer):
                    self.buffers.pop(camera_id, None)
        if not sent:
            self.publisher.producer.poll(0.02)
        return sent or any(len(b) for _, b in buffers)

    def _camera(self, camera_id: str, factory: SourceFactory, stop: threading.Event) -> None:
        cap, buffer = RateCap(self.settings.ingest.max_fps), self.buffers[camera_id]
        try:
            for image in factory(stop):
                if stop.is_set():  # removed (or restarting) while this frame was read
                    break
                if not cap.allow(time.monotonic()):
                    self._drop("fps_cap")
                    continue
                frame = self.capture(camera_id, image)
                if frame is not None and not buffer.put(frame, stop):
                    self._drop("back_pressure")
        except Exception:  # one broken camera must not take the others down
            log.exception("camera stopped with an error", extra={"camera_id": camera_id})

    def _update_health(self) -> None:
        """Before each heartbeat: find cameras that stopped delivering (a camera paused by
        ingest, waiting for its frame's blob to be written, is not one)."""
        counters, now = self.publisher.counters, time.monotonic()
        with self.lock:
            silent = {cam: now - self.last_frame.get(cam, now) for cam in self.cameras
                      if cam not in self.paused}
        stalled = sorted(cam for cam, for_s in silent.items()
                         if for_s > self.settings.camera_stall_s)
        for cam in set(stalled) - set(counters.stalled_cameras):
            log.warning("camera stalled: no frame", extra={
                "camera_id": cam, "for_s": round(silent[cam], 1),
                "check": "camera power and network, the URL, credentials; ingest keeps "
                         "reconnecting with backoff"})
        for cam in set(counters.stalled_cameras) - set(stalled):
            log.info("camera delivering again", extra={"camera_id": cam})
        counters.stalled_cameras = stalled

    def close(self) -> None:
        """Wait for every published frame to be acknowledged, then say goodbye."""
        self.stop.set()
        if self._monitor is not None:
            self._monitor.join(5)
        pub = self.publisher
        try:
            pub.flush(self.settings.shutdown_timeout_s)
        except TransientError as exc:
            log.error("frames left unpublished at shutdown", extra={"error": str(exc)})
        pub.close()
