"""Results as the gateway serves them: one by frame id, the newest, and those stored after a
stream position; each as JSON with links to its stored frame and thumbnail.

A stream position (the SSE event id) is ``<stored_at in microseconds since the epoch>-<frame
id>``: results are sent in (stored_at, frame_id) order, so the position of the last result a
client saw says exactly where to go on from.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from fastapi.encoders import jsonable_encoder

from framewire.contracts import Detection
from framewire.store.db import Database, StoredResult
from framewire.store.tables import DETECTION_FIELDS, detection_table, result_table, stored_result

API = "/api/v1"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# result columns that name blobs by their place on the server's disk
SERVER_PATHS = ("image_uri", "frame_uri", "thumbnail_uri")


@dataclass(frozen=True, order=True)
class StreamPosition:
    """Where a result stream stands: after the result stored at ``stored_at`` with
    ``frame_id`` (an empty frame id: after everything stored up to ``stored_at``)."""

    stored_at: datetime
    frame_id: str = ""

    @property
    def event_id(self) -> str:
        micros = (self.stored_at - EPOCH) // timedelta(microseconds=1)
        return f"{micros}-{self.frame_id}"

    @classmethod
    def parse(cls, event_id: str) -> StreamPosition:
        """The position an event id names; ValueError when it is not one."""
        micros, sep, frame_id = event_id.strip().partition("-")
        try:
            if not sep or not micros.isdigit():
                raise ValueError
            return cls(EPOCH + timedelta(microseconds=int(micros)), frame_id)
        except (ValueError, OverflowError):
            raise ValueError(f"Last-Event-ID {event_id!r} is not an event id of this stream "
                             "(<microseconds>-<frame id>); reconnect without it") from None


def result_json(result: StoredResult, row: sa.RowMapping | None = None) -> dict[str, Any]:
    """A stored result as JSON (``framewire results --json``'s fields less the blob URIs), with
    ``frame_url`` and ``thumbnail_url``: the API paths of its stored (face-blurred) frame and
    thumbnail, or null when it has none."""
    flat = result.as_flat_dict()
    links = {}
    for column, path in (("frame_uri", "frame"), ("thumbnail_uri", "thumbnail")):
        uri = blob_uri(result, row, column)
        links[f"{path}_url"] = f"{API}/results/{result.frame_id}/{path}" if uri else None
    # blob URIs name files on the server: HTTP clients get the routes above instead
    for column in SERVER_PATHS:
        flat.pop(column, None)
    return jsonable_encoder({**flat, **links})


def blob_uri(result: StoredResult | None, row: sa.RowMapping | None, column: str) -> str | None:
    """The blob URI a result names in ``column``, from the result or its row; None when the
    results table has no such column (an older database) or the row names none."""
    value = getattr(result, column, None) if result is not None else None
    if value is None and row is not None:
        value = row.get(column)
    return value or None


def _with_detections(conn: sa.Connection, rows: list[sa.RowMapping]) -> list[StoredResult]:
    found: dict[str, list[Detection]] = {row["frame_id"]: [] for row in rows}
    if found:
        stmt = (sa.select(detection_table)
                .where(detection_table.c.frame_id.in_(list(found)))
                .order_by(detection_table.c.frame_id, detection_table.c.idx))
        for d in conn.execute(stmt).mappings():
            found[d["frame_id"]].append(Detection(**{k: d[k] for k in DETECTION_FIELDS}))
    return [stored_result(row, found[row["frame_id"]]) for row in rows]


def result_by_id(db: Database, frame_id: str) -> tuple[StoredResult, sa.RowMapping] | None:
    """One stored result and its row, or None when the frame has none."""
    with db.engine.connect() as conn:
        row = conn.execute(sa.select(result_table).where(
            result_table.c.frame_id == frame_id)).mappings().first()
        if row is None:
            return None
        return _with_detections(conn, [row])[0], row


def results_after(db: Database, after: StreamPosition, until: datetime,
                  camera_id: str | None, limit: int = 100
                  ) -> list[tuple[StoredResult, sa.RowMapping, StreamPosition]]:
    """Results stored after ``after`` and no later than ``until``, in stream order, with
    each one's position."""
    c = result_table.c
    stmt = (sa.select(result_table)
            .where(sa.or_(c.stored_at > after.stored_at,
                          sa.and_(c.stored_at == after.stored_at, c.frame_id > after.frame_id)),
                   c.stored_at <= until)
            .order_by(c.stored_at, c.frame_id)
            .limit(limit))
    if camera_id is not None:
        stmt = stmt.where(c.camera_id == camera_id)
    with db.engine.connect() as conn:
        rows = list(conn.execute(stmt).mappings())
        results = _with_detections(conn, rows)
    return [(r, row, StreamPosition(row["stored_at"], row["frame_id"]))
            for r, row in zip(results, rows, strict=True)]
