"""Confluent wire format through a schema registry: what a producer writes, a consumer reads."""

from __future__ import annotations

import pytest

from framewire.contracts import DeadLetter, FrameCaptured, utcnow
from framewire.contracts.codec import Codec, RegistryCodec, make_codec
from framewire.errors import DataError


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
        codec.decode(b"\x00\x00\x00\x03\xe7" + b"\x02", FrameCaptured)
    assert err.value.code == "undecodable"
