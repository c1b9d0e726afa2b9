"""Where results are kept: the one place that opens a database, and the queries on it.

SQLAlchemy Core over SQLite (a file on one machine) or PostgreSQL (``postgresql+psycopg://``).
Every timestamp goes in and comes out as a timezone-aware UTC datetime.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError, StatementError
from sqlalchemy.pool import StaticPool

from framewire.contracts import Detection, InferenceResult, utcnow
from framewire.errors import ConfigError, SystemicError, TransientError
from framewire.secrets import mask_url
from framewire.store.dberrors import translate_db_error
from framewire.store.tables import (
    DETECTION_FIELDS,
    StoreCounts,
    StoredCamera,
    StoredDetection,
    StoredResult,
    camera_rows,
    camera_table,
    detection_fields,
    detection_table,
    metadata,
    result_row,
    result_table,
    span_table,
    stored_result,
    supersedes,
)

# the tables and the read model, for callers that take them from here
__all__ = ["Database", "StoreCounts", "StoredCamera", "StoredDetection", "StoredResult",
           "metadata", "open_database", "result_table", "span_table", "supersedes"]

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
        rows = [result_row(result, stored_at) for result in batch]
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
                {"frame_id": r.frame_id, "idx": idx, **detection_fields(d)}
                for r in new + replaced
                for idx, d in enumerate(r.detections)
            ]
            if detection_rows:
                conn.execute(sa.insert(detection_table), detection_rows)
            cameras = camera_rows(new)
            if cameras:
                conn.execute(self._camera_upsert(), cameras)
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
                .values(result_row(result, stored_at)))
            if done.rowcount == 1:
                replaced.append(result)
        return replaced

    def query_results(
        self, camera_id: str | None = None, limit: int = 50, since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[StoredResult]:
        """Results newest first by capture time, optionally of one camera, captured since
        (inclusive) and before ``until``."""
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
        if until is not None:
            stmt = stmt.where(result_table.c.captured_at < until)
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
                        Detection(**{k: d[k] for k in DETECTION_FIELDS})
                    )
        return [stored_result(row, detections[row["frame_id"]]) for row in rows]

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

    def count_from_model(self, frame_ids: Sequence[str], model_name: str,
                         model_version: str) -> int:
        """How many of ``frame_ids`` have a stored result from that model and version."""
        found = 0
        with self._translate_errors("counting results"), self._engine.connect() as conn:
            for start in range(0, len(frame_ids), 500):  # bound the statement's size
                stmt = sa.select(sa.func.count()).select_from(result_table).where(
                    result_table.c.frame_id.in_(list(frame_ids[start:start + 500])),
                    result_table.c.model_name == model_name,
                    result_table.c.model_version == model_version)
                found += int(conn.execute(stmt).scalar_one())
        return found

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
            translated = translate_db_error(err, action, self._where)
            if translated is None:
                raise
            # After a fault the next try gets fresh connections: a pooled one keeps its
            # session's read-only default, or a file or server since replaced. Not :memory:
            # (a StaticPool), which a new connection would empty.
            in_memory = isinstance(self._engine.pool, StaticPool)
            if isinstance(translated, SystemicError) and not in_memory:
                self._engine.dispose()
            raise translated from err
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
        raise ConfigError(f"database url {mask_url(url)!r} is not a URL: use "
                          f"{URL_EXAMPLES}") from err
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
                _add_missing_columns(conn)
            break
        except DBAPIError as err:
            if "already exists" in str(err) and attempt < 2:
                continue  # another process created it between our check and our create
            engine.dispose()
            raise _open_failure(err, where) from err
    log.info("database opened", extra={"url": where})
    return Database(engine)


def _add_missing_columns(conn: sa.Connection) -> None:
    """Columns a newer Framewire added to a table this database already had (each new column
    is nullable or has a server default, so older rows read as before)."""
    inspector = sa.inspect(conn)
    for table in metadata.sorted_tables:
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present:
                ddl = sa.schema.CreateColumn(column).compile(dialect=conn.dialect)
                conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {ddl}")
                log.info("database column added", extra={"table": table.name,
                                                          "column": column.name})


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
