"""The SQL tables of the results database, and how a result becomes rows and back.

Every timestamp goes in and comes out as a timezone-aware UTC datetime. The result rows are
the ``InferenceResult`` contract flattened (its header's fields among the columns), so the
read model (``StoredResult``) is the contract plus what storing it adds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from framewire.contracts import HEADER_FIELDS, Detection, FrameHeader, InferenceResult
from framewire.contracts.records import field_names


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A DateTime column that takes only aware datetimes and gives back aware UTC ones."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.utcoffset() is None:
            raise ValueError(
                f"naive datetime {value!r} cannot be stored: pass a timezone-aware UTC datetime "
                "(framewire.contracts.utcnow())"
            )
        value = value.astimezone(UTC)
        # SQLite keeps text without an offset; all-UTC text sorts in time order.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = sa.MetaData()

camera_table = sa.Table(
    "cameras",
    metadata,
    sa.Column("camera_id", sa.String, primary_key=True),
    sa.Column("first_seen", UTCDateTime, nullable=False),
    sa.Column("last_seen", UTCDateTime, nullable=False),
    sa.Column("frames_stored", sa.BigInteger, nullable=False),
)

result_table = sa.Table(
    "results",
    metadata,
    sa.Column("frame_id", sa.String, primary_key=True),
    sa.Column("camera_id", sa.String, nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("captured_at", UTCDateTime, nullable=False),
    sa.Column("ingested_at", UTCDateTime, nullable=False),
    sa.Column("preprocessed_at", UTCDateTime, nullable=False),
    sa.Column("inferred_at", UTCDateTime, nullable=False),
    sa.Column("stored_at", UTCDateTime, nullable=False),
    sa.Column("orig_width", sa.Integer, nullable=False),
    sa.Column("orig_height", sa.Integer, nullable=False),
    sa.Column("model_name", sa.String, nullable=False),
    sa.Column("model_version", sa.String, nullable=False),
    sa.Column("provider", sa.String, nullable=False),
    sa.Column("image_uri", sa.String, nullable=True),
    sa.Column("too_dark", sa.Boolean, nullable=False),
    sa.Column("blurred", sa.Boolean, nullable=False),
    sa.Column("frozen", sa.Boolean, nullable=False),
    sa.Column("detection_count", sa.Integer, nullable=False),
    # added with contract v3 (open_database adds them to an older database)
    sa.Column("privacy", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("frame_uri", sa.String, nullable=True),
    sa.Column("thumbnail_uri", sa.String, nullable=True),
    sa.Column("faces_blurred", sa.Integer, nullable=False, server_default="0"),
    # (camera_id, captured_at) also serves lookups by camera_id alone, so no separate index.
    sa.Index("ix_results_camera_id_captured_at", "camera_id", "captured_at"),
    # The dashboard's "newest across all cameras" query.
    sa.Index("ix_results_captured_at", "captured_at"),
)

# Result columns that name a blob: the original frame, the stored (blurred) frame, its
# thumbnail. Erasure and the retention sweeper delete a blob only when no row names it.
BLOB_COLUMNS = ("image_uri", "frame_uri", "thumbnail_uri")


def blobs_named(conn: sa.Connection, uris: Sequence[str]) -> set[str]:
    """Those of ``uris`` that a stored result still names."""
    named: set[str] = set()
    for name in BLOB_COLUMNS:
        column = result_table.c[name]
        for start in range(0, len(uris), 500):
            named.update(conn.execute(sa.select(column).where(
                column.in_(uris[start:start + 500]))).scalars())
    return named


# The embedded span store: where traces go when no OTLP endpoint is configured.
span_table = sa.Table(
    "spans",
    metadata,
    sa.Column("span_id", sa.String(16), primary_key=True),
    sa.Column("trace_id", sa.String(32), nullable=False, index=True),
    sa.Column("parent_id", sa.String(16), nullable=True),
    sa.Column("service", sa.String, nullable=False),
    sa.Column("name", sa.String, nullable=False),
    sa.Column("start_ns", sa.BigInteger, nullable=False),
    sa.Column("end_ns", sa.BigInteger, nullable=False),
    sa.Column("status", sa.String, nullable=False),
    sa.Column("frame_id", sa.String, nullable=True, index=True),
    sa.Column("camera_id", sa.String, nullable=True),
    sa.Column("attributes", sa.JSON, nullable=False),
)

detection_table = sa.Table(
    "detections",
    metadata,
    sa.Column(
        "frame_id",
        sa.String,
        sa.ForeignKey("results.frame_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("idx", sa.Integer, primary_key=True),
    sa.Column("label", sa.String, nullable=False),
    sa.Column("class_id", sa.Integer, nullable=False),
    sa.Column("score", sa.Double, nullable=False),
    sa.Column("x1", sa.Double, nullable=False),
    sa.Column("y1", sa.Double, nullable=False),
    sa.Column("x2", sa.Double, nullable=False),
    sa.Column("y2", sa.Double, nullable=False),
)


# InferenceResult fields that are result columns of the same name; the header's fields are
# columns too. The detections have their own table, and a row keeps no schema version.
_RESULT_FIELD_COLUMNS = tuple(
    name for name in field_names(InferenceResult)
    if name not in ("header", "detections", "schema_version")
)
# Result columns copied from the contract; the others are ``stored_at`` and ``detection_count``.
_COPIED_COLUMNS = HEADER_FIELDS + _RESULT_FIELD_COLUMNS


# A stored detection is the contract's Detection; the old name stays for existing callers.
StoredDetection = Detection

DETECTION_FIELDS = field_names(Detection)


@dataclass(slots=True)
class StoredResult(InferenceResult):
    """One stored inference result: the contract as stored, with its detections in their
    original order, when it was stored and how many detections it has."""

    stored_at: datetime = field(kw_only=True)
    detection_count: int = field(kw_only=True)

    def as_flat_dict(self) -> dict[str, Any]:
        """The result as one flat dict: its row's columns (header fields among them), then
        its detections as dicts; what ``framewire results --json`` prints."""
        row = {c.name: getattr(self, c.name) for c in result_table.c}
        return {**row, "detections": [detection_fields(d) for d in self.detections]}


@dataclass(slots=True)
class StoredCamera:
    """A camera that has stored results: the capture times of its earliest and latest frames."""

    camera_id: str
    first_seen: datetime
    last_seen: datetime
    frames_stored: int


@dataclass(frozen=True, slots=True)
class StoreCounts:
    """What one ``store_results`` call did with its results."""

    inserted: int  # new frames
    replaced: int  # frames stored before, now with a newer result of another model
    unchanged: int  # frames already stored as they are (redeliveries, repeats in the batch)


def supersedes(result: InferenceResult, model_name: str, model_version: str,
               inferred_at: datetime) -> bool:
    """Whether ``result`` should replace a stored result of the same frame made by
    ``model_name`` ``model_version`` at ``inferred_at``: another model, inferred later."""
    return ((result.model_name, result.model_version) != (model_name, model_version)
            and result.inferred_at > inferred_at)


def result_row(result: InferenceResult, stored_at: datetime) -> dict[str, Any]:
    row = {name: getattr(result, name) for name in _COPIED_COLUMNS}
    return {**row, "stored_at": stored_at, "detection_count": len(result.detections)}


def stored_result(row: sa.RowMapping, detections: list[Detection]) -> StoredResult:
    return StoredResult(
        header=FrameHeader(**{name: row[name] for name in HEADER_FIELDS}),
        **{name: row[name] for name in _RESULT_FIELD_COLUMNS},
        detections=detections,
        stored_at=row["stored_at"],
        detection_count=row["detection_count"],
    )


def detection_fields(detection: Detection) -> dict[str, Any]:
    return {name: getattr(detection, name) for name in DETECTION_FIELDS}


def camera_rows(new: Sequence[InferenceResult]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for result in new:
        row = seen.setdefault(
            result.camera_id,
            {
                "camera_id": result.camera_id,
                "first_seen": result.captured_at,
                "last_seen": result.captured_at,
                "frames_stored": 0,
            },
        )
        row["first_seen"] = min(row["first_seen"], result.captured_at)
        row["last_seen"] = max(row["last_seen"], result.captured_at)
        row["frames_stored"] += 1
    # Sorted for the same lock-ordering reason as the results.
    return [seen[camera_id] for camera_id in sorted(seen)]


# The analytics' records (framewire.analytics.records), as the storage service's event_storage
# and alert_storage stages write them: one row per event (its window count, if any, flattened
# into window_* columns) and one per alert change (firing, then resolved: two rows of one
# alert_id). ``stored_at`` orders the gateway's streams, as for results.
event_table = sa.Table(
    "events",
    metadata,
    sa.Column("event_id", sa.String, primary_key=True),
    sa.Column("camera_id", sa.String, nullable=False),
    sa.Column("type", sa.String, nullable=False),
    sa.Column("name", sa.String, nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("emitted_at", UTCDateTime, nullable=False),
    sa.Column("stored_at", UTCDateTime, nullable=False),
    sa.Column("frame_id", sa.String, nullable=True),
    sa.Column("track_id", sa.BigInteger, nullable=True),
    sa.Column("label", sa.String, nullable=True),
    sa.Column("direction", sa.String, nullable=True),
    sa.Column("dwell_s", sa.Double, nullable=True),
    sa.Column("window_kind", sa.String, nullable=True),
    sa.Column("window_start", UTCDateTime, nullable=True),
    sa.Column("window_end", UTCDateTime, nullable=True),
    sa.Column("window_counted", sa.String, nullable=True),
    sa.Column("window_direction", sa.String, nullable=True),
    sa.Column("window_count", sa.Integer, nullable=True),
    sa.Index("ix_events_camera_id_at", "camera_id", "at"),
    sa.Index("ix_events_at", "at"),
    sa.Index("ix_events_stored_at", "stored_at", "event_id"),
)

alert_table = sa.Table(
    "alerts",
    metadata,
    sa.Column("alert_id", sa.String, primary_key=True),
    sa.Column("state", sa.String, primary_key=True),
    sa.Column("camera_id", sa.String, nullable=False),
    sa.Column("rule", sa.String, nullable=False),
    sa.Column("when", sa.String, nullable=False),
    sa.Column("zone", sa.String, nullable=False),
    sa.Column("above", sa.Integer, nullable=False),
    sa.Column("for_s", sa.Double, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("emitted_at", UTCDateTime, nullable=False),
    sa.Column("stored_at", UTCDateTime, nullable=False),
    sa.Column("frame_id", sa.String, nullable=False),
    sa.Column("value", sa.Integer, nullable=False),
    sa.Column("peak", sa.Integer, nullable=False),
    sa.Index("ix_alerts_camera_id_at", "camera_id", "at"),
    sa.Index("ix_alerts_at", "at"),
    sa.Index("ix_alerts_stored_at", "stored_at", "alert_id", "state"),
)
