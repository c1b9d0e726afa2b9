"""Opening a database: URLs, SQLite settings and failures. Storage behaviours, checked on
SQLite and PostgreSQL alike, are in tests/integration/test_db_backends.py."""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa

from framewire.contracts import HEADER_FIELDS, InferenceResult
from framewire.contracts.records import field_names
from framewire.errors import ConfigError, TransientError
from framewire.store.db import open_database, result_table


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
                  "detection_count")


def test_the_results_table_keeps_its_columns_for_existing_databases() -> None:
    assert tuple(c.name for c in result_table.c) == RESULT_COLUMNS


def test_every_result_column_but_the_storage_facts_is_a_contract_field() -> None:
    contract = {*HEADER_FIELDS, *field_names(InferenceResult)} - {
        "header", "detections", "schema_version"}
    assert contract == set(RESULT_COLUMNS) - {"stored_at", "detection_count"}
