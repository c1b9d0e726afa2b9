"""The embedded span store: spans in the storage database, and what ``framewire trace`` reads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from framewire.secrets import mask_urls_in
from framewire.store.db import Database, span_table


@dataclass(frozen=True)
class StoredSpan:
    trace_id: str
    span_id: str
    parent_id: str | None
    service: str
    name: str
    start_ns: int
    end_ns: int
    status: str
    frame_id: str | None
    camera_id: str | None
    attributes: dict[str, Any]

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


def _masked(value: Any) -> Any:
    return mask_urls_in(value) if isinstance(value, str) else value


def _row(span: ReadableSpan) -> dict[str, Any]:
    ctx = span.get_span_context()
    assert ctx is not None  # finished SDK spans always have one
    attrs = dict(span.attributes or {})
    status = span.status.status_code
    return {
        "span_id": format(ctx.span_id, "016x"),
        "trace_id": format(ctx.trace_id, "032x"),
        "parent_id": format(span.parent.span_id, "016x") if span.parent else None,
        "service": str(span.resource.attributes.get("service.name", "")).removeprefix(
            "framewire-"),
        "name": span.name,
        "start_ns": span.start_time or 0,
        "end_ns": span.end_time or span.start_time or 0,
        "status": "error" if status == StatusCode.ERROR else "ok",
        "frame_id": attrs.get("framewire.frame_id"),
        "camera_id": attrs.get("framewire.camera_id"),
        # attribute values are primitives or tuples of them (OpenTelemetry's rule); URLs in
        # them (a camera's source, an error's text) are masked
        "attributes": {**{k: list(v) if isinstance(v, tuple) else _masked(v)
                          for k, v in attrs.items()},
                       **({"status.description": mask_urls_in(span.status.description)}
                          if span.status.description else {})},
    }


def insert_spans(db: Database, spans: Sequence[ReadableSpan]) -> None:
    """Store finished spans (a span exported twice is stored once)."""
    rows = [_row(s) for s in spans]
    if not rows:
        return
    with db.engine.begin() as conn:
        existing = set(conn.execute(sa.select(span_table.c.span_id).where(
            span_table.c.span_id.in_([r["span_id"] for r in rows]))).scalars())
        fresh = [r for r in rows if r["span_id"] not in existing]
        if fresh:
            conn.execute(span_table.insert(), fresh)


def _spans(db: Database, where: Any) -> list[StoredSpan]:
    with db.engine.connect() as conn:
        result = conn.execute(sa.select(span_table).where(where).order_by(span_table.c.start_ns))
        return [StoredSpan(**row._mapping) for row in result]


def trace_of_frame(db: Database, frame_id: str) -> list[StoredSpan]:
    """Every span of the trace(s) that carry this frame id, in start order."""
    with db.engine.connect() as conn:
        trace_ids = list(conn.execute(sa.select(span_table.c.trace_id).distinct().where(
            span_table.c.frame_id == frame_id)).scalars())
    return _spans(db, span_table.c.trace_id.in_(trace_ids)) if trace_ids else []


def slowest_frames(db: Database, limit: int, since: datetime | None) -> list[tuple[str, float]]:
    """(frame id, end-to-end ms from the first to the last span of its trace), slowest first."""
    frame = sa.func.max(span_table.c.frame_id)
    duration = sa.func.max(span_table.c.end_ns) - sa.func.min(span_table.c.start_ns)
    query = sa.select(frame, duration).group_by(span_table.c.trace_id)
    if since is not None:
        query = query.having(sa.func.min(span_table.c.start_ns) >= int(since.timestamp() * 1e9))
    query = query.order_by(duration.desc()).limit(limit)
    with db.engine.connect() as conn:
        return [(f, d / 1e6) for f, d in conn.execute(query) if f]
