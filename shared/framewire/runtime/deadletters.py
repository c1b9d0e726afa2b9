"""Dead letters: a record that could not be processed goes to the dead-letter topic with its
reason, ends its frame's trace in an error span, and is counted."""

from __future__ import annotations

import logging

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

from framewire.config import Settings
from framewire.contracts import DeadLetter, utcnow
from framewire.contracts.codec import Codec
from framewire.errors import DataError
from framewire.runtime.heartbeat import Counters
from framewire.runtime.producer import Delivery, Headers, TrackedProducer
from framewire.secrets import mask_urls_in
from framewire.store.blobs import BlobStore, inline_or_reference
from framewire.telemetry.metrics import ServiceMetrics
from framewire.telemetry.tracing import Telemetry, extract

log = logging.getLogger(__name__)


class DeadLetters:
    """Sends a service's dead letters through its producer."""

    def __init__(self, settings: Settings, service: str, codec: Codec, blobs: BlobStore,
                 output: TrackedProducer, telemetry: Telemetry, metrics: ServiceMetrics,
                 counters: Counters) -> None:
        self.settings, self.service, self.codec, self.blobs = settings, service, codec, blobs
        self.output, self.telemetry, self.metrics = output, telemetry, metrics
        self.counters = counters

    def send(self, error: DataError, *, payload: bytes | None, key: bytes | None = None,
             source: tuple[str | None, int | None, int | None] | None = None,
             camera_id: str | None = None, frame_id: str | None = None,
             headers: Headers | None = None, span: Span | None = None,
             delivery: Delivery | None = None, private: bool = True) -> None:
        """Send a record that could not be processed to the dead-letter topic, with the reason.

        The frame's trace ends in an error span with the reason (kept even when unsampled).
        URLs in the reason are masked: a letter is read by whoever reads the topic.
        ``private``: the record is a frame in privacy mode, or may be one (a record that did
        not decode): its payload is never written to the blob store.
        """
        reason = mask_urls_in(error.reason)
        if camera_id is None and key:
            camera_id = key.decode(errors="replace")
        inline, uri = payload, None
        if payload is not None:
            # a frame under privacy mode is never written to the blob store, not even as a
            # dead letter: it stays in the letter, or, past what a record holds, is not kept
            try:
                inline, uri, _ = inline_or_reference(payload, self.settings.max_inline_bytes,
                                                     self.blobs, private=private)
            except DataError:
                inline = None
                reason += f" (its {len(payload)} bytes not kept: privacy mode)"
        letter = DeadLetter(
            service=self.service, code=error.code, reason=reason, failed_at=utcnow(),
            source_topic=source[0] if source else None,
            source_partition=source[1] if source else None,
            source_offset=source[2] if source else None,
            camera_id=camera_id, frame_id=frame_id, key=key, payload=inline, payload_uri=uri,
        )
        parent = trace.set_span_in_context(span) if span is not None else extract(headers)
        if span is not None:
            span.set_status(Status(StatusCode.ERROR, reason))
        self.telemetry.record_dead_letter(parent, error.code, reason, {
            "framewire.frame_id": frame_id or "", "framewire.camera_id": camera_id or "",
            "messaging.destination.name": self.settings.topic("deadletter")})
        self.output.produce(self.settings.topic("deadletter"), self.codec.encode(letter),
                            key, headers, delivery)
        self.counters.dead_lettered += 1
        self.metrics.dead_lettered.labels(self.service, error.code).inc()
        span_ctx = trace.get_current_span(parent).get_span_context() if parent else None
        log.warning("dead-lettered", extra={
            "code": error.code, "reason": reason, "camera_id": camera_id,
            "frame_id": frame_id,
            "trace_id": format(span_ctx.trace_id, "032x") if span_ctx else None,
            "span_id": format(span_ctx.span_id, "016x") if span_ctx else None})
