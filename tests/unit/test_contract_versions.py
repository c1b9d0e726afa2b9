"""Every shipped schema version stays readable: records written by older producers decode into
today's types with the same values, and what the codec writes is always the newest version."""

from __future__ import annotations

import io
import json
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import fastavro
import pytest
from fastavro.schema import to_parsing_canonical_form

from framewire.contracts import (
    CONTRACTS,
    HEADER_FIELDS,
    Detection,
    FrameCaptured,
    FrameHeader,
    FramePreprocessed,
    InferenceResult,
)
from framewire.contracts.codec import MAGIC, Codec, load_schema_versions, schema_fingerprint
from framewire.errors import ConfigError

T0 = datetime(2025, 3, 1, 12, 0, 0, 250000, tzinfo=UTC)
SCHEMA_FILES = sorted(
    p.name for p in resources.files("framewire.schemas").iterdir() if p.name.endswith(".avsc")
)


def parsed_schema(filename: str) -> Any:
    text = resources.files("framewire.schemas").joinpath(filename).read_text()
    return fastavro.parse_schema(json.loads(text), named_schemas={})


def single_object(parsed: Any, data: dict[str, Any]) -> bytes:
    """``data`` as a producer with schema ``parsed`` writes it, with fastavro alone."""
    body = io.BytesIO()
    fastavro.schemaless_writer(body, parsed, data)
    return MAGIC + schema_fingerprint(parsed).to_bytes(8, "little") + body.getvalue()


def sample(schema: Any, name: str, n: list[int]) -> Any:
    """A value of ``schema`` for field ``name``; every call draws new numbers from ``n``, so
    no two fields hold the same value and a mix-up shows."""
    n[0] += 1
    if isinstance(schema, list):  # a union: its last branch, never the null
        return sample(schema[-1], name, n)
    if isinstance(schema, dict):
        kind = schema["type"]
        if schema.get("logicalType") == "timestamp-micros":
            return T0 + timedelta(seconds=n[0])
        if kind == "record":
            return {f["name"]: sample(f["type"], f["name"], n) for f in schema["fields"]}
        if kind == "array":
            return [sample(schema["items"], name, n)]
        if kind == "map":
            return {f"{name}-key": sample(schema["values"], name, n)}
        return sample(kind, name, n)
    return {"string": f"{name}-{n[0]}", "bytes": f"{name}-{n[0]}".encode(), "int": n[0],
            "long": 2**40 + n[0], "float": n[0] + 0.5, "double": n[0] + 0.25,
            "boolean": n[0] % 2 == 0}[schema]


def flat(data: dict[str, Any]) -> dict[str, Any]:
    """A record dict with its header's fields at the top level, as v1 frame records had them."""
    header = data.get("header", {})
    return {**{k: v for k, v in data.items() if k != "header"}, **header}


@pytest.mark.parametrize("filename", SCHEMA_FILES)
def test_every_shipped_version_decodes_into_the_current_type_with_its_values(filename: str):
    parsed = parsed_schema(filename)
    written = sample(parsed, parsed["name"], [0])
    record = Codec().decode(single_object(parsed, written), CONTRACTS[parsed["name"]])
    assert type(record) is CONTRACTS[parsed["name"]]
    assert flat(record.to_avro()) | flat(written) == flat(record.to_avro())


def test_a_v1_frame_record_decodes_with_the_same_field_values():
    written = {"schema_version": 1, "frame_id": "01JV1", "camera_id": "cam-old", "seq": 41,
               "captured_at": T0, "ingested_at": T0 + timedelta(milliseconds=3),
               "source": "rtsp://cam-old/stream", "content_type": "image/jpeg", "width": 1280,
               "height": 720, "image": None, "image_uri": "file:///blobs/ab.bin",
               "image_sha256": "ab" * 32}
    frame = Codec().decode(single_object(parsed_schema("FrameCaptured.v1.avsc"), written),
                           FrameCaptured)
    assert frame.header == FrameHeader(frame_id="01JV1", camera_id="cam-old", seq=41,
                                       captured_at=T0, ingested_at=T0 + timedelta(milliseconds=3),
                                       image_uri="file:///blobs/ab.bin")
    assert (frame.source, frame.width, frame.height, frame.image, frame.image_sha256) == (
        "rtsp://cam-old/stream", 1280, 720, None, "ab" * 32)
    assert frame.schema_version == 1  # as its producer wrote it


def test_a_v1_inference_result_decodes_with_its_detections():
    written = {"schema_version": 1, "frame_id": "01JV1R", "camera_id": "cam-old", "seq": 2,
               "captured_at": T0, "ingested_at": T0, "preprocessed_at": T0, "inferred_at": T0,
               "orig_width": 640, "orig_height": 480, "model_name": "centerface",
               "model_version": "1.5.0", "provider": "CPUExecutionProvider", "image_uri": None,
               "too_dark": False, "blurred": True, "frozen": False,
               "detections": [{"label": "face", "class_id": 0, "score": 0.75, "x1": 1.5,
                               "y1": 2.5, "x2": 30.0, "y2": 40.0}]}
    result = Codec().decode(single_object(parsed_schema("InferenceResult.v1.avsc"), written),
                            InferenceResult)
    assert result.header == FrameHeader("01JV1R", "cam-old", 2, T0, T0, None)
    assert result.detections == [Detection("face", 0, 0.75, 1.5, 2.5, 30.0, 40.0)]
    assert (result.model_name, result.blurred, result.frame_id) == ("centerface", True, "01JV1R")


@pytest.mark.parametrize("contract", sorted(CONTRACTS))
def test_encode_writes_the_newest_version(contract: str):
    codec = Codec()
    newest = max((v for v in load_schema_versions() if v.full_name == contract),
                 key=lambda v: v.version)
    parsed = parsed_schema(f"{contract.rsplit('.', 1)[1]}.v1.avsc")
    record = codec.decode(single_object(parsed, sample(parsed, contract, [0])),
                          CONTRACTS[contract])
    assert codec.encode(record)[2:10] == newest.fingerprint.to_bytes(8, "little")


@pytest.mark.parametrize("contract", sorted(CONTRACTS))
def test_each_type_has_the_fields_of_its_newest_schema(contract: str):
    newest = Codec().latest(contract).parsed
    assert {f.name for f in fields(CONTRACTS[contract])} == {f["name"] for f in newest["fields"]}


def test_every_schema_with_a_frame_header_defines_it_alike():
    headers: dict[str, set[str]] = {}
    for filename in SCHEMA_FILES:
        for f in parsed_schema(filename)["fields"]:
            if isinstance(f["type"], dict) and f["type"].get("name") == "io.framewire.FrameHeader":
                version = filename.rsplit(".", 2)[-2]
                headers.setdefault(version, set()).add(to_parsing_canonical_form(f["type"]))
    # FrameCaptured, FramePreprocessed and InferenceResult: v2 brought the header, v3 privacy
    assert sorted(headers) == ["v2", "v3"]
    assert all(len(alike) == 1 for alike in headers.values())
    (newest,) = headers["v3"]
    assert tuple(f["name"] for f in json.loads(newest)["fields"]) == HEADER_FIELDS


def test_the_frame_records_newest_versions_carry_the_header_first():
    for contract in (FrameCaptured, FramePreprocessed, InferenceResult):
        assert [f.name for f in fields(contract)][0] == "header"
        schema_fields = Codec().latest(contract.SCHEMA).parsed["fields"]
        assert [f["name"] for f in schema_fields][:2] == ["schema_version", "header"]
        assert not set(HEADER_FIELDS) & {f["name"] for f in schema_fields}


# A made-up contract whose versions need upgrades (1 → 2 renames a to b, 3 → 4 renames b to
# d) with changes Avro resolution makes between them (v3 adds c, v5 adds e).
THING = {
    "Thing.v1.avsc": [{"name": "a", "type": "string"}],
    "Thing.v2.avsc": [{"name": "b", "type": "string"}],
    "Thing.v3.avsc": [{"name": "b", "type": "string"},
                      {"name": "c", "type": "string", "default": "c-default"}],
    "Thing.v4.avsc": [{"name": "d", "type": "string"}, {"name": "c", "type": "string"}],
    "Thing.v5.avsc": [{"name": "d", "type": "string"}, {"name": "c", "type": "string"},
                      {"name": "e", "type": "int", "default": 5}],
}
THING_UPGRADES = {
    ("io.test.Thing", 1): lambda data: {"b": data["a"]},
    ("io.test.Thing", 3): lambda data: {"d": data["b"], "c": data["c"]},
}


def thing_codec(files: dict[str, list[dict[str, Any]]]) -> Codec:
    texts = {name: json.dumps({"type": "record", "name": "Thing", "namespace": "io.test",
                               "fields": fs}) for name, fs in files.items()}
    return Codec(load_schema_versions(texts), THING_UPGRADES)


@pytest.mark.parametrize(("filename", "data"), [
    ("Thing.v1.avsc", {"a": "x"}),
    ("Thing.v2.avsc", {"b": "x"}),
    ("Thing.v3.avsc", {"b": "x", "c": "c-default"}),
    ("Thing.v4.avsc", {"d": "x", "c": "c-default"}),
])
def test_upgrades_and_resolution_chain_from_any_version_to_the_newest(filename, data):
    old = thing_codec({filename: THING[filename]})
    decoded = thing_codec(THING).decode_dict(old.encode_dict("io.test.Thing", data),
                                             "io.test.Thing")
    assert decoded == {"d": "x", "c": "c-default", "e": 5}


def test_a_missing_version_an_upgrade_goes_through_fails_at_start():
    with pytest.raises(ConfigError, match="Thing v2"):
        thing_codec({k: v for k, v in THING.items() if k != "Thing.v2.avsc"})
