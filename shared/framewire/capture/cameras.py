"""Cameras managed at run time: the ``cameras`` settings topic, folded over the configured ones.

The topic is compacted: its key is the camera id, its value the camera's settings as JSON
(``CameraSettings``), a tombstone (no value) removes the camera. The cameras ingest runs are
the configured ones (the ``cameras`` setting: YAML or environment), then the topic's records
in order: a record adds a camera or replaces one of the same id (a configured one included),
a tombstone removes it (a configured one included: it stays removed, tombstones are kept).
Only the latest record per key counts, whether or not the broker has compacted the topic yet.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from pydantic import ValidationError

from framewire.broker.reading import KeyedValue, TopicFollower
from framewire.capture.sources import (
    ACCEPTED,
    HTTP_SCHEMES,
    RTSP_SCHEMES,
    CapturedImage,
    open_source,
)
from framewire.config import CameraSettings, Settings
from framewire.errors import ConfigError, TransientError
from framewire.secrets import mask_url

log = logging.getLogger(__name__)

CAMERAS_TOPIC = "cameras"
SourceFactory = Callable[[threading.Event], Iterator[CapturedImage]]


def camera_value(camera: CameraSettings) -> bytes:
    """A camera's record value: its settings as JSON."""
    return camera.model_dump_json().encode()


def parse_camera(key: bytes | None, value: bytes | None) -> CameraSettings | None:
    """The camera a record sets, None for a tombstone; ValueError for a record that is not
    a camera's settings under its own id."""
    if key is None:
        raise ValueError("a record without a key (the key must be the camera id)")
    camera_id = key.decode(errors="replace")
    if value is None:
        return None
    try:
        camera = CameraSettings.model_validate(json.loads(value))
    except (ValueError, ValidationError) as exc:  # JSONDecodeError is a ValueError
        raise ValueError(f"camera {camera_id!r}: not valid camera settings ({exc})") from None
    if camera.camera_id != camera_id:
        raise ValueError(f"a record keyed {camera_id!r} holds camera {camera.camera_id!r}")
    return camera


def latest_per_key(records: Iterable[KeyedValue],
                   table: dict[str, CameraSettings | None] | None = None
                   ) -> dict[str, CameraSettings | None]:
    """Each camera id's latest record, in topic order, folded into ``table``: its settings,
    or None where the latest is a tombstone. A record that is not a camera's settings is
    logged and skipped (the id keeps its earlier value)."""
    table = {} if table is None else table
    for key, value in records:
        try:
            camera = parse_camera(key, value)
        except ValueError as exc:
            log.error("bad record on the cameras topic skipped", extra={
                "error": str(exc), "check": "write cameras with `framewire cameras add`"})
            continue
        assert key is not None  # parse_camera refuses a record without one
        table[key.decode()] = camera
    return table


def effective_cameras(configured: Iterable[CameraSettings],
                      table: Mapping[str, CameraSettings | None]) -> dict[str, CameraSettings]:
    """The cameras to run: the configured ones, with the topic's entries over them (a
    record adds or replaces, a tombstone removes)."""
    cameras = {c.camera_id: c for c in configured}
    for camera_id, camera in table.items():
        if camera is None:
            cameras.pop(camera_id, None)
        else:
            cameras[camera_id] = camera
    return cameras


@dataclass(frozen=True)
class CameraChanges:
    """What to do to the running cameras: start, restart with new settings, stop."""

    added: list[CameraSettings] = field(default_factory=list)
    changed: list[CameraSettings] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.removed)


def diff_cameras(before: Mapping[str, CameraSettings],
                 after: Mapping[str, CameraSettings]) -> CameraChanges:
    """The changes that take the cameras from ``before`` to ``after``."""
    return CameraChanges(
        added=[c for cid, c in after.items() if cid not in before],
        changed=[c for cid, c in after.items() if cid in before and before[cid] != c],
        removed=[cid for cid in before if cid not in after])


def check_camera_url(url: str) -> None:
    """ConfigError unless ``url`` is something ingest can open: a path, or a URL of an
    accepted scheme (a path is looked for by the ingest process, on its host)."""
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if not url.strip():
        raise ConfigError(f"a camera needs a URL: give {ACCEPTED}")
    if scheme and scheme not in RTSP_SCHEMES | HTTP_SCHEMES:
        raise ConfigError(f"cannot read {mask_url(url)!r}: unknown scheme {scheme!r}; give "
                          f"{ACCEPTED}")


def camera_source(camera: CameraSettings) -> SourceFactory:
    """The source factory of a camera: its URL opened with its fps and loop."""

    def make(stop: threading.Event) -> Iterator[CapturedImage]:
        return open_source(camera.url, fps=camera.fps, loop=camera.loop, stop=stop)

    return make


class CameraWatch:
    """The cameras a site runs, followed on the ``cameras`` topic (see the module's doc).

    ``start`` reads the topic to its end and returns the cameras to run; ``changes`` returns
    what changed since (added, changed, removed), waiting up to its timeout for a record.
    """

    def __init__(self, settings: Settings, service: str = "ingest",
                 start_timeout_s: float = 10.0) -> None:
        self.settings, self.start_timeout_s = settings, start_timeout_s
        # a change waits at most this long on the broker: 2 fetches a second of a quiet
        # topic, not 20
        self.follower = TopicFollower(settings, settings.topic(CAMERAS_TOPIC),
                                      settings.group(service), fetch_wait_ms=500)
        self.table: dict[str, CameraSettings | None] = {}
        self.cameras: dict[str, CameraSettings] = {}

    def start(self) -> dict[str, CameraSettings]:
        """The cameras to run now: the configured ones with the topic read to its end over
        them; the configured ones alone while the topic cannot be read (its records then
        come as changes)."""
        try:
            latest_per_key(self.follower.read_to_end(self.start_timeout_s), self.table)
        except TransientError as exc:
            log.warning("cameras topic not read: starting the configured cameras; changes "
                        "apply once it can be read", extra={"error": str(exc)})
        self.cameras = effective_cameras(self.settings.cameras, self.table)
        return dict(self.cameras)

    def changes(self, timeout_s: float) -> CameraChanges:
        """What the records written since change (empty when none came within the time)."""
        records = self.follower.poll(timeout_s)
        if not records:
            return CameraChanges()
        latest_per_key(records, self.table)
        cameras = effective_cameras(self.settings.cameras, self.table)
        changes, self.cameras = diff_cameras(self.cameras, cameras), cameras
        return changes

    def close(self) -> None:
        self.follower.close()
