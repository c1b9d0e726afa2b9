"""One batch's work: decode each record, run the stage on the batch, produce its outcomes
(outputs or dead letters), each record's frame trace continued through it all."""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import Message
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind

from framewire.config import Settings
from framewire.contracts import check_camera_id
from framewire.errors import DataError
from framewire.runtime.faults import Held, RecordFaults
from framewire.runtime.inflight import position
from framewire.runtime.producer import Delivery
from framewire.runtime.publisher import Publisher
from framewire.runtime.stage import Stage
from framewire.telemetry.tracing import extract, inject


class BatchHandler:
    """Handles the batches of one stage, read from its input topic, through its publisher."""

    def __init__(self, stage: Stage, settings: Settings, publisher: Publisher,
                 faults: RecordFaults | None = None) -> None:
        self.stage, self.settings, self.publisher = stage, settings, publisher
        self.topic = settings.topic(stage.input_topic)
        # runs the stage: poison records found and dead-lettered, systemic faults raised
        self.faults = faults or RecordFaults(stage, settings, publisher.counters)

    def handle(self, messages: list[Message], delivery: Delivery | None = None) -> None:
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
                outcomes = self.faults.process(
                    [r for _, r, _ in decoded],
                    [Held(*position(m), r.frame_id) for m, r, _ in decoded])
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
                                    delivery=delivery,
                                    private=getattr(record, "privacy", True))
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

    def _span_attributes(self, msg: Message) -> dict[str, Any]:
        """OpenTelemetry messaging semantic conventions for a consumed record."""
        topic, partition, offset = position(msg)
        return {"messaging.system": "kafka", "messaging.operation.type": "process",
                "messaging.destination.name": topic,
                "messaging.destination.partition.id": str(partition),
                "messaging.kafka.offset": offset,
                "messaging.consumer.group.name": self.settings.group(self.stage.name)}
