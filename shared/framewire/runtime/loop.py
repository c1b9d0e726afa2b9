"""The consume → decode → process batch → encode → produce → commit loop every stage runs in.

Guarantees: offsets are committed only after every record produced from the batch and from
every batch before it (results and dead letters) is acknowledged, so a crash redelivers rather
than loses; a record that cannot be decoded or processed goes to the dead-letter topic with its
reason and the loop goes on; a transient failure (broker or database away) rewinds and retries
with backoff.

The loop does not wait for a batch's acknowledgements before taking the next batch: batches
whose outputs are in flight queue up in order (``inflight.py``), and the offsets of the
acknowledged front of that queue are committed (asynchronously) at most every
``commit_interval_ms``, and at once when the loop is idle, loses partitions or stops. A crash
replays at most what was handled since the last commit; the edges (storage upserts by frame
id) make the repeat harmless. Under exactly_once a batch's outputs and offsets commit in one
transaction instead (``transactions.py``).

The loop's parts: ``stage.py`` (the stage's logic), ``batch.py`` (one batch's work),
``publisher.py`` (producer, dead letters, heartbeats).
"""

from __future__ import annotations

import logging
import time
from functools import partial

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from framewire.broker.client import client_config, consumer_defaults
from framewire.broker.reading import LagProbe
from framewire.config import CRASH_LOOP_EXITS, CRASH_LOOP_WINDOW_S, Settings
from framewire.contracts import utcnow
from framewire.errors import TransientError
from framewire.retry import Backoff
from framewire.runtime.batch import BatchHandler
from framewire.runtime.faults import CrashJournal, RecordFaults
from framewire.runtime.heartbeat import report_broker_error
from framewire.runtime.inflight import InFlight, InFlightBatches, OffsetRanges, offset_ranges
from framewire.runtime.publisher import Publisher
from framewire.runtime.stage import Outcome, Stage, map_records
from framewire.runtime.stop import StopSignal
from framewire.runtime.transactions import ProducerHung, Transactions
from framewire.telemetry.energy import GpuEnergyMeter

# re-exported: stages and tests import these names from here
__all__ = ["InFlight", "OffsetRanges", "Outcome", "ProducerHung", "Stage", "StageRunner",
           "map_records", "offset_ranges", "prefetch_limits", "run_stage"]

log = logging.getLogger(__name__)
# How long a poll blocks when there is nothing to do: the stop signal is checked this often.
IDLE_POLL_S = 0.25
# How long an idle loop waits for the acknowledgements of batches in flight, each round.
IDLE_ACK_WAIT_S = 0.05


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
        self.output, self.counters = self.publisher.output, self.publisher.counters
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
        # records a dead process held get a crash count (poison pills: runtime/faults.py)
        self.journal = CrashJournal(settings.home / "state", stage.name)
        self.journal.harvest()
        self.work = BatchHandler(stage, settings, self.publisher, RecordFaults(
            stage, settings, self.counters, self.journal, self.stop))
        self._started = time.monotonic()
        if settings.recent_crashes >= CRASH_LOOP_EXITS:
            self.counters.set_fault("crash_loop", crash_loop_fault(stage.name, settings))
        self.in_flight = InFlightBatches(settings.ack_timeout_s,
                                         settings.commit_interval_ms / 1000.0)
        self.transactions = Transactions(self.output, self.consumer, settings) \
            if self.output.transactional else None
        self._lag_probe: LagProbe | None = None
        self._outage = False
        self._lag_checked = 0.0

    def _on_error(self, err: KafkaError) -> None:
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            self._outage = True
        report_broker_error(err, self.counters, self.settings.bootstrap_servers)

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
        self.journal.harvest()  # a replica that died may have held these partitions' records
        owned = set(self.counters.partitions)
        owned.update(f"{p.topic}:{p.partition}" for p in partitions)
        self.counters.partitions = sorted(owned)
        log.info("partitions assigned", extra={"partitions": [p.partition for p in partitions]})

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # the new owner starts from the commits: make them as recent as the acks allow
        self._drain(self.settings.ack_timeout_s)
        gone = {f"{p.topic}:{p.partition}" for p in partitions}
        self.counters.partitions = [p for p in self.counters.partitions if p not in gone]
        log.info("partitions revoked", extra={"partitions": [p.partition for p in partitions]})

    def run(self) -> None:
        """Consume until stopped, then finish the batch, commit and leave the group."""
        counters = self.counters
        counters.group = self.settings.group(self.stage.name)
        self.stage.attach(counters)
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
                    self.in_flight.clear()
                    if not self._resume_after_outage():
                        self.stop.wait(self.backoff.next_delay())
                    continue
                if messages and self.transactions is not None:
                    self._handle_in_transaction(self.transactions, messages)
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
            self.journal.close()
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
        got = self.consumer.consume(1, IDLE_ACK_WAIT_S if self.in_flight else IDLE_POLL_S)
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
            self.work.handle(messages, batch.delivery)
        except TransientError as exc:
            # outputs already produced from this batch are produced again on the retry
            self._retry_later(str(exc), [batch])
            return
        self.backoff.reset()
        self.in_flight.append(batch)

    def _handle_in_transaction(self, transactions: Transactions,
                               messages: list[Message]) -> None:
        """exactly_once: produce the batch's outputs and commit its offsets atomically."""
        messages = transactions.still_owned(messages)
        if not messages:
            return
        batch = InFlight(offset_ranges(messages))
        failed = transactions.run(batch, partial(self.work.handle, messages, batch.delivery))
        if failed is None:
            self.backoff.reset()
            self.counters.last_commit_at = utcnow()
        elif failed.outcome_known:
            self._retry_later(failed.error, [batch])
        else:  # the commit's outcome is unknown: go on from what the group committed
            self._retry_from_commits(failed.error, batch)

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
        self.output.serve_acknowledgements(IDLE_ACK_WAIT_S if idle and self.in_flight else 0.0)
        now = time.monotonic()
        rejected = self.in_flight.retire(now)
        if rejected is not None:
            if rejected.overdue:
                self.output.abandon_unacknowledged()
            self._retry_later(rejected.reason, rejected.batches)
        if commit and self.in_flight.commit_due(now, idle):
            self._commit(asynchronous=True)

    def _drain(self, timeout_s: float) -> None:
        """Wait for every batch in flight, then commit synchronously (revoke, stop)."""
        deadline = time.monotonic() + timeout_s
        while self.in_flight and time.monotonic() < deadline:
            self._settle(idle=True, commit=False)
        if self.in_flight:
            log.warning("batches left unacknowledged; their records will be read again",
                        extra={"batches": len(self.in_flight)})
            self.in_flight.drop_unacknowledged()
        if self.in_flight.committable:
            self._commit(asynchronous=False)

    def _export_lag(self) -> None:
        """Before each heartbeat: the group's lag per partition, as a metric; a crash loop
        reported at start is over once the process has lived through the window."""
        now = time.monotonic()
        if now - self._started > CRASH_LOOP_WINDOW_S:
            self.counters.set_fault("crash_loop", None)
        if now - self._lag_checked < 5.0:
            return
        self._lag_checked = now
        if self._lag_probe is None:
            self._lag_probe = LagProbe(self.settings, self.stage.name, timeout_s=2.0)
        lags = self._lag_probe.partition_lags(self.output.produced_offsets())
        for partition, lag in (lags or {}).items():
            self.publisher.metrics.consumer_lag.labels(self.stage.name, str(partition)).set(lag)

    def _commit(self, asynchronous: bool) -> None:
        """Commit the offsets of every acknowledged batch not committed yet."""
        offsets = self.in_flight.take_committable()
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
            self.counters.last_commit_at = utcnow()
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


def crash_loop_fault(service: str, settings: Settings) -> str:
    """What a process restarted in a crash loop reports about itself."""
    return (f"{service} exited {settings.recent_crashes} times in the last "
            f"{CRASH_LOOP_WINDOW_S / 60:.0f} minutes and was restarted: a record that kills it "
            f"is dead-lettered as crash_loop after poison_pill_limit={settings.poison_pill_limit} "
            "crashes; otherwise read its log for the cause (out of memory, a native crash)")


def prefetch_limits(batch_size: int) -> dict[str, int]:
    """Fetch ahead two batches per partition, not librdkafka's 100,000 records.

    With a backlog, librdkafka would otherwise send fetch after fetch, each bringing the one
    or two records produced since the last: at full speed on 2 cores that was 1.9 of the
    broker's 4.9 CPU-ms per frame and 6 % of the frames/s (docs/benchmarks.md). With a short
    local queue it fetches when the queue runs low (checked every 5 ms), and an idle
    consumer, whose queue is empty, fetches as before.
    """
    return {"queued.min.messages": max(16, 2 * batch_size), "fetch.queue.backoff.ms": 5}


def run_stage(stage: Stage, settings: Settings, stop: StopSignal | None = None) -> None:
    """Run ``stage`` until SIGTERM/SIGINT (or ``stop``)."""
    StageRunner(stage, settings, stop).run()
