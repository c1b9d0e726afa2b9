"""The process's Kafka producer: delivery tracking, acknowledgements, replacement of a stuck or
fenced producer, transactions (exactly_once), partition counts and produced offsets."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from framewire.broker.client import client_config
from framewire.config import Settings
from framewire.errors import TransientError

log = logging.getLogger(__name__)
# As confluent-kafka gives them on a consumed message and takes them in produce().
Headers = dict[str, str | bytes | None] | list[tuple[str, str | bytes | None]]


class Delivery:
    """The acknowledgements still awaited for the records produced from one batch.

    ``on_result``, when given, hears each record's outcome (None: acknowledged, else the
    error) and ``failures`` stays empty: a Delivery that lives as long as its process (ingest
    counts frames published on their acknowledgements) must not grow.
    """

    __slots__ = ("pending", "failures", "on_result")

    def __init__(self, on_result: Callable[[KafkaError | None], None] | None = None) -> None:
        self.pending = 0
        self.failures: list[str] = []
        self.on_result = on_result


# librdkafka's "no partition given": the partitioner hashes the key
UNASSIGNED = -1
# how often an unknown topic's partition count is asked again
PARTITIONS_ASK_S = 5.0

# a broker that lost its state (the embedded one after a restart) rejects an idempotent
# producer's id or sequence numbers: such a producer never recovers and must be replaced
PRODUCER_STATE_LOST = {KafkaError.PRODUCER_FENCED, KafkaError.UNKNOWN_PRODUCER_ID,
                       KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, KafkaError.INVALID_PRODUCER_EPOCH,
                       KafkaError._FENCED}


class TrackedProducer:
    """A service's producer, its acknowledgements tracked, replaced when it cannot recover.

    ``producer`` is the confluent-kafka Producer records go through; under exactly_once it
    is transactional and ``status_producer`` is a second one for heartbeats, outside every
    transaction (otherwise both are the same). ``on_error`` gets the clients' errors,
    ``on_delivered`` each acknowledgement (the broker answers).
    """

    def __init__(self, settings: Settings, service: str, *,
                 on_error: Callable[[KafkaError], None], on_delivered: Callable[[], None],
                 transactional: bool = False, auto_compression: str = "none") -> None:
        self.settings, self.service = settings, service
        self._on_error, self._on_delivered = on_error, on_delivered
        # compression=auto: what suits this service's payloads (its stage says)
        self.auto_compression = auto_compression
        # exactly_once: outputs and consumed offsets commit in one Kafka transaction; the
        # heartbeats go through a producer of their own, outside every transaction
        self.transactional = transactional
        # one id for the life of the process: a replacement producer fences its predecessor
        # and aborts whatever transaction that one left open
        self._transactional_id = (f"{settings.group(service)}-{socket.gethostname()}-"
                                  f"{os.getpid()}-{uuid.uuid4().hex[:6]}")
        self._transactions_ready = False
        self._lock = threading.Lock()
        self._produced: dict[str, int] = {}
        self._partition_counts: dict[str, int] = {}
        self._partitions_asked: dict[str, float] = {}
        self._failures: list[str] = []
        self.producer = self._new_producer()
        self._stale_status = False
        self.status_producer = self._new_producer(for_status=True) if transactional \
            else self.producer
        self._stale_producer = False
        self._swap_lock = threading.Lock()

    def _new_producer(self, for_status: bool = False) -> Producer:
        embedded = self.settings.on_tansu
        defaults = {
            # the embedded broker hands out producer ids from 1 again after a restart, which
            # an idempotent producer takes as fatal; one request in flight keeps each
            # camera's order instead (the edges dedupe retries by frame_id)
            # stages produce a batch at a time and ingest sends frame by frame: a longer
            # linger would only add its length to each frame's latency (librdkafka's: 5 ms)
            "acks": "all", "enable.idempotence": not embedded, "linger.ms": 1,
            **({"max.in.flight.requests.per.connection": 1} if embedded else {}),
            # JPEG payloads do not compress: lz4 on them cost ~1.3 CPU-ms per frame across the
            # services and broker for nothing (docs/benchmarks.md); raw pixels do compress
            "compression.type": self._compression(),
            "message.max.bytes": 16 * 1024 * 1024,
            # topics are made with their partition counts by ensure_topics, never on the fly
            # (the embedded broker would make any missing topic with 4 partitions)
            "allow.auto.create.topics": False,
            # bound what waits in memory while the broker is away (librdkafka: 1 GiB)
            "queue.buffering.max.kbytes": 256 * 1024,
        }
        fixed: dict[str, Any] = {"client.id": f"framewire-{self.service}",
                                 "error_cb": self._on_error}
        if self.transactional and not for_status:
            # a zombie replica is fenced by the consumer group's generation
            # (send_offsets_to_transaction with the group metadata); the coordinator aborts a
            # transaction its crashed producer left open after transaction.timeout.ms, and
            # read_committed consumers downstream wait for that
            fixed["transactional.id"] = self._transactional_id
            fixed["transaction.timeout.ms"] = int(max(20.0, 2 * self.settings.ack_timeout_s)
                                                  * 1000)
            self._transactions_ready = False
        return Producer(client_config(self.settings, defaults, **fixed))

    def _compression(self) -> str:
        """The producer's compression.type: the setting, or per payload (``auto``)."""
        if self.settings.compression != "auto":
            return self.settings.compression
        return self.auto_compression

    def begin_transaction(self) -> None:
        """Open a transaction on the stage's producer (registering it with the broker first,
        once per producer); TransientError while the broker cannot do so."""
        if not self._transactions_ready:
            try:
                self.producer.init_transactions(self.settings.ack_timeout_s)
            except KafkaException as exc:
                raise TransientError(
                    f"could not register the transactional producer ({exc}); exactly_once "
                    "needs Apache Kafka with its transaction log reachable") from exc
            self._transactions_ready = True
        self.producer.begin_transaction()

    def produce(self, topic: str, value: bytes, key: bytes | None,
                headers: Headers | None, delivery: Delivery | None = None,
                partition: int | None = None, producer: Producer | None = None) -> None:
        """Queue encoded bytes for a full topic name (retrying while the queue is full).

        Its acknowledgement is awaited by ``flush``, or counted in ``delivery`` when given.
        Without ``partition``, the key's hash picks the partition.
        """
        on_delivery: Callable[..., None] = self._on_delivery if delivery is None else partial(
            self._on_delivery, delivery=delivery)
        if producer is not None and producer is not self.producer:
            on_delivery = self._on_status_delivery  # its failures are not the stage's
        while True:
            target = producer or self.producer
            try:
                target.produce(topic, value=value, key=key, headers=headers,
                               on_delivery=on_delivery,
                               partition=UNASSIGNED if partition is None else partition)
                if delivery is not None:
                    with self._lock:
                        delivery.pending += 1
                return
            except BufferError:
                # local queue full: serve delivery reports to make room, then try again
                target.poll(0.1)
            except KafkaException as exc:
                if not exc.args[0].fatal():
                    raise
                if target is not self.producer:  # heartbeats: a fresh producer, next beat
                    self._stale_status = True
                    raise
                if self.transactional:  # the loop aborts the batch and replaces the producer
                    raise TransientError(f"transactional producer failed: {exc}") from exc
                # a fatal producer error (fenced...) never clears: start a fresh producer
                self._replace_producer(len(self.producer))

    def produce_status(self, topic: str, value: bytes, key: bytes) -> None:
        """Queue a heartbeat on the status producer (renewed first if it got stuck)."""
        if self._stale_status and self.status_producer is not self.producer:
            self._stale_status = False
            self.status_producer = self._new_producer(for_status=True)
        self.produce(topic, value, key, None, producer=self.status_producer)
        self.status_producer.poll(0)

    def _on_delivery(self, err: KafkaError | None, msg: Message,
                     delivery: Delivery | None = None) -> None:
        if delivery is not None:
            with self._lock:
                delivery.pending -= 1
                if err is not None and delivery.on_result is None:
                    delivery.failures.append(f"{msg.topic()}: {err.str()}")
        if err is not None:
            with self._lock:
                if delivery is None:
                    self._failures.append(f"{msg.topic()}: {err.str()}")
                if err.fatal() or err.code() in PRODUCER_STATE_LOST:
                    self._stale_producer = True
        else:
            self._on_delivered()
            tp = f"{msg.topic()}:{msg.partition()}"
            offset = (msg.offset() or 0) + 1
            with self._lock:
                if offset > self._produced.get(tp, 0):
                    self._produced[tp] = offset
        if delivery is not None and delivery.on_result is not None:
            delivery.on_result(err)  # last: an acknowledged record's offset is counted already

    def _on_status_delivery(self, err: KafkaError | None, msg: Message) -> None:
        """Heartbeats: a lost one is replaced by the next; a stuck producer is renewed."""
        if err is not None:
            log.debug("heartbeat not delivered", extra={"error": err.str()})
            if err.fatal() or err.code() in PRODUCER_STATE_LOST:
                self._stale_status = True

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until every queued record is acknowledged; TransientError if any was not."""
        if self.status_producer is not self.producer:
            self.status_producer.flush(timeout_s)
        remaining = self.producer.flush(timeout_s)
        if remaining or self._stale_producer:
            self._replace_producer(remaining)
        with self._lock:
            failures, self._failures = self._failures, []
        if remaining or failures:
            raise TransientError(
                f"{remaining} records unacknowledged after {timeout_s:.0f} s, "
                f"{len(failures)} failed ({'; '.join(failures[:3])}); is the broker reachable?"
            )

    def serve_acknowledgements(self, wait_s: float = 0.0) -> None:
        """Run delivery callbacks that are due (waiting up to ``wait_s`` for outstanding ones);
        a producer that can never recover is replaced, failing what it still held."""
        if wait_s > 0 and len(self.producer):
            self.producer.flush(wait_s)
        else:
            self.producer.poll(0)
        if self._stale_producer:
            self._replace_producer(len(self.producer))

    def abandon_unacknowledged(self, touch_old: bool = True) -> None:
        """Give up on records the broker did not acknowledge in time (the caller re-sends).

        ``touch_old=False``: a call is still blocked inside the old producer; it is left
        alone (a transactional replacement fences it and aborts its transaction)."""
        self._replace_producer(len(self.producer) if touch_old else -1, touch_old)

    def _replace_producer(self, remaining: int, touch_old: bool = True) -> None:
        """Drop a producer whose records are not acknowledged and start a fresh one.

        An idempotent producer whose broker came back empty (the embedded broker keeps no
        data) waits forever for sequence numbers the new broker never saw. The caller retries
        what was dropped (the runtime rewinds its batch), so nothing is lost by purging.
        """
        with self._swap_lock:  # the heartbeat thread produces too
            log.warning("producer stuck or fenced; replacing it",
                        extra={"unacknowledged": remaining})
            self._stale_producer = False
            old, self.producer = self.producer, self._new_producer()
        if not touch_old:
            return
        try:  # fail what the old one held: its callbacks count the batch as not delivered
            old.purge(in_queue=True, in_flight=True, blocking=False)
            old.poll(0)
        except KafkaException as exc:  # a failed transactional producer raises its error here
            log.info("replaced producer reported its error", extra={"error": str(exc)})

    def partition_count(self, topic: str) -> int | None:
        """Partitions of a full topic name, from the broker's metadata; None while unknown.

        Known counts are kept (topics are made at their final size); an unknown one is asked
        again at most every few seconds.
        """
        known = self._partition_counts.get(topic)
        if known is not None:
            return known
        now = time.monotonic()
        if now - self._partitions_asked.get(topic, -PARTITIONS_ASK_S) < PARTITIONS_ASK_S:
            return None
        self._partitions_asked[topic] = now
        try:
            meta = self.producer.list_topics(topic, timeout=5.0).topics.get(topic)
        except KafkaException:
            return None
        if meta is None or meta.error is not None or not meta.partitions:
            return None
        self._partition_counts[topic] = len(meta.partitions)
        return len(meta.partitions)

    def produced_offsets(self) -> dict[str, int]:
        """Highest acknowledged offset + 1 per ``topic:partition`` this process wrote."""
        with self._lock:
            return dict(self._produced)
