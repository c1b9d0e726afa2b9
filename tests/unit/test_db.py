"""Opening a database: URLs, SQLite settings and failures. Storage behaviours, checked on
SQLite and PostgreSQL alike, are in tests/integration/test_db_backends.py."""

from __future__ import annotations

import socket
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from framewire.contracts import HEADER_FIELDS, InferenceResult
from framewire.contracts.records import field_names
from framewire.errors import ConfigError, DataError, SystemicError, TransientError
from framewire.store.db import open_database, result_table
from framewire.store.dberrors import translate_db_error


def test_open_creates_missing_parent_folders_of_a_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "not" / "yet" / "results.db"
    with open_database(f"sqlite:///{path}") as db:
        assert db.count_results() == 0
    assert path.is_file()


def test_sqlite_connections_use_wal_busy_timeout_and_normal_sync(tmp_path: Path) -> None:
    with open_database(f"sqlite:///{tmp_path / 'results.db'}") as db, db.engine.connect() as conn:
        pragma = {
            name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("journal_mode", "busy_timeout", "synchronous", "foreign_keys")
        }
    # synchronous: 1 is NORMAL
    assert pragma == {"journal_mode": "wal", "busy_timeout": 5000, "synchronous": 1,
                      "foreign_keys": 1}  # fmt: skip


def test_in_memory_sqlite_database_is_shared_between_threads() -> None:
    with open_database("sqlite://") as db, ThreadPoolExecutor(1) as other_thread:
        assert other_thread.submit(db.count_results).result() == 0


def test_malformed_url_raises_config_error_with_examples() -> None:
    with pytest.raises(ConfigError, match="postgresql\\+psycopg://"):
        open_database("results.db")


def test_unsupported_driver_raises_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="mysql\\+pymysql"):
        open_database("mysql+pymysql://user@localhost/framewire")


def test_sqlite_path_below_a_file_raises_config_error(tmp_path: Path) -> None:
    (tmp_path / "plain-file").write_text("not a folder")
    with pytest.raises(ConfigError, match="writable path"):
        open_database(f"sqlite:///{tmp_path / 'plain-file' / 'results.db'}")


def test_sqlite_file_that_is_not_a_database_raises_config_error(tmp_path: Path) -> None:
    (tmp_path / "results.db").write_bytes(b"this is no SQLite file header" * 100)
    with pytest.raises(ConfigError, match="not a database"):
        open_database(f"sqlite:///{tmp_path / 'results.db'}")


def test_unreachable_postgres_raises_transient_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on the port once the socket is closed.
    with pytest.raises(TransientError, match="start the database"):
        open_database(f"postgresql+psycopg://postgres@127.0.0.1:{port}/framewire")


def test_password_is_hidden_in_errors() -> None:
    with pytest.raises(TransientError) as caught:
        open_database("postgresql://app:s3cret@127.0.0.1:1/framewire")
    assert "s3cret" not in str(caught.value)
    assert isinstance(caught.value.__cause__, sa.exc.OperationalError)


# The results table as databases already hold it; the header nesting in the contract kept it.
RESULT_COLUMNS = ("frame_id", "camera_id", "seq", "captured_at", "ingested_at", "preprocessed_at",
                  "inferred_at", "stored_at", "orig_width", "orig_height", "model_name",
                  "model_version", "provider", "image_uri", "too_dark", "blurred", "frozen",
                  "detection_count", "privacy", "frame_uri", "thumbnail_uri", "faces_blurred")


def test_the_results_table_keeps_its_columns_for_existing_databases() -> None:
    assert tuple(c.name for c in result_table.c) == RESULT_COLUMNS


def test_every_result_column_but_the_storage_facts_is_a_contract_field() -> None:
    contract = {*HEADER_FIELDS, *field_names(InferenceResult)} - {
        "header", "detections", "schema_version"}
    assert contract == set(RESULT_COLUMNS) - {"stored_at", "detection_count"}


WHERE = "postgresql+psycopg://app:***@db.example:5432/framewire"


def wrapped(
    orig: Exception, driver_error: type[Exception], invalidated: bool = False
) -> DBAPIError:
    """``orig`` wrapped as SQLAlchemy wraps what the driver raises (OperationalError...)."""
    err = DBAPIError.instance("INSERT INTO results ...", {}, orig, driver_error,
                              connection_invalidated=invalidated)
    assert isinstance(err, DBAPIError)
    return err


def postgres_error(sqlstate: str) -> DBAPIError:
    """psycopg's error for ``sqlstate`` with a DETAIL line, as the server sends it."""
    orig = psycopg.errors.lookup(sqlstate)(f"message of {sqlstate}\nDETAIL:  Failing row (...)")
    return wrapped(orig, psycopg.Error)


def kind_of(err: DBAPIError) -> type[Exception] | None:
    translated = translate_db_error(err, "storing results", WHERE)
    return None if translated is None else type(translated)


@pytest.mark.parametrize(("sqlstate", "kind"), [
    ("08006", TransientError),  # connection_failure
    ("08001", TransientError),  # sqlclient_unable_to_establish_sqlconnection
    ("40001", TransientError),  # serialization_failure
    ("40P01", TransientError),  # deadlock_detected
    ("55P03", TransientError),  # lock_not_available
    ("57P01", TransientError),  # admin_shutdown
    ("57P02", TransientError),  # crash_shutdown
    ("57P03", TransientError),  # cannot_connect_now
    ("53300", TransientError),  # too_many_connections
    ("25006", SystemicError),  # read_only_sql_transaction
    ("53100", SystemicError),  # disk_full
    ("53200", SystemicError),  # out_of_memory
    ("53400", SystemicError),  # configuration_limit_exceeded
    ("58030", SystemicError),  # io_error
    ("58000", SystemicError),  # system_error
    ("XX001", SystemicError),  # data_corrupted
    ("28P01", SystemicError),  # invalid_password
    ("3D000", SystemicError),  # invalid_catalog_name: the database is gone
    ("42501", SystemicError),  # insufficient_privilege
    ("42P01", SystemicError),  # undefined_table
    ("57014", SystemicError),  # query_canceled: statement_timeout
    ("22001", DataError),  # string_data_right_truncation
    ("22P02", DataError),  # invalid_text_representation
    ("22021", DataError),  # character_not_in_repertoire (a NUL in text)
    ("23502", DataError),  # not_null_violation
    ("23505", DataError),  # unique_violation
    ("23503", DataError),  # foreign_key_violation
    ("54000", DataError),  # program_limit_exceeded: index row too big
    ("54001", DataError),  # statement_too_complex
    ("55000", TransientError),  # object_not_in_prerequisite_state: an OperationalError, as before
    ("42601", None),  # syntax_error: our bug, propagates
    ("0A000", None),  # feature_not_supported: propagates
    ("XX000", None),  # internal_error: propagates
])  # fmt: skip
def test_postgres_errors_are_classified_by_sqlstate(sqlstate: str, kind: type | None) -> None:
    assert kind_of(postgres_error(sqlstate)) is kind


def sqlite_error(cls: type[sqlite3.Error], code: int, name: str) -> DBAPIError:
    """A sqlite3 error as the module raises it, wrapped as SQLAlchemy wraps it."""
    orig = cls(f"message of {name}")
    orig.sqlite_errorcode, orig.sqlite_errorname = code, name
    return wrapped(orig, sqlite3.Error)


@pytest.mark.parametrize(("cls", "code", "name", "kind"), [
    (sqlite3.OperationalError, 5, "SQLITE_BUSY", TransientError),
    (sqlite3.OperationalError, 6, "SQLITE_LOCKED", TransientError),
    (sqlite3.OperationalError, 8, "SQLITE_READONLY", SystemicError),
    (sqlite3.OperationalError, 1034, "SQLITE_IOERR_FSYNC", SystemicError),
    (sqlite3.DatabaseError, 11, "SQLITE_CORRUPT", SystemicError),
    (sqlite3.OperationalError, 13, "SQLITE_FULL", SystemicError),
    (sqlite3.OperationalError, 14, "SQLITE_CANTOPEN", SystemicError),
    (sqlite3.DataError, 18, "SQLITE_TOOBIG", DataError),
    (sqlite3.IntegrityError, 1299, "SQLITE_CONSTRAINT_NOTNULL", DataError),
    (sqlite3.IntegrityError, 20, "SQLITE_MISMATCH", DataError),
    (sqlite3.OperationalError, 1, "SQLITE_ERROR", None),  # a wrong statement: propagates
    (sqlite3.OperationalError, 9, "SQLITE_INTERRUPT", TransientError),  # as before
])  # fmt: skip
def test_sqlite_errors_are_classified_by_result_code(
    cls: type[sqlite3.Error], code: int, name: str, kind: type | None
) -> None:
    assert kind_of(sqlite_error(cls, code, name)) is kind


def test_refused_values_are_db_rejected_naming_the_sqlstate_and_the_message() -> None:
    rejected = translate_db_error(postgres_error("54000"), "storing results", WHERE)
    assert isinstance(rejected, DataError)
    assert rejected.code == "db_rejected"
    assert "SQLSTATE 54000: message of 54000" in rejected.reason
    assert "Failing row" not in rejected.reason  # the DETAIL may quote a whole row


def test_a_long_database_message_is_cut_in_the_reason() -> None:
    orig = psycopg.errors.lookup("22P02")("invalid input syntax: " + "x" * 5000)
    rejected = translate_db_error(wrapped(orig, psycopg.Error), "storing results", WHERE)
    assert rejected is not None
    assert len(str(rejected)) < 500


def test_a_read_only_postgres_fault_names_the_database_and_the_fix() -> None:
    fault = translate_db_error(postgres_error("25006"), "storing results", WHERE)
    assert isinstance(fault, SystemicError)
    assert fault.fault.startswith(f"database {WHERE} is read-only (SQLSTATE 25006")
    assert "storing results paused" in fault.fault
    assert "default_transaction_read_only" in fault.fault
    assert "\n" not in fault.fault


def test_unclassified_errors_keep_their_old_meaning() -> None:
    no_sqlstate = psycopg.OperationalError("connection failed")  # as psycopg's connect raises it
    assert kind_of(wrapped(no_sqlstate, psycopg.Error)) is TransientError
    internal = psycopg.errors.lookup("XX000")("terminating connection")
    assert kind_of(wrapped(internal, psycopg.Error, invalidated=True)) is TransientError
