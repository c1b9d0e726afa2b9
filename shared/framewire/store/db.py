"""Where results are kept: the SQL tables and the one place that opens a database.

SQLAlchemy Core over SQLite (a file on one machine) or PostgreSQL (``postgresql+psycopg://``).
Every timestamp goes in and comes out as a timezone-aware UTC datetime.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError, StatementError
from sqlalchemy.pool import StaticPool

from framewire.contracts import HEADER_FIELDS, Detection, FrameHeader, InferenceResult, utcnow
from framewire.contracts.records import field_names
from framewire.errors import ConfigError, TransientError

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 5000
_SCHEMA_LOCK = 0x46574952  # PostgreSQL advisory lock key held while creating tables
# Messages of open failures that retrying cannot fix (SQLite and libpq wording).
_WRONG_URL_SIGNS = (
    "unable to open",
    "does not exist",
    "authentication failed",
    "pg_hba.conf",
    "permission denied",
)
URL_EXAMPLES = (
    "sqlite:////var/lib/framewire/results.db or postgresql+psycopg://USER@HOST:5432/DBNAME"
)


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
    # (camera_id, captured_at) also serves lookups by camera_id alone, so no separate index.
    sa.Index("ix_results_camera_id_captured_at", "camera_id", "captured_at"),
    # The dashboard's "newest across all cameras" query.
    sa.Index("ix_results_captured_at", "captured_at"),
)

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

_DETECTION_FIELDS = field_names(Detection)


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
        return {**row, "detections": [_detection_fields(d) for d in self.detections]}


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


class Database:
    """Results storage over one SQLAlchemy engine; get one from ``open_database()``."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._where = engine.url.render_as_string(hide_password=True)
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine, for migrations and diagnostics."""
        return self._engine

    def upsert_results(self, results: Sequence[InferenceResult]) -> int:
        """Store the results whose frame_id is not stored yet, and replace stored results that
        a newer run of another model superseded, in one transaction; count the rows written.

        A redelivered result (same frame, same model) never makes or changes a row.
        """
        counts = self.store_results(results)
        return counts.inserted + counts.replaced

    def store_results(self, results: Sequence[InferenceResult]) -> StoreCounts:
        """``upsert_results``, saying how many rows were inserted, replaced or left as they were.

        A stored result is replaced when the new one comes from another model (name or
        version) and was inferred later: a frame replayed after a model change
        (``framewire replay``) then carries the new model's result, while a late redelivery
        of the old model's result never undoes that.
        """
        unique: dict[str, InferenceResult] = {}
        for result in results:
            kept = unique.get(result.frame_id)
            if kept is None or supersedes(result, kept.model_name, kept.model_version,
                                          kept.inferred_at):
                unique[result.frame_id] = result
        if not unique:
            return StoreCounts(0, 0, 0)
        # Same key order in every writer: concurrent batches then wait on each other instead
        # of deadlocking on PostgreSQL's unique-index locks.
        batch = [unique[frame_id] for frame_id in sorted(unique)]
        stored_at = utcnow()
        insert_results = (
            self._insert(result_table)
            .on_conflict_do_nothing(index_elements=["frame_id"])
            .returning(result_table.c.frame_id)
        )
        rows = [_result_row(result, stored_at) for result in batch]
        with self._translate_errors("storing results"), self._engine.begin() as conn:
            # RETURNING names only the rows this transaction inserted, also under races.
            inserted = set(conn.execute(insert_results, rows).scalars())
            new = [result for result in batch if result.frame_id in inserted]
            replaced = self._replace_superseded(
                conn, [r for r in batch if r.frame_id not in inserted], stored_at)
            if replaced:
                conn.execute(sa.delete(detection_table).where(
                    detection_table.c.frame_id.in_([r.frame_id for r in replaced])))
            detection_rows = [
                {"frame_id": r.frame_id, "idx": idx, **_detection_fields(d)}
                for r in new + replaced
                for idx, d in enumerate(r.detections)
            ]
            if detection_rows:
                conn.execute(sa.insert(detection_table), detection_rows)
            camera_rows = _camera_rows(new)
            if camera_rows:
                conn.execute(self._camera_upsert(), camera_rows)
        log.debug("stored results", extra={"received": len(results), "new": len(new),
                                           "replaced": len(replaced)})
        return StoreCounts(len(new), len(replaced), len(results) - len(new) - len(replaced))

    def _replace_superseded(self, conn: sa.Connection, stored: list[InferenceResult],
                            stored_at: datetime) -> list[InferenceResult]:
        """Overwrite the rows of ``stored`` (frames already stored) that each result
        supersedes; the results whose rows were overwritten, in frame_id order."""
        if not stored:
            return []
        c = result_table.c
        current = {row.frame_id: row for row in conn.execute(
            sa.select(c.frame_id, c.model_name, c.model_version, c.inferred_at)
            .where(c.frame_id.in_([r.frame_id for r in stored])))}
        replaced = []
        for result in stored:  # already sorted by frame_id: the same lock order as the insert
            row = current.get(result.frame_id)
            if row is None or not supersedes(result, row.model_name, row.model_version,
                                             row.inferred_at):
                continue
            # the same test again in SQL: a concurrent writer may have replaced it meanwhile
            done = conn.execute(
                sa.update(result_table)
                .where(c.frame_id == result.frame_id,
                       sa.or_(c.model_name != result.model_name,
                              c.model_version != result.model_version),
                       c.inferred_at < result.inferred_at)
                .values(_result_row(result, stored_at)))
            if done.rowcount == 1:
                replaced.append(result)
        return replaced

    def query_results(
        self, camera_id: str | None = None, limit: int = 50, since: datetime | None = None
    ) -> list[StoredResult]:
        """Results newest first by capture time, optionally of one camera and captured since."""
        if limit < 1:
            raise ValueError(f"limit={limit}: ask for at least 1 result")
        stmt = (
            sa.select(result_table)
            .order_by(result_table.c.captured_at.desc(), result_table.c.frame_id.desc())
            .limit(limit)
        )
        if camera_id is not None:
            stmt = stmt.where(result_table.c.camera_id == camera_id)
        if since is not None:
            stmt = stmt.where(result_table.c.captured_at >= since)
        with self._translate_errors("reading results"), self._engine.connect() as conn:
            rows = conn.execute(stmt).mappings().all()
            detections: dict[str, list[Detection]] = {row["frame_id"]: [] for row in rows}
            if detections:
                detection_stmt = (
                    sa.select(detection_table)
                    .where(detection_table.c.frame_id.in_(list(detections)))
                    .order_by(detection_table.c.frame_id, detection_table.c.idx)
                )
                for d in conn.execute(detection_stmt).mappings():
                    detections[d["frame_id"]].append(
                        Detection(**{k: d[k] for k in _DETECTION_FIELDS})
                    )
        return [_stored_result(row, detections[row["frame_id"]]) for row in rows]

    def count_results(self, camera_id: str | None = None) -> int:
        """How many results are stored, for all cameras or one."""
        stmt = sa.select(sa.func.count()).select_from(result_table)
        if camera_id is not None:
            stmt = stmt.where(result_table.c.camera_id == camera_id)
        with self._translate_errors("counting results"), self._engine.connect() as conn:
            return int(conn.execute(stmt).scalar_one())

    def frame_ids(self, camera_id: str | None = None) -> list[str]:
        """The stored frame ids, sorted, for all cameras or one."""
        stmt = sa.select(result_table.c.frame_id).order_by(result_table.c.frame_id)
        if camera_id is not None:
            stmt = stmt.where(result_table.c.camera_id == camera_id)
        with self._translate_errors("listing frame ids"), self._engine.connect() as conn:
            return list(conn.execute(stmt).scalars())

    def cameras(self) -> list[StoredCamera]:
        """Every camera with stored results, sorted by camera_id."""
        stmt = sa.select(camera_table).order_by(camera_table.c.camera_id)
        with self._translate_errors("listing cameras"), self._engine.connect() as conn:
            return [StoredCamera(**row) for row in conn.execute(stmt).mappings()]

    def close(self) -> None:
        """Close every pooled connection."""
        self._engine.dispose()

    def __enter__(self) -> Database:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _camera_upsert(self) -> Any:
        stmt = self._insert(camera_table)
        new, old = stmt.excluded, camera_table.c
        # CASE rather than LEAST/GREATEST: SQLite has neither.
        return stmt.on_conflict_do_update(
            index_elements=["camera_id"],
            set_={
                "first_seen": sa.case(
                    (new.first_seen < old.first_seen, new.first_seen), else_=old.first_seen
                ),
                "last_seen": sa.case(
                    (new.last_seen > old.last_seen, new.last_seen), else_=old.last_seen
                ),
                "frames_stored": old.frames_stored + new.frames_stored,
            },
        )

    @contextmanager
    def _translate_errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except DBAPIError as err:
            if not _is_transient(err):
                raise
            raise TransientError(
                f"{action} in {self._where} failed: {err.orig}; the database is busy, "
                "restarting or unreachable: retry later, and check it is running if this persists"
            ) from err
        except StatementError as err:
            # A value our column types refused (a naive datetime): the caller's bug, not SQL's.
            if isinstance(err.orig, ValueError):
                raise err.orig from err
            raise


def open_database(url: str) -> Database:
    """Connect to the database at ``url`` and create the tables that are missing."""
    try:
        parsed = sa.make_url(url)
    except ArgumentError as err:
        raise ConfigError(f"database url {url!r} is not a URL: use {URL_EXAMPLES}") from err
    where = parsed.render_as_string(hide_password=True)
    if parsed.drivername in ("sqlite", "sqlite+pysqlite"):
        engine = _sqlite_engine(parsed)
    elif parsed.drivername in ("postgresql", "postgresql+psycopg"):
        # Plain postgresql:// means psycopg2 to SQLAlchemy; psycopg (3) is the driver we ship.
        # pre_ping replaces connections a database restart closed, instead of failing once.
        engine = sa.create_engine(parsed.set(drivername="postgresql+psycopg"), pool_pre_ping=True)
    else:
        raise ConfigError(
            f"database url {where!r} uses {parsed.drivername!r}, which Framewire does not "
            f"support: use {URL_EXAMPLES}"
        )
    for attempt in range(3):
        try:
            with engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    # Services starting together would race to create the same tables.
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"),
                                 {"key": _SCHEMA_LOCK})
                elif conn.dialect.name == "sqlite":
                    # the same race on SQLite: take the write lock before checking the tables
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                metadata.create_all(conn)
            break
        except DBAPIError as err:
            if "already exists" in str(err) and attempt < 2:
                continue  # another process created it between our check and our create
            engine.dispose()
            raise _open_failure(err, where) from err
    log.info("database opened", extra={"url": where})
    return Database(engine)


def _sqlite_engine(url: URL) -> Engine:
    database = url.database or ":memory:"
    if database == ":memory:":
        # Every pooled connection to :memory: would be a new empty database: share one.
        engine = sa.create_engine(
            url, poolclass=StaticPool, connect_args={"check_same_thread": False}
        )
    else:
        path = Path(database)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(
                f"cannot create the folder {str(path.parent)!r} for SQLite database {str(path)!r}:"
                f" {err.strerror}; choose a writable path in the database url"
            ) from err
        engine = sa.create_engine(url)
    sa.event.listen(engine, "connect", _tune_sqlite_connection)
    return engine


def _tune_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # WAL lets the dashboard read while the storage service writes.
        cursor.execute("PRAGMA journal_mode=WAL")
        # Wait for another writer's lock instead of failing at once with "database is locked".
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # Durable at each WAL checkpoint; a power cut may lose the last commits, never corrupt.
        cursor.execute("PRAGMA synchronous=NORMAL")
        # SQLite ignores foreign keys unless asked, per connection.
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _is_transient(err: DBAPIError) -> bool:
    if err.connection_invalidated:
        return True
    if not isinstance(err, OperationalError):
        return False
    # SQLITE_ERROR (1) is a wrong statement or a missing table: retrying will not help.
    return getattr(err.orig, "sqlite_errorcode", None) != 1


def _open_failure(err: DBAPIError, where: str) -> ConfigError | TransientError:
    reason = str(err.orig).strip()
    wrong_url = any(s in reason.lower() for s in _WRONG_URL_SIGNS)
    if isinstance(err, OperationalError) and not wrong_url:
        return TransientError(
            f"cannot reach database {where!r}: {reason}; start the database or fix the host "
            "and port in the database url, then retry"
        )
    return ConfigError(
        f"cannot open database {where!r}: {reason}; fix the path, user, password, database "
        "name or the user's rights in the database url"
    )


def _result_row(result: InferenceResult, stored_at: datetime) -> dict[str, Any]:
    row = {name: getattr(result, name) for name in _COPIED_COLUMNS}
    return {**row, "stored_at": stored_at, "detection_count": len(result.detections)}


def _stored_result(row: sa.RowMapping, detections: list[Detection]) -> StoredResult:
    return StoredResult(
        header=FrameHeader(**{name: row[name] for name in HEADER_FIELDS}),
        **{name: row[name] for name in _RESULT_FIELD_COLUMNS},
        detections=detections,
        stored_at=row["stored_at"],
        detection_count=row["detection_count"],
    )


def _detection_fields(detection: Detection) -> dict[str, Any]:
    return {name: getattr(detection, name) for name in _DETECTION_FIELDS}


def _camera_rows(new: Sequence[InferenceResult]) -> list[dict[str, Any]]:
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
