"""Trace propagation through Kafka headers, and the terminal waterfall."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from framewire.cli.trace import waterfall_rows
from framewire.telemetry.spanstore import StoredSpan
from framewire.telemetry.tracing import extract, inject

TRACEPARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_a_valid_traceparent_header_continues_the_trace():
    ctx = extract([("traceparent", TRACEPARENT)])
    span_ctx = trace.get_current_span(ctx).get_span_context()
    assert format(span_ctx.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"


def test_an_invalid_or_missing_traceparent_starts_a_new_trace_instead_of_failing():
    assert extract([("traceparent", b"not-a-traceparent")]) is None
    assert extract([("traceparent", b"\xff\xfe")]) is None
    assert extract(None) is None
    assert extract([("other", b"x")]) is None


def test_inject_replaces_the_incoming_trace_context_and_keeps_other_headers():
    span = TracerProvider().get_tracer("t").start_span("s")
    headers = inject(span, [("traceparent", TRACEPARENT), ("tenant", b"acme")])
    assert ("tenant", b"acme") in headers
    (value,) = [v for k, v in headers if k == "traceparent"]
    assert value != TRACEPARENT
    assert format(span.get_span_context().trace_id, "032x").encode() in value


def span(name: str, start_ms: float, end_ms: float, status: str = "ok") -> StoredSpan:
    return StoredSpan("t", name, None, "svc", name, int(start_ms * 1e6), int(end_ms * 1e6),
                      status, None, None, {})


def test_waterfall_places_bars_by_start_and_duration():
    rows = waterfall_rows([span("a", 0, 10), span("b", 10, 20, "error")], width=20)
    (_, _, start_a, dur_a, bar_a), (_, _, start_b, dur_b, bar_b) = rows
    assert (start_a, dur_a, start_b, dur_b) == (0.0, 10.0, 10.0, 10.0)
    assert bar_a == "█" * 10
    assert bar_b == " " * 10 + "!" * 10
