"""One frame's journey: traces across all four services, OTLP export, and /metrics."""

from __future__ import annotations

import gzip
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client.parser import text_string_to_metric_families

from framewire.ops.status import site_status
from framewire.store.db import open_database
from framewire.telemetry.spanstore import trace_of_frame
from tests.fixtures.images import jpeg, jpeg_claiming_size, synthetic_frame
from tests.fixtures.kafka import Site, wait_until
from tests.integration.test_pipeline import STAGES, publish, stored_count

pytestmark = pytest.mark.integration


def frame_spans(site: Site, frame_id: str) -> list:
    db = open_database(site.settings.resolved_span_database_url)
    try:
        return trace_of_frame(db, frame_id)
    finally:
        db.close()


def only_frame_id(site: Site) -> str:
    db = open_database(site.settings.resolved_database_url)
    try:
        (frame_id,) = db.frame_ids()
        return frame_id
    finally:
        db.close()


def test_one_frame_makes_one_trace_with_correctly_parented_spans_from_all_four_services(
        site: Site):
    site.start(*STAGES)
    publish(site, [("cam-tr", jpeg(synthetic_frame(1)))])
    wait_until(lambda: stored_count(site) == 1, 120, "the frame to be stored")
    frame_id = only_frame_id(site)
    spans = wait_until(lambda: (s := frame_spans(site, frame_id)) and
                       {x.service for x in s} >= {"ingest", *STAGES} and
                       any(x.name == "storage work" for x in s) and s, 30, "spans of all four")
    assert len({s.trace_id for s in spans}) == 1
    by_name = {s.name: s for s in spans}
    chain = ["ingest frame", "preprocess process", "inference process", "storage process"]
    for parent, child in zip(chain, chain[1:], strict=False):
        assert by_name[child].parent_id == by_name[parent].span_id, (child, parent)
    for name in chain:
        assert by_name[name].frame_id == frame_id
        assert by_name[name].camera_id == "cam-tr"
    assert by_name["inference work"].parent_id == by_name["inference process"].span_id
    # a batch of one frame: the model's own span is in the frame's trace, under its work
    assert by_name["model run"].parent_id == by_name["inference work"].span_id
    consumed = by_name["inference process"].attributes
    assert consumed["messaging.system"] == "kafka"
    assert consumed["messaging.destination.name"] == site.settings.topic("frames.ready")
    assert "messaging.kafka.offset" in consumed


def test_a_dead_lettered_frame_trace_ends_in_an_error_span_with_the_reason(site: Site):
    site.env["FRAMEWIRE_TRACE_SAMPLE_RATIO"] = "0.000001"  # kept although unsampled
    site.start("preprocess")
    publish(site, [("cam-bomb", jpeg_claiming_size(60000, 60000))])

    def error_spans():
        db = open_database(site.settings.resolved_span_database_url)
        try:
            import sqlalchemy as sa

            from framewire.store.db import span_table

            with db.engine.connect() as conn:
                return conn.execute(sa.select(span_table).where(
                    span_table.c.status == "error")).fetchall()
        finally:
            db.close()

    (row,) = wait_until(error_spans, 60, "the dead-letter span")
    assert row.service == "preprocess"
    assert row.attributes["framewire.deadletter.code"] == "too_many_pixels"
    assert "60000" in row.attributes["status.description"]


class _OtlpReceiver(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _OtlpHandler)
        self.spans: list[tuple[str, str, dict]] = []


class _OtlpHandler(BaseHTTPRequestHandler):
    server: _OtlpReceiver

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest.FromString(body)
        for rs in request.resource_spans:
            service = next(a.value.string_value for a in rs.resource.attributes
                           if a.key == "service.name")
            for ss in rs.scope_spans:
                for span in ss.spans:
                    attrs = {a.key: a.value.string_value for a in span.attributes}
                    self.server.spans.append((service, span.name, attrs))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def otlp_receiver() -> Iterator[_OtlpReceiver]:
    server = _OtlpReceiver()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.slow  # make test keeps the embedded span store's traces, the same spans
def test_spans_go_to_the_otlp_endpoint_named_by_the_standard_variables(site: Site,
                                                                       otlp_receiver):
    site.env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{otlp_receiver.server_port}"
    site.start(*STAGES)
    publish(site, [("cam-otlp", jpeg(synthetic_frame(2)))])
    wait_until(lambda: stored_count(site) == 1, 120, "the frame to be stored")
    frame_id = only_frame_id(site)

    def services_seen():
        return {svc for svc, _, attrs in otlp_receiver.spans
                if attrs.get("framewire.frame_id") == frame_id}

    wait_until(lambda: services_seen() >= {f"framewire-{s}" for s in STAGES}, 30,
               "spans of the three stages at the OTLP receiver")


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = sample.name + "".join(f",{k}={v}" for k, v in sorted(sample.labels.items()))
            values[key] = sample.value
    return values


def test_metrics_parse_counters_move_and_lag_returns_to_zero(site: Site):
    site.start(*STAGES)

    def ports():
        found = {s.service: [b.metrics_port for b in s.alive] for s in site_status(site.settings)}
        return found if all(found.get(n) and all(found[n]) for n in STAGES) else None

    port = {name: p[0] for name, p in wait_until(ports, 60, "metrics ports").items()
            if name in STAGES}
    before = scrape(port["storage"])
    publish(site, [("cam-m", jpeg(synthetic_frame(i))) for i in range(5)])
    wait_until(lambda: stored_count(site) == 5, 120, "5 stored")
    after = {name: scrape(p) for name, p in port.items()}
    assert after["storage"]["framewire_records_out_total,service=storage"] - \
        before.get("framewire_records_out_total,service=storage", 0) == 5
    assert after["preprocess"]["framewire_records_in_total,service=preprocess"] == 5
    assert after["storage"]["framewire_end_to_end_seconds_count"] == 5
    assert "process_resident_memory_bytes" in after["inference"]
    assert after["inference"]["framewire_model_info,model=centerface,provider=CPUExecutionProvider"
                              ",version=1.5.0"] == 1
    wait_until(lambda: all(v == 0 for k, v in scrape(port["storage"]).items()
                           if k.startswith("framewire_consumer_lag,")) and
               any(k.startswith("framewire_consumer_lag,") for k in scrape(port["storage"])),
               30, "storage lag metrics back to 0")
