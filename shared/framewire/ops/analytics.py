"""A camera's analytics settings (lines, zones, alert rules) changed at run time.

They are records of the compacted ``control`` topic, as the model switch is: the key
``analytics.cameras.<camera id>``, the value that camera's ``CameraAnalytics`` as JSON
(``{"lines": [...], "zones": [...], "alerts": [...], "labels": [...]}``, the shape of
``analytics.cameras.<camera id>`` in the settings); a tombstone sends the camera back to its
configured settings. The gateway's ``/api/v1/cameras/{camera_id}/analytics`` writes and reads
them (``camera_overrides`` gives a camera's record precedence over its configured entry), and
each analytics worker follows them (``AnalyticsWatch``): a change applies from the camera's
next frame.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import ValidationError

from framewire.analytics.settings import CameraAnalytics
from framewire.broker.reading import KeyedValue
from framewire.config import Settings
from framewire.errors import ConfigError, TransientError
from framewire.models.control import CONTROL_TOPIC
from framewire.ops.settings_topic import TopicWatch, read_whole, write_record

log = logging.getLogger(__name__)
KEY_PREFIX = "analytics.cameras."
TIMEOUT_S = 10.0


def analytics_key(camera_id: str) -> str:
    """The control topic's key of a camera's analytics settings."""
    return f"{KEY_PREFIX}{camera_id}"


def camera_overrides(records: Iterable[KeyedValue],
                     current: dict[str, CameraAnalytics | None] | None = None
                     ) -> dict[str, CameraAnalytics | None]:
    """The latest analytics record per camera in ``records`` over ``current``: its
    CameraAnalytics, or None for a tombstone (back to the configured settings). A record
    that is not valid is logged and skipped."""
    found = dict(current or {})
    prefix = KEY_PREFIX.encode()
    for key, value in records:
        if key is None or not key.startswith(prefix):
            continue
        camera_id = key[len(prefix):].decode(errors="replace")
        if value is None:
            found[camera_id] = None
            continue
        try:
            found[camera_id] = CameraAnalytics.model_validate(json.loads(value))
        except (ValueError, ValidationError) as exc:
            log.error("bad analytics record on the control topic skipped", extra={
                "camera_id": camera_id, "error": str(exc),
                "check": "set analytics with PUT /api/v1/cameras/{camera_id}/analytics"})
    return found


class AnalyticsWatch:
    """An analytics worker's watch of the control topic: ``apply`` is given every camera's
    settings from the topic (None: back to the configured ones) at ``start``, and again, whole,
    after each change."""

    def __init__(self, settings: Settings, service: str,
                 apply: Callable[[dict[str, CameraAnalytics | None]], None]) -> None:
        self.apply = apply
        self.overrides: dict[str, CameraAnalytics | None] = {}
        self.watch = TopicWatch(settings, CONTROL_TOPIC, service, self._records,
                                thread_name="analytics-watch")

    def _records(self, records: list[KeyedValue]) -> None:
        found = camera_overrides(records, self.overrides)
        if found != self.overrides:
            changed = sorted(c for c in {*found, *self.overrides}
                             if found.get(c) != self.overrides.get(c))
            self.overrides = found
            log.info("cameras' analytics settings from the control topic",
                     extra={"cameras": changed})
            self.apply(found)

    def start(self) -> bool:
        """Read the topic to its end and apply it (False: not readable now, applied later)."""
        return self.watch.start()

    def follow(self) -> None:
        self.watch.follow()

    def close(self) -> None:
        self.watch.close()


def validated_analytics(body: dict[str, Any]) -> CameraAnalytics:
    """``body`` as a camera's analytics settings; ConfigError naming what to fix."""
    try:
        return CameraAnalytics.model_validate(body)
    except ValidationError as exc:
        bad = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
                        for e in exc.errors())
        raise ConfigError(f"analytics settings: {bad}") from None


def camera_analytics(settings: Settings, camera_id: str,
                     timeout_s: float = TIMEOUT_S) -> tuple[CameraAnalytics, str]:
    """A camera's analytics settings now, and where they come from: ``topic`` (set at run
    time), ``config`` (analytics.cameras in the settings) or ``none`` (nothing watched)."""
    records = read_whole(settings, CONTROL_TOPIC, timeout_s)
    override = camera_overrides(records).get(camera_id)
    if override is not None:
        return override, "topic"
    configured = settings.analytics.cameras.get(camera_id)
    if configured is not None:
        return configured, "config"
    return CameraAnalytics(), "none"


def set_camera_analytics(settings: Settings, camera_id: str, analytics: CameraAnalytics | None,
                         timeout_s: float = TIMEOUT_S) -> None:
    """Write a camera's analytics settings (None: back to the configured ones) to the control
    topic; TransientError when the broker does not acknowledge it."""
    value = analytics.model_dump_json().encode() if analytics is not None else None
    failed = write_record(settings, CONTROL_TOPIC, analytics_key(camera_id), value, timeout_s)
    if failed:
        raise TransientError(f"the analytics settings of camera {camera_id} were not "
                             f"acknowledged by the broker within {timeout_s:.0f} s "
                             f"({'; '.join(failed)}); is it reachable at "
                             f"{settings.bootstrap_servers}?")
