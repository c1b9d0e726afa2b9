"""Confluent wire format through a schema registry: what a producer writes, a consumer reads."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from importlib import resources

import pytest
from confluent_kafka.schema_registry import SchemaRegistryError

from framewire.contracts import DeadLetter, Detection, FrameHeader, InferenceResult, utcnow
from framewire.contracts.codec import Codec, RegistryCodec, load_schema_versions, make_codec
from framewire.errors import ConfigError, DataError

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def letter() -> DeadLetter:
    return DeadLetter(service="preprocess", code="corrupt_image", reason="bad", failed_at=utcnow(),
                      source_topic="frames.raw", source_partition=1, source_offset=9,
                      camera_id="cam-1", payload=b"\xff\xd8")


def test_a_record_written_by_one_process_is_read_by_another_through_the_registry(schema_registry):
    url = f"http://127.0.0.1:{schema_registry.server_port}"
    producer, consumer = RegistryCodec(url), RegistryCodec(url)
    record = letter()
    encoded = producer.encode(record)
    assert encoded[0] == 0  # Confluent magic byte, then a 4-byte schema id
    assert consumer.decode(encoded, DeadLetter) == record
    assert "io.framewire.DeadLetter" in schema_registry.subjects


def test_make_codec_picks_the_registry_only_when_a_url_is_configured(schema_registry):
    assert type(make_codec(None)) is Codec
    assert isinstance(make_codec(f"http://127.0.0.1:{schema_registry.server_port}"),
                      RegistryCodec)


def test_single_object_records_are_rejected_by_the_registry_codec(schema_registry):
    codec = RegistryCodec(f"http://127.0.0.1:{schema_registry.server_port}")
    with pytest.raises(DataError) as err:
        codec.decode(Codec().encode(letter()), DeadLetter)
    assert err.value.code == "not_avro"


def test_an_unknown_schema_id_is_dead_lettered_not_raised(schema_registry):
    codec = RegistryCodec(f"http://127.0.0.1:{schema_registry.server_port}")
    with pytest.raises(DataError) as err:
        codec.decode(b"\x00\x00\x00\x03\xe7" + b"\x02", InferenceResult)
    assert err.value.code == "undecodable"


def result() -> InferenceResult:
    return InferenceResult(
        header=FrameHeader("01JREG", "cam-1", 4, T0, T0, "file:///blobs/ab.bin"),
        preprocessed_at=T0, inferred_at=T0, orig_width=640, orig_height=480,
        model_name="centerface", model_version="1.5.0", provider="CPUExecutionProvider",
        too_dark=False, blurred=False, frozen=False,
        detections=[Detection("face", 0, 0.75, 1.5, 2.5, 30.0, 40.0)])


def test_a_frame_record_with_its_header_round_trips_through_the_registry(schema_registry):
    url = f"http://127.0.0.1:{schema_registry.server_port}"
    record = result()
    assert RegistryCodec(url).decode(RegistryCodec(url).encode(record), InferenceResult) == record


def test_a_v1_result_an_older_producer_registered_reads_as_the_current_type(schema_registry):
    url = f"http://127.0.0.1:{schema_registry.server_port}"
    v1_only = [v for v in load_schema_versions()
               if v.full_name != InferenceResult.SCHEMA or v.version == 1]
    flat = {**result().to_avro(), **result().header.to_avro(), "schema_version": 1}
    del flat["header"]
    encoded = RegistryCodec(url, v1_only).encode_dict(InferenceResult.SCHEMA, flat)
    assert RegistryCodec(url).decode(encoded, InferenceResult) == replace(result(),
                                                                          schema_version=1)


def test_a_registry_refusing_the_new_version_says_which_subject_and_what_to_do(schema_registry):
    codec = RegistryCodec(f"http://127.0.0.1:{schema_registry.server_port}")

    def incompatible(data, ctx):
        raise SchemaRegistryError(409, 409, "Schema being registered is incompatible")

    codec._serializers[InferenceResult.SCHEMA] = incompatible
    with pytest.raises(ConfigError, match="compatibility to NONE") as err:
        codec.encode(result())
    assert f"io.framewire.InferenceResult v{Codec().latest(InferenceResult.SCHEMA).version}" \
        in str(err.value)


def test_a_newer_producers_unshipped_version_is_resolved_to_the_newest_known(schema_registry):
    url = f"http://127.0.0.1:{schema_registry.server_port}"
    sent = letter()
    newer = dict(sent.to_avro(), retry_after_s=30)
    v1 = json.loads(resources.files("framewire.schemas").joinpath("DeadLetter.v1.avsc")
                    .read_text())
    v1["fields"].append({"name": "retry_after_s", "type": "int", "default": 0})
    texts = {"DeadLetter.v2.avsc": json.dumps(v1)}
    encoded = RegistryCodec(url, load_schema_versions(texts)).encode_dict(DeadLetter.SCHEMA,
                                                                          newer)
    assert RegistryCodec(url).decode(encoded, DeadLetter) == sent
