"""Disaster recovery from the log: re-run a retained time range of frames through the
pipeline (``framewire replay``), and rebuild the results tables from the retained
``detections`` topic (``framewire rebuild-db``).

Both read a bounded range of offsets with ``assign()`` under a throw-away group id that never
commits, so the services' consumer groups are never touched. Both need a broker that keeps
its log: Apache Kafka with retention. The embedded broker (Tansu) keeps records in memory
only and cannot look offsets up by time, so both refuse to run on it (``embedded_refusal``).

Replayed frames keep their bytes, so their frame ids: storage replaces a stored result only
when the new one comes from another model and was inferred later
(``framewire.store.db.supersedes``), so a replay after a model change updates each frame's
row in place, and a replay with the same model changes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from confluent_kafka import Message

from framewire.config import Settings
from framewire.contracts import InferenceResult, check_camera_id
from framewire.contracts.codec import Codec, make_codec
from framewire.errors import ConfigError, DataError, FramewireError
from framewire.ops.logranges import (
    Progress,
    Ticker,
    range_reader,
    read_ranges,
    time_ranges,
    to_ms,
    whole_ranges,
)
from framewire.topology import topology

if TYPE_CHECKING:
    from framewire.store.db import Database

# Topics whose records re-run the pipeline from there on: raw frames (preprocess, inference,
# storage) and ready frames (inference, storage). Results and the rest make no sense again.
REPLAY_TOPICS = ("frames.raw", "frames.ready")
# Kafka header on every replayed record: the replay's id; the stages carry it forward.
REPLAY_HEADER = "framewire-replay"
# W3C trace context headers: a replayed record starts a fresh trace
_TRACE_HEADERS = ("traceparent", "tracestate")
# Results written to the database per transaction by rebuild-db.
REBUILD_BATCH = 500


class RecoveryRefused(FramewireError):
    """The command cannot do what was asked here (wrong broker, a database already filled)."""


# -- what the embedded broker cannot do -------------------------------------------------------

def embedded_refusal(settings: Settings, command: str) -> str | None:
    """Why ``command`` (``replay`` or ``rebuild-db``) cannot run on this site's broker; None
    when it can (an Apache Kafka cluster, managed or existing)."""
    if not settings.on_tansu:
        return None
    fix = ("Run the site on Apache Kafka, which keeps the log on disk for each topic's "
           "retention: `framewire run --broker kafka` (FRAMEWIRE_BROKER=kafka), or point "
           "FRAMEWIRE_BOOTSTRAP_SERVERS at an Apache Kafka cluster with retention and set "
           "FRAMEWIRE_EMBEDDED_BROKER=false; see docs/recovery.md.")
    if command == "replay":
        return ("framewire replay cannot re-run a time range on the embedded broker: it keeps "
                "records in memory only (nothing older than its last start is retained) and "
                "cannot look offsets up by time reliably. " + fix)
    return ("framewire rebuild-db cannot rebuild the results tables on the embedded broker: "
            "it keeps records in memory only, so the detections topic holds at most what "
            "arrived since it last started, not the retained history a rebuild needs. " + fix)


def replay_topic(name: str) -> str:
    """The logical topic ``name`` if records of it can be replayed; ConfigError otherwise."""
    if name not in REPLAY_TOPICS:
        raise ConfigError(
            f"--topic {name!r} cannot be replayed: only {' and '.join(REPLAY_TOPICS)} re-run "
            "the pipeline (frames.raw from preprocess on, frames.ready from inference on); to "
            "refill the results tables from detections use `framewire rebuild-db`")
    return name


# -- replay -----------------------------------------------------------------------------------

@dataclass
class ReplayCounts:
    """What ``framewire replay`` did; ``as_json`` is its ``--json`` output."""

    topic: str
    since: datetime
    until: datetime
    camera: str | None
    replay_id: str
    records_read: int = 0
    republished: int = 0
    skipped_by_camera: int = 0
    skipped_outside_range: int = 0
    partitions: dict[int, tuple[int, int]] = field(default_factory=dict)
    cut_by_retention: list[int] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["since"], data["until"] = self.since.isoformat(), self.until.isoformat()
        data["partitions"] = {str(p): {"start": s, "end": e}
                              for p, (s, e) in self.partitions.items()}
        return data


def replay_headers(headers: Any, replay_id: str) -> list[tuple[str, str | bytes | None]]:
    """A record's headers for its replay: the same, less its trace context and any earlier
    replay mark, plus this replay's mark."""
    pairs = headers.items() if isinstance(headers, dict) else headers or []
    kept: list[tuple[str, str | bytes | None]] = [
        (k, v) for k, v in pairs if k not in _TRACE_HEADERS and k != REPLAY_HEADER]
    return [*kept, (REPLAY_HEADER, replay_id.encode())]


def replay(settings: Settings, topic: str, since: datetime, until: datetime,
           camera: str | None = None, progress: Progress | None = None,
           on_record: Callable[[Message], None] | None = None) -> ReplayCounts:
    """Re-produce the records of logical ``topic`` stamped in [since, until) (of one camera
    when ``camera`` is given) to the same topic and partition: same key, value bytes and
    headers, a fresh trace, and the ``framewire-replay`` header.

    ``progress`` gets the counts now and then; ``on_record`` each record as it is produced
    again (a reprocess job notes its frame id)."""
    from opentelemetry.trace import SpanKind

    from framewire.runtime import Publisher
    from framewire.telemetry.tracing import inject

    replay_topic(topic)
    refusal = embedded_refusal(settings, "replay")
    if refusal:
        raise RecoveryRefused(refusal)
    if since >= until:
        raise ConfigError(f"--since {since.isoformat()} is not before --until "
                          f"{until.isoformat()}: nothing to replay")
    full = settings.topic(topic)
    replay_id = f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:6]}"
    counts = ReplayCounts(topic, since, until, camera, replay_id)
    key = camera.encode() if camera is not None else None
    since_ms, until_ms = to_ms(since), to_ms(until)
    consumer = range_reader(settings, "replay")
    publisher = Publisher(settings, "replay")
    tick = Ticker(progress)
    try:
        # the ends are fixed before anything is produced: replayed records land after them
        ranges = time_ranges(consumer, full, since, until)
        counts.partitions = {r.partition: (r.start, r.end) for r in ranges}
        counts.cut_by_retention = [r.partition for r in ranges if r.cut_by_retention]
        for msg in read_ranges(consumer, full, ranges):
            counts.records_read += 1
            _, stamp = msg.timestamp()
            if not since_ms <= stamp < until_ms:
                counts.skipped_outside_range += 1
            elif key is not None and msg.key() != key:
                counts.skipped_by_camera += 1
            else:
                span = publisher.telemetry.start(
                    "replay publish", kind=SpanKind.PRODUCER, attributes={
                        "messaging.system": "kafka", "messaging.destination.name": full,
                        "framewire.ops.replay": replay_id,
                        "framewire.camera_id": (msg.key() or b"").decode(errors="replace")})
                headers = inject(span, replay_headers(msg.headers(), replay_id))
                span.end()
                publisher.produce_raw(full, msg.value() or b"", msg.key(), headers,
                                      partition=msg.partition())
                publisher.producer.poll(0)
                counts.republished += 1
                if on_record is not None:
                    on_record(msg)
            tick(counts)
        publisher.flush(settings.shutdown_timeout_s)
    finally:
        consumer.close()
        publisher.close()
    return counts


# -- rebuild-db -------------------------------------------------------------------------------

@dataclass
class RebuildCounts:
    """What ``framewire rebuild-db`` did; ``as_json`` is its ``--json`` output."""

    database: str
    records_read: int = 0
    rows_written: int = 0
    rows_replaced: int = 0
    duplicates_skipped: int = 0
    undecodable: int = 0
    partitions: dict[int, tuple[int, int]] = field(default_factory=dict)
    cut_by_retention: list[int] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["partitions"] = {str(p): {"start": s, "end": e}
                              for p, (s, e) in self.partitions.items()}
        return data


def decode_result(codec: Codec, msg: Message) -> InferenceResult:
    """A detections record as the storage service reads it; DataError when it would not."""
    result = codec.decode(msg.value(), InferenceResult)
    check_camera_id(result.camera_id, msg.key())
    return result


def rebuild(settings: Settings, database: Database, force: bool = False,
            progress: Progress | None = None) -> RebuildCounts:
    """Read the retained ``detections`` topic from its beginning to its end offsets (as of
    the start) and store every result in ``database`` (a ``framewire.store.db.Database``).

    Refuses (RecoveryRefused) on the embedded broker, and when the database already holds
    results unless ``force``: the rows already there are then kept, and only frames missing
    from it (or superseded by another model's later result) are written.
    """
    refusal = embedded_refusal(settings, "rebuild-db")
    if refusal:
        raise RecoveryRefused(refusal)
    where = database.engine.url.render_as_string(hide_password=True)
    held = database.count_results()
    if held and not force:
        raise RecoveryRefused(
            f"the database {where} already holds {held} results: rebuild-db fills an empty "
            "one. Point FRAMEWIRE_DATABASE_URL at a new database, or pass --force to add what "
            "is missing to this one (rows already there are kept)")
    counts = RebuildCounts(where)
    codec = make_codec(settings.schema_registry_url, settings.schema_registry_auth)
    topic = settings.topic("detections")
    consumer = range_reader(settings, "rebuild-db")
    tick = Ticker(progress)
    batch: list[InferenceResult] = []

    def store() -> None:
        stored = database.store_results(batch)
        counts.rows_written += stored.inserted + stored.replaced
        counts.rows_replaced += stored.replaced
        counts.duplicates_skipped += stored.unchanged
        batch.clear()

    try:
        ranges = whole_ranges(consumer, topic)
        counts.partitions = {r.partition: (r.start, r.end) for r in ranges}
        counts.cut_by_retention = [r.partition for r in ranges if r.cut_by_retention]
        for msg in read_ranges(consumer, topic, ranges):
            counts.records_read += 1
            try:
                batch.append(decode_result(codec, msg))
            except DataError as exc:
                counts.undecodable += 1
                counts.errors[exc.code] = counts.errors.get(exc.code, 0) + 1
            if len(batch) >= REBUILD_BATCH:
                store()
            tick(counts)
        if batch:
            store()
    finally:
        consumer.close()
    return counts


def retention_of(settings: Settings, topic: str) -> str:
    """How long ``topic`` keeps records on this site, as written in the settings."""
    return str(settings.retention.get(topic, topology(settings).topic(topic).retention))
