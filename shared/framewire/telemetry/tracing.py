"""Traces that follow one frame across services: OpenTelemetry set-up and W3C propagation.

With standard ``OTEL_EXPORTER_OTLP_*`` variables set, spans go to that OTLP endpoint
(HTTP/protobuf). With none, they go to the embedded span store (the ``spans`` table of the
storage database), which ``framewire trace`` reads. Sampling is parent-based with the ratio
``FRAMEWIRE_TRACE_SAMPLE_RATIO``; a dead-lettered frame's span is always kept.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, TraceIdRatioBased
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from framewire import __version__
from framewire.config import Settings
from framewire.errors import ConfigError

log = logging.getLogger(__name__)
Headers = list[tuple[str, str | bytes | None]]
_PROPAGATOR = TraceContextTextMapPropagator()
TRACE_HEADERS = ("traceparent", "tracestate")


class DatabaseSpanExporter(SpanExporter):
    """Writes finished spans to the ``spans`` table (the embedded span store)."""

    def __init__(self, database_url: str) -> None:
        from framewire.store.db import open_database

        self.db = open_database(database_url)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        from framewire.telemetry.spanstore import insert_spans

        try:
            insert_spans(self.db, spans)
        except Exception:  # a failed export must never break the pipeline
            log.exception("could not store spans")
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.db.close()


class Telemetry:
    """The tracers of one service process."""

    def __init__(self, service: str, settings: Settings) -> None:
        self.service = service
        resource = Resource.create({"service.name": f"framewire-{service}",
                                    "service.version": __version__,
                                    "service.namespace": "framewire"})
        exporter = make_exporter(settings)
        self.enabled = exporter is not None and settings.trace_sample_ratio > 0
        sampler = ParentBased(TraceIdRatioBased(settings.trace_sample_ratio))
        self.provider = TracerProvider(resource=resource, sampler=sampler)
        # dead letters are always kept, sampled or not: a second provider that samples all
        self.error_provider = TracerProvider(resource=resource, sampler=ALWAYS_ON)
        if self.enabled and exporter is not None:
            processor = BatchSpanProcessor(exporter, schedule_delay_millis=500)
            self.provider.add_span_processor(processor)
            self.error_provider.add_span_processor(processor)
        # stage logic adds its own spans (model run...) through the global API
        if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            trace.set_tracer_provider(self.provider)
        self.tracer = self.provider.get_tracer("framewire")
        self.error_tracer = self.error_provider.get_tracer("framewire")

    def start(self, name: str, parent: Context | None = None,
              kind: SpanKind = SpanKind.INTERNAL, attributes: dict[str, Any] | None = None,
              links: Sequence[Link] = (), start_time: int | None = None) -> Span:
        """A span (not made current), child of ``parent`` when given."""
        return self.tracer.start_span(name, context=parent, kind=kind, attributes=attributes,
                                      links=links, start_time=start_time)

    def record_dead_letter(self, parent: Context | None, code: str, reason: str,
                           attributes: dict[str, Any]) -> None:
        """An error span that ends the frame's trace with the dead-letter reason."""
        span = self.error_tracer.start_span(f"{self.service} dead-letter", context=parent,
                                            attributes={**attributes,
                                                        "framewire.deadletter.code": code})
        span.set_status(Status(StatusCode.ERROR, reason))
        span.add_event("dead-lettered", {"reason": reason, "code": code})
        span.end()

    def shutdown(self) -> None:
        self.provider.shutdown()
        self.error_provider.shutdown()


def make_exporter(settings: Settings) -> SpanExporter | None:
    """OTLP when ``OTEL_*`` says so, else the embedded span store; None when tracing is off."""
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    traces_exporter = os.environ.get("OTEL_TRACES_EXPORTER", "")
    endpoint = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
    if traces_exporter == "none":
        return None
    if endpoint or traces_exporter == "otlp":
        protocol = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                    or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf")
        if protocol == "grpc":
            try:
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                    OTLPSpanExporter as GrpcExporter,
                )
            except ImportError:
                raise ConfigError(
                    "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs opentelemetry-exporter-otlp-proto-grpc:"
                    " pip install it, or use http/protobuf (port 4318)") from None
            return GrpcExporter()  # type: ignore[no-any-return]
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    return DatabaseSpanExporter(settings.resolved_span_database_url)


def inject(span: Span, headers: Any = None) -> Headers:
    """Headers with the span's W3C trace context replacing any incoming one."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    kept: Headers = [(k, v) for k, v in (headers or []) if k not in TRACE_HEADERS]
    return kept + [(k, v.encode()) for k, v in carrier.items()]


def extract(headers: Any) -> Context | None:
    """The upstream trace context from Kafka headers; None when absent or invalid."""
    carrier = {}
    for key, value in headers or []:
        if key in TRACE_HEADERS and value is not None:
            try:
                carrier[key] = value if isinstance(value, str) else value.decode("ascii")
            except UnicodeDecodeError:
                return None
    if "traceparent" not in carrier:
        return None
    ctx = _PROPAGATOR.extract(carrier)
    if not trace.get_current_span(ctx).get_span_context().is_valid:
        log.debug("invalid traceparent header ignored", extra={"traceparent": carrier})
        return None
    return ctx
