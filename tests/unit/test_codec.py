"""Avro single-object encoding: round trips, schema evolution both ways, clear rejections."""

from __future__ import annotations

import json
from dataclasses import astuple, replace
from importlib import resources

import pytest

from framewire.contracts import (
    HEADER_FIELDS,
    DeadLetter,
    Detection,
    FrameCaptured,
    FrameHeader,
    FramePreprocessed,
    InferenceResult,
    ServiceHeartbeat,
    utcnow,
)
from framewire.contracts.codec import MAGIC, Codec, load_schema_versions
from framewire.errors import DataError


def frame(**changes) -> FrameCaptured:
    header = FrameHeader(frame_id="01HZX", camera_id="cam-1", seq=3, captured_at=utcnow(),
                         ingested_at=utcnow())
    base = dict(header=header, source="test", content_type="image/jpeg", width=64, height=48,
                image=b"\xff\xd8jpeg")
    return FrameCaptured(**{**base, **changes})


def schema_texts() -> dict[str, str]:
    folder = resources.files("framewire.schemas")
    return {p.name: p.read_text() for p in folder.iterdir() if p.name.endswith(".avsc")}


def with_newer_frame_captured(texts: dict[str, str]) -> dict[str, str]:
    """The shipped schemas plus a FrameCaptured v4 that adds a defaulted field to v3."""
    v4 = json.loads(texts["FrameCaptured.v3.avsc"])
    v4["fields"].append({"name": "exposure_ms", "type": ["null", "float"], "default": None})
    return {**texts, "FrameCaptured.v4.avsc": json.dumps(v4)}


def test_every_contract_round_trips():
    codec = Codec()
    now = utcnow()
    header = FrameHeader(frame_id="f", camera_id="c", seq=1, captured_at=now, ingested_at=now,
                         image_uri="file:///blobs/cd.bin")
    records = [
        frame(),
        frame(header=replace(frame().header, image_uri="file:///blobs/ab.bin"), image=None,
              image_sha256="ab" * 32),
        FramePreprocessed(header=header, preprocessed_at=now, orig_width=1280, orig_height=720,
                          input_width=640, input_height=384, scale=0.5, pad_x=0.0, pad_y=12.0,
                          pixel_format="jpeg", brightness=120.5, sharpness=300.0,
                          too_dark=False, blurred=False, frozen=True, pixels=b"px"),
        InferenceResult(header=header, preprocessed_at=now, inferred_at=now, orig_width=1280,
                        orig_height=720, model_name="centerface", model_version="1.5.0",
                        provider="CPU", too_dark=False, blurred=False, frozen=False,
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


def test_frame_records_read_their_header_fields_by_the_old_names():
    record = frame()
    assert (record.frame_id, record.camera_id, record.seq, record.captured_at,
            record.ingested_at, record.image_uri, record.privacy) == astuple(record.header)


def test_a_stage_carries_the_header_forward_as_it_is():
    captured = frame()
    now = utcnow()
    ready = FramePreprocessed(header=captured.header, preprocessed_at=now, orig_width=64,
                              orig_height=48, input_width=64, input_height=48, scale=1.0,
                              pad_x=0.0, pad_y=0.0, pixel_format="jpeg", brightness=1.0,
                              sharpness=1.0, too_dark=False, blurred=False, frozen=False)
    codec = Codec()
    assert codec.decode(codec.encode(ready), FramePreprocessed).header == captured.header


def test_a_newer_reader_reads_older_records_with_the_default():
    texts = schema_texts()
    old, new = Codec(load_schema_versions(texts)), Codec(load_schema_versions(
        with_newer_frame_captured(texts)))
    decoded = new.decode_dict(old.encode(frame()), FrameCaptured.SCHEMA)
    assert decoded["exposure_ms"] is None
    assert decoded["header"]["frame_id"] == "01HZX"


def test_a_v1_record_is_upgraded_then_resolved_to_a_newer_version():
    texts = schema_texts()
    v1 = {k: v for k, v in texts.items()
          if k not in ("FrameCaptured.v2.avsc", "FrameCaptured.v3.avsc")}
    data = {**frame().to_avro(), **frame().header.to_avro(), "schema_version": 1}
    del data["header"]
    encoded = Codec(load_schema_versions(v1)).encode_dict(FrameCaptured.SCHEMA, data)
    decoded = Codec(load_schema_versions(with_newer_frame_captured(texts))).decode_dict(
        encoded, FrameCaptured.SCHEMA)
    assert decoded["exposure_ms"] is None
    assert decoded["header"] == {k: data[k] for k in HEADER_FIELDS}


def test_an_older_reader_reads_newer_records_ignoring_the_new_field():
    texts = schema_texts()
    old, new = Codec(load_schema_versions(texts)), Codec(load_schema_versions(
        with_newer_frame_captured(texts)))
    data = {**frame().to_avro(), "exposure_ms": 8.5}
    encoded = new.encode_dict(FrameCaptured.SCHEMA, data)
    # the v3-only reader does not know v4's fingerprint: it must be told about v4 ...
    with pytest.raises(DataError) as err:
        old.decode(encoded, FrameCaptured)
    assert err.value.code == "unknown_schema"
    # ... and a reader that ships v4 but reads as v3 (rolling back) resolves it
    rollback = Codec(load_schema_versions(with_newer_frame_captured(texts)))
    rollback._latest[FrameCaptured.SCHEMA] = old.latest(FrameCaptured.SCHEMA)
    assert rollback.decode(encoded, FrameCaptured) == frame(
        header=FrameHeader.from_avro(data["header"]))


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
