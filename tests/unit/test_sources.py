"""Frame sources without servers: files, folders, videos, pacing, RTSP options, reconnects."""

from __future__ import annotations

import base64
import itertools
import logging
import os
import threading
from datetime import UTC
from pathlib import Path

import cv2
import numpy as np
import pytest

from framewire.capture import sources
from framewire.capture.sources import (
    CapturedImage,
    Pacer,
    open_source,
    rtsp_capture,
    snapshot_request,
)
from framewire.errors import ConfigError
from framewire.retry import Backoff
from tests.fixtures.images import jpeg, synthetic_frame

# A regression here tends to turn a finite source into an endless one: fail fast, not in 300 s.
pytestmark = pytest.mark.timeout(30)


def write_png(path: Path, index: int) -> bytes:
    ok, buf = cv2.imencode(".png", synthetic_frame(index, width=64, height=48))
    assert ok
    path.write_bytes(buf.tobytes())
    return buf.tobytes()


def write_video(path: Path, fourcc: str, count: int) -> None:
    """``count`` frames of rising brightness, so their order can be read back."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), 10, (64, 48))
    assert writer.isOpened(), f"OpenCV cannot write {fourcc} to {path.suffix}"
    for i in range(count):
        writer.write(np.full((48, 64, 3), 20 + 40 * i, np.uint8))
    writer.release()


def brightness(image: CapturedImage) -> float:
    gray = cv2.imdecode(np.frombuffer(image.data, np.uint8), cv2.IMREAD_GRAYSCALE)
    assert gray is not None, "not a decodable image"
    return float(gray.mean())


def test_single_image_file_is_yielded_once_with_its_bytes_unchanged(tmp_path: Path) -> None:
    data = jpeg(synthetic_frame(3))
    (tmp_path / "one.jpg").write_bytes(data)
    images = list(open_source(str(tmp_path / "one.jpg")))
    assert [i.data for i in images] == [data]
    assert images[0].source == str(tmp_path / "one.jpg")


def test_captured_at_is_timezone_aware_utc(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png", 0)
    (image,) = open_source(str(tmp_path / "a.png"))
    assert image.captured_at.tzinfo is not None
    assert image.captured_at.utcoffset() == UTC.utcoffset(None)


def test_single_image_file_with_loop_repeats_until_stopped(tmp_path: Path) -> None:
    data = write_png(tmp_path / "a.png", 0)
    stop = threading.Event()
    frames = open_source(str(tmp_path / "a.png"), loop=True, stop=stop)
    taken = list(itertools.islice(frames, 5))
    stop.set()
    assert [t.data for t in taken] == [data] * 5
    assert list(frames) == []


def test_folder_yields_every_regular_file_sorted_by_name(tmp_path: Path) -> None:
    b = write_png(tmp_path / "b.png", 1)
    a = write_png(tmp_path / "a.png", 2)
    (tmp_path / "c.txt").write_bytes(b"not an image; the ingest validator dead-letters it")
    (tmp_path / "sub").mkdir()
    write_png(tmp_path / "sub" / "0.png", 3)  # subfolders are not walked
    images = list(open_source(str(tmp_path)))
    assert [Path(i.source).name for i in images] == ["a.png", "b.png", "c.txt"]
    assert images[0].data == a and images[1].data == b


def test_folder_with_loop_starts_again_from_the_first_file(tmp_path: Path) -> None:
    write_png(tmp_path / "1.png", 1)
    write_png(tmp_path / "2.png", 2)
    names = [
        Path(i.source).name for i in itertools.islice(open_source(str(tmp_path), loop=True), 5)
    ]
    assert names == ["1.png", "2.png", "1.png", "2.png", "1.png"]


def test_empty_folder_with_loop_ends_instead_of_spinning(tmp_path: Path) -> None:
    assert list(open_source(str(tmp_path), loop=True)) == []


@pytest.mark.parametrize(("fourcc", "suffix"), [("mp4v", ".mp4"), ("MJPG", ".avi")])
def test_video_frames_are_decoded_in_order_and_jpeg_encoded(
    tmp_path: Path, fourcc: str, suffix: str
) -> None:
    path = tmp_path / f"clip{suffix}"
    write_video(path, fourcc, 4)
    images = list(open_source(str(path)))
    assert len(images) == 4
    assert all(i.data[:2] == b"\xff\xd8" for i in images)
    levels = [brightness(i) for i in images]
    assert levels == sorted(levels) and levels[-1] - levels[0] > 100


def test_video_with_loop_rewinds_to_the_first_frame(tmp_path: Path) -> None:
    write_video(tmp_path / "clip.avi", "MJPG", 3)
    levels = [
        brightness(i)
        for i in itertools.islice(open_source(str(tmp_path / "clip.avi"), loop=True), 4)
    ]
    assert levels[3] == pytest.approx(levels[0], abs=2)
    assert levels[2] > levels[3] + 50


def test_undecodable_video_raises_config_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(ConfigError, match="broken.mp4"):
        list(open_source(str(tmp_path / "broken.mp4")))


def test_missing_path_raises_config_error_naming_the_path_and_what_is_accepted(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "nowhere" / "cam.jpg"
    with pytest.raises(ConfigError) as caught:
        open_source(str(missing))
    message = str(caught.value)
    assert str(missing) in message
    assert "folder" in message and "rtsp://" in message and ".mp4" in message


def test_unknown_url_scheme_raises_config_error_without_leaking_the_password() -> None:
    with pytest.raises(ConfigError, match="unknown scheme") as caught:
        open_source("ftp://user:secret@cam.local/x.jpg")
    assert "secret" not in str(caught.value)


def test_non_positive_fps_is_rejected_when_the_source_is_opened(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png", 0)
    with pytest.raises(ConfigError, match="fps=0"):
        open_source(str(tmp_path / "a.png"), fps=0)


def test_pacer_spaces_frames_one_interval_apart() -> None:
    pacer = Pacer(fps=4)
    assert pacer.wait_time(100.0) == 0
    pacer.emitted(100.0)
    assert pacer.wait_time(100.1) == pytest.approx(0.15)
    pacer.emitted(100.3)  # a little late: the next frame stays on the 0.25 s grid, no drift
    assert pacer.next_due == pytest.approx(100.5)


def test_pacer_restarts_the_schedule_instead_of_bursting_after_falling_behind() -> None:
    pacer = Pacer(fps=10)
    pacer.emitted(0.0)
    pacer.emitted(5.0)  # five seconds late
    assert pacer.wait_time(5.0) == pytest.approx(0.1)


def test_unpaced_source_never_waits() -> None:
    pacer = Pacer(None)
    pacer.emitted(0.0)
    assert pacer.wait_time(0.0) == 0


def test_stop_interrupts_the_wait_for_the_next_due_frame(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png", 0)
    stop = threading.Event()
    frames = open_source(str(tmp_path / "a.png"), fps=0.001, loop=True, stop=stop)
    next(frames)  # the next one is due in 1000 s
    threading.Timer(0.05, stop.set).start()
    assert list(frames) == []


@pytest.mark.parametrize(
    ("location", "inherited", "url", "options"),
    [
        ("rtsp://cam/a", None, "rtsp://cam/a", "rtsp_transport;udp"),
        ("rtsp+tcp://cam/a", None, "rtsp://cam/a", "rtsp_transport;tcp"),
        ("rtsp+udp://cam/a", "rtsp_transport;tcp", "rtsp://cam/a", "rtsp_transport;udp"),
        ("rtsp://cam/a", "rtsp_transport;tcp|stimeout;5", "rtsp://cam/a",
         "rtsp_transport;tcp|stimeout;5"),
        ("rtsp://cam/a", "max_delay;500", "rtsp://cam/a", "rtsp_transport;udp|max_delay;500"),
        ("rtsps://cam/a", None, "rtsps://cam/a", "rtsp_transport;tcp"),
    ],
)  # fmt: skip
def test_rtsp_transport_defaults_to_udp_and_follows_the_scheme_or_the_environment(
    location: str, inherited: str | None, url: str, options: str
) -> None:
    assert rtsp_capture(location, inherited) == (url, options)


def test_snapshot_request_sends_the_urls_user_and_password_as_basic_auth() -> None:
    request = snapshot_request("http://admin:p%40ss@10.0.0.5:8080/snap.jpg?ch=1")
    assert request.full_url == "http://10.0.0.5:8080/snap.jpg?ch=1"
    assert request.get_header("Authorization") == "Basic " + base64.b64encode(
        b"admin:p@ss").decode()
    assert not snapshot_request("http://10.0.0.5/snap.jpg").has_header("Authorization")


def test_rtsp_open_sets_the_ffmpeg_options_only_while_opening(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[str | None] = []
    monkeypatch.setenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", "max_delay;500")
    monkeypatch.setattr(
        sources.cv2, "VideoCapture",
        lambda *a: seen.append(os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS")),
    )  # fmt: skip
    sources._open_capture("rtsp://cam/a", "rtsp_transport;udp")
    assert seen == ["rtsp_transport;udp"]
    assert os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] == "max_delay;500"


class ScriptedCapture:
    """A stand-in for cv2.VideoCapture: None never opens, a list of frames then drops."""

    def __init__(self, frames: list[np.ndarray] | None) -> None:
        self.frames = None if frames is None else list(frames)
        self.current: np.ndarray | None = None
        self.released = False

    def isOpened(self) -> bool:  # noqa: N802 (OpenCV's name)
        return self.frames is not None

    def grab(self) -> bool:
        if not self.frames:
            return False
        self.current = self.frames.pop(0)
        return True

    def retrieve(self) -> tuple[bool, np.ndarray | None]:
        return True, self.current

    def release(self) -> None:
        self.released = True


class RecordingBackoff(Backoff):
    """The real policy's bookkeeping, with no waiting and a record of what was asked."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def next_delay(self) -> float:
        self.calls.append(f"delay#{self.attempt}")
        super().next_delay()
        return 0.0

    def reset(self) -> None:
        self.calls.append("reset")
        super().reset()


def test_stream_reconnects_with_growing_backoff_and_resets_it_after_a_frame(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    frame = np.zeros((8, 8, 3), np.uint8)
    script = [
        ScriptedCapture(None), ScriptedCapture(None),  # camera not up yet
        ScriptedCapture([frame, frame]),  # two frames, then the stream drops
        ScriptedCapture(None),
        ScriptedCapture([frame] * 10),
    ]  # fmt: skip
    opened = iter(script)
    monkeypatch.setattr(sources, "_open_capture", lambda url, options: next(opened))
    backoff = RecordingBackoff()
    frames = sources._stream_frames(
        "rtsp://cam/a", None, Pacer(None), threading.Event(), backoff, "cam"
    )
    assert len(list(itertools.islice(frames, 5))) == 5
    assert backoff.calls == ["delay#0", "delay#1", "reset", "delay#0", "delay#1", "reset"]
    assert all(c.released for c in script[:4])


def test_stream_logs_each_drop_and_failed_open_with_what_to_check(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    frame = np.zeros((8, 8, 3), np.uint8)
    opened = iter([ScriptedCapture([frame]), ScriptedCapture(None), ScriptedCapture([frame])])
    monkeypatch.setattr(sources, "_open_capture", lambda url, options: next(opened))
    frames = sources._stream_frames(
        "rtsp://cam/a", None, Pacer(None), threading.Event(), RecordingBackoff(), "cam"
    )
    with caplog.at_level(logging.INFO, logger=sources.__name__):
        assert len(list(itertools.islice(frames, 2))) == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage().split(";")[0] for r in warnings] == [
        "camera stream dropped", "camera stream cannot be opened or gave no frame",
    ]  # fmt: skip
    fields = [vars(r) for r in warnings]
    assert all(f["source"] == "cam" and f["check"] and "retry_in_s" in f for f in fields)


def test_paced_live_stream_drops_frames_that_are_not_yet_due(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [0.0]

    class EightFpsCamera(ScriptedCapture):
        def grab(self) -> bool:
            clock[0] += 0.125  # an 8 fps camera (a step that floats add up exactly)
            return super().grab()

    stop = threading.Event()
    camera = EightFpsCamera([np.full((8, 8, 3), 5 * i, np.uint8) for i in range(20)])

    def open_once(url: str, options: str | None) -> ScriptedCapture:
        if camera.released:  # the stream ended: end the test's source too
            stop.set()
        return camera

    monkeypatch.setattr(sources, "_open_capture", open_once)
    pacer = Pacer(fps=2, clock=lambda: clock[0])
    frames = sources._stream_frames("rtsp://cam/a", None, pacer, stop, RecordingBackoff(), "cam")
    # At 2 fps from an 8 fps camera every fourth frame goes out.
    assert [round(brightness(f) / 5) for f in frames] == [0, 4, 8, 12, 16]
