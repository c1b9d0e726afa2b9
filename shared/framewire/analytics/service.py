"""The analytics service's work, without Kafka: detections records in, encoded events and
alerts out, and each camera's state as plain JSON for a changelog table.

``CameraWork`` keeps, per camera, a ``CameraTracker`` and a ``CameraAnalyzer``. The faust app
(``framewire.analytics.app``) hands it each ``detections`` record of a camera with the state
its table holds for that camera, and saves the state it gets back. The state carries a mark
(a count of frames done): a worker whose own copy has that mark goes on with it; one that does
not (it was given the camera by a rebalance, or restarted) rebuilds tracker and analyzer from
the table's state first, so a camera moved between workers takes up exactly where it was.

A camera's lines, zones and rules are its ``analytics.cameras`` entry unless the ``control``
topic holds settings for it (set over the gateway's API): ``overrides``, replaced whole by the
worker's watch of that topic, takes precedence. A camera whose settings change goes on with
its tracks (the same ids) under the new ones, and the change's own events (leaves of zones
gone or redrawn, alerts of rules gone resolved) come with the frame it is seen at
(``CameraAnalyzer.import_state``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from framewire.analytics.events import CameraAnalyzer, Findings, camera_tracker
from framewire.analytics.settings import AnalyticsSettings, CameraAnalytics
from framewire.analytics.tracking import CameraTracker
from framewire.contracts import InferenceResult
from framewire.contracts.codec import Codec

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One record to publish: its logical topic (``events`` or ``alerts``), key and value."""

    topic: str
    key: str
    value: bytes


@dataclass
class _Camera:
    config: CameraAnalytics
    tracker: CameraTracker
    analyzer: CameraAnalyzer
    mark: int = 0


@dataclass
class Done:
    """What one record brought: the records to publish and the camera's state to save (None
    for a camera without analytics settings, which is passed over; ``clear``: its saved
    state is to be deleted, its settings having been taken away)."""

    camera_id: str
    outgoing: list[Outgoing] = field(default_factory=list)
    state: dict[str, Any] | None = None
    clear: bool = False


class CameraWork:
    """Every camera this worker has seen: decode, track, analyse, encode."""

    def __init__(self, settings: AnalyticsSettings, codec: Codec) -> None:
        self.settings = settings
        self.codec = codec
        self.cameras: dict[str, _Camera] = {}
        # from the control topic: a camera's settings, or None (back to its configured ones)
        self.overrides: dict[str, CameraAnalytics | None] = {}
        # False while a worker's watch has not read the control topic yet: a camera without
        # configured settings is then passed over, its saved state kept (it may be set there)
        self.overrides_read = True

    def set_overrides(self, overrides: dict[str, CameraAnalytics | None]) -> None:
        """The control topic's settings per camera, replacing the previous ones whole (from
        the watch's thread: one assignment, read once per record)."""
        self.overrides = dict(overrides)
        self.overrides_read = True

    def config_for(self, camera_id: str) -> CameraAnalytics | None:
        """The camera's settings now: set over the API, else configured, else None."""
        override = self.overrides.get(camera_id)
        return override if override is not None else self.settings.cameras.get(camera_id)

    def decode(self, value: bytes | None) -> InferenceResult:
        """A ``detections`` record; DataError (with its reason code) when it is not one."""
        return self.codec.decode(value, InferenceResult)

    def handle(self, result: InferenceResult, saved: dict[str, Any] | None) -> Done:
        """One frame's detections; ``saved`` is the camera's state as the table holds it."""
        camera_id, frame_id = result.header.camera_id, result.header.frame_id
        at = result.header.captured_at
        config = self.config_for(camera_id)
        if config is None:
            if not self.overrides_read or (saved is None and camera_id not in self.cameras):
                return Done(camera_id)
            # its settings were taken away: its tracks leave their zones, firing alerts
            # resolve; its state goes (set again later, the camera starts afresh)
            ended = self._ended(camera_id, saved, frame_id, at)
            self.cameras.pop(camera_id, None)
            return Done(camera_id, self._encode(camera_id, ended), clear=saved is not None)
        camera, changed = self._camera(camera_id, saved, config, frame_id, at)
        tracks = camera.tracker.update(at, result.detections)
        found = camera.analyzer.observe(frame_id, at, tracks)
        camera.mark += 1
        found.events[:0], found.alerts[:0] = changed.events, changed.alerts
        return Done(camera_id, self._encode(camera_id, found), self.export(camera_id))

    def _encode(self, camera_id: str, found: Findings) -> list[Outgoing]:
        out = [Outgoing("events", camera_id, self.codec.encode(e)) for e in found.events]
        out += [Outgoing("alerts", camera_id, self.codec.encode(a)) for a in found.alerts]
        return out

    def _ended(self, camera_id: str, saved: dict[str, Any] | None, frame_id: str,
               at: datetime) -> Findings:
        """What a camera's analytics end with when its settings go: the state taken up
        under no lines, zones or rules."""
        camera, _ = self._own(camera_id, saved)
        state = (camera.analyzer.export_state() if camera is not None
                 else None if saved is None else saved.get("analyzer"))
        if state is None:
            return Findings()
        try:
            return CameraAnalyzer(camera_id, CameraAnalytics(), self.settings).import_state(
                state, frame_id, at)
        except (KeyError, TypeError, ValueError):
            return Findings()

    def export(self, camera_id: str) -> dict[str, Any]:
        """The camera's state for its table: tracker, analyzer and mark."""
        camera = self.cameras[camera_id]
        return {"mark": camera.mark, "tracker": camera.tracker.export_state(),
                "analyzer": camera.analyzer.export_state()}

    def forget(self, camera_ids: list[str] | None = None) -> None:
        """Drop this worker's own copies (all of them by default): the table's state is
        taken up again when the camera's next record comes."""
        for camera_id in list(self.cameras) if camera_ids is None else camera_ids:
            self.cameras.pop(camera_id, None)

    def _own(self, camera_id: str, saved: dict[str, Any] | None) -> tuple[_Camera | None, int]:
        """This worker's copy of the camera if it is as up to date as ``saved`` (the same
        mark), else None; and the saved mark."""
        mark = 0 if saved is None else int(saved.get("mark", 0))
        camera = self.cameras.get(camera_id)
        return (camera if camera is not None and camera.mark == mark else None), mark

    def _camera(self, camera_id: str, saved: dict[str, Any] | None, config: CameraAnalytics,
                frame_id: str, at: datetime) -> tuple[_Camera, Findings]:
        """The camera under ``config``: this worker's copy, or rebuilt from ``saved``; with
        what a change of its settings since ended (``CameraAnalyzer.import_state``)."""
        camera, mark = self._own(camera_id, saved)
        if camera is not None:
            if camera.config == config:
                return camera, Findings()
            return camera, self._reconfigure(camera_id, camera, config, frame_id, at)
        analyzer = CameraAnalyzer(camera_id, config, self.settings)
        tracker, changed = None, Findings()
        if saved is not None:
            try:
                tracker = camera_tracker(self.settings, config, saved["tracker"])
                changed = analyzer.import_state(saved["analyzer"], frame_id, at)
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("camera's analytics state not usable; starting it afresh",
                            extra={"camera_id": camera_id, "error": str(exc)})
                tracker, mark, changed = None, 0, Findings()
                analyzer = CameraAnalyzer(camera_id, config, self.settings)
            else:
                log.info("camera's analytics state taken up",
                         extra={"camera_id": camera_id, "mark": mark})
        camera = _Camera(config, tracker or camera_tracker(self.settings, config), analyzer, mark)
        self.cameras[camera_id] = camera
        return camera, changed

    def _reconfigure(self, camera_id: str, camera: _Camera, config: CameraAnalytics,
                     frame_id: str, at: datetime) -> Findings:
        """The camera's settings changed: the same tracks, under the new lines and zones."""
        analyzer = CameraAnalyzer(camera_id, config, self.settings)
        changed = analyzer.import_state(camera.analyzer.export_state(), frame_id, at)
        if config.labels != camera.config.labels:
            camera.tracker = camera_tracker(self.settings, config,
                                            camera.tracker.export_state())
        camera.config, camera.analyzer = config, analyzer
        log.info("camera's analytics settings changed", extra={
            "camera_id": camera_id, "lines": [line.name for line in config.lines],
            "zones": [zone.name for zone in config.zones]})
        return changed
