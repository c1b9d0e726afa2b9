"""Live camera sources against real peers: an RTSP server with an ffmpeg push, an HTTP camera."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import cv2
import numpy as np
import pytest

from framewire.capture import sources
from framewire.capture.sources import open_source
from tests.fixtures.cameras import FrameTap, MjpegCamera, RtspCamera

pytestmark = pytest.mark.integration

FIRST_FRAMES_TIMEOUT_S = 60.0  # an RTSP open probes the stream for a few seconds


def decoded(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a decodable image"
    return image


class DropLog(logging.Handler):
    """The source's warnings, as they happen, for waiting on a drop or a failed open."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.logged = threading.Condition()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        with self.logged:
            self.records.append(record)
            self.logged.notify_all()

    def wait_for(self, prefix: str, timeout_s: float) -> logging.LogRecord:
        """The first warning whose message starts with ``prefix``, waiting for it if need be."""

        def found() -> logging.LogRecord | None:
            return next((r for r in self.records if r.getMessage().startswith(prefix)), None)

        with self.logged:
            record = self.logged.wait_for(found, timeout_s)
        assert record is not None, f"no {prefix!r} warning within {timeout_s}s"
        return record


@pytest.fixture
def drop_log() -> Iterator[DropLog]:
    handler = DropLog()
    logger = logging.getLogger(sources.__name__)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def test_rtsp_source_delivers_jpeg_frames_from_a_live_camera(
    rtsp_camera: RtspCamera, frame_tap: type[FrameTap]
) -> None:
    tap = frame_tap(lambda stop: open_source(rtsp_camera.url, stop=stop))
    frames = tap.take(5, FIRST_FRAMES_TIMEOUT_S)
    assert all(f.data[:2] == b"\xff\xd8" for f in frames)
    assert decoded(frames[-1].data).shape == (360, 640, 3)
    assert frames[0].source == rtsp_camera.url


def test_rtsp_source_reconnects_after_server_restart(
    rtsp_camera: RtspCamera, frame_tap: type[FrameTap], drop_log: DropLog
) -> None:
    tap = frame_tap(lambda stop: open_source(rtsp_camera.url, stop=stop))
    tap.take(5, FIRST_FRAMES_TIMEOUT_S)
    rtsp_camera.kill_server()
    drop = drop_log.wait_for("camera stream dropped", 30)
    assert vars(drop)["frames"] >= 5 and "check" in vars(drop)
    rtsp_camera.restart()
    tap.drain()  # whatever was read before the drop was noticed
    after = tap.take(5, FIRST_FRAMES_TIMEOUT_S)
    assert decoded(after[-1].data).shape == (360, 640, 3)


def test_rtsp_source_keeps_retrying_until_the_camera_comes_up(
    rtsp_camera: RtspCamera, frame_tap: type[FrameTap], drop_log: DropLog
) -> None:
    rtsp_camera.kill_server()
    tap = frame_tap(lambda stop: open_source(rtsp_camera.url, stop=stop))
    failed = drop_log.wait_for("camera stream cannot be opened", 30)
    assert vars(failed)["attempt"] >= 1 and "check" in vars(failed)
    rtsp_camera.start()
    assert len(tap.take(3, FIRST_FRAMES_TIMEOUT_S)) == 3


def test_mjpeg_over_http_source_delivers_frames(
    mjpeg_camera: MjpegCamera, frame_tap: type[FrameTap]
) -> None:
    tap = frame_tap(lambda stop: open_source(mjpeg_camera.stream_url, stop=stop))
    frames = tap.take(5, FIRST_FRAMES_TIMEOUT_S)
    assert decoded(frames[-1].data).shape == (240, 320, 3)
    # The served frames differ from one to the next; re-encoding keeps them different.
    assert len({f.data for f in frames}) > 1


def test_http_snapshot_url_is_polled_and_yields_the_served_bytes_unchanged(
    mjpeg_camera: MjpegCamera, frame_tap: type[FrameTap]
) -> None:
    tap = frame_tap(lambda stop: open_source(mjpeg_camera.snapshot_url, fps=50, stop=stop))
    frames = tap.take(3, 30)
    assert all(f.data == mjpeg_camera.snapshot for f in frames)
    assert frames[0].source == mjpeg_camera.snapshot_url


def test_http_snapshot_over_the_size_limit_is_skipped_with_a_warning(
    mjpeg_camera: MjpegCamera,
    frame_tap: type[FrameTap],
    drop_log: DropLog,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sources, "SNAPSHOT_MAX_BYTES", len(mjpeg_camera.snapshot) - 1)
    tap = frame_tap(lambda stop: open_source(mjpeg_camera.snapshot_url, fps=50, stop=stop))
    failed = drop_log.wait_for("camera URL failed", 30)
    assert "bytes" in vars(failed)["error"]
    assert tap.drain() == 0
