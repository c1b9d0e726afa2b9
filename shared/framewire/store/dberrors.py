"""Database errors read by cause: retry, pause on a fault of the system, or refuse the record.

``translate_db_error`` maps a SQLAlchemy ``DBAPIError`` to the Framewire error to raise, by
PostgreSQL SQLSTATE or SQLite result code, so that a value the database refuses is
dead-lettered instead of retried forever.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.exc import DBAPIError, OperationalError

from framewire.errors import DataError, FramewireError, SystemicError, TransientError


@dataclass(frozen=True)
class _Cause:
    """What a database error says: retry, pause on a fault of the system (``what`` the
    database is or did, and the ``fix``), or refuse the record."""

    kind: type[FramewireError]
    what: str = ""
    fix: str = ""


_RETRY = _Cause(TransientError)
_REJECT = _Cause(DataError)
_REBUILD = "restart the storage service, then refill it with `framewire rebuild-db --force`"
_RESUMES = "it resumes by itself"

# SQLSTATE, or its two-character class, to its cause; an exact code wins over its class.
_POSTGRES_CAUSES: dict[str, _Cause] = {
    "08": _RETRY,  # connection exception
    "40": _RETRY,  # transaction rollback: serialization failure, deadlock
    "55P03": _RETRY,  # lock_not_available
    "57P01": _RETRY, "57P02": _RETRY, "57P03": _RETRY,  # admin/crash shutdown, starting up
    "57P05": _RETRY, "25P03": _RETRY,  # idle (in transaction) session timeout: reconnect
    "53300": _RETRY,  # too_many_connections: others will close theirs
    "25006": _Cause(SystemicError, "is read-only", "make it writable (promote the primary, or "
                    f"turn off default_transaction_read_only); {_RESUMES}"),
    "53100": _Cause(SystemicError, "is out of disk space",
                    f"free or add space on the server's data volume; {_RESUMES}"),
    "53200": _Cause(SystemicError, "is out of memory", "give the server more memory, or lower "
                    f"work_mem or max_connections; {_RESUMES}"),
    "53": _Cause(SystemicError, "ran out of a resource",
                 f"raise the server setting the message names; {_RESUMES}"),
    "58": _Cause(SystemicError, "has a system or I/O error",
                 f"check the server's log and its disks; {_RESUMES}"),
    "XX001": _Cause(SystemicError, "holds corrupted data",
                    "restore it from a backup (the server's log names the relation)"),
    "XX002": _Cause(SystemicError, "holds a corrupted index",
                    f"REINDEX the index the message names; {_RESUMES}"),
    "28": _Cause(SystemicError, "refuses the login", "fix the user or password in the database "
                 f"url, or the server's pg_hba.conf; {_RESUMES} once the url works"),
    "3D000": _Cause(SystemicError, "does not exist", f"create it, then {_REBUILD}"),
    "57P04": _Cause(SystemicError, "was dropped", f"create it again, then {_REBUILD}"),
    "42501": _Cause(SystemicError, "denies the storage user a right it needs", "GRANT it SELECT, "
                    f"INSERT, UPDATE and DELETE on Framewire's tables; {_RESUMES}"),
    "42P01": _Cause(SystemicError, "lacks a Framewire table", f"{_REBUILD} (it creates tables)"),
    "42703": _Cause(SystemicError, "has a Framewire table without one of its columns",
                    f"restore the table, or drop it and {_REBUILD}"),
    "57014": _Cause(SystemicError, "canceled a statement (statement_timeout or pg_cancel_backend)",
                    "raise statement_timeout for the storage user, or end what blocks it "
                    f"(pg_stat_activity); {_RESUMES}"),
    "22": _REJECT,  # data exception: a value out of range, too long, a NUL in text...
    "23": _REJECT,  # integrity constraint violation: NOT NULL, UNIQUE, FOREIGN KEY, CHECK
    "54": _REJECT,  # program limit exceeded: an index row too big (54000)...
}
# SQLite primary result codes (the low byte of the extended code) to their cause.
_SQLITE_FILE_GONE = _Cause(SystemicError, "is corrupt or not a database",
                           f"restore the file from a backup, or move it away and {_REBUILD}")
_SQLITE_CAUSES: dict[int, _Cause] = {
    5: _RETRY, 6: _RETRY,  # SQLITE_BUSY, SQLITE_LOCKED: another writer holds the lock
    15: _RETRY, 17: _RETRY,  # SQLITE_PROTOCOL (a lock race), SQLITE_SCHEMA (schema changed)
    3: _Cause(SystemicError, "denies access (SQLITE_PERM)",
              f"make the file and its folder writable by the storage service; {_RESUMES}"),
    7: _Cause(SystemicError, "ran out of memory", f"give the machine more memory; {_RESUMES}"),
    8: _Cause(SystemicError, "is read-only", "make the file, its folder and its volume writable "
              f"by the storage service; {_RESUMES}"),
    10: _Cause(SystemicError, "has an I/O error",
               f"check the disk holding the file (dmesg) and its free space; {_RESUMES}"),
    11: _SQLITE_FILE_GONE, 26: _SQLITE_FILE_GONE,  # SQLITE_CORRUPT, SQLITE_NOTADB
    13: _Cause(SystemicError, "is full", f"free space on the disk holding the file; {_RESUMES}"),
    14: _Cause(SystemicError, "cannot be opened", "make sure the file, its folder and its -wal "
               f"and -shm files exist and are writable by the storage service; {_RESUMES}"),
    18: _REJECT, 19: _REJECT, 20: _REJECT,  # SQLITE_TOOBIG, SQLITE_CONSTRAINT, SQLITE_MISMATCH
}
_MESSAGE_CHARS = 200


def translate_db_error(err: DBAPIError, action: str, where: str) -> FramewireError | None:
    """The Framewire error to raise for ``err``, raised while ``action`` on the database at
    ``where`` (its URL with the password hidden), by its cause; None to let ``err`` propagate.

    PostgreSQL, by SQLSTATE (an exact code first, else its class):

    - TransientError (retry with backoff): 08 connection, 40 transaction rollback
      (serialization failure, deadlock), 55P03 lock not available, 57P01/57P02/57P03
      shutdown or starting, 57P05/25P03 idle session timeouts, 53300 too many connections.
    - SystemicError (pause, retry, report a one-line fault naming the fix): 25006 read-only,
      53100 disk full, 53200 out of memory, other 53 resources, 58 system or I/O error,
      XX001/XX002 corruption, 28 login refused, 3D000/57P04 database gone, 42501 insufficient
      privilege, 42P01/42703 table or column gone, 57014 statement canceled (timeout).
    - DataError ``db_rejected`` (the record is dead-lettered): 22 data exception, 23 integrity
      constraint violation, 54 program limit exceeded (54000: an index row too big).

    SQLite, by primary result code: BUSY, LOCKED, PROTOCOL, SCHEMA are transient; PERM, NOMEM,
    READONLY, IOERR, CORRUPT, FULL, CANTOPEN, NOTADB are systemic; TOOBIG, CONSTRAINT,
    MISMATCH are ``db_rejected``.

    Anything else keeps its old meaning: an OperationalError (but SQLite's SQLITE_ERROR, a
    wrong statement) or an invalidated connection is transient; the rest propagates, so no
    record is dropped for a cause nobody named.
    """
    label, cause = _cause_of(err.orig)
    message = _first_line(err.orig)
    if cause is None:
        if not _is_transient(err):
            return None
        cause = _RETRY
    if cause.kind is DataError:
        return DataError("db_rejected", f"database {where} refused the record's values while "
                         f"{action} ({label}: {message}); fix the data or the schema, then replay")
    if cause.kind is SystemicError:
        return SystemicError(f"database {where} {cause.what} ({label}: {message}): {action} "
                             f"paused; {cause.fix}")
    return TransientError(
        f"{action} in {where} failed: {message}{f' ({label})' if label else ''}; the database "
        "is busy, restarting or unreachable: retry later, and check it is running if this persists"
    )


def _cause_of(orig: object) -> tuple[str, _Cause | None]:
    """The error's code as people read it, and its cause where the tables name it."""
    sqlstate = getattr(orig, "sqlstate", None)  # psycopg
    if isinstance(sqlstate, str) and sqlstate:
        return (f"SQLSTATE {sqlstate}",
                _POSTGRES_CAUSES.get(sqlstate) or _POSTGRES_CAUSES.get(sqlstate[:2]))
    code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(code, int):
        return str(getattr(orig, "sqlite_errorname", code)), _SQLITE_CAUSES.get(code & 0xFF)
    return "", None


def _first_line(orig: object) -> str:
    """The database's message, without its DETAIL (which may quote a whole row)."""
    lines = str(orig).strip().splitlines()
    line = lines[0].strip() if lines else type(orig).__name__
    return line if len(line) <= _MESSAGE_CHARS else line[: _MESSAGE_CHARS - 1] + "…"


def _is_transient(err: DBAPIError) -> bool:
    if err.connection_invalidated:
        return True
    if not isinstance(err, OperationalError):
        return False
    # SQLITE_ERROR (1) is a wrong statement or a missing table: retrying will not help.
    code = getattr(err.orig, "sqlite_errorcode", None)
    return not (isinstance(code, int) and code & 0xFF == 1)
