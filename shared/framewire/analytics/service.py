"""The analytics service's work, without Kafka: detections records in, encoded events and
alerts out, and each camera's state as plain JSON for a changelog table.

``CameraWork`` keeps, per camera, a ``CameraTracker`` and a ``CameraAnalyzer``. The faust app
(``framewire.analytics.app``) hands it each ``detections`` record of a camera with the state
its table holds for that camera, and saves the state it gets back. The state carries a mark
(a count of frames done): a worker whose own copy has that mark goes on with it; one that does
not (it was given the camera by a rebalance, or restarted) rebuilds tracker and analyzer from
the table's state first, so a camera moved between workers takes up exactly where it was.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from framewire.analytics.events import CameraAnalyzer, camera_tracker
from framewire.analytics.settings import AnalyticsSettings
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
    tracker: CameraTracker
    analyzer: CameraAnalyzer
    mark: int = 0


@dataclass
class Done:
    """What one record brought: the records to publish and the camera's state to save (None
    for a camera without analytics settings, which is passed over)."""

    camera_id: str
    outgoing: list[Outgoing] = field(default_factory=list)
    state: dict[str, Any] | None = None


class CameraWork:
    """Every camera this worker has seen: decode, track, analyse, encode."""

    def __init__(self, settings: AnalyticsSettings, codec: Codec) -> None:
        self.settings = settings
        self.codec = codec
        self.cameras: dict[str, _Camera] = {}

    def decode(self, value: bytes | None) -> InferenceResult:
        """A ``detections`` record; DataError (with its reason code) when it is not one."""
        return self.codec.decode(value, InferenceResult)

    def handle(self, result: InferenceResult, saved: dict[str, Any] | None) -> Done:
        """One frame's detections; ``saved`` is the camera's state as the table holds it."""
        camera_id = result.header.camera_id
        config = self.settings.cameras.get(camera_id)
        if config is None:
            return Done(camera_id)
        camera = self._camera(camera_id, saved)
        tracks = camera.tracker.update(result.header.captured_at, result.detections)
        found = camera.analyzer.observe(result.header.frame_id, result.header.captured_at,
                                        tracks)
        camera.mark += 1
        out = [Outgoing("events", camera_id, self.codec.encode(e)) for e in found.events]
        out += [Outgoing("alerts", camera_id, self.codec.encode(a)) for a in found.alerts]
        return Done(camera_id, out, self.export(camera_id))

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

    def _camera(self, camera_id: str, saved: dict[str, Any] | None) -> _Camera:
        mark = 0 if saved is None else int(saved.get("mark", 0))
        camera = self.cameras.get(camera_id)
        if camera is not None and camera.mark == mark:
            return camera
        config = self.settings.cameras[camera_id]
        analyzer = CameraAnalyzer(camera_id, config, self.settings)
        tracker = None
        if saved is not None:
            try:
                tracker = camera_tracker(self.settings, config, saved["tracker"])
                analyzer.import_state(saved["analyzer"])
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("camera's analytics state not usable; starting it afresh",
                            extra={"camera_id": camera_id, "error": str(exc)})
                tracker, mark = None, 0
                analyzer = CameraAnalyzer(camera_id, config, self.settings)
            else:
                log.info("camera's analytics state taken up",
                         extra={"camera_id": camera_id, "mark": mark})
        camera = _Camera(tracker or camera_tracker(self.settings, config), analyzer, mark)
        self.cameras[camera_id] = camera
        return camera
