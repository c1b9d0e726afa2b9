"""Storage behaviours, each checked on SQLite and on a real PostgreSQL server.

The PostgreSQL cases carry the ``integration`` mark; the SQLite ones run with the unit tests.
"""

from __future__ import annotations

import random
import sqlite3
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from framewire.contracts import Detection, FrameHeader, InferenceResult
from framewire.contracts.records import field_names
from framewire.errors import ConfigError, DataError, SystemicError, TransientError
from framewire.store import db as framewire_db
from framewire.store.db import Database, StoredDetection, open_database

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
S = timedelta(seconds=1)


def make_result(
    frame_id: str,
    camera_id: str = "cam-1",
    captured_at: datetime = T0,
    detections: list[Detection] | None = None,
) -> InferenceResult:
    """An InferenceResult with plausible stage timestamps after ``captured_at``."""
    return InferenceResult(
        header=FrameHeader(
            frame_id=frame_id,
            camera_id=camera_id,
            seq=zlib.crc32(frame_id.encode()),
            captured_at=captured_at,
            ingested_at=captured_at + timedelta(milliseconds=5),
            image_uri=f"file:///frames/{frame_id}.jpg",
        ),
        preprocessed_at=captured_at + timedelta(milliseconds=12),
        inferred_at=captured_at + timedelta(milliseconds=40),
        orig_width=1280,
        orig_height=720,
        model_name="yolov8n",
        model_version="8.1.0",
        provider="CPUExecutionProvider",
        too_dark=False,
        blurred=True,
        frozen=False,
        detections=detections or [],
    )


def detection(label: str, score: float, x1: float) -> Detection:
    """A detection whose every field depends on the arguments, so mix-ups show."""
    return Detection(label, len(label), score, x1, x1 + 1.5, x1 + 10.25, x1 + 20.125)


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)],
)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'results.db'}"
    # Looked up lazily so SQLite runs never start PostgreSQL.
    return str(request.getfixturevalue("postgres_db_url"))


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """An opened Database on each backend, closed after the test."""
    with open_database(db_url) as database:
        yield database


def test_same_result_upserted_twice_is_stored_once(db: Database) -> None:
    result = make_result("f-1")
    assert db.upsert_results([result]) == 1
    assert db.upsert_results([result]) == 0
    assert db.count_results() == 1


def test_duplicate_frame_id_inside_one_batch_is_stored_once(db: Database) -> None:
    twice = make_result("f-1", detections=[detection("person", 0.9, 1.0)])
    assert db.upsert_results([twice, twice, make_result("f-2")]) == 2
    assert db.frame_ids() == ["f-1", "f-2"]
    assert {r.frame_id: len(r.detections) for r in db.query_results()} == {"f-1": 1, "f-2": 0}
    assert db.cameras()[0].frames_stored == 2


def test_upsert_counts_only_new_rows_of_a_mixed_batch(db: Database) -> None:
    db.upsert_results([make_result("f-1")])
    assert db.upsert_results([make_result("f-1"), make_result("f-2")]) == 1


def test_empty_batch_stores_nothing(db: Database) -> None:
    assert db.upsert_results([]) == 0
    assert db.count_results() == 0


def test_detections_are_stored_with_their_values_in_order(db: Database) -> None:
    found = [detection("person", 0.91, 10.0), detection("car", 0.5, 3.0), detection("dog", 0.7, 7)]
    db.upsert_results([make_result("f-1", detections=found)])
    [stored] = db.query_results()
    assert stored.detection_count == 3
    assert stored.detections == [
        StoredDetection(d.label, d.class_id, d.score, d.x1, d.y1, d.x2, d.y2) for d in found
    ]


def test_detections_of_an_already_stored_frame_are_not_stored_again(db: Database) -> None:
    db.upsert_results([make_result("f-1", detections=[detection("person", 0.9, 1.0)])])
    db.upsert_results([make_result("f-1", detections=[detection("car", 0.4, 2.0)] * 2)])
    [stored] = db.query_results()
    assert [d.label for d in stored.detections] == ["person"]


def test_a_stored_result_reads_back_as_the_contract_it_stored(db: Database) -> None:
    result = make_result("f-7", detections=[detection("cat", 0.25, 4.0)])
    db.upsert_results([result])
    [stored] = db.query_results()
    assert isinstance(stored, InferenceResult)
    assert stored.header == result.header
    assert {n: getattr(stored, n) for n in field_names(InferenceResult)} == {
        n: getattr(result, n) for n in field_names(InferenceResult)}
    assert (stored.frame_id, stored.camera_id, stored.image_uri) == (
        "f-7", "cam-1", "file:///frames/f-7.jpg")


def test_a_stored_result_flattens_to_its_row_and_detections(db: Database) -> None:
    db.upsert_results([make_result("f-1", detections=[detection("cat", 0.25, 4.0)])])
    [stored] = db.query_results()
    flat = stored.as_flat_dict()
    assert list(flat) == [c.name for c in framewire_db.result_table.c] + ["detections"]
    assert (flat["frame_id"], flat["seq"], flat["detection_count"]) == (
        "f-1", stored.seq, 1)
    assert flat["detections"] == [{"label": "cat", "class_id": 3, "score": 0.25, "x1": 4.0,
                                   "y1": 5.5, "x2": 14.25, "y2": 24.125}]


def test_timestamps_come_back_as_aware_utc_for_the_same_instant(db: Database) -> None:
    paris = timezone(timedelta(hours=2))
    captured = datetime(2025, 6, 1, 14, 30, 15, 654321, tzinfo=paris)
    db.upsert_results([make_result("f-1", captured_at=captured)])
    [stored] = db.query_results()
    assert stored.captured_at == captured
    assert stored.captured_at.tzinfo == UTC
    assert stored.stored_at.tzinfo == UTC


def test_naive_timestamp_is_refused_with_value_error(db: Database) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        db.upsert_results([make_result("f-1", captured_at=datetime(2025, 1, 1, 12))])


def test_failed_batch_stores_none_of_its_results(db: Database) -> None:
    bad = Detection(None, 0, 0.5, 0, 0, 1, 1)  # type: ignore[arg-type]
    with pytest.raises(DataError) as caught:
        db.upsert_results([make_result("f-1"), make_result("f-2", detections=[bad])])
    assert caught.value.code == "db_rejected"
    assert isinstance(caught.value.__cause__, sa.exc.IntegrityError)
    assert db.count_results() == 0
    assert db.cameras() == []


def test_camera_counts_only_newly_stored_frames(db: Database) -> None:
    db.upsert_results([make_result("f-1"), make_result("f-2"), make_result("g-1", "cam-2")])
    db.upsert_results([make_result("f-2"), make_result("f-3")])
    counts = {camera.camera_id: camera.frames_stored for camera in db.cameras()}
    assert counts == {"cam-1": 3, "cam-2": 1}


def test_camera_seen_times_span_earliest_and_latest_capture(db: Database) -> None:
    at = [T0 + timedelta(seconds=s) for s in (10, 20, 5, 30, 15)]
    db.upsert_results(
        [make_result("f-1", captured_at=at[0]), make_result("f-2", captured_at=at[1])]
    )
    db.upsert_results(
        [make_result("f-3", captured_at=at[2]), make_result("f-4", captured_at=at[3])]
    )
    db.upsert_results([make_result("f-5", captured_at=at[4])])
    [camera] = db.cameras()
    assert (camera.first_seen, camera.last_seen) == (min(at), max(at))


def test_query_returns_newest_first_for_one_camera_up_to_limit(db: Database) -> None:
    stored = [make_result(f"a-{i}", "cam-a", T0 + timedelta(seconds=i)) for i in range(6)]
    stored += [
        make_result(f"b-{i}", "cam-b", T0 + timedelta(seconds=i, milliseconds=500))
        for i in range(6)
    ]
    random.Random(4).shuffle(stored)
    db.upsert_results(stored)
    assert [r.frame_id for r in db.query_results("cam-a", limit=3)] == ["a-5", "a-4", "a-3"]


def test_query_without_camera_interleaves_cameras_by_capture_time(db: Database) -> None:
    db.upsert_results(
        [
            make_result("a-1", "cam-a", T0),
            make_result("b-1", "cam-b", T0 + 2 * S),
            make_result("a-2", "cam-a", T0 + 3 * S),
        ]
    )
    assert [r.frame_id for r in db.query_results()] == ["a-2", "b-1", "a-1"]


def test_query_since_leaves_out_earlier_captures(db: Database) -> None:
    db.upsert_results([make_result(f"f-{i}", captured_at=T0 + i * S) for i in range(5)])
    assert [r.frame_id for r in db.query_results(since=T0 + 3 * S)] == ["f-4", "f-3"]


def test_count_and_frame_ids_filter_by_camera(db: Database) -> None:
    db.upsert_results(
        [make_result("a-1", "cam-a"), make_result("a-2", "cam-a"), make_result("b-1", "cam-b")]
    )
    assert (db.count_results("cam-a"), db.count_results("cam-b")) == (2, 1)
    assert db.frame_ids("cam-b") == ["b-1"]


def test_reopening_keeps_stored_results(db_url: str) -> None:
    with open_database(db_url) as first:
        first.upsert_results([make_result("f-1")])
    with open_database(db_url) as second:
        assert second.frame_ids() == ["f-1"]


def test_batch_size_does_not_change_the_number_of_statements(db: Database) -> None:
    statements: list[str] = []
    sa.event.listen(db.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))

    def statements_for(prefix: str, size: int) -> int:
        statements.clear()
        batch = [
            make_result(f"{prefix}-{i}", detections=[detection("car", 0.5, i)] * 2)
            for i in range(size)
        ]
        assert db.upsert_results(batch) == size
        return len(statements)

    assert statements_for("small", 2) == statements_for("large", 100)


def test_concurrent_overlapping_batches_store_each_frame_once(db_url: str) -> None:
    frames = [make_result(f"f-{i:03d}", f"cam-{i % 3}") for i in range(60)]
    databases = [open_database(db_url) for _ in range(4)]

    def write(seed: int) -> int:
        batch = random.Random(seed).sample(frames, 40)
        return sum(databases[seed].upsert_results(batch[i : i + 10]) for i in range(0, 40, 10))

    try:
        with ThreadPoolExecutor(len(databases)) as pool:
            new_counts = list(pool.map(write, range(len(databases)), timeout=120))
    finally:
        for database in databases:
            database.close()
    with open_database(db_url) as database:
        stored = database.count_results()
        assert sum(new_counts) == stored
        assert sum(camera.frames_stored for camera in database.cameras()) == stored


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_locked_sqlite_database_raises_transient_error(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(framewire_db, "SQLITE_BUSY_TIMEOUT_MS", 50)
    with open_database(db_url) as database:
        holder = sqlite3.connect(str(sa.make_url(db_url).database), isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            with pytest.raises(TransientError, match="locked"):
                database.upsert_results([make_result("f-1")])
        finally:
            holder.close()
        assert database.upsert_results([make_result("f-1")]) == 1


@pytest.mark.integration
def test_missing_postgres_database_raises_config_error(postgres_url: str) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        open_database(postgres_url.rsplit("/", 1)[0] + "/no_such_database")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_read_only_sqlite_database_raises_systemic_error_and_resumes(db: Database) -> None:
    def read_only(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        # Root writes through chmod 0444; query_only refuses writes to root as well.
        dbapi_connection.execute("PRAGMA query_only=ON")

    sa.event.listen(db.engine, "connect", read_only)
    db.engine.dispose()  # new connections, each read-only
    with pytest.raises(SystemicError, match="is read-only \\(SQLITE_READONLY"):
        db.upsert_results([make_result("f-1")])
    sa.event.remove(db.engine, "connect", read_only)
    # writable again: the failure dropped the read-only connections, so storing resumes
    assert db.upsert_results([make_result("f-1")]) == 1


@pytest.mark.integration
def test_frame_id_too_big_for_the_postgres_index_is_db_rejected(postgres_db_url: str) -> None:
    # Contract checks refuse such ids at decode; this is the database's own limit (54000),
    # which used to read as a transient OperationalError and stall the partition.
    # Random letters: PostgreSQL would compress a repeated one below the limit.
    too_long = "".join(random.Random(5).choices("abcdefghijklmnopqrstuvwxyz0123456789", k=5000))
    with open_database(postgres_db_url) as database:
        with pytest.raises(DataError, match="SQLSTATE 54000") as caught:
            database.upsert_results([make_result(too_long), make_result("f-1")])
        assert caught.value.code == "db_rejected"
        assert database.upsert_results([make_result("f-1")]) == 1


@pytest.mark.integration
def test_read_only_postgres_database_raises_systemic_error_and_resumes(
    postgres_db_url: str,
) -> None:
    # trust authentication ignores the password: it is there to be hidden in the fault
    url = sa.make_url(postgres_db_url).set(password="s3cret")
    admin = {"host": url.host, "port": url.port, "user": url.username, "dbname": "postgres",
             "autocommit": True}  # fmt: skip
    with open_database(url.render_as_string(hide_password=False)) as database:
        with psycopg.connect(**admin) as conn:  # type: ignore[arg-type]
            conn.execute(f"ALTER DATABASE {url.database} SET default_transaction_read_only = on")
        database.engine.dispose()  # the setting applies to new connections
        try:
            with pytest.raises(SystemicError, match="is read-only \\(SQLSTATE 25006") as caught:
                database.upsert_results([make_result("f-1")])
        finally:
            with psycopg.connect(**admin) as conn:  # type: ignore[arg-type]
                conn.execute(f"ALTER DATABASE {url.database} RESET default_transaction_read_only")
        assert "s3cret" not in caught.value.fault
        assert "***" in caught.value.fault
        # writable again: the failure dropped the read-only connections, so storing resumes
        assert database.upsert_results([make_result("f-1")]) == 1
