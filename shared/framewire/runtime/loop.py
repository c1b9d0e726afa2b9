"""The consume → decode → process batch → encode → produce → commit loop every stage runs in.

Guarantees: offsets are committed only after every record produced from the batch and from
every batch before it (results and dead letters) is acknowledged, so a crash redelivers rather
than loses; a record that cannot be decoded or processed goes to the dead-letter topic with its
reason and the loop goes on; a transient failure (broker or database away) rewinds and retries
with backoff.

The loop does not wait for a batch's acknowledgements before taking the next batch: batches
whose outputs are in flight queue up in order, and the offsets of the acknowledged front of
that queue are committed (asynchronously) at most every ``commit_interval_ms``, and at once
when the loop is idle, loses partitions or stops. A crash replays at most what was handled
since the last commit; the edges (storage upserts by frame id) make the repeat harmless.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind

from framewire.broker.client import client_config, consumer_defaults
from framewire.broker.reading import LagProbe
from framewire.config import Settings, StageSettings
from framewire.contracts import Contract, check_camera_id, utcnow
from framewire.errors import DataError, TransientError
from framewire.retry import Backoff
from framewire.runtime.publisher import Delivery, Publisher, StopSignal, report_broker_error
from framewire.telemetry.energy import GpuEnergyMeter
from framewire.telemetry.tracing import extract, inject
from framewire.topology import StageSpec, stage_settings

log = logging.getLogger(__name__)
# How long a poll blocks when there is nothing to do: the stop signal is checked this often.
IDLE_POLL_S = 0.25
# How long an idle loop waits for the acknowledgements of batches in flight, each round.
IDLE_ACK_WAIT_S = 0.05
# past its own timeout, a send_offsets_to_transaction call is taken for hung after this long
SEND_OFFSETS_MARGIN_S = 5.0
Outcome = Contract | DataError | None


class ProducerHung(TransientError):
    """A transactional producer call did not return: the producer is replaced, not reused."""
OffsetRanges = dict[tuple[str, int], tuple[int, int]]


@dataclass
class InFlight:
    """A handled batch: its offsets and the acknowledgements its outputs still await."""

    offsets: OffsetRanges
    delivery: Delivery = field(default_factory=Delivery)
    since: float = field(default_factory=time.monotonic)


class Stage(ABC):
    """A stage's pure logic; the runtime owns all Kafka work.

    ``spec`` is the stage's declaration (``framewire.topology.StageSpec``): name, topics,
    contracts and settings model come from it.
    """

    spec: ClassVar[StageSpec | None] = None
    name: ClassVar[str]
    input_topic: ClassVar[str]
    input_type: ClassVar[type[Contract]]
    output_topic: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        spec = cls.__dict__.get("spec")
        if spec is not None:
            if spec.input is None or spec.input_contract is None:
                raise TypeError(f"{cls.__name__}: stage {spec.name} is declared as a source; "
                                "the loop runs stages that consume a topic")
            cls.name, cls.input_topic = spec.name, spec.input
            cls.input_type, cls.output_topic = spec.input_contract, spec.output_topic

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def batching(self) -> StageSettings:
        """This stage's settings (batch size, linger, fetch wait... and its own knobs)."""
        if self.spec is None:  # a stage made in code, without a declaration
            own = getattr(self.settings, self.name, None)
            return own if isinstance(own, StageSettings) else StageSettings()
        found = stage_settings(self.settings, self.spec)
        if not isinstance(found, StageSettings):
            raise TypeError(f"stage {self.name}: its settings model must extend StageSettings")
        return found

    @property
    def output_compression(self) -> str:
        """The producer's compression under ``compression=auto``: none, since most payloads
        (JPEG) do not compress; a stage whose output does compress says so."""
        return "none"

    @abstractmethod
    def process(self, records: list[Any]) -> list[Outcome]:
        """One outcome per input record, in order: an output record, a DataError, or None."""

    def close(self) -> None:  # noqa: B027 (optional hook: only stages that hold things override)
        """Release what the stage holds (sessions, connections)."""

    @property
    def uses_gpu(self) -> bool:
        """Whether the stage runs on a GPU (its heartbeats then report the GPU's power)."""
        return False


def map_records(fn: Callable[[Any], Outcome], records: list[Any]) -> list[Outcome]:
    """Apply a per-record function, turning a DataError into that record's outcome."""
    outcomes: list[Outcome] = []
    for record in records:
        try:
            outcomes.append(fn(record))
        except DataError as exc:
            outcomes.append(exc)
    return outcomes


def as_data_error(stage: str, exc: Exception) -> DataError:
    """An exception raised by stage logic, as the reason a record is dead-lettered."""
    if isinstance(exc, DataError):
        return exc
    return DataError(
        "stage_error",
        f"{stage} failed on this record with {type(exc).__name__}: {exc}; this is a bug in the "
        "stage: report it with this dead letter, then replay the record once fixed",
    )


def process_isolating(stage: Stage, records: list[Any]) -> list[Outcome]:
    """Run the batch; if it fails, run records one by one so only the bad ones are rejected."""
    try:
        outcomes = stage.process(records)
    except TransientError:
        raise
    except Exception as exc:
        if len(records) == 1:
            log.exception("stage failed on a record") if not isinstance(exc, DataError) else None
            return [as_data_error(stage.name, exc)]
        log.warning("batch failed; retrying its records one by one", extra={"error": str(exc)})
        outcomes = []
        for record in records:
            outcomes.extend(process_isolating(stage, [record]))
    if len(outcomes) != len(records):
        raise RuntimeError(f"{stage.name}.process returned {len(outcomes)} outcomes "
                           f"for {len(records)} records")
    return outcomes


class StageRunner:
    """Runs one stage against the broker until stopped."""

    def __init__(self, stage: Stage, settings: Settings, stop: StopSignal | None = None,
                 publisher: Publisher | None = None) -> None:
        self.stage, self.settings = stage, settings
        self.stop = stop or StopSignal()
        # exactly_once: each batch's outputs and its consumed offsets commit in one transaction
        self.publisher = publisher or Publisher(
            settings, stage.name, transactional=settings.delivery == "exactly_once",
            auto_compression=stage.output_compression)
        self.transactional = self.publisher.transactional
        if stage.uses_gpu:
            self.publisher.energy.gpu = GpuEnergyMeter()
        self.topic = settings.topic(stage.input_topic)
        batching = stage.batching
        defaults = {**consumer_defaults(settings, batching.embedded_fetch_wait_ms),
                    "auto.offset.reset": "earliest",
                    "max.partition.fetch.bytes": 16 * 1024 * 1024,
                    "fetch.max.bytes": 64 * 1024 * 1024,
                    # notice a topic recreated after a broker outage within seconds
                    "topic.metadata.refresh.interval.ms": 5000,
                    **prefetch_limits(batching.batch_size),
                    # records of aborted transactions (a crashed upstream stage) are skipped
                    "isolation.level": "read_committed"}
        self.consumer = Consumer(client_config(
            settings, defaults,
            **{"group.id": settings.group(stage.name), "enable.auto.commit": False,
               "client.id": f"framewire-{stage.name}", "error_cb": self._on_error,
               "on_commit": self._on_commit,
               **({"fetch.wait.max.ms": batching.fetch_wait_ms}
                  if batching.fetch_wait_ms is not None else {})},
        ))
        self.backoff = Backoff()
        self._in_flight: deque[InFlight] = deque()
        self._committable: dict[tuple[str, int], int] = {}
        self._committed_at = 0.0
        self._lag_probe: LagProbe | None = None
        self._outage = False
        self._lag_checked = 0.0

    def _on_error(self, err: KafkaError) -> None:
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            self._outage = True
        report_broker_error(err, self.publisher.counters, self.settings.bootstrap_servers)

    def _resume_after_outage(self) -> bool:
        """After an outage, re-join the group once the broker answers; True when resumed.

        Positions held in memory may not exist on the broker that came back (the embedded
        one keeps no data, and does not answer out-of-range for offsets past the end), so
        they are dropped: re-subscribing takes positions from the group's committed offsets
        (none on an empty broker: the earliest). Records read but not committed are read
        again, which the edges make harmless.
        """
        try:
            self.consumer.list_topics(self.topic, timeout=1.0)
        except KafkaException:
            return False
        self._outage = False
        self.backoff.reset()
        log.warning("broker answers again: re-joining the group from committed offsets")
        self.consumer.unsubscribe()
        self._subscribe()
        return True

    def _subscribe(self) -> None:
        self.consumer.subscribe([self.topic], on_assign=self._on_assign,
                                on_revoke=self._on_revoke, on_lost=self._on_revoke)

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        owned = set(self.publisher.counters.partitions)
        owned.update(f"{p.topic}:{p.partition}" for p in partitions)
        self.publisher.counters.partitions = sorted(owned)
        log.info("partitions assigned", extra={"partitions": [p.partition for p in partitions]})

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # the new owner starts from the commits: make them as recent as the acks allow
        self._drain(self.settings.ack_timeout_s)
        gone = {f"{p.topic}:{p.partition}" for p in partitions}
        self.publisher.counters.partitions = [
            p for p in self.publisher.counters.partitions if p not in gone
        ]
        log.info("partitions revoked", extra={"partitions": [p.partition for p in partitions]})

    def run(self) -> None:
        """Consume until stopped, then finish the batch, commit and leave the group."""
        counters = self.publisher.counters
        counters.group = self.settings.group(self.stage.name)
        self._subscribe()
        self.publisher.start_heartbeats(self._export_lag)
        counters.state = "running"
        log.info("stage running", extra={"topic": self.topic, "group": counters.group})
        batching = self.stage.batching
        linger = batching.batch_linger_ms / 1000.0
        try:
            while not self.stop.is_set:
                messages = self._poll(batching.batch_size, linger)
                if self._outage:
                    # what was read during an outage is read again after it, from commits
                    self._in_flight.clear()
                    self._committable.clear()
                    if not self._resume_after_outage():
                        self.stop.wait(self.backoff.next_delay())
                    continue
                if messages and self.transactional:
                    self._handle_in_transaction(messages)
                elif messages:
                    self._handle_with_retry(messages)
                self._settle(idle=not messages)
        finally:
            counters.state = "stopping"
            log.info("stage stopping: leaving the group")
            if not self._outage:
                self._drain(self.settings.shutdown_timeout_s)
            self.consumer.close()
            self.stage.close()
            self.publisher.close()  # joins the heartbeat thread, the lag probe's only user
            if self._lag_probe is not None:
                self._lag_probe.close()
            log.info("stage stopped", extra={"records_in": counters.records_in,
                                             "records_out": counters.records_out,
                                             "dead_lettered": counters.dead_lettered})

    def _poll(self, count: int, linger: float) -> list[Message]:
        """The next micro-batch: wait for one record, then take what else is already here.

        Waiting ``linger`` seconds for more only when asked to: a batch that waits to fill
        adds its wait to every frame's latency, and a backlog fills batches anyway.
        """
        got = self.consumer.consume(1, IDLE_ACK_WAIT_S if self._in_flight else IDLE_POLL_S)
        if got and count > 1:
            got += self.consumer.consume(count - 1, linger)
        good = []
        for msg in got:
            err = msg.error()
            if err is None:
                good.append(msg)
            elif err.code() != KafkaError._PARTITION_EOF:
                log.warning("consume error", extra={"error": err.str()})
        return good

    def _handle_with_retry(self, messages: list[Message]) -> None:
        batch = InFlight(offset_ranges(messages))
        try:
            self.handle_batch(messages, batch.delivery)
        except TransientError as exc:
            # outputs already produced from this batch are produced again on the retry
            self._retry_later(str(exc), [batch])
            return
        self.backoff.reset()
        self._in_flight.append(batch)

    def _handle_in_transaction(self, messages: list[Message]) -> None:
        """exactly_once: produce the batch's outputs and commit its offsets atomically.

        Downstream consumers read committed records only, so a batch whose transaction is
        aborted (or whose process dies before the commit) leaves no output behind: it is
        read again from the last committed offsets and produced once.
        """
        pub, timeout = self.publisher, self.settings.ack_timeout_s
        messages = self._still_owned(messages)
        if not messages:
            return
        batch = InFlight(offset_ranges(messages))
        try:
            pub.begin_transaction()
        except (KafkaException, TransientError) as exc:
            self._retry_later(str(exc), [batch])  # nothing produced yet
            return
        try:
            self.handle_batch(messages, batch.delivery)
            pub.producer.flush(timeout)
            if batch.delivery.failures or batch.delivery.pending:
                raise TransientError("; ".join(batch.delivery.failures[:3]) or
                                     f"{batch.delivery.pending} records unacknowledged")
            self._send_offsets(
                [TopicPartition(t, p, last + 1) for (t, p), (_, last) in batch.offsets.items()],
                timeout)
            self._commit_transaction(timeout)
        except ProducerHung as exc:  # the stuck call keeps the old producer: leave it be
            pub.abandon_unacknowledged(touch_old=False)
            self._retry_from_commits(str(exc), batch)
            return
        except (KafkaException, TransientError) as exc:
            if self._abort_transaction(exc):
                self._retry_later(str(exc), [batch])
            else:  # the commit's outcome is unknown: go on from what the group committed
                self._retry_from_commits(str(exc), batch)
            return
        except BaseException:
            # a bug or a stop: leave no transaction open (read_committed consumers downstream
            # would wait for its timeout), then let it propagate
            self._abort_transaction(None)
            raise
        self.backoff.reset()
        pub.counters.last_commit_at = utcnow()

    def _send_offsets(self, offsets: list[TopicPartition], timeout: float) -> None:
        """send_offsets_to_transaction, given up on after ``timeout`` (plus a margin).

        librdkafka can block in it past its own timeout when the group coordinator's broker
        dies (librdkafka issues 5456 and 5511, open at 2.16): the call runs on a thread of its
        own and ProducerHung is raised when it has not returned in time.
        """
        producer, metadata = self.publisher.producer, self.consumer.consumer_group_metadata()
        outcome: list[BaseException | None] = []
        done = threading.Event()

        def call() -> None:
            try:
                producer.send_offsets_to_transaction(offsets, metadata, timeout)
                outcome.append(None)
            except BaseException as exc:  # handed to the loop's thread below
                outcome.append(exc)
            finally:
                done.set()

        threading.Thread(target=call, name="send-offsets", daemon=True).start()
        if not done.wait(timeout + SEND_OFFSETS_MARGIN_S):
            raise ProducerHung(f"send_offsets_to_transaction did not return within "
                               f"{timeout + SEND_OFFSETS_MARGIN_S:.0f} s (group coordinator "
                               "lost?); replacing the producer")
        if outcome[0] is not None:
            raise outcome[0]

    def _still_owned(self, messages: list[Message]) -> list[Message]:
        """Drop records of partitions revoked while the batch was read (their new owner reads
        them from the committed offsets; committing them here would produce them twice)."""
        owned = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
        return [m for m in messages if (m.topic(), m.partition()) in owned]

    def _commit_transaction(self, timeout: float) -> None:
        """Commit, retrying while librdkafka says the commit may still succeed."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.publisher.producer.commit_transaction(
                    max(0.1, deadline - time.monotonic()))
                return
            except KafkaException as exc:
                err = exc.args[0]
                if not (err.retriable() and time.monotonic() < deadline):
                    raise

    def _abort_transaction(self, exc: Exception | None) -> bool:
        """Abort the open transaction; True when it surely left no output.

        A producer that cannot abort (fenced, fatal, broker away) is replaced: the new one
        fences the old and the coordinator aborts what it left open, but whether a commit
        that failed half-way took effect is then unknown.
        """
        pub = self.publisher
        err = exc.args[0] if isinstance(exc, KafkaException) else None
        if isinstance(err, KafkaError) and err.fatal():
            pub.abandon_unacknowledged()
            return False
        try:
            pub.producer.abort_transaction(self.settings.ack_timeout_s)
            return True
        except KafkaException as abort_error:
            log.warning("could not abort the transaction; replacing the producer",
                        extra={"error": str(abort_error)})
            pub.abandon_unacknowledged()
            return False

    def _retry_from_commits(self, error: str, batch: InFlight) -> None:
        """Position each of the batch's partitions at the group's committed offset."""
        delay = self.backoff.next_delay()
        log.warning("transaction outcome unknown; resuming from the committed offsets",
                    extra={"error": error, "retry_in_s": round(delay, 2)})
        try:
            committed = self.consumer.committed(
                [TopicPartition(t, p) for (t, p) in batch.offsets], timeout=10)
            # no commit at all: this batch's surely did not land, read it again
            self._rewind({(tp.topic, tp.partition): tp.offset if tp.offset >= 0
                          else batch.offsets[(tp.topic, tp.partition)][0] for tp in committed})
        except KafkaException as exc:  # broker away: re-join from the commits when it returns
            log.warning("could not read committed offsets", extra={"error": str(exc)})
            self._outage = True
        self.stop.wait(delay)

    def _retry_later(self, error: str, batches: list[InFlight]) -> None:
        """Rewind to the first record of ``batches`` and wait before reading them again."""
        delay = self.backoff.next_delay()
        log.warning("transient failure; the batch will be retried",
                    extra={"error": error, "retry_in_s": round(delay, 2)})
        if not self._outage:  # after an outage positions come from the commits instead
            firsts: dict[tuple[str, int], int] = {}
            for batch in batches:
                for tp, (first, _) in batch.offsets.items():
                    firsts[tp] = min(first, firsts.get(tp, first))
            self._rewind(firsts)
        self.stop.wait(delay)

    def _settle(self, idle: bool, commit: bool = True) -> None:
        """Retire acknowledged batches in order and commit their offsets when due.

        A batch with a failed or overdue acknowledgement sends it and every later batch back
        to be read again. Idle, the loop waits briefly for acknowledgements and commits at once.
        """
        pub = self.publisher
        pub.serve_acknowledgements(IDLE_ACK_WAIT_S if idle and self._in_flight else 0.0)
        now = time.monotonic()
        while self._in_flight:
            head = self._in_flight[0]
            overdue = head.delivery.pending and now - head.since > self.settings.ack_timeout_s
            if head.delivery.failures or overdue:
                if overdue:
                    pub.abandon_unacknowledged()
                failed = list(self._in_flight)
                self._in_flight.clear()
                reason = "; ".join(head.delivery.failures[:3]) or (
                    f"{head.delivery.pending} records unacknowledged after "
                    f"{self.settings.ack_timeout_s:.0f} s; is the broker reachable?")
                self._retry_later(reason, failed)
                break
            if head.delivery.pending:
                break
            self._in_flight.popleft()
            for tp, (_, last) in head.offsets.items():
                self._committable[tp] = last + 1
        interval = self.settings.commit_interval_ms / 1000.0
        if commit and self._committable and (idle or now - self._committed_at >= interval):
            self._commit(asynchronous=True)

    def _drain(self, timeout_s: float) -> None:
        """Wait for every batch in flight, then commit synchronously (revoke, stop)."""
        deadline = time.monotonic() + timeout_s
        while self._in_flight and time.monotonic() < deadline:
            self._settle(idle=True, commit=False)
        if self._in_flight:
            log.warning("batches left unacknowledged; their records will be read again",
                        extra={"batches": len(self._in_flight)})
            self._in_flight.clear()
        if self._committable:
            self._commit(asynchronous=False)

    def handle_batch(self, messages: list[Message], delivery: Delivery | None = None) -> None:
        """Decode, process and produce one batch; ``delivery`` counts its acknowledgements.

        Each record gets a span continuing its frame's trace, and a child span for the stage's
        work on it. The work of a batch of several records runs in one more span, linked to all
        of them, so micro-batching does not break traces; a batch of one runs in its record's
        work span, so the stage's own spans (model run...) sit in the frame's trace.
        """
        pub, stage, tel = self.publisher, self.stage, self.publisher.telemetry
        pub.count_in(len(messages))
        pub.metrics.batch_size.labels(stage.name).observe(len(messages))
        started = time.perf_counter()
        decoded: list[tuple[Message, Any, Span]] = []
        spans: list[Span] = []
        for msg in messages:
            span = tel.start(f"{stage.name} process", extract(msg.headers()), SpanKind.CONSUMER,
                             self._span_attributes(msg))
            spans.append(span)
            try:
                record: Any = pub.codec.decode(msg.value(), stage.input_type)
                check_camera_id(record.camera_id, msg.key())
                span.set_attributes({"framewire.frame_id": record.frame_id,
                                     "framewire.camera_id": record.camera_id})
                decoded.append((msg, record, span))
            except DataError as exc:
                pub.dead_letter(exc, payload=msg.value(), key=msg.key(), headers=msg.headers(),
                                source=position(msg), span=span, delivery=delivery)
        work_start = time.time_ns()
        work_attributes = {"framewire.batch_size": len(decoded)}
        if not decoded:  # all dead-lettered
            for span in spans:
                span.end()
            if delivery is None:
                pub.flush(self.settings.ack_timeout_s)
            return
        if len(decoded) == 1:
            work_span = tel.start(f"{stage.name} work", trace.set_span_in_context(decoded[0][2]),
                                  attributes=work_attributes, start_time=work_start)
        else:
            work_span = tel.start(f"{stage.name} batch", links=[
                Link(span.get_span_context()) for _, _, span in decoded
            ], attributes={**work_attributes, "messaging.system": "kafka",
                           "messaging.consumer.group.name": self.settings.group(stage.name)},
                start_time=work_start)
        spans.append(work_span)
        try:
            with trace.use_span(work_span, end_on_exit=False):
                outcomes = process_isolating(stage, [r for _, r, _ in decoded])
            work_end = time.time_ns()
            work_span.end(end_time=work_end)
            if len(decoded) > 1:  # the batch's work, shown in each frame's own trace too
                for _, _, span in decoded:
                    tel.start(f"{stage.name} work", trace.set_span_in_context(span),
                              attributes=work_attributes,
                              start_time=work_start).end(end_time=work_end)
            keep_partition = self._keeps_partition()
            for (msg, record, span), outcome in zip(decoded, outcomes, strict=True):
                if isinstance(outcome, DataError):
                    pub.dead_letter(outcome, payload=msg.value(), key=msg.key(),
                                    headers=msg.headers(), camera_id=record.camera_id,
                                    frame_id=record.frame_id, source=position(msg), span=span,
                                    delivery=delivery)
                elif outcome is not None and stage.output_topic is not None:
                    pub.publish(stage.output_topic, outcome, key=record.camera_id,
                                headers=inject(span, msg.headers()), delivery=delivery,
                                partition=msg.partition() if keep_partition else None)
                    pub.count_out()
                elif outcome is None and stage.output_topic is None:
                    pub.count_out()
            if delivery is None:  # called on its own: wait here for the acknowledgements
                pub.flush(self.settings.ack_timeout_s)
            pub.metrics.batch_seconds.labels(stage.name).observe(time.perf_counter() - started)
        finally:
            for span in spans:
                if span.is_recording():  # not ended yet
                    span.end()

    def _keeps_partition(self) -> bool:
        """Outputs go to the partition their input came from when both topics have as many
        partitions, so each camera stays on the partition ingest placed it on
        (``framewire.broker.placement``); otherwise the key's hash picks."""
        if self.stage.output_topic is None:
            return False
        pub = self.publisher
        out_count = pub.partition_count(self.settings.topic(self.stage.output_topic))
        return out_count is not None and out_count == pub.partition_count(self.topic)

    def _export_lag(self) -> None:
        """Before each heartbeat: the group's lag per partition, as a metric."""
        now = time.monotonic()
        if now - self._lag_checked < 5.0:
            return
        self._lag_checked = now
        if self._lag_probe is None:
            self._lag_probe = LagProbe(self.settings, self.stage.name, timeout_s=2.0)
        lags = self._lag_probe.partition_lags(self.publisher.produced_offsets())
        for partition, lag in (lags or {}).items():
            self.publisher.metrics.consumer_lag.labels(self.stage.name, str(partition)).set(lag)

    def _span_attributes(self, msg: Message) -> dict[str, Any]:
        """OpenTelemetry messaging semantic conventions for a consumed record."""
        topic, partition, offset = position(msg)
        return {"messaging.system": "kafka", "messaging.operation.type": "process",
                "messaging.destination.name": topic,
                "messaging.destination.partition.id": str(partition),
                "messaging.kafka.offset": offset,
                "messaging.consumer.group.name": self.settings.group(self.stage.name)}

    def _commit(self, asynchronous: bool) -> None:
        """Commit the offsets of every acknowledged batch not committed yet."""
        offsets = [TopicPartition(t, p, o) for (t, p), o in self._committable.items()]
        self._committable = {}
        self._committed_at = time.monotonic()
        try:
            if asynchronous:  # the result arrives in _on_commit, served by a later poll
                self.consumer.commit(offsets=offsets, asynchronous=True)
            else:
                self.consumer.commit(offsets=offsets, asynchronous=False)
                self._on_commit(None, offsets)
        except KafkaException as exc:
            self._on_commit(exc.args[0], offsets)

    def _on_commit(self, err: KafkaError | None, _partitions: list[TopicPartition]) -> None:
        if err is None:
            self.publisher.counters.last_commit_at = utcnow()
        elif err.code() != KafkaError._NO_OFFSET:
            # a rebalance took the partitions: the new owner re-reads these records, and the
            # edges (storage upsert by frame_id) make the repeat harmless
            log.warning("commit failed; records will be redelivered", extra={"error": err.str()})

    def _rewind(self, firsts: dict[tuple[str, int], int]) -> None:
        for (topic, partition), first in firsts.items():
            try:
                self.consumer.seek(TopicPartition(topic, partition, first))
            except KafkaException as exc:
                log.info("could not rewind a partition (revoked?)", extra={"error": str(exc)})


def prefetch_limits(batch_size: int) -> dict[str, int]:
    """Fetch ahead two batches per partition, not librdkafka's 100,000 records.

    With a backlog, librdkafka would otherwise send fetch after fetch, each bringing the one
    or two records produced since the last: at full speed on 2 cores that was 1.9 of the
    broker's 4.9 CPU-ms per frame and 6 % of the frames/s (docs/benchmarks.md). With a short
    local queue it fetches when the queue runs low (checked every 5 ms), and an idle
    consumer, whose queue is empty, fetches as before.
    """
    return {"queued.min.messages": max(16, 2 * batch_size), "fetch.queue.backoff.ms": 5}


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


def run_stage(stage: Stage, settings: Settings, stop: StopSignal | None = None) -> None:
    """Run ``stage`` until SIGTERM/SIGINT (or ``stop``)."""
    StageRunner(stage, settings, stop).run()
