"""The analytics' events and alerts in the database: stored once, listed, read in stream order.

An event is stored once per ``event_id``, an alert change once per ``(alert_id, state)``: a
redelivered record (or a replay of the same frames, which gives the same ids) makes no row.
Rows come back as the JSON that ``framewire events --json``, ``framewire alerts --json`` and
the gateway show (``event_json``, ``alert_json``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from framewire.analytics.records import Alert, AnalyticsEvent
from framewire.contracts import utcnow
from framewire.store.db import Database
from framewire.store.tables import alert_table, event_table

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_WINDOW_FIELDS = ("kind", "start", "end", "counted", "direction", "count")
_EVENT_FIELDS = ("event_id", "camera_id", "type", "name", "at", "emitted_at", "frame_id",
                 "track_id", "label", "direction", "dwell_s")
_ALERT_FIELDS = ("alert_id", "camera_id", "rule", "when", "zone", "above", "for_s", "state",
                 "started_at", "at", "emitted_at", "frame_id", "value", "peak")


def _insert(db: Database, table: sa.Table) -> Any:
    dialect = postgresql if db.engine.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def store_events(db: Database, events: Sequence[AnalyticsEvent]) -> int:
    """Store the events whose ``event_id`` is not stored yet, in one transaction; how many."""
    unique = {e.event_id: e for e in events}
    if not unique:
        return 0
    stored_at = utcnow()
    rows = []
    for event_id in sorted(unique):  # one key order in every writer: no deadlocks
        event = unique[event_id]
        row = {name: getattr(event, name) for name in _EVENT_FIELDS}
        window = event.window
        for name in _WINDOW_FIELDS:
            row[f"window_{name}"] = getattr(window, name) if window is not None else None
        rows.append({**row, "stored_at": stored_at})
    stmt = (_insert(db, event_table).on_conflict_do_nothing(index_elements=["event_id"])
            .returning(event_table.c.event_id))
    with db._translate_errors("storing events"), db.engine.begin() as conn:  # noqa: SLF001
        return len(conn.execute(stmt, rows).scalars().all())


def store_alerts(db: Database, alerts: Sequence[Alert]) -> int:
    """Store the alert changes whose ``(alert_id, state)`` is not stored yet; how many."""
    unique = {(a.alert_id, a.state): a for a in alerts}
    if not unique:
        return 0
    stored_at = utcnow()
    rows = [{**{name: getattr(unique[key], name) for name in _ALERT_FIELDS},
             "stored_at": stored_at} for key in sorted(unique)]
    stmt = (_insert(db, alert_table)
            .on_conflict_do_nothing(index_elements=["alert_id", "state"])
            .returning(alert_table.c.alert_id))
    with db._translate_errors("storing alerts"), db.engine.begin() as conn:  # noqa: SLF001
        return len(conn.execute(stmt, rows).scalars().all())


def event_json(row: sa.RowMapping) -> dict[str, Any]:
    """An event row as JSON: the AnalyticsEvent's fields (``window`` nested, or null) and
    ``stored_at``; times as ISO 8601 UTC."""
    data: dict[str, Any] = {name: row[name] for name in _EVENT_FIELDS}
    window = None
    if row["window_kind"] is not None:
        window = {name: row[f"window_{name}"] for name in _WINDOW_FIELDS}
        window["start"], window["end"] = _iso(window["start"]), _iso(window["end"])
    data.update(at=_iso(row["at"]), emitted_at=_iso(row["emitted_at"]), window=window,
                stored_at=_iso(row["stored_at"]))
    return data


def alert_json(row: sa.RowMapping) -> dict[str, Any]:
    """An alert row as JSON: the Alert's fields and ``stored_at``; times as ISO 8601 UTC."""
    data: dict[str, Any] = {name: row[name] for name in _ALERT_FIELDS}
    for name in ("started_at", "at", "emitted_at"):
        data[name] = _iso(row[name])
    data["stored_at"] = _iso(row["stored_at"])
    return data


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def query_events(db: Database, camera_id: str | None = None, type_: str | None = None,
                 since: datetime | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """Events newest first by ``at`` (the frame time), optionally of one camera and type, at
    or after ``since``; as ``event_json``."""
    c = event_table.c
    stmt = sa.select(event_table).order_by(c.at.desc(), c.event_id.desc()).limit(limit)
    if camera_id is not None:
        stmt = stmt.where(c.camera_id == camera_id)
    if type_ is not None:
        stmt = stmt.where(c.type == type_)
    if since is not None:
        stmt = stmt.where(c.at >= since)
    with db._translate_errors("reading events"), db.engine.connect() as conn:  # noqa: SLF001
        return [event_json(row) for row in conn.execute(stmt).mappings()]


def query_alerts(db: Database, camera_id: str | None = None, state: str | None = None,
                 since: datetime | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """Alert changes newest first by ``at``, optionally of one camera and state (firing,
    resolved), at or after ``since``; as ``alert_json``."""
    c = alert_table.c
    stmt = (sa.select(alert_table).order_by(c.at.desc(), c.alert_id.desc(), c.state.desc())
            .limit(limit))
    if camera_id is not None:
        stmt = stmt.where(c.camera_id == camera_id)
    if state is not None:
        stmt = stmt.where(c.state == state)
    if since is not None:
        stmt = stmt.where(c.at >= since)
    with db._translate_errors("reading alerts"), db.engine.connect() as conn:  # noqa: SLF001
        return [alert_json(row) for row in conn.execute(stmt).mappings()]


@dataclass(frozen=True, order=True)
class RowPosition:
    """Where an events or alerts stream stands: after the row stored at ``stored_at`` with
    key ``key`` (an event id; for alerts ``ALERT_ID.STATE``); an empty key: after every row
    stored up to ``stored_at``. Its text (the SSE id) is ``<stored_at µs>-<key>``."""

    stored_at: datetime
    key: str = ""

    @property
    def event_id(self) -> str:
        micros = (self.stored_at - EPOCH) // timedelta(microseconds=1)
        return f"{micros}-{self.key}"

    @classmethod
    def parse(cls, text: str) -> RowPosition:
        """The position ``text`` names; ValueError when it is not one."""
        micros, sep, key = text.strip().partition("-")
        try:
            if not sep or not micros.isdigit():
                raise ValueError
            return cls(EPOCH + timedelta(microseconds=int(micros)), key)
        except (ValueError, OverflowError):
            raise ValueError(f"Last-Event-ID {text!r} is not an event id of this stream "
                             "(<microseconds>-<key>); reconnect without it") from None


def events_after(db: Database, after: RowPosition, until: datetime,
                 camera_id: str | None = None, type_: str | None = None, limit: int = 100
                 ) -> list[tuple[dict[str, Any], RowPosition]]:
    """Events stored after ``after`` and no later than ``until``, in stream order."""
    c = event_table.c
    stmt = (sa.select(event_table)
            .where(sa.or_(c.stored_at > after.stored_at,
                          sa.and_(c.stored_at == after.stored_at, c.event_id > after.key)),
                   c.stored_at <= until)
            .order_by(c.stored_at, c.event_id).limit(limit))
    if camera_id is not None:
        stmt = stmt.where(c.camera_id == camera_id)
    if type_ is not None:
        stmt = stmt.where(c.type == type_)
    with db.engine.connect() as conn:
        rows = list(conn.execute(stmt).mappings())
    return [(event_json(r), RowPosition(r["stored_at"], r["event_id"])) for r in rows]


def alerts_after(db: Database, after: RowPosition, until: datetime,
                 camera_id: str | None = None, limit: int = 100
                 ) -> list[tuple[dict[str, Any], RowPosition]]:
    """Alert changes stored after ``after`` and no later than ``until``, in stream order."""
    c = alert_table.c
    alert_id, _, state = after.key.rpartition(".")
    stmt = (sa.select(alert_table)
            .where(sa.or_(c.stored_at > after.stored_at,
                          sa.and_(c.stored_at == after.stored_at,
                                  sa.or_(c.alert_id > alert_id,
                                         sa.and_(c.alert_id == alert_id, c.state > state)))),
                   c.stored_at <= until)
            .order_by(c.stored_at, c.alert_id, c.state).limit(limit))
    if camera_id is not None:
        stmt = stmt.where(c.camera_id == camera_id)
    with db.engine.connect() as conn:
        rows = list(conn.execute(stmt).mappings())
    return [(alert_json(r), RowPosition(r["stored_at"], f"{r['alert_id']}.{r['state']}"))
            for r in rows]
