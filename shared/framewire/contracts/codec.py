"""Avro encoding of the contracts: single-object encoding, or Confluent framing with a registry.

Single-object encoding (the default): ``C3 01`` + the writer schema's CRC-64-AVRO fingerprint
(little-endian) + the Avro body. Readers look the fingerprint up among every schema version
shipped in ``schemas/`` and resolve writer → reader schema, so old and new producers coexist
during a rolling upgrade.
"""

from __future__ import annotations

import io
import json
import re
import struct
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeVar

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from framewire.contracts import CONTRACTS, Contract
from framewire.errors import ConfigError, DataError

MAGIC = b"\xc3\x01"
_HEADER = struct.Struct("<2sQ")
_FILENAME = re.compile(r"^(?P<name>[A-Za-z]+)\.v(?P<version>\d+)\.avsc$")
T = TypeVar("T", bound=Contract)


@dataclass(frozen=True)
class SchemaVersion:
    """One shipped schema file, parsed."""

    full_name: str
    version: int
    parsed: Any
    fingerprint: int


def schema_fingerprint(schema: Any) -> int:
    """CRC-64-AVRO fingerprint of a schema's parsing canonical form, as an integer."""
    # fastavro spells the fingerprint as its little-endian bytes in hex
    return int.from_bytes(
        bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO")), "little"
    )


def load_schema_versions(texts: dict[str, str] | None = None) -> list[SchemaVersion]:
    """Parse every ``Name.vN.avsc`` (from ``schemas/`` unless ``texts`` maps file names to JSON)."""
    if texts is None:
        folder = resources.files("framewire.schemas")
        texts = {p.name: p.read_text() for p in folder.iterdir() if p.name.endswith(".avsc")}
    versions = []
    for filename, text in sorted(texts.items()):
        match = _FILENAME.match(filename)
        if not match:
            raise ConfigError(f"schema file {filename!r} must be named Name.vN.avsc")
        parsed: dict[str, Any] = fastavro.parse_schema(  # type: ignore[assignment]
            json.loads(text), named_schemas={}
        )
        versions.append(
            SchemaVersion(parsed["name"], int(match["version"]), parsed, schema_fingerprint(parsed))
        )
    return versions


class Codec:
    """Encodes contracts with their newest schema; decodes any known version into the newest."""

    def __init__(self, versions: list[SchemaVersion] | None = None) -> None:
        versions = versions if versions is not None else load_schema_versions()
        self._by_fingerprint = {v.fingerprint: v for v in versions}
        self._latest: dict[str, SchemaVersion] = {}
        for v in versions:
            if v.full_name not in self._latest or v.version > self._latest[v.full_name].version:
                self._latest[v.full_name] = v
        self._headers = {
            name: _HEADER.pack(MAGIC, v.fingerprint) for name, v in self._latest.items()
        }

    def latest(self, full_name: str) -> SchemaVersion:
        try:
            return self._latest[full_name]
        except KeyError:
            raise ConfigError(f"no schema {full_name!r} in schemas/") from None

    def encode(self, record: Contract) -> bytes:
        """Single-object encoding of a record with its newest schema."""
        return self.encode_dict(record.SCHEMA, record.to_avro())

    def encode_dict(self, full_name: str, data: dict[str, Any]) -> bytes:
        schema = self.latest(full_name)
        out = io.BytesIO()
        out.write(self._headers[full_name])
        fastavro.schemaless_writer(out, schema.parsed, data)
        return out.getvalue()

    def decode(self, payload: bytes | None, expect: type[T]) -> T:
        """Decode a record written with any known version of ``expect``'s schema."""
        return expect.from_avro(self.decode_dict(payload, expect.SCHEMA))

    def decode_dict(self, payload: bytes | None, full_name: str) -> dict[str, Any]:
        if not payload:
            raise DataError("empty_record", "the record has no value; the producer sent nothing")
        if len(payload) < _HEADER.size or payload[:2] != MAGIC:
            raise DataError(
                "not_avro",
                "the record is not Avro single-object encoded (no C3 01 marker); "
                "check that the producer uses Framewire's codec or a matching schema registry",
            )
        _, fp = _HEADER.unpack_from(payload)
        writer = self._by_fingerprint.get(fp)
        if writer is None:
            raise DataError(
                "unknown_schema",
                f"writer schema fingerprint {fp:016x} is not among the shipped schemas; "
                "upgrade this service to a version that ships the producer's schema",
            )
        if writer.full_name != full_name:
            raise DataError(
                "wrong_schema",
                f"expected a {full_name} record but got {writer.full_name}; "
                "the producer wrote to the wrong topic",
            )
        reader = self._latest[full_name]
        body = io.BytesIO(payload)
        body.seek(_HEADER.size)
        try:
            return fastavro.schemaless_reader(body, writer.parsed, reader.parsed)  # type: ignore[return-value]
        except Exception as exc:  # fastavro raises many types on truncated or garbled input
            raise DataError(
                "undecodable", f"the {full_name} record could not be decoded: {exc!s}"
            ) from exc


class RegistryCodec(Codec):
    """Confluent wire format (magic 0 + schema id) through a schema registry."""

    def __init__(self, url: str, versions: list[SchemaVersion] | None = None) -> None:
        super().__init__(versions)
        from confluent_kafka.schema_registry import SchemaRegistryClient
        from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
        from confluent_kafka.serialization import MessageField, SerializationContext

        self._client = SchemaRegistryClient({"url": url})
        self._ctx = lambda name: SerializationContext(name, MessageField.VALUE)
        from confluent_kafka.schema_registry import record_subject_name_strategy

        # subject = the record's full name, so one contract has one subject on every topic
        self._serializers = {
            name: AvroSerializer(self._client, json.dumps(_strip(v.parsed)),
                                 conf={"auto.register.schemas": True,
                                       "subject.name.strategy": record_subject_name_strategy})
            for name, v in self._latest.items()
        }
        self._deserializers = {
            name: AvroDeserializer(self._client, json.dumps(_strip(v.parsed)))
            for name, v in self._latest.items()
        }

    def encode_dict(self, full_name: str, data: dict[str, Any]) -> bytes:
        return self._serializers[full_name](data, self._ctx(full_name))  # type: ignore[no-any-return]

    def decode_dict(self, payload: bytes | None, full_name: str) -> dict[str, Any]:
        if not payload or payload[:1] != b"\x00":
            raise DataError("not_avro", "the record is not in Confluent wire format (magic 0)")
        try:
            return self._deserializers[full_name](payload, self._ctx(full_name))  # type: ignore[no-any-return]
        except Exception as exc:  # the registry client raises many types
            raise DataError(
                "undecodable", f"the {full_name} record could not be decoded: {exc!s}"
            ) from exc


def _strip(parsed: Any) -> Any:
    """A parsed fastavro schema without fastavro's private keys, for JSON."""
    if isinstance(parsed, dict):
        return {k: _strip(v) for k, v in parsed.items() if not k.startswith("__")}
    if isinstance(parsed, list):
        return [_strip(v) for v in parsed]
    return parsed


def make_codec(schema_registry_url: str | None) -> Codec:
    """The codec configured: a registry when a URL is set, else single-object encoding."""
    return RegistryCodec(schema_registry_url) if schema_registry_url else Codec()


__all__ = ["CONTRACTS", "Codec", "RegistryCodec", "SchemaVersion", "load_schema_versions",
           "make_codec", "schema_fingerprint"]
