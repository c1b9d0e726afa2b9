"""Exactly-once on faust-streaming: the analytics app's changes to faust's consumer and
transactions.

Under ``processing_guarantee="exactly_once"`` faust (0.15) commits each input partition's
offsets in a transaction of its own (transactional id ``<app id>-<group>-<partition>``),
with what was sent in it, and reads at read_committed. Five faults of faust's (with
aiokafka 0.14) lost records or state after a failover, or left a partition's transaction
open for good; :class:`FixedApp` and :func:`save_in_transaction` work around them. The
consumer's faults (all but the last) are not exactly_once's alone: the analytics app runs
:class:`FixedApp` under at_least_once too.

- **Fetched records dropped.** faust hands aiokafka its set of active partitions, the very
  set its rebalance and recovery pause and resume meanwhile; aiokafka reads an empty set as
  "every partition" (``Fetcher.fetched_records``), and faust's ``Consumer.getmany`` then drops
  the records of partitions not active (and the rest of a batch when the flow stops or the
  generation changes), while the consumer's position is already past them. Nothing fetches
  them again, unless a rebalance seeks back to the committed offset. Our consumer seeks each
  partition back to the first record it fetched and did not hand on.
- **No committed offset, no seek back.** aiokafka's ``seek_to_committed`` leaves a partition
  without a committed offset where it is, past whatever was fetched and dropped; ours seeks
  such a partition to its beginning, as ``consumer_auto_offset_reset="earliest"`` says.
- **Queued records cleared after recovery.** faust resumes the partitions, awaits their
  committed offsets (``Consumer.perform_seek``), then resumes the flow, which clears every
  stream's queue (``FlowControlEvent.resume``; channels are ``clear_on_resume``): records read
  and queued meanwhile were lost, and when the worker committed meanwhile the broker's older
  answer replaced its offset, after which faust never commits the partition again
  (``Consumer._new_offset`` sees a gap). Ours clears the queues once the answer is in, reads
  each partition again from where it is committed (by itself, if newer), and resumes the
  flow without clearing.
- **Changelog end offsets.** Before reading a changelog back faust takes its end from the
  consumer's cached last stable offset (``AIOKafkaConsumerThread._highwaters``), unknown right
  after an assignment: it counts -1 and reads nothing back (the camera's state is lost), or a
  stale end, or stops on a ``ConsistencyError``. Ours asks the broker (ListOffsets at
  read_committed answers the last stable offset).
- **The state in a later transaction.** A table sends its changelog record from the
  producer's buffer after the record was handled, maybe into the transaction after the one
  that commits the record's offset: a worker killed between loses that state while its
  offset is committed. :func:`save_in_transaction` sends it before the record is acknowledged.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any, cast

import faust
from faust.transport.consumer import ensure_TP
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message, TransportT
from mode.utils.objects import cached_property
from mode.utils.queues import FlowControlEvent

log = logging.getLogger(__name__)


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        # ListOffsets at the consumer's isolation level: at read_committed the broker answers
        # the last stable offset, known whether or not the partition was fetched yet
        consumer = self._ensure_consumer()
        return cast(Mapping[TP, int], await consumer.end_offsets(partitions))

    async def seek_to_committed(self) -> Mapping[TP, int]:
        return await self.call_thread(self._seek_to_committed)

    async def _seek_to_committed(self) -> Mapping[TP, int]:
        consumer = self._ensure_consumer()
        committed = cast(Mapping[TP, int], await consumer.seek_to_committed())
        # aiokafka seeks only where an offset above 0 was committed (changelogs: recovery's)
        fresh = [tp for tp, offset in committed.items() if (not offset or offset < 0)
                 and not self.consumer._is_changelog_tp(ensure_TP(tp))]
        if fresh:
            await consumer.seek_to_beginning(*fresh)
        return committed


class _Consumer(faust_aiokafka.Consumer):
    _batch: Mapping[TP, list[Any]] | None = None

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def perform_seek(self) -> None:
        # faust resumes the stream partitions before this seek and clears the streams' queues
        # when it resumes the flow after it: records read and queued meanwhile were lost, and
        # records processed and committed meanwhile made the broker's answer stale. From the
        # answer on nothing awaits until the flow resumes: the queues are cleared here, and each
        # partition is read again from where it is committed, by this worker if newer
        committed = await self.seek_to_committed()
        self.app.flow_control.clear()
        for found, offset in committed.items():
            tp = ensure_TP(found)
            if self._is_changelog_tp(tp):
                continue
            mine = self._committed_offset.get(tp)
            start = mine if mine is not None and (not offset or offset < mine) else offset
            self._thread.seek(tp, start if start is not None and start > 0 else 0)
            self._read_offset[tp] = start if start is not None and start >= 0 else None
            if start:
                self._committed_offset[tp] = start

    async def _wait_next_records(self, timeout: float) -> tuple[Any, Any]:
        records, active = await super()._wait_next_records(timeout)
        self._batch = records
        return records, active

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        handed: dict[TP, int] = {}
        try:
            async for tp, message in super().getmany(timeout):
                handed[tp] = message.offset
                yield tp, message
        finally:
            batch, self._batch = self._batch, None
            await self._rewind(batch or {}, handed)

    async def _rewind(self, batch: Mapping[TP, list[Any]], handed: Mapping[TP, int]) -> None:
        """Seek each partition back to the first record of ``batch`` not handed on."""
        assigned = self.assignment()
        for tp, records in batch.items():
            last = handed.get(tp, -1)
            left = [r.offset for r in records if r.offset > last]
            if left and tp in assigned:
                log.info("records fetched and not handed on: fetch again",
                          extra={"partition": f"{tp.topic}:{tp.partition}",
                                 "offset": min(left)})
                await self.seek(tp, min(left))


class _FlowControl(FlowControlEvent):
    def resume(self) -> None:
        # faust's clears every stream's queue; perform_seek above clears them itself
        self._suspend.clear()
        self._resume.set()


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class FixedApp(faust.App):
    """A faust app with the consumer above (see the module's text), under either delivery."""

    def _new_transport(self) -> TransportT:
        return _Transport(self.conf.broker_consumer, self)

    @cached_property
    def flow_control(self) -> FlowControlEvent:
        return _FlowControl(loop=self.loop)


async def save_in_transaction(table: Any, key: str, value: Any | None, partition: int) -> None:
    """Set ``table[key]`` (delete it when ``value`` is None) and send its changelog record
    now, into ``partition``'s open transaction (faust's table would send it later, from the
    producer's buffer)."""
    if value is None:
        table.data.pop(key, None)
    else:
        table.data[key] = value
    await table.changelog_topic.send(
        key=key, value=value, partition=partition, key_serializer=table.key_serializer,
        value_serializer="raw" if value is None else table.value_serializer)
