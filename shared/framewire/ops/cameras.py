"""Managing cameras at run time: add, change, remove and list the site's cameras.

Each change is one record on the compacted ``cameras`` topic (``framewire.capture.cameras``),
which every ingest process follows: a camera added starts capturing within a second or so, a
changed one restarts with its new settings, a removed one stops. The ``framewire cameras``
command and the gateway's ``/api/v1/cameras`` call these functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from framewire.capture.cameras import (
    CAMERAS_TOPIC,
    camera_value,
    check_camera_url,
    effective_cameras,
    latest_per_key,
)
from framewire.config import CameraSettings, Settings
from framewire.errors import ConfigError, FramewireError, TransientError
from framewire.ops.settings_topic import read_whole, write_record
from framewire.secrets import mask_url, mask_urls_in

TIMEOUT_S = 10.0


class UnknownCamera(FramewireError):
    """No camera of that id runs on the site (neither configured nor added)."""


@dataclass(frozen=True)
class SiteCamera:
    """A camera the site runs, and where it comes from: ``config`` (the ``cameras``
    setting, as written there) or ``topic`` (added or changed at run time)."""

    settings: CameraSettings
    origin: Literal["config", "topic"]

    def as_json(self) -> dict[str, Any]:
        """The camera as ``framewire cameras ls --json`` and the gateway show it (URL
        masked): camera_id, url, fps, loop, retention, origin."""
        data = self.settings.model_dump(mode="json")
        data["url"] = mask_url(self.settings.url)
        return {**data, "origin": self.origin}


@dataclass(frozen=True)
class CameraWritten:
    """The outcome of ``add_camera``: the camera as stored, and whether its id is new."""

    camera: SiteCamera
    created: bool


def list_cameras(settings: Settings, timeout_s: float = TIMEOUT_S) -> list[SiteCamera]:
    """The cameras the site runs now, by id: the configured ones with the topic over them."""
    table = _read_table(settings, timeout_s)
    cameras = effective_cameras(settings.cameras, table)
    return [SiteCamera(cam, "topic" if table.get(cid) is not None else "config")
            for cid, cam in sorted(cameras.items())]


def add_camera(settings: Settings, camera: CameraSettings | dict[str, Any],
               timeout_s: float = TIMEOUT_S) -> CameraWritten:
    """Add a camera, or replace the one of the same id; it runs once ingest reads the record.

    ``camera`` may be plain data (an API body): it is validated as ``CameraSettings``; a
    bad one raises ConfigError saying what to fix. TransientError when the broker does not
    acknowledge the record within ``timeout_s``.
    """
    camera = validated_camera(camera)
    created = camera.camera_id not in {c.settings.camera_id
                                       for c in list_cameras(settings, timeout_s)}
    _write(settings, camera.camera_id, camera_value(camera), timeout_s)
    return CameraWritten(SiteCamera(camera, "topic"), created)


def remove_camera(settings: Settings, camera_id: str, timeout_s: float = TIMEOUT_S) -> SiteCamera:
    """Remove a camera (a tombstone on the topic; a configured camera stays hidden until
    added again) and return it as it was. UnknownCamera when the site runs no such camera."""
    running = {c.settings.camera_id: c for c in list_cameras(settings, timeout_s)}
    if camera_id not in running:
        raise UnknownCamera(f"no camera {camera_id!r} on this site; `framewire cameras ls` "
                            f"lists them ({', '.join(sorted(running)) or 'none yet'})")
    _write(settings, camera_id, None, timeout_s)
    return running[camera_id]


def validated_camera(camera: CameraSettings | dict[str, Any]) -> CameraSettings:
    """``camera`` as ``CameraSettings``; ConfigError naming each bad field and the fix."""
    if not isinstance(camera, CameraSettings):
        try:
            camera = CameraSettings.model_validate(camera)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'camera'}: {e['msg']}"
                for e in exc.errors())
            raise ConfigError(f"invalid camera: {mask_urls_in(problems)}") from None
    check_camera_url(camera.url)
    return camera


def _read_table(settings: Settings, timeout_s: float) -> dict[str, CameraSettings | None]:
    """The topic's latest record per camera id (None: removed); empty while the topic
    does not exist yet."""
    return latest_per_key(read_whole(settings, CAMERAS_TOPIC, timeout_s))


def _write(settings: Settings, camera_id: str, value: bytes | None, timeout_s: float) -> None:
    """One record on the cameras topic (made first if missing), acknowledged by all
    in-sync replicas; TransientError when it is not within ``timeout_s``."""
    failed = write_record(settings, CAMERAS_TOPIC, camera_id, value, timeout_s)
    if failed:
        raise TransientError(f"the change to camera {camera_id!r} was not acknowledged by "
                             f"the broker within {timeout_s:.0f} s ({'; '.join(failed)}); is it "
                             f"reachable at {settings.bootstrap_servers}? `framewire cameras "
                             "ls` shows whether it took")
