"""Where frames come from: image files, folders, videos and live camera streams.

``open_source`` turns a location into an iterator of encoded images. Files are read as they
are (validation happens once, downstream, in the ingest capture step); decoded frames from
videos and streams are JPEG-encoded at quality 90. Live streams reconnect with backoff and end
only when ``stop`` is set.

Locations:

* an image file (any file that is not a known video type): its bytes, unchanged;
* a folder: every regular file in it, sorted by name, bytes unchanged;
* a video file (``.mp4``, ``.avi``, ``.mkv``...): decoded with OpenCV;
* ``rtsp://`` (UDP transport unless ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` names one),
  ``rtsp+udp://``, ``rtsp+tcp://``, ``rtsps://`` (TCP): read with OpenCV's FFmpeg backend;
* ``http(s)://``: when the URL answers with a single ``image/*`` body it is polled as a snapshot
  camera with urllib (at ``fps``, or once a second when ``fps`` is None); anything else
  (``multipart/x-mixed-replace`` MJPEG, MPEG-TS...) is read as a stream with OpenCV.
"""

from __future__ import annotations

import http.client
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import cv2
import numpy as np

from framewire.contracts import utcnow
from framewire.errors import ConfigError
from framewire.retry import Backoff
from framewire.secrets import mask_url

log = logging.getLogger(__name__)

JPEG_QUALITY = 90
VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".wmv", ".flv"}
)
RTSP_SCHEMES = frozenset({"rtsp", "rtsps", "rtsp+udp", "rtsp+tcp"})
HTTP_SCHEMES = frozenset({"http", "https"})
ACCEPTED = (
    "an image file, a folder of images, a video file "
    f"({', '.join(sorted(VIDEO_SUFFIXES))}), or an rtsp://, rtsp+tcp://, rtsp+udp://, "
    "rtsps://, http:// or https:// camera URL"
)
SNAPSHOT_DEFAULT_FPS = 1.0  # polling a snapshot URL flat out would hammer the camera
OPEN_TIMEOUT_MS = 10_000
# Longer than a typical camera's keyframe interval, so a slow start is not taken for a drop.
READ_TIMEOUT_MS = 10_000
HTTP_TIMEOUT_S = 10.0
# A bound on one snapshot read, so a server that never ends its body cannot exhaust memory.
SNAPSHOT_MAX_BYTES = 64 * 1024 * 1024

_JPEG_PARAMS = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
_OPTIONS_VAR = "OPENCV_FFMPEG_CAPTURE_OPTIONS"


@dataclass(frozen=True)
class CapturedImage:
    """One encoded image as a source produced it, before any validation."""

    data: bytes
    captured_at: datetime
    source: str


class Pacer:
    """Due times for a target rate: sleep until due (files) or drop frames not yet due (live)."""

    def __init__(self, fps: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        if fps is not None and fps <= 0:
            raise ConfigError(f"fps={fps} is not positive; give a rate above 0, or None")
        self.interval = None if fps is None else 1.0 / fps
        self.next_due: float | None = None
        self.clock = clock

    def wait_time(self, now: float) -> float:
        """Seconds until the next frame is due (0 when due now or unpaced)."""
        if self.interval is None or self.next_due is None:
            return 0.0
        return max(0.0, self.next_due - now)

    def wait(self, stop: threading.Event) -> bool:
        """Wait until the next frame is due; False when ``stop`` is set first."""
        delay = self.wait_time(self.clock())
        return not stop.wait(delay) if delay > 0 else not stop.is_set()

    def emitted(self, now: float) -> None:
        """Record that a frame went out at ``now``."""
        if self.interval is None:
            return
        if self.next_due is None or now - self.next_due >= self.interval:
            # Fell behind by a whole interval: restart the schedule rather than burst to catch up.
            self.next_due = now + self.interval
        else:
            self.next_due += self.interval


def encode_jpeg(frame: np.ndarray) -> bytes:
    """A BGR frame as JPEG bytes at the project's quality (90)."""
    ok, buf = cv2.imencode(".jpg", frame, _JPEG_PARAMS)
    if not ok:
        raise ValueError(f"OpenCV could not JPEG-encode a frame of shape {frame.shape}")
    return buf.tobytes()


def snapshot_request(url: str) -> urllib.request.Request:
    """A request for ``url``; its ``user:password@`` becomes HTTP basic authentication
    (urllib would take it for part of the host, and name the password in its errors)."""
    parts = urlsplit(url)
    if parts.username is None:
        return urllib.request.Request(url)
    host = parts.netloc.rpartition("@")[2]
    request = urllib.request.Request(urlunsplit(parts._replace(netloc=host)))
    user_pass = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    request.add_header("Authorization", "Basic " + b64encode(user_pass.encode()).decode())
    return request


def rtsp_capture(location: str, inherited: str | None) -> tuple[str, str]:
    """The URL FFmpeg opens and the OPENCV_FFMPEG_CAPTURE_OPTIONS to open it with."""
    scheme, _, rest = location.partition("://")
    scheme = scheme.lower()
    options = [o for o in (inherited or "").split("|") if o]
    user_transport = any(o.split(";", 1)[0] == "rtsp_transport" for o in options)
    if scheme in ("rtsp+udp", "rtsp+tcp", "rtsps"):
        transport = "tcp" if scheme != "rtsp+udp" else "udp"  # RTSP over TLS needs TCP
        options = [o for o in options if o.split(";", 1)[0] != "rtsp_transport"]
        options.insert(0, f"rtsp_transport;{transport}")
    elif not user_transport:
        # UDP is what rtsp-server-perl and most cameras on a LAN serve; rtsp+tcp:// forces TCP.
        options.insert(0, "rtsp_transport;udp")
    url_scheme = "rtsps" if scheme == "rtsps" else "rtsp"
    return f"{url_scheme}://{rest}", "|".join(options)


def open_source(
    location: str,
    fps: float | None = None,
    loop: bool = False,
    stop: threading.Event | None = None,
) -> Iterator[CapturedImage]:
    """Encoded images from a file, folder, video or camera URL (see the module docstring)."""
    pacer = Pacer(fps)  # validates fps now, not at the first next()
    stop = stop or threading.Event()
    scheme = location.partition("://")[0].lower() if "://" in location else ""
    if scheme in RTSP_SCHEMES:
        url, options = rtsp_capture(location, os.environ.get(_OPTIONS_VAR))
        return _stream_frames(url, options, pacer, stop, Backoff(), mask_url(location))
    if scheme in HTTP_SCHEMES:
        return _http_frames(location, fps, stop)
    if scheme:
        raise ConfigError(f"cannot read {mask_url(location)!r}: unknown scheme; give {ACCEPTED}")
    path = Path(location).expanduser()
    if path.is_dir():
        return _folder_images(path, loop, pacer, stop)
    if path.is_file():
        if path.suffix.lower() in VIDEO_SUFFIXES:
            return _video_frames(path, loop, pacer, stop)
        return _file_images(path, loop, pacer, stop)
    raise ConfigError(f"no file or folder at {str(path)!r}; give {ACCEPTED}")


def _file_images(
    path: Path, loop: bool, pacer: Pacer, stop: threading.Event
) -> Iterator[CapturedImage]:
    data = path.read_bytes()  # read once: looping a still must not hit the disk every frame
    source = str(path)
    while pacer.wait(stop):
        yield CapturedImage(data, utcnow(), source)
        pacer.emitted(pacer.clock())
        if not loop:
            return


def _folder_images(
    folder: Path, loop: bool, pacer: Pacer, stop: threading.Event
) -> Iterator[CapturedImage]:
    while True:
        # Listed again on every pass, so files added to the folder are picked up when looping.
        files = sorted((p for p in folder.iterdir() if p.is_file()), key=lambda p: p.name)
        for path in files:
            if not pacer.wait(stop):
                return
            yield CapturedImage(path.read_bytes(), utcnow(), str(path))
            pacer.emitted(pacer.clock())
        if not loop or not files:
            return  # an empty folder with loop would otherwise spin


def _video_frames(
    path: Path, loop: bool, pacer: Pacer, stop: threading.Event
) -> Iterator[CapturedImage]:
    source = str(path)
    while True:
        cap = cv2.VideoCapture(source)
        if not cap.isOpened():
            raise ConfigError(
                f"OpenCV cannot open the video {source!r}; check it plays with ffprobe, or "
                "re-encode it to H.264/MJPEG"
            )
        frames = 0
        try:
            while pacer.wait(stop):
                ok, frame = cap.read()
                if not ok:
                    break
                frames += 1
                yield CapturedImage(encode_jpeg(frame), utcnow(), source)
                pacer.emitted(pacer.clock())
        finally:
            cap.release()
        if not loop or stop.is_set() or frames == 0:
            return


class _CaptureOptions:
    """Sets the process-wide OPENCV_FFMPEG_CAPTURE_OPTIONS around opens that need them.

    OpenCV reads the variable while a capture opens (up to OPEN_TIMEOUT_MS), so opens needing
    the same options run together and only an open needing different ones waits.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._active = 0
        self._current: str | None = None
        self._previous: str | None = None

    @contextmanager
    def applied(self, options: str) -> Iterator[None]:
        with self._changed:
            while self._active and self._current != options:
                self._changed.wait()
            if not self._active:
                self._previous = os.environ.get(_OPTIONS_VAR)
                os.environ[_OPTIONS_VAR] = self._current = options
            self._active += 1
        try:
            yield
        finally:
            with self._changed:
                self._active -= 1
                if not self._active:
                    if self._previous is None:
                        os.environ.pop(_OPTIONS_VAR, None)
                    else:
                        os.environ[_OPTIONS_VAR] = self._previous
                    self._current = None
                    self._changed.notify_all()


_capture_options = _CaptureOptions()


def _open_capture(url: str, options: str | None) -> cv2.VideoCapture:
    params = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
        OPEN_TIMEOUT_MS,
        cv2.CAP_PROP_READ_TIMEOUT_MSEC,
        READ_TIMEOUT_MS,
    ]
    if options is None:
        return cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
    with _capture_options.applied(options):
        return cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)


def _stream_frames(
    url: str,
    options: str | None,
    pacer: Pacer,
    stop: threading.Event,
    backoff: Backoff,
    source: str,
) -> Iterator[CapturedImage]:
    """Frames from a live stream, reconnecting with backoff until ``stop`` is set."""
    attempt = 0
    while not stop.is_set():
        attempt += 1
        cap = _open_capture(url, options)
        frames = 0
        try:
            if cap.isOpened():
                log.info("camera stream connected", extra={"source": source, "attempt": attempt})
                # grab() is cheap; retrieve()+encode only the frames the pacer lets through.
                while not stop.is_set() and cap.grab():
                    if pacer.wait_time(pacer.clock()) > 0:
                        continue
                    ok, frame = cap.retrieve()
                    if not ok:
                        break
                    if frames == 0:
                        backoff.reset()  # only a delivered frame proves the camera healthy
                        attempt = 0
                    frames += 1
                    yield CapturedImage(encode_jpeg(frame), utcnow(), source)
                    pacer.emitted(pacer.clock())
        finally:
            cap.release()
        if stop.is_set():
            return
        delay = backoff.next_delay()
        if frames:
            log.warning(
                "camera stream dropped; reconnecting",
                extra={
                    "source": source,
                    "frames": frames,
                    "retry_in_s": round(delay, 2),
                    "check": "the camera or RTSP server is up and still publishing",
                },
            )
        else:
            log.warning(
                "camera stream cannot be opened or gave no frame; retrying",
                extra={
                    "source": source,
                    "attempt": attempt,
                    "retry_in_s": round(delay, 2),
                    "check": "the URL, path, credentials and transport (rtsp+tcp:// forces "
                    "TCP), and that the camera is reachable from this host",
                },
            )
        stop.wait(delay)


def _http_frames(url: str, fps: float | None, stop: threading.Event) -> Iterator[CapturedImage]:
    """A snapshot URL polled with urllib, or a stream handed to OpenCV once seen to be one."""
    source = mask_url(url)
    backoff = Backoff()
    snapshot_pacer = Pacer(fps or SNAPSHOT_DEFAULT_FPS)
    while snapshot_pacer.wait(stop):
        try:
            with urllib.request.urlopen(snapshot_request(url), timeout=HTTP_TIMEOUT_S) as response:
                is_image = response.headers.get_content_type().startswith("image/")
                data = response.read(SNAPSHOT_MAX_BYTES + 1) if is_image else None
            if data is not None and len(data) > SNAPSHOT_MAX_BYTES:
                raise ValueError(f"snapshot over {SNAPSHOT_MAX_BYTES} bytes")
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            delay = backoff.next_delay()
            log.warning(
                "camera URL failed; retrying",
                extra={
                    "source": source,
                    "error": str(exc),
                    "retry_in_s": round(delay, 2),
                    "check": "the URL, that the camera answers from this host, and that it "
                    "serves one image (or an MJPEG stream) per request",
                },
            )
            stop.wait(delay)
            continue
        if data is None:
            yield from _stream_frames(url, None, Pacer(fps), stop, backoff, source)
            return
        backoff.reset()
        yield CapturedImage(data, utcnow(), source)
        snapshot_pacer.emitted(snapshot_pacer.clock())
