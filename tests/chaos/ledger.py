"""Counting a chaos scenario: frames published, stored, dead-lettered, lost and duplicated.

The counts are by frame id, never by totals, so one lost frame cannot hide behind one duplicate:

* published: the frame ids the broker acknowledged to ingest (from the producer's own delivery
  reports, see ``FrameJournal``) or, where ingest itself is killed, the ids in ``frames.raw``;
* stored: published ids with a row in the results table;
* dead-lettered: published ids with an entry on the ``deadletter`` topic;
* lost: published ids with neither;
* duplicated: frame ids with more than one row in the results table (``frame_id`` is its
  primary key, so this stays 0 unless the schema changes); repeats of a frame on the
  ``detections`` topic (redelivery after a kill) are counted for information only.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from framewire.broker.reading import read_topic
from framewire.capture.ingest import Ingest
from framewire.capture.sources import CapturedImage
from framewire.config import Settings
from framewire.contracts import FrameCaptured, InferenceResult, utcnow
from framewire.contracts.codec import Codec
from framewire.errors import TransientError
from framewire.ops.status import dead_letters
from framewire.runtime import Publisher, StopSignal
from framewire.store.db import open_database
from tests.chaos.stack import group_positions
from tests.fixtures.common import wait_until
from tests.fixtures.images import jpeg, synthetic_frame


@dataclass(frozen=True)
class Workload:
    """How many cameras publish how many frames, and how fast (None: as fast as possible)."""

    cameras: int
    frames_per_camera: int
    fps_per_camera: float | None

    @property
    def total(self) -> int:
        return self.cameras * self.frames_per_camera


# -- the closing line -------------------------------------------------------------------------


@dataclass
class Tally:
    """One scenario's counts, as the chaos suite reports them."""

    scenario: str
    published: int
    stored: int
    dead_lettered: int
    lost: int
    duplicated: int
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        text = (f"{self.scenario} | published {self.published} | stored {self.stored} | "
                f"dead-lettered {self.dead_lettered} | lost {self.lost} | "
                f"duplicated {self.duplicated}")
        return f"{text} | {'; '.join(self.notes)}" if self.notes else text


class Ledger:
    """Where scenarios record their counts: printed at once and again in the closing note."""

    tallies: list[Tally] = []  # noqa: RUF012 (one ledger per test session, on purpose)

    def record(self, tally: Tally) -> Tally:
        print(f"[chaos] {tally.line()}")
        self.tallies.append(tally)
        return tally


def stored_frame_ids(settings: Settings) -> list[str]:
    """Every frame id in the results table, once per row."""
    db = open_database(settings.resolved_database_url)
    try:
        return db.frame_ids()
    finally:
        db.close()


def dead_lettered_frame_ids(settings: Settings) -> set[str]:
    """Frame ids named by an entry on the dead-letter topic."""
    return {d.frame_id for _, d in dead_letters(settings, Codec()) if d.frame_id}


def detections_repeats(settings: Settings) -> int:
    """Results on the ``detections`` topic beyond the first one for their frame."""
    codec = Codec()
    counts = Counter(codec.decode(msg.value(), InferenceResult).frame_id
                     for msg in read_topic(settings, settings.topic("detections"), timeout_s=30))
    return sum(n - 1 for n in counts.values())


def frames_on_topic(settings: Settings) -> dict[str, FrameCaptured]:
    """Frame id → frame, for every record on ``frames.raw`` (what the broker holds)."""
    codec = Codec()
    frames = (codec.decode(msg.value(), FrameCaptured)
              for msg in read_topic(settings, settings.topic("frames.raw"), timeout_s=30))
    return {frame.frame_id: frame for frame in frames}


def unaccounted(settings: Settings, published: Iterable[str]) -> set[str]:
    """Published frame ids with neither a stored row nor a dead letter (yet)."""
    missing = set(published) - set(stored_frame_ids(settings))
    if missing:  # reading the dead-letter topic is slow: only when rows do not cover all
        missing -= dead_lettered_frame_ids(settings)
    return missing


def wait_until_accounted(settings: Settings, published: Iterable[str], timeout_s: float,
                         what: str, guard: Callable[[], None] | None = None) -> None:
    """Wait until every published frame is stored or dead-lettered; name the missing if not.

    ``guard`` runs before each check and fails the wait at once (a service that exited).
    """
    ids = set(published)
    missing: set[str] = set(ids)

    def accounted() -> bool:
        if guard is not None:
            guard()
        missing.intersection_update(unaccounted(settings, missing))
        return not missing

    try:
        wait_until(accounted, timeout_s, what, interval_s=0.5, ignoring=(TransientError,))
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {len(missing)} of {len(ids)} published frames neither "
                             f"stored nor dead-lettered, e.g. {sorted(missing)[:5]}; groups' "
                             f"committed/end offsets: {group_positions(settings)}") from None


def count(scenario: str, settings: Settings, published: Iterable[str],
          notes: Iterable[str] = (), others: Iterable[str] = ()) -> Tally:
    """Count ``published`` against the results table and the dead-letter topic.

    ``others``: frames of the scenario counted apart (their rows are not strangers).
    """
    ids = set(published)
    rows = Counter(stored_frame_ids(settings))
    stored = ids & set(rows)
    dead = ids & dead_lettered_frame_ids(settings)
    tally = Tally(scenario, published=len(ids), stored=len(stored), dead_lettered=len(dead),
                  lost=len(ids - stored - dead),
                  duplicated=sum(1 for n in rows.values() if n > 1), notes=list(notes))
    strangers = set(rows) - ids - set(others)
    if strangers:
        tally.notes.append(f"{len(strangers)} rows for frames not counted as published")
    tally.notes.append(f"detections topic repeats {detections_repeats(settings)}")
    return tally


# -- what ingest handed to the broker and what the broker acknowledged ------------------------

FrameEvent = Callable[[str, str, str], None]  # (kind, frame_id, detail)


class JournaledProducer:
    """Wraps a confluent-kafka Producer: reports each frame produced and each one acknowledged.

    Acknowledgements come from the producer's own delivery reports (the same callback the
    publisher uses), so "acknowledged" means exactly what ingest was told by the broker.
    """

    def __init__(self, producer: Any, frames_topic: str, codec: Codec, event: FrameEvent) -> None:
        self._producer, self._topic, self._codec, self._event = producer, frames_topic, codec, event

    def produce(self, topic: str, *args: Any, **kwargs: Any) -> Any:
        if topic != self._topic:
            return self._producer.produce(topic, *args, **kwargs)
        value = kwargs.get("value", args[0] if args else None)
        frame = self._codec.decode(value, FrameCaptured)
        callback_key = "on_delivery" if "on_delivery" in kwargs else "callback"
        inner = kwargs.get(callback_key)
        event = self._event

        def delivered(err: Any, msg: Any) -> None:
            if err is None:
                event("acked", frame.frame_id, f"{msg.partition()}:{msg.offset()}")
            else:
                event("failed", frame.frame_id, err.str())
            if inner is not None:
                inner(err, msg)

        kwargs[callback_key] = delivered
        # before producing: a kill right after produce() must not hide a frame that was sent
        event("sent", frame.frame_id, f"{frame.camera_id}:{frame.seq}")
        return self._producer.produce(topic, *args, **kwargs)

    def __len__(self) -> int:
        return len(self._producer)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._producer, name)


def journal_frames(publisher: Publisher, event: FrameEvent) -> None:
    """Make ``publisher`` report every frame it produces and every acknowledgement it gets."""
    publisher.producer = JournaledProducer(  # type: ignore[assignment]
        publisher.producer, publisher.settings.topic("frames.raw"), publisher.codec, event)


@dataclass
class FrameJournal:
    """Frames an ingest read from its sources, handed to its producer, and saw acknowledged."""

    read: int = 0
    sent: set[str] = field(default_factory=set)
    acked: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, kind: str, frame_id: str, detail: str) -> None:
        with self._lock:
            if kind == "read":
                self.read += 1
            elif kind == "sent":
                self.sent.add(frame_id)
            elif kind == "acked":
                self.acked.add(frame_id)
            elif kind == "failed":
                self.failed[frame_id] = detail

    @property
    def unacknowledged(self) -> set[str]:
        return self.sent - self.acked

    @classmethod
    def load(cls, path: Path) -> FrameJournal:
        """A journal written line by line by ``FileJournal`` (complete lines only)."""
        journal = cls()
        text = path.read_text() if path.exists() else ""
        for line in text.splitlines():
            parts = line.split("\t")
            if len(parts) == 3:
                journal.record(*parts)
        return journal


class FileJournal:
    """Appends one line per event with a single write(): a kill -9 cannot lose a written line."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def __call__(self, kind: str, frame_id: str, detail: str) -> None:
        os.write(self.fd, f"{kind}\t{frame_id}\t{detail}\n".encode())


# -- publishing a workload through the real ingest code ---------------------------------------


def workload_frames(workload: Workload, camera_prefix: str = "cam",
                    first_camera: int = 0) -> list[tuple[str, bytes]]:
    """(camera, JPEG) pairs in capture order: one frame per camera per round."""
    return [(f"{camera_prefix}-{c}", jpeg(synthetic_frame(i, c)))
            for i in range(workload.frames_per_camera)
            for c in range(first_camera, first_camera + workload.cameras)]


class SteadyIngest:
    """Publishes a workload through an in-process ``Ingest`` from a background thread.

    One round (a frame from each camera) every ``1 / fps_per_camera`` seconds; the journal
    says which frames the broker acknowledged.
    """

    def __init__(self, settings: Settings, workload: Workload, camera_prefix: str = "cam") -> None:
        self.workload = workload
        self.journal = FrameJournal()
        publisher = Publisher(settings, "ingest")
        journal_frames(publisher, self.journal.record)
        self.ingest = Ingest(settings, stop=StopSignal(install=False), publisher=publisher)
        self.frames = workload_frames(workload, camera_prefix)
        self.started_at = self.finished_at = 0.0
        self.done = threading.Event()
        self.halt = threading.Event()  # set: publish no further round, then flush
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="steady-ingest", daemon=True)

    def start(self) -> SteadyIngest:
        self.thread.start()
        return self

    def _run(self) -> None:
        fps, cameras = self.workload.fps_per_camera, self.workload.cameras
        pace = threading.Event()  # never set: waiting on it paces the rounds
        self.started_at = due = time.monotonic()
        try:
            for i, (camera, data) in enumerate(self.frames):
                if i % cameras == 0 and self.halt.is_set():
                    break
                if fps and i % cameras == 0:
                    pace.wait(max(0.0, due - time.monotonic()))
                    due += 1.0 / fps
                self.journal.record("read", "", camera)
                self.ingest.offer(camera, CapturedImage(data, utcnow(), "chaos"))
            self.ingest.close()
        except BaseException as exc:  # reported by join(), in the test's thread
            self.error = exc
        finally:
            self.finished_at = time.monotonic()
            self.done.set()

    def join(self, timeout_s: float) -> FrameJournal:
        """Wait until every frame is published and flushed; the journal of what was acked."""
        if not self.done.wait(timeout_s):
            raise AssertionError(f"the ingest thread did not finish within {timeout_s} s")
        if self.error is not None:
            raise self.error
        return self.journal
