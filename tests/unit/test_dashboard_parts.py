"""The dashboard's pure parts: the trace waterfall's geometry and where sign-in may send a
browser back to."""

from __future__ import annotations

from framewire.gateway.dashboard import local_path, waterfall


def span(span_id: str, parent: str | None, start_ms: float, end_ms: float) -> dict:
    return {"span_id": span_id, "parent_id": parent, "trace_id": "t", "service": "s",
            "name": span_id, "start_ns": int(start_ms * 1e6), "end_ns": int(end_ms * 1e6),
            "status": "OK", "attributes": {"frame_id": "f"}}


def test_waterfall_places_each_span_on_the_trace_time_line_under_its_parent():
    bars = waterfall([span("root", None, 0, 100), span("child", "root", 25, 75),
                      span("grandchild", "child", 50, 50)])
    assert [(b["offset_pct"], b["width_pct"], b["depth"]) for b in bars] == [
        (0.0, 100.0, 0), (25.0, 50.0, 1), (50.0, 0.3, 2)]  # an instant still shows
    assert bars[1]["duration_ms"] == 50.0
    assert bars[0]["attributes_json"] == '{"frame_id": "f"}'


def test_waterfall_of_a_span_whose_parent_is_elsewhere_or_a_cycle_ends():
    looped = [span("a", "b", 0, 10), span("b", "a", 0, 10), span("c", "gone", 5, 10)]
    assert [b["depth"] for b in waterfall(looped)][2] == 0
    assert waterfall([]) == []


def test_sign_in_sends_back_only_to_a_path_of_the_gateway():
    assert local_path("/cameras?edit=door-1") == "/cameras?edit=door-1"
    for elsewhere in ("//evil.example/", "/\\evil.example", "https://evil.example/", ""):
        assert local_path(elsewhere) == "/"
