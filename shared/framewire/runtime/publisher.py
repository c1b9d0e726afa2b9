"""Producing records: encoding, keys, headers, delivery tracking, dead letters, heartbeats."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

from framewire import __version__
from framewire.broker.client import client_config
from framewire.config import Settings
from framewire.contracts import Contract, DeadLetter, ServiceHeartbeat, utcnow
from framewire.contracts.codec import Codec, make_codec
from framewire.errors import DataError, TransientError
from framewire.store.blobs import BlobStore, inline_or_reference
from framewire.telemetry.energy import EnergyCounters
from framewire.telemetry.metrics import CostWindow, service_metrics, start_metrics_server
from framewire.telemetry.tracing import Telemetry, extract

log = logging.getLogger(__name__)
# As confluent-kafka gives them on a consumed message and takes them in produce().
Headers = dict[str, str | bytes | None] | list[tuple[str, str | bytes | None]]


class StopSignal:
    """Set on SIGTERM or SIGINT: the loop finishes its batch, commits and leaves."""

    def __init__(self, install: bool = True) -> None:
        self.event = threading.Event()
        if install and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._handle)
            signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, _frame: Any) -> None:
        log.info("stop requested", extra={"signal": signal.Signals(signum).name})
        self.event.set()

    @property
    def is_set(self) -> bool:
        return self.event.is_set()

    def set(self) -> None:
        self.event.set()

    def wait(self, timeout: float) -> bool:
        return self.event.wait(timeout)


@dataclass
class Counters:
    """What a process has done, reported in heartbeats and by ``framewire status``."""

    records_in: int = 0
    records_out: int = 0
    dead_lettered: int = 0
    partitions: list[str] = field(default_factory=list)
    state: str = "starting"
    group: str | None = None
    dropped: int = 0
    broker_ok: bool = True
    stalled_cameras: list[str] = field(default_factory=list)
    last_commit_at: datetime | None = None


class Delivery:
    """The acknowledgements still awaited for the records produced from one batch."""

    __slots__ = ("pending", "failures")

    def __init__(self) -> None:
        self.pending = 0
        self.failures: list[str] = []


# librdkafka's "no partition given": the partitioner hashes the key
UNASSIGNED = -1
# how often an unknown topic's partition count is asked again
PARTITIONS_ASK_S = 5.0

# a broker that lost its state (the embedded one after a restart) rejects an idempotent
# producer's id or sequence numbers: such a producer never recovers and must be replaced
PRODUCER_STATE_LOST = {KafkaError.PRODUCER_FENCED, KafkaError.UNKNOWN_PRODUCER_ID,
                       KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, KafkaError.INVALID_PRODUCER_EPOCH,
                       KafkaError._FENCED}


def report_broker_error(err: KafkaError, counters: Counters, servers: str) -> None:
    """Log a client error once per outage; librdkafka keeps reconnecting by itself."""
    if err.code() == KafkaError._ALL_BROKERS_DOWN:
        if counters.broker_ok:
            counters.broker_ok = False
            log.error("broker unreachable; retrying with backoff until it returns",
                      extra={"servers": servers, "check": "is the broker running? "
                             "FRAMEWIRE_BOOTSTRAP_SERVERS, listeners, network"})
    elif err.fatal():
        log.critical("fatal client error", extra={"error": err.str()})
    else:
        log.debug("broker connection problem", extra={"error": err.str()})


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


class Publisher:
    """A producer for one service: encodes contracts, tracks acknowledgements, dead-letters."""

    def __init__(self, settings: Settings, service: str, codec: Codec | None = None,
                 blobs: BlobStore | None = None, transactional: bool = False,
                 auto_compression: str = "none") -> None:
        self.settings, self.service = settings, service
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
        self.codec = codec or make_codec(settings.schema_registry_url)
        self.blobs = blobs or BlobStore(settings.resolved_blob_dir)
        self.counters = Counters()
        self.telemetry = Telemetry(service, settings)
        self.metrics = service_metrics()
        self._cost = CostWindow()
        # a stage that runs its model on a GPU adds the GPU's meter (StageRunner)
        self.energy = EnergyCounters()
        self.metrics_port: int | None = None
        self.instance = f"{socket.gethostname()}:{os.getpid()}"
        self._lock = threading.Lock()
        self._produced: dict[str, int] = {}
        self._partition_counts: dict[str, int] = {}
        self._partitions_asked: dict[str, float] = {}
        self._failures: list[str] = []
        self.producer = self._new_producer()
        self._stale_status = False
        self.status_producer = self._new_producer(for_status=True) if transactional \
            else self.producer
        self._reconnected = threading.Event()
        self._stale_producer = False
        self._swap_lock = threading.Lock()
        self._heartbeat_stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    # -- producing -----------------------------------------------------------------------

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

    def _on_status_delivery(self, err: KafkaError | None, msg: Message) -> None:
        """Heartbeats: a lost one is replaced by the next; a stuck producer is renewed."""
        if err is not None:
            log.debug("heartbeat not delivered", extra={"error": err.str()})
            if err.fatal() or err.code() in PRODUCER_STATE_LOST:
                self._stale_status = True

    def _compression(self) -> str:
        """The producer's compression.type: the setting, or per payload (``auto``)."""
        if self.settings.compression != "auto":
            return self.settings.compression
        return self.auto_compression

    def publish(self, topic: str, record: Contract, key: str,
                headers: Headers | None = None, delivery: Delivery | None = None,
                partition: int | None = None) -> None:
        """Queue a record for a logical topic (``frames.raw`` ...).

        Its acknowledgement is awaited by ``flush``, or counted in ``delivery`` when given.
        Without ``partition``, the key's hash picks the partition.
        """
        self.produce_raw(self.settings.topic(topic), self.codec.encode(record), key.encode(),
                         headers, delivery, partition)

    def produce_raw(self, topic: str, value: bytes, key: bytes | None,
                    headers: Headers | None, delivery: Delivery | None = None,
                    partition: int | None = None, producer: Producer | None = None) -> None:
        """Queue already-encoded bytes for a full topic name (retrying while the queue is full)."""
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

    def _on_delivery(self, err: KafkaError | None, msg: Message,
                     delivery: Delivery | None = None) -> None:
        if delivery is not None:
            with self._lock:
                delivery.pending -= 1
                if err is not None:
                    delivery.failures.append(f"{msg.topic()}: {err.str()}")
        if err is not None:
            with self._lock:
                if delivery is None:
                    self._failures.append(f"{msg.topic()}: {err.str()}")
                if err.fatal() or err.code() in PRODUCER_STATE_LOST:
                    self._stale_producer = True
            return
        if self._broker_back():
            self._reconnected.set()  # the heartbeat thread checks the topics
        tp = f"{msg.topic()}:{msg.partition()}"
        offset = (msg.offset() or 0) + 1
        with self._lock:
            if offset > self._produced.get(tp, 0):
                self._produced[tp] = offset

    def _broker_back(self) -> bool:
        """Mark the broker reachable; True (and logged once) when it had been away."""
        if self.counters.broker_ok:
            return False
        self.counters.broker_ok = True
        log.warning("broker reachable again", extra={"servers": self.settings.bootstrap_servers})
        return True

    def _on_error(self, err: KafkaError) -> None:
        report_broker_error(err, self.counters, self.settings.bootstrap_servers)

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

    def count_in(self, n: int = 1) -> None:
        """Records received (heartbeat counters and Prometheus)."""
        self.counters.records_in += n
        self.metrics.records_in.labels(self.service).inc(n)

    def count_out(self, n: int = 1) -> None:
        """Records produced, or stored by a sink."""
        self.counters.records_out += n
        self.metrics.records_out.labels(self.service).inc(n)

    # -- dead letters --------------------------------------------------------------------

    def dead_letter(self, error: DataError, *, payload: bytes | None, key: bytes | None = None,
                    source: tuple[str | None, int | None, int | None] | None = None,
                    camera_id: str | None = None, frame_id: str | None = None,
                    headers: Headers | None = None, span: Span | None = None,
                    delivery: Delivery | None = None) -> None:
        """Send a record that could not be processed to the dead-letter topic, with the reason.

        The frame's trace ends in an error span with the reason (kept even when unsampled).
        """
        inline, uri = payload, None
        if payload is not None:
            inline, uri, _ = inline_or_reference(payload, self.settings.max_inline_bytes,
                                                 self.blobs)
        if camera_id is None and key:
            camera_id = key.decode(errors="replace")
        letter = DeadLetter(
            service=self.service, code=error.code, reason=error.reason, failed_at=utcnow(),
            source_topic=source[0] if source else None,
            source_partition=source[1] if source else None,
            source_offset=source[2] if source else None,
            camera_id=camera_id, frame_id=frame_id, key=key, payload=inline, payload_uri=uri,
        )
        parent = trace.set_span_in_context(span) if span is not None else extract(headers)
        if span is not None:
            span.set_status(Status(StatusCode.ERROR, error.reason))
        self.telemetry.record_dead_letter(parent, error.code, error.reason, {
            "framewire.frame_id": frame_id or "", "framewire.camera_id": camera_id or "",
            "messaging.destination.name": self.settings.topic("deadletter")})
        self.produce_raw(self.settings.topic("deadletter"), self.codec.encode(letter),
                         key, headers, delivery)
        self.counters.dead_lettered += 1
        self.metrics.dead_lettered.labels(self.service, error.code).inc()
        span_ctx = trace.get_current_span(parent).get_span_context() if parent else None
        log.warning("dead-lettered", extra={
            "code": error.code, "reason": error.reason, "camera_id": camera_id,
            "frame_id": frame_id,
            "trace_id": format(span_ctx.trace_id, "032x") if span_ctx else None,
            "span_id": format(span_ctx.span_id, "016x") if span_ctx else None})

    # -- heartbeats ----------------------------------------------------------------------

    def heartbeat(self) -> None:
        """Publish this process's status once."""
        c = self.counters
        cost = self._cost.sample(time.monotonic(), time.process_time(), c.records_out,
                                 self.energy.host_joules(), self.energy.gpu_joules())
        for gauge, value in ((self.metrics.cpu_per_1000, cost.cpu_s_per_1000_frames),
                             (self.metrics.host_watts, cost.host_watts),
                             (self.metrics.gpu_watts, cost.gpu_watts)):
            if value is not None:
                gauge.labels(self.service).set(value)
        beat = ServiceHeartbeat(
            service=self.service, instance=self.instance, host=socket.gethostname(),
            pid=os.getpid(), version=__version__, sent_at=utcnow(), state=c.state,
            partitions=list(c.partitions), records_in=c.records_in, records_out=c.records_out,
            dead_lettered=c.dead_lettered, produced_offsets=self.produced_offsets(),
            group=c.group, restarts=self.settings.restart_count, dropped=c.dropped,
            broker_ok=c.broker_ok, stalled_cameras=list(c.stalled_cameras),
            last_commit_at=c.last_commit_at, metrics_port=self.metrics_port,
            cpu_s_per_1000_frames=_rounded(cost.cpu_s_per_1000_frames),
            out_per_s=_rounded(cost.out_per_s), host_watts=_rounded(cost.host_watts),
            gpu_watts=_rounded(cost.gpu_watts),
        )
        self.metrics.broker_up.labels(self.service).set(1 if c.broker_ok else 0)
        self.metrics.dropped.labels(self.service).set(c.dropped)
        if self._stale_status and self.status_producer is not self.producer:
            self._stale_status = False
            self.status_producer = self._new_producer(for_status=True)
        self.produce_raw(self.settings.topic("status"), self.codec.encode(beat),
                         self.service.encode(), None, producer=self.status_producer)
        self.status_producer.poll(0)

    def _after_outage(self) -> None:
        """While the broker is away, or once a delivery shows it back: when it answers, make
        sure every topic exists with its partitions (it may be a new, empty one: the embedded
        broker keeps no data). Producers never auto-create topics (Tansu would make 4
        partitions), so records for a missing topic wait until this has run."""
        from framewire.broker.client import ensure_topics

        try:
            created = ensure_topics(self.settings, timeout_s=min(5.0, self.settings.ack_timeout_s))
        except (TransientError, KafkaException) as exc:
            log.debug("broker still away", extra={"error": str(exc)})
            return
        self._reconnected.clear()
        self._broker_back()
        if created:
            log.warning("broker came back without our topics (it lost its data); recreated them",
                        extra={"topics": created})

    def start_heartbeats(self, extra: Callable[[], None] | None = None) -> None:
        """Send a heartbeat every ``heartbeat_interval_s`` from a background thread."""

        def beat() -> None:
            while not self._heartbeat_stop.wait(self.settings.heartbeat_interval_s):
                try:
                    if self._reconnected.is_set() or not self.counters.broker_ok:
                        self._after_outage()
                    if extra:
                        extra()
                    self.heartbeat()
                except Exception:  # a failed heartbeat must never stop the service
                    log.exception("heartbeat failed")

        self.metrics_port = start_metrics_server(self.settings.metrics_port)
        self._reconnected.set()  # a service started alone makes the topics it finds missing
        self.heartbeat()
        self._heartbeat = threading.Thread(target=beat, name="heartbeat", daemon=True)
        self._heartbeat.start()

    def close(self) -> None:
        """Final heartbeat, flush everything, stop the heartbeat thread."""
        self._heartbeat_stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(5)
        self.counters.state = "stopped"
        try:
            self.heartbeat()
            self.flush(self.settings.shutdown_timeout_s)
        except TransientError as exc:
            log.error("records left unacknowledged at shutdown", extra={"error": str(exc)})
        self.telemetry.shutdown()
