"""``framewire erase``: remove everything Framewire keeps of one camera (a person's request to be
forgotten, a camera taken down), optionally only what is older than a time.

What is removed: the camera's results and their detections, its row in the cameras table (or
its counts, when only older results go), its analytics' events and alerts (by their frame
time ``at``), the spans of its frames, and the blobs its frames
left in the blob store: the original images (``image_uri``), the stored frames and their
thumbnails (``frame_uri``, ``thumbnail_uri``), the letterboxed pixels of
``frames.ready`` (``pixels_uri``) and the payloads of its dead letters; a blob that another
camera's row or record also names (the store is content-addressed: the same bytes are one
blob) stays. The records still on
the topics cannot be deleted one by one (Kafka deletes by age): they expire with each topic's
retention, and the report says how many it found there.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from framewire.config import Settings
from framewire.contracts import DeadLetter, FrameCaptured, FramePreprocessed
from framewire.contracts.codec import Codec, make_codec
from framewire.errors import DataError, FramewireError, TransientError
from framewire.store.blobs import BlobStore
from framewire.store.db import Database, open_database
from framewire.store.tables import (
    BLOB_COLUMNS,
    alert_table,
    blobs_named,
    camera_table,
    detection_table,
    event_table,
    result_table,
    span_table,
)

log = logging.getLogger(__name__)
# the kinds the report counts, in its order (``--json`` keys)
KINDS = ("results", "detections", "cameras", "events", "alerts", "spans", "blobs",
         "dead_letters_on_topic", "records_on_topics")


@dataclass
class ErasureReport:
    """What ``erase_camera`` removed, counted per kind, and what it could not."""

    camera_id: str
    before: datetime | None
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The documented ``framewire erase --json`` shape."""
        return {"camera_id": self.camera_id,
                "before": self.before.isoformat() if self.before else None,
                "removed": {k: self.counts[k] for k in KINDS if k not in (
                    "dead_letters_on_topic", "records_on_topics")},
                "left_on_topics": {"dead_letters": self.counts["dead_letters_on_topic"],
                                   "records": self.counts["records_on_topics"]},
                "notes": self.notes}


def erase_camera(settings: Settings, camera_id: str,
                 before: datetime | None = None) -> ErasureReport:
    """Remove what the site keeps of ``camera_id`` (only what is older than ``before``)."""
    report = ErasureReport(camera_id, before)
    mine, others = _uris_on_topics(settings, camera_id, before, report)
    _erase(settings, report, mine, others)
    log.warning("camera erased", extra={"camera_id": camera_id, **report.counts})
    return report


def erase_rows(settings: Settings, camera_id: str, before: datetime) -> ErasureReport:
    """What the retention sweeper removes of a camera: rows, spans and the original frames
    its results name, older than ``before`` (no topic is read)."""
    report = ErasureReport(camera_id, before)
    _erase(settings, report, set(), set())
    return report


def _erase(settings: Settings, report: ErasureReport, uris: set[str], others: set[str]) -> None:
    """Rows, spans, then the blobs in ``uris`` and those the erased rows named, except what
    ``others`` or a remaining row still names (the store is content-addressed: the same bytes
    from another camera are the same blob)."""
    with open_database(settings.resolved_database_url) as db:
        frame_ids = _erase_results(db, report.camera_id, report.before, report, uris)
        uris -= others
        if uris:
            with db.engine.connect() as conn:
                uris -= blobs_named(conn, sorted(uris))
    with open_database(settings.resolved_span_database_url) as spans:
        _erase_spans(spans, report.camera_id, frame_ids, report.before, report)
    blobs = BlobStore.from_settings(settings)
    for uri in sorted(uris):
        report.counts["blobs"] += _remove_blob(blobs, uri)


def _erase_results(db: Database, camera_id: str, before: datetime | None,
                   report: ErasureReport, uris: set[str]) -> set[str]:
    """Delete the camera's results, detections and camera row; the erased frame ids."""
    results = result_table.c
    which = results.camera_id == camera_id
    if before is not None:
        which = sa.and_(which, results.captured_at < before)
    with db.engine.begin() as conn:
        rows = conn.execute(sa.select(results.frame_id, *(results[c] for c in BLOB_COLUMNS))
                            .where(which)).all()
        frame_ids = {r.frame_id for r in rows}
        uris.update(uri for r in rows for uri in r[1:] if uri)
        for chunk in _chunks(sorted(frame_ids)):
            report.counts["detections"] += conn.execute(sa.delete(detection_table).where(
                detection_table.c.frame_id.in_(chunk))).rowcount
        report.counts["results"] += conn.execute(sa.delete(result_table).where(which)).rowcount
        left = conn.execute(sa.select(sa.func.count(), sa.func.min(results.captured_at),
                                      sa.func.max(results.captured_at))
                            .where(results.camera_id == camera_id)).one()
        if left[0] == 0:
            report.counts["cameras"] += conn.execute(sa.delete(camera_table).where(
                camera_table.c.camera_id == camera_id)).rowcount
        else:  # older results only: the camera's row counts what is left
            conn.execute(sa.update(camera_table).where(camera_table.c.camera_id == camera_id)
                         .values(frames_stored=left[0], first_seen=left[1], last_seen=left[2]))
        for kind, table in (("events", event_table), ("alerts", alert_table)):
            of_camera = table.c.camera_id == camera_id
            if before is not None:
                of_camera = sa.and_(of_camera, table.c.at < before)
            report.counts[kind] += conn.execute(sa.delete(table).where(of_camera)).rowcount
    return frame_ids


def _erase_spans(db: Database, camera_id: str, frame_ids: set[str],
                 before: datetime | None, report: ErasureReport) -> None:
    spans = span_table.c
    which = spans.camera_id == camera_id
    if before is not None:
        which = sa.and_(which, spans.start_ns < int(before.timestamp() * 1e9))
    with db.engine.begin() as conn:
        report.counts["spans"] += conn.execute(sa.delete(span_table).where(which)).rowcount
        for chunk in _chunks(sorted(frame_ids)):  # spans of its frames that name no camera
            report.counts["spans"] += conn.execute(sa.delete(span_table).where(
                spans.frame_id.in_(chunk))).rowcount


def _uris_on_topics(settings: Settings, camera_id: str, before: datetime | None,
                    report: ErasureReport) -> tuple[set[str], set[str]]:
    """Blobs named by the camera's records still on the topics (originals, letterboxed pixels,
    dead-letter payloads), and those named by every other record. The records themselves stay
    until their topic's retention."""
    from framewire.broker.reading import read_topic

    codec = make_codec(settings.schema_registry_url, settings.schema_registry_auth)
    mine: set[str] = set()
    others: set[str] = set()
    try:
        for name, contract in (("frames.raw", FrameCaptured), ("frames.ready", FramePreprocessed),
                               ("deadletter", DeadLetter)):
            for msg in read_topic(settings, settings.topic(name)):
                record = _decoded(codec, msg.value(), contract)
                if record is None:
                    continue
                named = {str(uri) for a in ("image_uri", "pixels_uri", "payload_uri")
                         if (uri := getattr(record, a, None))}
                if record.camera_id != camera_id or (before is not None and
                                                     _when(record) >= before):
                    others |= named
                    continue
                counted = "dead_letters_on_topic" if name == "deadletter" else "records_on_topics"
                report.counts[counted] += 1
                mine |= named
    except (FramewireError, TransientError) as exc:
        report.notes.append(f"the topics could not be read ({exc}): blobs named only by "
                            "records on them were not found; run erase again with the broker up")
        return mine, others
    if report.counts["records_on_topics"] or report.counts["dead_letters_on_topic"]:
        report.notes.append("records of this camera are still on the topics: Kafka deletes by "
                            "age, so they expire with each topic's retention (FRAMEWIRE_RETENTION;"
                            " their blobs are removed now)")
    return mine, others


def _decoded(codec: Codec, value: bytes | None, contract: type) -> Any:
    """The record, or None for one that does not decode (it names no blob we can trust)."""
    try:
        return codec.decode(value, contract)
    except DataError:
        return None


def _when(record: Any) -> datetime:
    when: datetime = record.failed_at if isinstance(record, DeadLetter) else record.captured_at
    return when


def _remove_blob(blobs: BlobStore, uri: str) -> int:
    try:
        path, _ = blobs.locate(uri)
    except DataError:
        return 0  # not one of this store's blobs: nothing of ours to remove
    try:
        path.unlink()
    except FileNotFoundError:
        return 0
    return 1


def _chunks(items: list[str], size: int = 500) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
