"""Every field of a decoded record is checked: out-of-range values are refused at decode with
invalid_record and the field named."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from framewire.contracts import (
    DeadLetter,
    Detection,
    FrameCaptured,
    FrameHeader,
    InferenceResult,
    ServiceHeartbeat,
    utcnow,
)
from framewire.contracts.codec import Codec
from framewire.errors import DataError

CODEC = Codec()
NOW = utcnow()
HEADER = FrameHeader(frame_id="01JFRAME", camera_id="cam-1", seq=3, captured_at=NOW,
                     ingested_at=NOW)
RESULT = InferenceResult(header=HEADER, preprocessed_at=NOW, inferred_at=NOW, orig_width=640,
                         orig_height=480, model_name="m", model_version="1", provider="cpu",
                         too_dark=False, blurred=False, frozen=False,
                         detections=[Detection("face", 0, 0.75, 1, 2, 3, 4)])
CAPTURED = FrameCaptured(header=HEADER, source="test", content_type="image/jpeg", width=640,
                         height=480, image=b"x")


def refusal(record) -> str:
    with pytest.raises(DataError) as caught:
        CODEC.decode(CODEC.encode(record), type(record))
    assert caught.value.code == "invalid_record"
    return caught.value.reason


def test_good_records_decode_as_they_were():
    assert CODEC.decode(CODEC.encode(RESULT), InferenceResult) == RESULT
    assert CODEC.decode(CODEC.encode(CAPTURED), FrameCaptured) == CAPTURED


@pytest.mark.parametrize(("record", "field"), [
    (replace(RESULT, header=replace(HEADER, frame_id="f" * 5000)), "header.frame_id"),
    (replace(RESULT, header=replace(HEADER, frame_id="a b")), "header.frame_id"),
    (replace(RESULT, header=replace(HEADER, seq=-1)), "header.seq"),
    (replace(RESULT, header=replace(HEADER, captured_at=datetime(9999, 1, 1, tzinfo=UTC))),
     "header.captured_at"),
    (replace(RESULT, inferred_at=NOW + timedelta(days=3)), "inferred_at"),
    (replace(RESULT, orig_width=0), "orig_width"),
    (replace(RESULT, detections=[Detection("face", 0, float("nan"), 1, 2, 3, 4)]),
     "detections[0].score"),
    (replace(RESULT, detections=[Detection("face", 0, 0.5, float("inf"), 2, 3, 4)]),
     "detections[0].x1"),
    (replace(RESULT, detections=[Detection("face", 0, 0.5, 1, 2, 3, 4)] * 10_001),
     "len(detections)"),
    (replace(RESULT, model_name="m" * 300), "model_name"),
    (replace(CAPTURED, width=70_000), "width"),
    (replace(CAPTURED, content_type="x" * 100), "content_type"),
])
def test_a_field_out_of_range_is_refused_naming_it(record, field: str):
    reason = refusal(record)
    assert reason.startswith(f"field {field} = ")
    assert len(reason) < 300  # a 5,000-character value is not repeated whole


def test_a_forged_heartbeat_is_refused():
    beat = ServiceHeartbeat(service="inference", instance="h:1", host="h", pid=1, version="1",
                            sent_at=NOW, state="running", partitions=[], records_in=-5,
                            records_out=0, dead_lettered=0, produced_offsets={})
    assert refusal(beat).startswith("field records_in = -5")
    assert refusal(replace(beat, records_in=0, service="../../etc")).startswith("field service")


def test_a_dead_letter_keeps_whatever_ids_its_bad_record_had():
    letter = DeadLetter(service="storage", code="invalid_record", reason="r", failed_at=NOW,
                        frame_id="f" * 5000, camera_id="caméra ü")
    assert CODEC.decode(CODEC.encode(letter), DeadLetter) == letter
    assert refusal(replace(letter, code="no spaces!")).startswith("field code")
