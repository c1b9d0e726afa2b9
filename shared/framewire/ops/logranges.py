"""Reading a retained range of a topic: times given as ISO-8601 or a duration ago, the offsets
they map to in each partition, and a reader that reads those offsets with ``assign()`` under a
throw-away group that never commits (the services' groups are never touched).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from framewire.broker.client import client_config
from framewire.config import Settings, duration_ms
from framewire.errors import ConfigError, TransientError

# A reader that gets nothing for this long before reaching its end offsets gives up.
STALL_S = 30.0
# How often the progress callback is called while working.
PROGRESS_EVERY_S = 1.0

Progress = Callable[[Any], None]


# -- times ------------------------------------------------------------------------------------

def parse_time(text: str, now: datetime | None = None, option: str = "--since") -> datetime:
    """An ISO-8601 time (UTC when it names no zone), ``now``, or a duration ago:
    ``30m``, ``2h``, ``1d``, ``90s`` (``framewire.config.duration_ms`` units); in UTC."""
    now = now or datetime.now(UTC)
    value = text.strip()
    if value.lower() == "now":
        return now
    if value[-1:].isalpha():  # a duration always ends with its unit
        try:
            ago = duration_ms(value)
        except ValueError:
            ago = -1
        if ago >= 0:
            return now - timedelta(milliseconds=ago)
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{option} {text!r}: write an ISO-8601 time like "
                          "2026-11-25T10:00:00 (UTC) or 2026-11-25T11:00:00+01:00, or a "
                          "duration ago like 30m, 2h, 1d") from None
    return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)


def to_ms(when: datetime) -> int:
    """Kafka timestamp (milliseconds since the epoch) of an aware datetime."""
    return int(when.timestamp() * 1000)


# -- offset ranges ----------------------------------------------------------------------------

@dataclass(frozen=True)
class PartitionRange:
    """The offsets [start, end) to read of one partition, and its retained [low, high)."""

    partition: int
    start: int
    end: int
    low: int
    high: int

    @property
    def count(self) -> int:
        return max(0, self.end - self.start)

    @property
    def cut_by_retention(self) -> bool:
        """The range begins at the oldest retained record and older ones were deleted: part
        of what was asked for may be gone."""
        return self.low > 0 and self.start == self.low


def plan_range(partition: int, low: int, high: int, start_at: int | None,
               end_at: int | None) -> PartitionRange:
    """Offsets to read given the retained ``low``/``high`` watermarks and what
    ``offsets_for_times`` answered (None or negative: no record that late, read to ``high``)."""
    start = high if start_at is None or start_at < 0 else start_at
    end = high if end_at is None or end_at < 0 else end_at
    start = min(max(start, low), high)
    end = min(max(end, start), high)
    return PartitionRange(partition, start, end, low, high)


def _partitions(consumer: Consumer, topic: str, timeout_s: float) -> list[int]:
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
    except KafkaException as exc:
        raise TransientError(f"cannot reach the broker to read {topic}: {exc}") from exc
    if meta is None or meta.error is not None:
        raise ConfigError(f"topic {topic} does not exist on this broker: check "
                          "FRAMEWIRE_BOOTSTRAP_SERVERS and FRAMEWIRE_TOPIC_PREFIX "
                          "(`framewire topics` creates Framewire's topics)")
    return sorted(meta.partitions)


def time_ranges(consumer: Consumer, topic: str, since: datetime, until: datetime,
                timeout_s: float = 30.0) -> list[PartitionRange]:
    """Per partition of ``topic``, the offsets of the records stamped in [since, until)."""
    partitions = _partitions(consumer, topic, timeout_s)
    try:
        starts = consumer.offsets_for_times(
            [TopicPartition(topic, p, to_ms(since)) for p in partitions], timeout=timeout_s)
        ends = consumer.offsets_for_times(
            [TopicPartition(topic, p, to_ms(until)) for p in partitions], timeout=timeout_s)
        marks = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout_s)
                 for p in partitions}
    except KafkaException as exc:
        raise TransientError(f"cannot look up offsets by time in {topic}: {exc}") from exc
    start_at = {tp.partition: tp.offset for tp in starts}
    end_at = {tp.partition: tp.offset for tp in ends}
    return [plan_range(p, *marks[p], start_at.get(p), end_at.get(p)) for p in partitions]


def whole_ranges(consumer: Consumer, topic: str, timeout_s: float = 30.0) -> list[PartitionRange]:
    """Per partition of ``topic``, every retained record now: [low, high)."""
    ranges = []
    for p in _partitions(consumer, topic, timeout_s):
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout_s)
        except KafkaException as exc:
            raise TransientError(f"cannot read the offsets of {topic}: {exc}") from exc
        ranges.append(PartitionRange(p, low, high, low, high))
    return ranges


def range_reader(settings: Settings, purpose: str) -> Consumer:
    """A consumer for ``assign()`` only: a group id of its own that never commits."""
    return Consumer(client_config(settings, {"log_level": 0, "fetch.wait.max.ms": 100,
                                             "max.partition.fetch.bytes": 16 * 1024 * 1024}, **{
        "group.id": f"{settings.topic_prefix}framewire-{purpose}-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False, "enable.auto.offset.store": False,
        "enable.partition.eof": True, "auto.offset.reset": "earliest",
    }))


def read_ranges(consumer: Consumer, topic: str, ranges: list[PartitionRange],
                stall_s: float = STALL_S) -> Iterator[Message]:
    """Every record of ``ranges``, partition by partition in offset order; TransientError
    when nothing arrives for ``stall_s`` before the ends are reached."""
    pending = {r.partition: r for r in ranges if r.count > 0}
    if not pending:
        return
    consumer.assign([TopicPartition(topic, r.partition, r.start) for r in pending.values()])
    last = time.monotonic()
    while pending:
        got = consumer.consume(500, 0.5)
        for msg in got:
            partition, err = msg.partition(), msg.error()
            wanted = pending.get(partition) if partition is not None else None
            if wanted is None or partition is None:
                continue
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    # at the log's end: nothing more to read here (control records of
                    # transactions may hold the last offsets of a range)
                    del pending[partition]
                continue
            offset = msg.offset() or 0
            if offset < wanted.end:
                last = time.monotonic()
                yield msg
            if offset >= wanted.end - 1:
                del pending[partition]
        if got:
            continue
        # idle: positions may have passed the ends over records a reader never sees
        for tp in consumer.position([TopicPartition(topic, p) for p in pending]):
            if tp.offset >= 0 and tp.offset >= pending[tp.partition].end:
                del pending[tp.partition]
        if pending and time.monotonic() - last > stall_s:
            left = ", ".join(f"partition {p} up to offset {r.end}" for p, r in pending.items())
            raise TransientError(f"reading {topic} stalled for {stall_s:.0f} s before its end "
                                 f"({left}); is the broker reachable? run the command again")


class Ticker:
    """Calls the progress callback at most every PROGRESS_EVERY_S."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress, self.at = progress, time.monotonic()

    def __call__(self, counts: Any) -> None:
        if self.progress is not None and time.monotonic() - self.at >= PROGRESS_EVERY_S:
            self.at = time.monotonic()
            self.progress(counts)
