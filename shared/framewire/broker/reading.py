"""Reading topics without joining a group: whole topics, their tails, and a group's lag."""

from __future__ import annotations

import time
import uuid
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from framewire.broker.client import client_config
from framewire.config import Settings
from framewire.errors import TransientError
from framewire.topology import topology


def _reader(settings: Settings, group: str | None = None, fetch_wait_ms: int = 50) -> Consumer:
    # a short fetch wait, so that reading to the end of a busy topic (status) ends quickly
    return Consumer(client_config(settings, {"auto.offset.reset": "earliest", "log_level": 0,
                                             "fetch.wait.max.ms": fetch_wait_ms}, **{
        "group.id": group or f"framewire-reader-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False, "enable.partition.eof": True,
    }))


def read_topic(settings: Settings, topic: str, tail: int | None = None,
               idle_s: float = 0.5, timeout_s: float = 10.0) -> list[Any]:
    """Every message of a topic (or the last ``tail`` per partition), without joining a group."""
    consumer = _reader(settings)
    try:
        try:
            meta = consumer.list_topics(topic, timeout=timeout_s).topics[topic]
        except KafkaException as exc:
            raise TransientError(f"cannot reach the broker to read {topic}: {exc}") from exc
        if meta.error is not None or not meta.partitions:
            return []
        assignment = []
        for pid in meta.partitions:
            start = 0
            if tail is not None:
                try:
                    _, high = consumer.get_watermark_offsets(TopicPartition(topic, pid),
                                                             timeout_s)
                except KafkaException as exc:  # a leader being elected: ask again later
                    raise TransientError(f"cannot read the end of {topic}: {exc}") from exc
                start = max(0, high - tail)
            assignment.append(TopicPartition(topic, pid, start))
        consumer.assign(assignment)
        pending, out = {tp.partition for tp in assignment}, []
        deadline, last = time.monotonic() + timeout_s, time.monotonic()
        while pending and time.monotonic() < deadline and time.monotonic() - last < idle_s * 4:
            for msg in consumer.consume(500, idle_s):
                last = time.monotonic()
                err = msg.error()
                if err is None:
                    out.append(msg)
                elif err.code() == KafkaError._PARTITION_EOF:
                    pending.discard(msg.partition())
        return out
    finally:
        consumer.close()


def topic_size(settings: Settings, topic: str, timeout_s: float = 10.0) -> int:
    """How many records the topic holds now (end minus start offset of each partition), read
    from its offsets, not its records; 0 while it does not exist."""
    consumer = _reader(settings)
    try:
        try:
            meta = consumer.list_topics(topic, timeout=timeout_s).topics[topic]
            if meta.error is not None:
                return 0
            return sum(high - low for low, high in (
                consumer.get_watermark_offsets(TopicPartition(topic, pid), timeout_s)
                for pid in meta.partitions))
        except KafkaException as exc:
            raise TransientError(f"cannot read the offsets of {topic}: {exc}") from exc
    finally:
        consumer.close()


# a record of a settings topic as it was written: key and value, None for a tombstone
KeyedValue = tuple[bytes | None, bytes | None]


class TopicFollower:
    """Follows a small topic (a settings topic) from its start without joining a group.

    ``read_to_end`` returns every record up to the end the partitions have now; ``poll``
    then returns what is written after. No offset is ever committed: each follower reads
    the whole topic again when it starts. Its group id (never joined) starts with
    ``group``-follow-, which the stage's ACLs allow on a secured cluster. ``fetch_wait_ms``:
    how long the broker may hold a fetch at the end of the topic (the embedded broker holds
    it that long each time, so a long-lived follower of a quiet topic asks for more).
    """

    def __init__(self, settings: Settings, topic: str, group: str,
                 timeout_s: float = 5.0, fetch_wait_ms: int = 50) -> None:
        self.topic, self.timeout_s = topic, timeout_s
        self.consumer = _reader(settings, f"{group}-follow-{uuid.uuid4().hex[:8]}",
                                fetch_wait_ms)
        self._ends: set[int] | None = None  # partitions not yet read to their end
        self._unreturned: list[KeyedValue] = []  # read by a read_to_end that gave up

    def _assign(self) -> bool:
        """Assign every partition from its start; False while the topic does not exist."""
        try:
            meta = self.consumer.list_topics(self.topic, timeout=self.timeout_s).topics.get(
                self.topic)
        except KafkaException as exc:
            raise TransientError(f"cannot reach the broker to read {self.topic}: {exc}") from exc
        if meta is None or meta.error is not None or not meta.partitions:
            return False
        self.consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING)
                              for p in meta.partitions])
        self._ends = set(meta.partitions)
        return True

    def read_to_end(self, timeout_s: float) -> list[KeyedValue]:
        """Every record up to the end of each partition as it is now, in order.

        TransientError when the topic is missing or its end is not reached within
        ``timeout_s`` (the broker is away); what was read then comes with the next ``poll``.
        """
        deadline = time.monotonic() + timeout_s
        while self._ends is None and not self._assign():
            if time.monotonic() >= deadline:
                raise TransientError(f"topic {self.topic} does not exist (yet): create the "
                                     "site's topics with `framewire topics`")
            time.sleep(0.1)
        while self._ends:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TransientError(f"{self.topic} not read to its end within "
                                     f"{timeout_s:.0f} s: is the broker reachable?")
            self._unreturned.extend(self._consume(min(left, 0.5)))
        out, self._unreturned = self._unreturned, []
        return out

    def poll(self, timeout_s: float) -> list[KeyedValue]:
        """Records not yet returned, waiting up to ``timeout_s`` for the first."""
        out, self._unreturned = self._unreturned, []
        try:
            if self._ends is None and not self._assign():
                time.sleep(min(timeout_s, 0.5))
                return out
        except TransientError:
            self._unreturned = out  # for the next poll
            raise
        return out + self._consume(0 if out else timeout_s)

    def _consume(self, timeout_s: float) -> list[KeyedValue]:
        """What has come: waiting up to ``timeout_s`` for the first message or event only."""
        first = self.consumer.poll(timeout_s)
        if first is None:
            return []
        out: list[KeyedValue] = []
        for msg in [first, *self.consumer.consume(500, 0)]:
            err = msg.error()
            if err is None:
                out.append((msg.key(), msg.value()))
            elif err.code() == KafkaError._PARTITION_EOF:
                if self._ends is not None:
                    self._ends.discard(msg.partition())
            elif err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                self._ends = None  # the topic went (a broker that lost its data): again
        return out

    def close(self) -> None:
        self.consumer.close()


class LagProbe:
    """Reads one service group's lag, per partition, with clients kept open between reads.

    Two requests per read (committed offsets, end offsets of every partition at once); the
    topic's partitions are looked up again every ``PARTITIONS_TTL_S``. End offsets are the
    larger of the broker's and what producers report as acknowledged: some brokers (the
    embedded Tansu) under-report the end of a partition by up to one producer batch.
    """

    PARTITIONS_TTL_S = 30.0

    def __init__(self, settings: Settings, service: str, timeout_s: float = 5.0) -> None:
        site = topology(settings)
        spec = site.stage(service)
        if spec.input is None:
            raise ValueError(f"{service} is a source: it consumes no topic, so it has no lag")
        self.topic = settings.topic(spec.input)
        self.timeout_s = timeout_s
        self.consumer = _reader(settings, settings.group(service))
        self.admin = AdminClient(client_config(settings, {"log_level": 0}))
        self.committed_any = False  # has the group ever committed on this topic
        # exactly_once: a stage writes its output in transactions, and each commit leaves a
        # marker at the end of the partition that no consumer ever reads or commits past
        self.end_marker = 1 if site.transactional_input(
            spec, settings.delivery == "exactly_once") else 0
        self._partitions: list[TopicPartition] = []
        self._listed_at = 0.0

    def _topic_partitions(self) -> list[TopicPartition]:
        if not self._partitions or time.monotonic() - self._listed_at > self.PARTITIONS_TTL_S:
            meta = self.consumer.list_topics(self.topic, timeout=self.timeout_s).topics.get(
                self.topic)
            found = sorted(meta.partitions) if meta is not None and meta.error is None else []
            self._partitions = [TopicPartition(self.topic, p) for p in found]
            self._listed_at = time.monotonic()
        return self._partitions

    def partition_lags(self, produced: dict[str, int]) -> dict[int, int] | None:
        """Uncommitted records per partition, or None when the broker does not answer."""
        try:
            parts = self._topic_partitions()
            if not parts:
                return None
            ends = {tp.partition: future for tp, future in self.admin.list_offsets(
                {tp: OffsetSpec.latest() for tp in parts}, request_timeout=self.timeout_s).items()}
            committed = self.consumer.committed(parts, timeout=self.timeout_s)
            lags = {}
            for tp in committed:
                self.committed_any = self.committed_any or tp.offset >= 0
                high = ends[tp.partition].result().offset - self.end_marker
                end = max(high, produced.get(f"{self.topic}:{tp.partition}", 0))
                lags[tp.partition] = max(0, end - max(tp.offset, 0))
            return lags
        except KafkaException:
            self._partitions = []  # look again: the topic may have been recreated
            return None

    def close(self) -> None:
        self.consumer.close()


def group_lag(settings: Settings, service: str, produced: dict[str, int]) -> int | None:
    """Records the service's group has not yet committed, over every partition of its topic."""
    probe = LagProbe(settings, service)
    try:
        lags = probe.partition_lags(produced)
        return None if lags is None else sum(lags.values())
    finally:
        probe.close()
