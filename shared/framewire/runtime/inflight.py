"""Batches in flight: handled batches whose outputs await acknowledgement, kept in order, and
the offsets of the acknowledged front of that queue, committed when due.

Offsets are committable only once every record produced from their batch and from every
batch before it (results and dead letters) is acknowledged, so a crash redelivers rather than
loses. No Kafka calls here: the loop serves acknowledgements, commits and rewinds.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from confluent_kafka import Message, TopicPartition

from framewire.runtime.producer import Delivery

OffsetRanges = dict[tuple[str, int], tuple[int, int]]


@dataclass
class InFlight:
    """A handled batch: its offsets and the acknowledgements its outputs still await."""

    offsets: OffsetRanges
    delivery: Delivery = field(default_factory=Delivery)
    since: float = field(default_factory=time.monotonic)


@dataclass
class Rejected:
    """Batches to read again: the first one whose acknowledgements failed or are overdue, and
    every later one."""

    batches: list[InFlight]
    overdue: bool
    ack_timeout_s: float

    @property
    def reason(self) -> str:
        """Why, from the first batch's acknowledgements as they stand now."""
        head = self.batches[0].delivery
        return "; ".join(head.failures[:3]) or (
            f"{head.pending} records unacknowledged after {self.ack_timeout_s:.0f} s; "
            "is the broker reachable?")


class InFlightBatches:
    """The queue of batches in flight and the offsets ready to commit."""

    def __init__(self, ack_timeout_s: float, commit_interval_s: float) -> None:
        self.ack_timeout_s, self.commit_interval_s = ack_timeout_s, commit_interval_s
        self._batches: deque[InFlight] = deque()
        self._committable: dict[tuple[str, int], int] = {}
        self._committed_at = 0.0

    def __len__(self) -> int:
        return len(self._batches)

    def append(self, batch: InFlight) -> None:
        self._batches.append(batch)

    def retire(self, now: float) -> Rejected | None:
        """Retire acknowledged batches in order: their offsets become committable.

        The first batch with a failed or overdue acknowledgement is returned with every later
        one, all taken off the queue; a batch still awaiting acknowledgements stops the walk.
        """
        while self._batches:
            head = self._batches[0]
            overdue = bool(head.delivery.pending) and now - head.since > self.ack_timeout_s
            if head.delivery.failures or overdue:
                failed = list(self._batches)
                self._batches.clear()
                return Rejected(failed, overdue, self.ack_timeout_s)
            if head.delivery.pending:
                return None
            self._batches.popleft()
            for tp, (_, last) in head.offsets.items():
                self._committable[tp] = last + 1
        return None

    @property
    def committable(self) -> bool:
        """Whether acknowledged offsets wait to be committed."""
        return bool(self._committable)

    def commit_due(self, now: float, idle: bool) -> bool:
        """Whether to commit now: at most every ``commit_interval_s``, at once when idle."""
        return bool(self._committable) and (idle or now - self._committed_at
                                             >= self.commit_interval_s)

    def take_committable(self) -> list[TopicPartition]:
        """The offsets to commit (each partition's next record), handed over once."""
        offsets = [TopicPartition(t, p, o) for (t, p), o in self._committable.items()]
        self._committable = {}
        self._committed_at = time.monotonic()
        return offsets

    def drop_unacknowledged(self) -> None:
        """Forget the batches in flight: their records are read again (after the commits)."""
        self._batches.clear()

    def clear(self) -> None:
        """Forget everything, offsets not committed too (positions come from the commits)."""
        self._batches.clear()
        self._committable.clear()


def position(msg: Message) -> tuple[str, int, int]:
    """(topic, partition, offset) of a consumed message."""
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    if topic is None or partition is None or offset is None:
        raise ValueError("a consumed message without topic, partition or offset")
    return topic, partition, offset


def offset_ranges(messages: list[Message]) -> OffsetRanges:
    """First and last offset of the batch in each (topic, partition)."""
    ranges: OffsetRanges = {}
    for msg in messages:
        topic, partition, offset = position(msg)
        first, last = ranges.get((topic, partition), (offset, offset))
        ranges[(topic, partition)] = (min(first, offset), max(last, offset))
    return ranges
