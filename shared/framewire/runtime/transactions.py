"""exactly_once: a batch's outputs and its consumed offsets commit in one Kafka transaction.

Downstream consumers read committed records only, so a batch whose transaction is aborted (or
whose process dies before the commit) leaves no output behind: it is read again from the last
committed offsets and produced once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from framewire.config import Settings
from framewire.errors import TransientError
from framewire.runtime.inflight import InFlight
from framewire.runtime.producer import TrackedProducer

log = logging.getLogger(__name__)
# past its own timeout, a send_offsets_to_transaction call is taken for hung after this long
SEND_OFFSETS_MARGIN_S = 5.0


class ProducerHung(TransientError):
    """A transactional producer call did not return: the producer is replaced, not reused."""


@dataclass
class TransactionFailed:
    """A batch's transaction did not commit: read the batch again."""

    error: str
    # False: the transaction may have committed; resume from the group's committed offsets
    outcome_known: bool


class Transactions:
    """The stage's transactional producer, driven one batch at a time."""

    def __init__(self, output: TrackedProducer, consumer: Consumer, settings: Settings) -> None:
        self.output, self.consumer, self.settings = output, consumer, settings

    def still_owned(self, messages: list[Message]) -> list[Message]:
        """Drop records of partitions revoked while the batch was read (their new owner reads
        them from the committed offsets; committing them here would produce them twice)."""
        owned = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
        return [m for m in messages if (m.topic(), m.partition()) in owned]

    def run(self, batch: InFlight, produce: Callable[[], None]) -> TransactionFailed | None:
        """Open a transaction, ``produce`` the batch's outputs in it (counted in
        ``batch.delivery``), add the batch's offsets and commit; None once committed.

        A failed transaction is aborted; one that cannot be (or whose commit's outcome is
        unknown) leaves its producer replaced. A bug or a stop aborts and propagates.
        """
        output, timeout = self.output, self.settings.ack_timeout_s
        try:
            output.begin_transaction()
        except (KafkaException, TransientError) as exc:
            return TransactionFailed(str(exc), outcome_known=True)  # nothing produced yet
        try:
            produce()
            output.producer.flush(timeout)
            if batch.delivery.failures or batch.delivery.pending:
                raise TransientError("; ".join(batch.delivery.failures[:3]) or
                                     f"{batch.delivery.pending} records unacknowledged")
            self.send_offsets(
                [TopicPartition(t, p, last + 1) for (t, p), (_, last) in batch.offsets.items()],
                timeout)
            self.commit(timeout)
        except ProducerHung as exc:  # the stuck call keeps the old producer: leave it be
            output.abandon_unacknowledged(touch_old=False)
            return TransactionFailed(str(exc), outcome_known=False)
        except (KafkaException, TransientError) as exc:
            # aborted: read again from the batch's first offsets; not: from the commits
            return TransactionFailed(str(exc), outcome_known=self.abort(exc))
        except BaseException:
            # a bug or a stop: leave no transaction open (read_committed consumers downstream
            # would wait for its timeout), then let it propagate
            self.abort(None)
            raise
        return None

    def send_offsets(self, offsets: list[TopicPartition], timeout: float) -> None:
        """send_offsets_to_transaction, given up on after ``timeout`` (plus a margin).

        librdkafka can block in it past its own timeout when the group coordinator's broker
        dies (librdkafka issues 5456 and 5511, open at 2.16): the call runs on a thread of its
        own and ProducerHung is raised when it has not returned in time.
        """
        producer, metadata = self.output.producer, self.consumer.consumer_group_metadata()
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

    def commit(self, timeout: float) -> None:
        """Commit, retrying while librdkafka says the commit may still succeed."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.output.producer.commit_transaction(max(0.1, deadline - time.monotonic()))
                return
            except KafkaException as exc:
                err = exc.args[0]
                if not (err.retriable() and time.monotonic() < deadline):
                    raise

    def abort(self, exc: Exception | None) -> bool:
        """Abort the open transaction; True when it surely left no output.

        A producer that cannot abort (fenced, fatal, broker away) is replaced: the new one
        fences the old and the coordinator aborts what it left open, but whether a commit
        that failed half-way took effect is then unknown.
        """
        err = exc.args[0] if isinstance(exc, KafkaException) else None
        if isinstance(err, KafkaError) and err.fatal():
            self.output.abandon_unacknowledged()
            return False
        try:
            self.output.producer.abort_transaction(self.settings.ack_timeout_s)
            return True
        except KafkaException as abort_error:
            log.warning("could not abort the transaction; replacing the producer",
                        extra={"error": str(abort_error)})
            self.output.abandon_unacknowledged()
            return False
