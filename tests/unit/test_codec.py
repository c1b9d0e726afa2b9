"""Avro single-object encoding: round trips, schema evolution both ways, clear rejections."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from framewire.contracts import (
    DeadLetter,
    Detection,
    FrameCaptured,
    FramePreprocessed,
    InferenceResult,
    ServiceHeartbeat,
    utcnow,
)
from framewire.contracts.codec import MAGIC, Codec, load_schema_versions
from framewire.errors import DataError


def frame(**changes) -> FrameCaptured:
    base = dict(frame_id="01HZX", camera_id="cam-1", seq=3, captured_at=utcnow(),
                ingested_at=utcnow(), source="test", content_type="image/jpeg", width=64,
                height=48, image=b"\xff\xd8jpeg")
    return FrameCaptured(**{**base, **changes})


def schema_texts() -> dict[str, str]:
    folder = resources.files("framewire.schemas")
    return {p.name: p.read_text() for p in folder.iterdir() if p.name.endswith(".avsc")}


def with_v2_frame_captured(texts: dict[str, str]) -> dict[str, str]:
    """The shipped schemas plus a FrameCaptured v2 that adds a defaulted field."""
    v2 = json.loads(texts["FrameCaptured.v1.avsc"])
    v2["fields"].append({"name": "exposure_ms", "type": ["null", "float"], "default": None})
    return {**texts, "FrameCaptured.v2.avsc": json.dumps(v2)}


def test_every_contract_round_trips():
    codec = Codec()
    now = utcnow()
    records = [
        frame(),
        frame(image=None, image_uri="file:///blobs/ab.bin", image_sha256="ab" * 32),
        FramePreprocessed(frame_id="f", camera_id="c", seq=1, captured_at=now, ingested_at=now,
                          preprocessed_at=now, orig_width=1280, orig_height=720,
                          input_width=640, input_height=384, scale=0.5, pad_x=0.0, pad_y=12.0,
                          pixel_format="jpeg", brightness=120.5, sharpness=300.0,
                          too_dark=False, blurred=False, frozen=True, pixels=b"px"),
        InferenceResult(frame_id="f", camera_id="c", seq=1, captured_at=now, ingested_at=now,
                        preprocessed_at=now, inferred_at=now, orig_width=1280, orig_height=720,
                        model_name="centerface", model_version="1.5.0", provider="CPU",
                        too_dark=False, blurred=False, frozen=False,
                        detections=[Detection("face", 0, 0.875, 1.5, 2.5, 30.0, 40.0)]),
        DeadLetter(service="preprocess", code="corrupt_image", reason="bad", failed_at=now,
                   source_topic="frames.raw", source_partition=3, source_offset=42,
                   camera_id="c", frame_id="f", key=b"c", payload=b"\x00\x01"),
        ServiceHeartbeat(service="storage", instance="h:1", host="h", pid=1, version="0.1.0",
                         sent_at=now, state="running", partitions=["detections:0"],
                         records_in=5, records_out=5, dead_lettered=0,
                         produced_offsets={"frames.ready:3": 17}),
    ]
    for record in records:
        encoded = codec.encode(record)
        assert encoded[:2] == MAGIC
        assert codec.decode(encoded, type(record)) == record


def test_v2_reader_reads_v1_records_with_the_default():
    texts = schema_texts()
    old, new = Codec(load_schema_versions(texts)), Codec(load_schema_versions(
        with_v2_frame_captured(texts)))
    decoded = new.decode_dict(old.encode(frame()), FrameCaptured.SCHEMA)
    assert decoded["exposure_ms"] is None
    assert decoded["frame_id"] == "01HZX"


def test_v1_reader_reads_v2_records_ignoring_the_new_field():
    texts = schema_texts()
    old, new = Codec(load_schema_versions(texts)), Codec(load_schema_versions(
        with_v2_frame_captured(texts)))
    data = {**frame().to_avro(), "exposure_ms": 8.5}
    encoded = new.encode_dict(FrameCaptured.SCHEMA, data)
    # the v1-only reader does not know v2's fingerprint: it must be told about v2 ...
    with pytest.raises(DataError) as err:
        old.decode(encoded, FrameCaptured)
    assert err.value.code == "unknown_schema"
    # ... and a reader that ships v2 but reads as v1 (rolling back) resolves it
    rollback = Codec([v for v in load_schema_versions(with_v2_frame_captured(texts))])
    rollback._latest[FrameCaptured.SCHEMA] = next(
        v for v in load_schema_versions(texts) if v.full_name == FrameCaptured.SCHEMA)
    assert rollback.decode(encoded, FrameCaptured) == frame(
        captured_at=data["captured_at"], ingested_at=data["ingested_at"])


@pytest.mark.parametrize(("payload", "code"), [
    (b"", "empty_record"),
    (b"{\"json\": true}", "not_avro"),
    (MAGIC + b"\x00" * 8 + b"body", "unknown_schema"),
])
def test_undecodable_payloads_are_rejected_with_distinct_codes(payload, code):
    with pytest.raises(DataError) as err:
        Codec().decode(payload, FrameCaptured)
    assert err.value.code == code
    assert err.value.reason


def test_a_record_of_another_type_is_rejected_as_wrong_schema():
    codec = Codec()
    letter = DeadLetter(service="s", code="c", reason="r", failed_at=utcnow())
    with pytest.raises(DataError) as err:
        codec.decode(codec.encode(letter), FrameCaptured)
    assert err.value.code == "wrong_schema"
    assert "DeadLetter" in err.value.reason


def test_a_truncated_body_is_rejected_as_undecodable():
    codec = Codec()
    encoded = codec.encode(frame())
    with pytest.raises(DataError) as err:
        codec.decode(encoded[:14], FrameCaptured)
    assert err.value.code == "undecodable"


def test_fingerprint_is_the_crc64_avro_of_the_canonical_form():
    # the Avro spec's CRC-64-AVRO of the schema "int" is 0x7275d51a3f395c8f
    from framewire.contracts.codec import schema_fingerprint

    assert schema_fingerprint("int") == 0x7275D51A3F395C8F


def test_a_v1_heartbeat_from_an_older_service_reads_with_v2_defaults():
    from framewire.contracts.codec import load_schema_versions

    texts = schema_texts()
    v1_only = {k: v for k, v in texts.items()
               if not k.startswith("ServiceHeartbeat.") or k == "ServiceHeartbeat.v1.avsc"}
    old = Codec(load_schema_versions(v1_only))
    beat = {"schema_version": 1, "service": "storage", "instance": "h:1", "host": "h", "pid": 1,
            "version": "0.0.9", "sent_at": utcnow(), "state": "running", "group": None,
            "partitions": [], "records_in": 1, "records_out": 1, "dead_lettered": 0,
            "produced_offsets": {}}
    decoded = Codec().decode(old.encode_dict(ServiceHeartbeat.SCHEMA, beat), ServiceHeartbeat)
    assert decoded.restarts == 0 and decoded.broker_ok is True
    assert decoded.stalled_cameras == [] and decoded.last_commit_at is None
    assert decoded.cpu_s_per_1000_frames is None


def test_a_v3_heartbeat_carries_its_cpu_cost_and_v2_readers_skip_it():
    from framewire.contracts.codec import load_schema_versions

    texts = schema_texts()
    beat = ServiceHeartbeat(service="inference", instance="h:2", host="h", pid=2,
                            version="0.1.0", sent_at=utcnow(), state="running", partitions=[],
                            records_in=10, records_out=10, dead_lettered=0,
                            produced_offsets={}, cpu_s_per_1000_frames=34.5)
    data = Codec().encode(beat)
    assert Codec().decode(data, ServiceHeartbeat).cpu_s_per_1000_frames == 34.5
    # a v2-era status reader that was told about v3 reads the fields it knows
    v2_reader = Codec(load_schema_versions(texts))
    assert v2_reader.decode(data, ServiceHeartbeat).records_out == 10


def test_a_v4_heartbeat_carries_its_rate_and_power():
    beat = ServiceHeartbeat(service="inference", instance="h:3", host="h", pid=3,
                            version="0.1.0", sent_at=utcnow(), state="running", partitions=[],
                            records_in=10, records_out=10, dead_lettered=0,
                            produced_offsets={}, out_per_s=25.0, host_watts=65.5,
                            gpu_watts=None)
    decoded = Codec().decode(Codec().encode(beat), ServiceHeartbeat)
    assert (decoded.out_per_s, decoded.host_watts, decoded.gpu_watts) == (25.0, 65.5, None)
