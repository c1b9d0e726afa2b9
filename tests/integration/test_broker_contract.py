"""The Kafka behaviours Framewire relies on, checked on every Kafka-protocol backend installed.

Only confluent-kafka talks to the brokers here, so a failure is the backend's, not
Framewire's. Each test uses fresh, uniquely named topics and a handful of small records.
Where a backend breaks a behaviour, mark that (backend, test) pair
``pytest.mark.xfail(strict=True, reason=<the measured failure>)``, so the suite documents it
and turns red once the backend is fixed. Today Tansu 0.6.0 and noida-db 0.2.3 pass them all;
they differ where Framewire does not depend on them: Tansu's high watermark (see that test)
and its message size limit (none: noida-db, like Kafka, refuses a batch over 1048588 bytes
unless the topic raises ``max.message.bytes``).
"""

from __future__ import annotations

import os
import uuid
from collections import defaultdict
from typing import Any

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from tests.fixtures import brokers
from tests.fixtures.brokers import KafkaBackend
from tests.fixtures.kafka import wait_until

pytestmark = pytest.mark.integration

# registered here rather than in tests/conftest.py so this module runs on its own
kafka_backend = brokers.kafka_backend
noida_broker = brokers.noida_broker

TIMEOUT_S = 30.0
# Tansu's group join takes about half of session.timeout.ms; these keep rebalances quick
GROUP_TIMING = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}
# room for one ~1 MiB record, as Framewire's producer and consumer configure it
LARGE = {"message.max.bytes": 16 * 1024 * 1024}
LARGE_FETCH = {"max.partition.fetch.bytes": 16 * 1024 * 1024,
               "fetch.max.bytes": 64 * 1024 * 1024,
               "receive.message.max.bytes": 64 * 1024 * 1024 + 512}


def new_topic(backend: KafkaBackend, partitions: int,
              config: dict[str, str] | None = None) -> str:
    """Create a uniquely named topic and wait until metadata shows all its partitions."""
    topic = f"contract-{uuid.uuid4().hex[:12]}"
    admin = AdminClient({"bootstrap.servers": backend.bootstrap})
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions,
                                            replication_factor=1, config=config or {})],
                                  operation_timeout=TIMEOUT_S, request_timeout=TIMEOUT_S)
    futures[topic].result(TIMEOUT_S)
    wait_until(lambda: len(partitions_of(admin, topic)) == partitions, TIMEOUT_S,
               f"{partitions} partitions of {topic} in metadata")
    return topic


def partitions_of(admin: AdminClient, topic: str) -> list[int]:
    """Partition ids that metadata reports for ``topic`` (empty when it is not there yet)."""
    meta = admin.list_topics(topic, timeout=TIMEOUT_S).topics.get(topic)
    if meta is None or meta.error is not None:
        return []
    return sorted(meta.partitions)


def producer(backend: KafkaBackend, **conf: Any) -> Producer:
    return Producer({"bootstrap.servers": backend.bootstrap, **conf})


def consumer(backend: KafkaBackend, group: str | None = None, **conf: Any) -> Consumer:
    """A consumer reading from the beginning; in ``group`` when given, with manual commits."""
    base: dict[str, Any] = {"bootstrap.servers": backend.bootstrap,
                            "group.id": group or f"reader-{uuid.uuid4().hex[:8]}",
                            "auto.offset.reset": "earliest", "enable.auto.commit": False,
                            **GROUP_TIMING}
    return Consumer({**base, **conf})


class Delivered:
    """Delivery reports: (key, partition, offset) per produced record, in report order."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes | None, int | None, int | None]] = []
        self.errors: list[KafkaError] = []

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.errors.append(err)
        else:
            self.records.append((msg.key(), msg.partition(), msg.offset()))

    def offsets_by_partition(self) -> dict[int | None, list[int | None]]:
        out: dict[int | None, list[int | None]] = defaultdict(list)
        for _, partition, offset in self.records:
            out[partition].append(offset)
        return dict(out)


def number(msg: Message) -> int:
    """The sequence number a test wrote as the record's value."""
    value = msg.value()
    assert value is not None
    return int(value)


def flush_all(p: Producer, delivered: Delivered, count: int) -> None:
    """Flush and require a successful delivery report for every one of ``count`` records."""
    remaining = p.flush(TIMEOUT_S)
    assert remaining == 0, f"{remaining} records still in flight after {TIMEOUT_S} s"
    assert delivered.errors == []
    assert len(delivered.records) == count


def read_from_start(backend: KafkaBackend, topic: str, partitions: int, count: int,
                    **conf: Any) -> list[Message]:
    """Read ``count`` records from the beginning of every partition (no group involved)."""
    c = consumer(backend, **conf)
    try:
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        return poll_records(c, count=count)
    finally:
        c.close()


def poll_records(*consumers: Consumer, count: int | None = None,
                 until: Any = None) -> list[Message]:
    """Poll the consumers in turn until ``count`` records arrived or ``until()`` holds."""
    got: list[Message] = []

    def done() -> bool:
        for c in consumers:
            msg = c.poll(0.1)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            got.append(msg)
        return len(got) >= count if count is not None else bool(until())

    wait_until(done, TIMEOUT_S, f"{count} records" if count is not None else "condition",
               interval_s=0)
    return got


# -- topics ---------------------------------------------------------------------------------


def test_created_topic_reports_its_partition_count_in_metadata(
        kafka_backend: KafkaBackend) -> None:
    admin = AdminClient({"bootstrap.servers": kafka_backend.bootstrap})
    for count in (1, 3, 6):
        topic = new_topic(kafka_backend, count)
        # another client may ask another node, whose metadata can lag the creation a moment
        seen = wait_until(lambda t=topic, n=count: (found := partitions_of(admin, t)) and
                          len(found) >= n and found, TIMEOUT_S,
                          f"{topic} in another client's metadata")
        assert seen == list(range(count))


# -- records ------------------------------------------------------------------------------


def test_same_key_records_land_on_one_partition_and_are_consumed_in_produce_order(
        kafka_backend: KafkaBackend) -> None:
    topic = new_topic(kafka_backend, 4)
    keys = [f"camera-{i}".encode() for i in range(6)]
    delivered = Delivered()
    p = producer(kafka_backend, **{"linger.ms": 5})
    for seq in range(10):
        for key in keys:
            p.produce(topic, key=key, value=str(seq).encode(), on_delivery=delivered)
    flush_all(p, delivered, len(keys) * 10)

    partition_of_key: dict[bytes | None, set[int | None]] = defaultdict(set)
    for reported_key, partition, _ in delivered.records:
        partition_of_key[reported_key].add(partition)
    assert all(len(parts) == 1 for parts in partition_of_key.values()), partition_of_key

    values_of_key: dict[bytes | None, list[int]] = defaultdict(list)
    for msg in read_from_start(kafka_backend, topic, 4, len(keys) * 10):
        assert {msg.partition()} == partition_of_key[msg.key()]
        values_of_key[msg.key()].append(number(msg))
    assert values_of_key == {key: list(range(10)) for key in keys}


def test_headers_round_trip_byte_for_byte(kafka_backend: KafkaBackend) -> None:
    topic = new_topic(kafka_backend, 1)
    headers: list[tuple[str, str | bytes | None]] = [
        ("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        ("tracestate", b"framewire=stage:ingest,vendor=t61rcWkgMzE"),
        ("content-type", b"avro/binary"),
        ("binary", bytes(range(256))),
        ("empty", b""),
    ]
    delivered = Delivered()
    p = producer(kafka_backend)
    p.produce(topic, key=b"k", value=b"v", headers=headers, on_delivery=delivered)
    flush_all(p, delivered, 1)

    (msg,) = read_from_start(kafka_backend, topic, 1, 1)
    assert msg.headers() == headers


def test_lz4_compressed_records_round_trip(kafka_backend: KafkaBackend) -> None:
    topic = new_topic(kafka_backend, 1)
    values = [(f"frame {i} " * 50).encode() for i in range(50)]
    delivered = Delivered()
    p = producer(kafka_backend, **{"compression.type": "lz4", "linger.ms": 20})
    for value in values:
        p.produce(topic, value=value, on_delivery=delivered)
    flush_all(p, delivered, len(values))

    assert [m.value() for m in read_from_start(kafka_backend, topic, 1, len(values))] == values


def test_record_just_under_default_one_mebibyte_limit_round_trips(
        kafka_backend: KafkaBackend) -> None:
    # Kafka's default max.message.bytes (1048588) bounds the whole batch, headers included
    topic = new_topic(kafka_backend, 1)
    assert_large_record_round_trips(kafka_backend, topic, 1024 * 1024 - 1024)


def test_one_mebibyte_record_round_trips_on_topic_with_raised_message_limit(
        kafka_backend: KafkaBackend) -> None:
    topic = new_topic(kafka_backend, 1, config={"max.message.bytes": str(16 * 1024 * 1024)})
    assert_large_record_round_trips(kafka_backend, topic, 1024 * 1024)


def assert_large_record_round_trips(backend: KafkaBackend, topic: str, size: int) -> None:
    value = os.urandom(size)  # random like a JPEG frame: lz4 cannot shrink it
    delivered = Delivered()
    p = producer(backend, **{"compression.type": "lz4", **LARGE})
    p.produce(topic, key=b"big", value=value, on_delivery=delivered)
    flush_all(p, delivered, 1)

    (msg,) = read_from_start(backend, topic, 1, 1, **LARGE_FETCH)
    assert msg.value() == value


def test_delivery_reports_give_each_records_exact_offset(kafka_backend: KafkaBackend) -> None:
    topic = new_topic(kafka_backend, 3)
    per_partition = 20
    delivered = Delivered()
    # several records per request, across several requests, so batch offsets are exercised
    p = producer(kafka_backend, **{"linger.ms": 20, "batch.num.messages": 7})
    for i in range(per_partition):
        for partition in range(3):
            p.produce(topic, value=str(i).encode(), partition=partition, on_delivery=delivered)
    flush_all(p, delivered, 3 * per_partition)

    assert delivered.offsets_by_partition() == {
        partition: list(range(per_partition)) for partition in range(3)}
    messages = read_from_start(kafka_backend, topic, 3, 3 * per_partition)
    assert sorted((m.partition(), m.offset()) for m in messages) == sorted(
        (partition, offset) for _, partition, offset in delivered.records)


def test_idempotent_producer_delivers_every_record_once_in_order(
        kafka_backend: KafkaBackend) -> None:
    topic = new_topic(kafka_backend, 2)
    delivered = Delivered()
    p = producer(kafka_backend, **{"enable.idempotence": True, "acks": "all", "linger.ms": 5})
    for i in range(40):
        p.produce(topic, value=str(i).encode(), partition=i % 2, on_delivery=delivered)
    flush_all(p, delivered, 40)

    assert delivered.offsets_by_partition() == {0: list(range(20)), 1: list(range(20))}
    values: dict[int | None, list[int]] = defaultdict(list)
    for msg in read_from_start(kafka_backend, topic, 2, 40):
        values[msg.partition()].append(number(msg))
    assert values == {0: list(range(0, 40, 2)), 1: list(range(1, 40, 2))}


def test_high_watermark_never_exceeds_true_end_offset(
        kafka_backend: KafkaBackend, record_property: Any) -> None:
    topic = new_topic(kafka_backend, 1)
    count = 200
    delivered = Delivered()
    p = producer(kafka_backend, **{"linger.ms": 50})
    for i in range(count):
        p.produce(topic, value=str(i).encode(), partition=0, on_delivery=delivered)
    flush_all(p, delivered, count)
    true_end = max(offset or 0 for _, _, offset in delivered.records) + 1
    assert true_end == count

    c = consumer(kafka_backend)
    try:
        low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=TIMEOUT_S,
                                            cached=False)
    finally:
        c.close()
    # Framewire takes max(watermark, acknowledged offsets + 1) as the end offset, so it needs
    # only this bound; what each backend reports is recorded, not asserted. Measured for 200
    # records in one batch: noida-db 0.2.3 reports 200; Tansu 0.6.0 reports 1 (the last
    # batch's base offset + 1)
    record_property("high_watermark", high)
    record_property("true_end_offset", true_end)
    print(f"{kafka_backend.name}: high watermark {high}, true end offset {true_end}, low {low}")
    assert 0 <= high <= true_end


# -- consumer groups ------------------------------------------------------------------------


def test_new_group_member_resumes_after_last_synchronously_committed_record(
        kafka_backend: KafkaBackend) -> None:
    topic = new_topic(kafka_backend, 1)
    group = f"resume-{uuid.uuid4().hex[:8]}"
    delivered = Delivered()
    p = producer(kafka_backend)
    for i in range(10):
        p.produce(topic, value=str(i).encode(), on_delivery=delivered)
    flush_all(p, delivered, 10)

    first = consumer(kafka_backend, group)
    try:
        first.subscribe([topic])
        seen = poll_records(first, count=6)
        # records 0..5 were read; only 0..3 are committed, so 4 and 5 must come again
        assert [number(m) for m in seen[:6]] == list(range(6))
        committed = first.commit(message=seen[3], asynchronous=False)
        assert committed is not None
        assert [(tp.partition, tp.offset, tp.error) for tp in committed] == [(0, 4, None)]
    finally:
        first.close()

    second = consumer(kafka_backend, group)
    try:
        second.subscribe([topic])
        rest = poll_records(second, count=6)
        assert [number(m) for m in rest] == list(range(4, 10))
        (position,) = second.committed([TopicPartition(topic, 0)], timeout=TIMEOUT_S)
        assert position.offset == 4
    finally:
        second.close()


def test_group_members_split_partitions_and_survivor_takes_all_when_one_closes(
        kafka_backend: KafkaBackend) -> None:
    partitions = 4
    topic = new_topic(kafka_backend, partitions)
    group = f"split-{uuid.uuid4().hex[:8]}"
    everything = set(range(partitions))

    def owned(c: Consumer) -> set[int]:
        return {tp.partition for tp in c.assignment()}

    a = consumer(kafka_backend, group)
    try:
        a.subscribe([topic])
        poll_records(a, until=lambda: owned(a) == everything)
        b = consumer(kafka_backend, group)
        try:
            b.subscribe([topic])
            poll_records(a, b, until=lambda: (owned(a) and owned(b)
                                              and owned(a) | owned(b) == everything
                                              and not owned(a) & owned(b)))
        finally:
            b.close()
        poll_records(a, until=lambda: owned(a) == everything)

        delivered = Delivered()
        p = producer(kafka_backend)
        for partition in range(partitions):
            p.produce(topic, value=str(partition).encode(), partition=partition,
                      on_delivery=delivered)
        flush_all(p, delivered, partitions)
        got = poll_records(a, count=partitions)
        assert {m.partition() for m in got} == everything
    finally:
        a.close()
