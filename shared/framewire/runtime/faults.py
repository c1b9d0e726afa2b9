"""Poison pills and systemic faults: which record is to blame, and when nothing is.

A stage's batch can fail three ways, and each has its answer:

- **A bad record** (``DataError``): dead-lettered with its code, at once.
- **A record that makes the stage fail** (an exception, a transient error that only this record
  meets): the batch is split and each record tried alone, so the good ones go through. A
  record that still fails after ``poison_pill_limit`` attempts while other records succeed is
  dead-lettered as ``retries_exhausted``, and its partition moves on.
- **A fault of the system** (every record of the batch fails: a database gone read-only, a GPU
  out of memory, a bug that hits every record): nothing is dead-lettered. The stage raises
  ``SystemicError``; the loop rewinds the batch and retries it with backoff, and the process
  reports the fault in its heartbeats (``framewire status``) until a record succeeds again. A
  record is blamed only when others succeed next to it.

A record that kills the process (out of memory, a native crash in a decoder or the model)
leaves no exception to catch. Each process writes the records it is working on to a journal
file (``<home>/state/<stage>.<id>.inflight``, locked while the process lives) before the stage
runs and empties it after. A process that finds the journal of a dead one (its lock free)
counts a crash against each record it held
(``<stage>.crashes.json``); records with a crash are tried alone, and one with
``poison_pill_limit`` crashes is dead-lettered as ``crash_loop`` without being run again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from framewire.config import Settings
from framewire.errors import DataError, SystemicError, TransientError
from framewire.runtime.heartbeat import Counters
from framewire.runtime.stage import Outcome, Stage
from framewire.runtime.stop import StopSignal

log = logging.getLogger(__name__)
# a crash count nobody looked at for this long belongs to a record long gone
CRASH_MEMORY_S = 24 * 3600.0
# in-place retries of a record that failed while others succeeded: first wait, cap
RETRY_FIRST_S, RETRY_CAP_S = 0.05, 1.0


@dataclass(frozen=True)
class Held:
    """A record a stage works on: where it was read, and its frame."""

    topic: str
    partition: int
    offset: int
    frame_id: str

    @property
    def key(self) -> str:
        # the frame id too: the embedded broker restarts its offsets from 0 with its data
        return f"{self.topic}\t{self.partition}\t{self.offset}\t{self.frame_id}"


class CrashJournal:
    """The records this process is working on, in a file the next process reads if it dies.

    Each process's journal is ``<stage>.<random id>.inflight``, locked (``flock``) while the
    process lives: a journal whose lock can be taken belongs to a dead process, whatever pid
    the next one gets (a container restarted as pid 1 keeps its pid). A journal that cannot be
    written (a full disk) costs only the crash detection, never the stage: ``error`` says why.
    """

    def __init__(self, folder: Path, stage: str) -> None:
        self.folder, self.stage = folder, stage
        self.path = folder / f"{stage}.{uuid.uuid4().hex}.inflight"
        self.counts_path = folder / f"{stage}.crashes.json"
        self._lock_path = folder / f"{stage}.crashes.lock"
        self._fd: int | None = None
        self._written = False
        self.counts: dict[str, int] = {}
        self.error: str | None = None
        with self._guard("open"):
            folder.mkdir(parents=True, exist_ok=True)
            # locked before it takes the name harvest looks for, so it is never taken for dead
            fresh = self.path.with_suffix(".new")
            fd = os.open(fresh, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # alive: held until the process ends
            fresh.rename(self.path)
            self._fd = fd

    def begin(self, held: list[Held]) -> None:
        """Note the records about to be worked on (no fsync: it must outlive the process,
        not the machine)."""
        if self._fd is None:
            return
        data = "".join(f"{h.key}\n" for h in held).encode()
        with self._guard("write"):
            os.pwrite(self._fd, data, 0)
            os.ftruncate(self._fd, len(data))
            self._written = True

    def end(self) -> None:
        """The records noted last are done with (processed or failed without dying)."""
        if self._written and self._fd is not None:
            with self._guard("write"):
                os.ftruncate(self._fd, 0)
                self._written = False

    def crashes(self, held: Held) -> int:
        """How many processes died while working on this record."""
        return self.counts.get(held.key, 0)

    def harvest(self) -> None:
        """Count a crash against every record held by a dead process of this stage; then load
        every count (another replica may have harvested them)."""
        with self._guard("read"), self._locked() as stored:
            for journal in self.folder.glob(f"{self.stage}.*.inflight"):
                held = _dead_journal(journal)
                for key in (held or [])[:10_000]:
                    count, _ = stored.get(key, (0, 0.0))
                    stored[key] = (count + 1, time.time())
                if held:
                    log.warning("a process of this stage died while working on records: each "
                                "gets a crash count", extra={"records": len(held)})
            self.counts = {key: count for key, (count, _) in stored.items()}

    def forget(self, held: list[Held]) -> None:
        """Records with crash counts that are now done (processed or dead-lettered)."""
        done = [h.key for h in held if h.key in self.counts]
        if not done:
            return
        with self._guard("write"), self._locked() as stored:
            for key in done:
                stored.pop(key, None)
                self.counts.pop(key, None)

    @contextlib.contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        """A journal that fails is reported, not fatal: the stage works on without it."""
        try:
            yield
            self.error = None
        except OSError as exc:
            if self.error is None:
                log.error("crash journal unusable: records that kill the process will not be "
                          "found", extra={"action": action, "error": str(exc)})
            why = exc.strerror or str(exc)
            self.error = (f"cannot {action} the crash journal in {self.folder} ({why}): a "
                          "record that kills the process would not be found; free space or fix "
                          "the folder's rights, it recovers by itself")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, tuple[int, float]]]:
        """The stored counts, read and written back under a lock (replicas share them)."""
        with open(self._lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                raw = json.loads(self.counts_path.read_text())
                stored = {k: (int(v[0]), float(v[1])) for k, v in raw.items()}
            except (OSError, ValueError, TypeError, IndexError, AttributeError):
                stored = {}
            yield stored
            now = time.time()
            kept = {k: v for k, v in stored.items() if now - v[1] < CRASH_MEMORY_S}
            tmp = self.counts_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(kept))
            tmp.replace(self.counts_path)

    def close(self) -> None:
        """A clean exit: no record is to blame."""
        with contextlib.suppress(OSError):
            self.path.unlink()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _dead_journal(path: Path) -> list[str] | None:
    """The records held by the dead process that wrote ``path`` (then removed); None when its
    process lives (its lock is held)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None  # alive
        with os.fdopen(os.dup(fd)) as journal:
            held = journal.read().splitlines()
        path.unlink()
        return held
    finally:
        os.close(fd)


class RecordFaults:
    """Runs a stage on a batch and decides, on failure, whether a record or the system is to
    blame (module docstring)."""

    def __init__(self, stage: Stage, settings: Settings, counters: Counters,
                 journal: CrashJournal | None = None, stop: StopSignal | None = None) -> None:
        self.stage, self.settings, self.counters = stage, settings, counters
        self.journal, self.stop = journal, stop or StopSignal()
        self.limit = settings.poison_pill_limit
        self._paused = False
        self._journal_error: str | None = None

    def process(self, records: list[Any], held: list[Held]) -> list[Outcome]:
        """One outcome per record, in order; SystemicError when the system is to blame."""
        outcomes: list[Outcome | _Failed] = [None] * len(records)
        batch, alone = [], []
        if self.journal and any(self.journal.crashes(h) for h in held):
            self.journal.harvest()  # the latest counts: another process may have died since
        for i, h in enumerate(held):
            crashes = self.journal.crashes(h) if self.journal else 0
            if crashes >= self.limit:
                outcomes[i] = DataError(
                    "crash_loop",
                    f"{self.stage.name}'s process died {crashes} times while working on this "
                    f"record (out of memory, or a native crash in a decoder or the model); "
                    f"poison_pill_limit={self.limit}, so it is dead-lettered and its partition "
                    "moves on: find the cause in the service's log, then replay it")
            elif crashes:
                alone.append(i)  # held when a process died: tried alone to find the culprit
            else:
                batch.append(i)
        if batch:
            for i, outcome in zip(batch, self._run_batch(batch, records, held), strict=True):
                outcomes[i] = outcome
        for i in alone:
            outcomes[i] = self._attempt([i], records, held)[0]
        failed = [i for i, o in enumerate(outcomes) if isinstance(o, _Failed)]
        if failed:
            # evidence that the system works: a record the stage turned into an output (a
            # DataError outcome proves nothing: a GPU out of memory rejects nothing as bad)
            worked = any(i in batch or i in alone for i, o in enumerate(outcomes)
                         if not isinstance(o, (_Failed, DataError)))
            self._judge(failed, records, held, outcomes, succeeded=worked)
        self._healthy()
        if self.journal:
            self.journal.forget(held)
            if self.journal.error != self._journal_error:
                self._journal_error = self.journal.error
                self.counters.set_fault("crash_journal", self.journal.error)
        judged: list[Outcome] = []
        for outcome in outcomes:
            assert not isinstance(outcome, _Failed)  # every failure was judged
            judged.append(outcome)
        return judged

    def _run_batch(self, indexes: list[int], records: list[Any],
                   held: list[Held]) -> list[Outcome | _Failed]:
        """The whole batch in one call; split into single records if it fails."""
        found = self._attempt(indexes, records, held)
        if len(indexes) == 1 or not isinstance(found[0], _Failed):
            return found
        log.warning("batch failed; trying its records one by one",
                    extra={"error": found[0].error})
        return [self._attempt([i], records, held)[0] for i in indexes]

    def _attempt(self, indexes: list[int], records: list[Any],
                 held: list[Held]) -> list[Outcome | _Failed]:
        """Run the stage once on these records: their outcomes, or each one's failure.

        A DataError from a single record is its outcome; from several, a failure (which of
        them is bad is found by trying them alone). SystemicError propagates."""
        if self.journal:
            self.journal.begin([held[i] for i in indexes])
        try:
            outcomes = self.stage.process([records[i] for i in indexes])
        except SystemicError as exc:
            self._report(exc.fault)
            raise
        except TransientError:
            raise  # broker, database or disk away: the loop rewinds and retries the batch
        except DataError as exc:
            if len(indexes) == 1:
                return [exc]
            return [_Failed(exc)] * len(indexes)
        except Exception as exc:  # a fault: the record's or the system's (judged later)
            return [_Failed(exc)] * len(indexes)
        finally:
            if self.journal:
                self.journal.end()
        if len(outcomes) != len(indexes):
            raise RuntimeError(f"{self.stage.name}.process returned {len(outcomes)} outcomes "
                               f"for {len(indexes)} records")
        return list(outcomes)

    def _judge(self, failed: list[int], records: list[Any], held: list[Held],
               outcomes: list[Outcome | _Failed], succeeded: bool) -> None:
        """Retry the records that failed alone; blame them only if other records succeed
        (``succeeded``: the stage ran to an outcome on another record of the batch)."""
        if not succeeded and len(failed) > 1:
            self._systemic(outcomes[failed[0]])  # every record of the batch failed
        delay = RETRY_FIRST_S
        for attempt in range(2, self.limit + 1):
            if not failed or self.stop.wait(delay):
                break
            delay = min(RETRY_CAP_S, delay * 2)
            for i in list(failed):
                outcome = self._attempt([i], records, held)[0]
                if not isinstance(outcome, _Failed):
                    outcomes[i] = outcome
                    failed.remove(i)
                    succeeded = True
                else:
                    outcomes[i] = outcome
            log.info("records retried alone", extra={"attempt": attempt, "failing": len(failed)})
        if failed and self.stop.is_set:  # stopped before the last attempt: judge nothing
            raise TransientError("stopped while records were being retried; they are read "
                                 "again from the last commit")
        if failed and not succeeded:
            self._systemic(outcomes[failed[0]])
        for i in failed:
            error = outcomes[i]
            assert isinstance(error, _Failed)
            log.error("a record keeps failing while others succeed: dead-lettering it",
                      extra={"frame_id": held[i].frame_id, "error": error.error,
                             "offset": held[i].offset})
            outcomes[i] = DataError(
                "retries_exhausted",
                f"{self.stage.name} failed {self.limit} times on this record "
                f"(poison_pill_limit) while other records succeeded: {error.error}; if this "
                "is a bug in the stage, report it with this dead letter, then replay the record "
                "once fixed")

    def _systemic(self, failure: Outcome | _Failed) -> None:
        error = failure.error if isinstance(failure, _Failed) else str(failure)
        fault = (f"every record fails with {error}: paused, retrying with backoff "
                 "(nothing is dead-lettered); fix the cause named here and in the log, it "
                 "resumes by itself")
        self._report(fault)
        raise SystemicError(fault)

    def _report(self, fault: str) -> None:
        if not self._paused:
            log.error("systemic fault: the stage pauses", extra={"fault": fault})
        self._paused = True
        self.counters.set_fault("systemic_fault", fault)
        self.counters.state = "paused"

    def _healthy(self) -> None:
        if self._paused:
            self._paused = False
            self.counters.set_fault("systemic_fault", None)
            if self.counters.state == "paused":
                self.counters.state = "running"
            log.warning("systemic fault over: records succeed again")


class _Failed:
    """A record's attempt that raised (not a DataError on a single record)."""

    __slots__ = ("exc",)

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    @property
    def error(self) -> str:
        return f"{type(self.exc).__name__}: {str(self.exc)[:500]}"
