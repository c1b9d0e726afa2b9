"""Retention: the storage service deletes what is past its retention, every
``sweep_interval_s``: each camera's results, detections, spans, original and stored frames and
thumbnails, and its analytics' events and alerts, older than its ``retention``
(``data_retention`` unless the camera sets its own), then blobs no row names that are older
than ``data_retention`` (letterboxed pixels, dead-letter payloads). What it deleted is counted
in ``framewire_swept_total{kind}`` and logged."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from framewire.config import CameraSettings, Settings, duration_ms
from framewire.errors import FramewireError, TransientError
from framewire.ops.cameras import list_cameras
from framewire.ops.erase import ErasureReport, erase_rows
from framewire.store.blobs import BlobStore
from framewire.store.db import open_database
from framewire.store.tables import alert_table, blobs_named, camera_table, event_table
from framewire.telemetry.metrics import service_metrics

log = logging.getLogger(__name__)


def retention_of(settings: Settings, camera_id: str,
                 cameras: Mapping[str, CameraSettings] | None = None) -> timedelta:
    """How long ``camera_id``'s data is kept. ``cameras``: the cameras the site runs now
    (the cameras topic over the setting); unset = the ``cameras`` setting."""
    camera = settings.camera(camera_id, cameras)
    own = camera.retention if camera is not None else None
    return timedelta(milliseconds=duration_ms(own or settings.data_retention))


def site_cameras(settings: Settings) -> dict[str, CameraSettings] | None:
    """The cameras the site runs now, with those added at run time; None when the cameras
    topic cannot be read (the ``cameras`` setting then stands in)."""
    try:
        return {c.settings.camera_id: c.settings for c in list_cameras(settings)}
    except TransientError as exc:
        log.warning("cameras topic not read: retention of cameras added at run time is "
                    "data_retention this sweep", extra={"error": str(exc)})
        return None


def sweep(settings: Settings, now: datetime | None = None,
          running: Mapping[str, CameraSettings] | None = None) -> dict[str, int]:
    """Delete what is past its retention, once; what was deleted, per kind. ``running``: the
    cameras the site runs (unset = read from the cameras topic)."""
    now = now or datetime.now(UTC)
    with open_database(settings.resolved_database_url) as db, db.engine.connect() as conn:
        # the analytics' rows too: a window counted after a camera's last result outlives
        # its row in the cameras table
        cameras = sorted(set(conn.execute(sa.union(
            sa.select(camera_table.c.camera_id), sa.select(event_table.c.camera_id),
            sa.select(alert_table.c.camera_id))).scalars()))
    if running is None and cameras:
        running = site_cameras(settings)
    totals: dict[str, int] = {}
    for camera_id in cameras:
        report = erase_rows(settings, camera_id,
                            now - retention_of(settings, camera_id, running))
        for kind, count in report.counts.items():
            totals[kind] = totals.get(kind, 0) + count
    totals["blobs"] = totals.get("blobs", 0) + _sweep_orphans(settings, now)
    metrics = service_metrics()
    for kind, count in totals.items():
        if count:
            metrics.swept.labels(kind).inc(count)
    if any(totals.values()):
        log.info("retention sweep deleted", extra={k: v for k, v in totals.items() if v})
    return totals


def _sweep_orphans(settings: Settings, now: datetime) -> int:
    """Blobs no result names, older than ``data_retention`` (by their file's time)."""
    cutoff = (now - timedelta(milliseconds=duration_ms(settings.data_retention))).timestamp()
    blobs = BlobStore.from_settings(settings)
    old = [p for p in blobs.root.glob("??/??/*.bin") if p.stat().st_mtime < cutoff]
    if not old:
        return 0
    with open_database(settings.resolved_database_url) as db, db.engine.connect() as conn:
        named = blobs_named(conn, [p.as_uri() for p in old])
    removed = 0
    for path in old:
        if path.as_uri() not in named:
            path.unlink(missing_ok=True)
            removed += 1
    return removed


class Sweeper:
    """Runs ``sweep`` every ``sweep_interval_s`` on a thread of its own until closed."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sweeper", daemon=True)

    def start(self) -> Sweeper:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.settings.sweep_interval_s):
            started = time.monotonic()
            try:
                sweep(self.settings)
            except (FramewireError, OSError, sa.exc.SQLAlchemyError) as exc:
                log.warning("retention sweep failed; the next one retries",
                            extra={"error": str(exc)})
            log.debug("retention sweep done", extra={"seconds": time.monotonic() - started})

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)


__all__ = ["ErasureReport", "Sweeper", "retention_of", "sweep"]
