"""Avro encoding of the contracts: single-object encoding, or Confluent framing with a registry.

Single-object encoding (the default): ``C3 01`` + the writer schema's CRC-64-AVRO fingerprint
(little-endian) + the Avro body. Readers look the fingerprint up among every schema version
shipped in ``schemas/`` and read the body as the newest version of its contract: Avro resolves
writer → reader schema where it can (fields added with defaults, fields dropped), and the
contracts' ``UPGRADES`` bridge the changes it cannot (v1 frame records' flat header fields),
so old and new producers coexist during a rolling upgrade. Writing always uses the newest.
"""

from __future__ import annotations

import io
import json
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeVar

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from framewire.contracts import CONTRACTS, UPGRADES, Contract, Upgrade
from framewire.contracts.checks import validate
from framewire.errors import ConfigError, DataError

MAGIC = b"\xc3\x01"
_HEADER = struct.Struct("<2sQ")
_REGISTRY_HEADER = struct.Struct(">bI")  # Confluent wire format: magic 0, schema id
_FILENAME = re.compile(r"^(?P<name>[A-Za-z]+)\.v(?P<version>\d+)\.avsc$")
T = TypeVar("T", bound=Contract)


@dataclass(frozen=True)
class SchemaVersion:
    """One shipped schema file, parsed (``version`` 0: a writer schema not shipped here)."""

    full_name: str
    version: int
    parsed: Any
    fingerprint: int


@dataclass(frozen=True)
class _ReadPlan:
    """How records of one writer version become the newest version's dict: read with
    ``reader`` (Avro resolution), then each upgrade in turn, each followed by the resolution
    from the version it makes to the next one an upgrade must bridge, if any."""

    reader: Any
    steps: tuple[tuple[Upgrade, tuple[Any, Any] | None], ...] = ()


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

    def __init__(self, versions: list[SchemaVersion] | None = None,
                 upgrades: Mapping[tuple[str, int], Upgrade] | None = None) -> None:
        versions = versions if versions is not None else load_schema_versions()
        self._upgrades = UPGRADES if upgrades is None else upgrades
        self._by_fingerprint = {v.fingerprint: v for v in versions}
        self._by_version = {(v.full_name, v.version): v for v in versions}
        self._latest: dict[str, SchemaVersion] = {}
        for v in versions:
            if v.full_name not in self._latest or v.version > self._latest[v.full_name].version:
                self._latest[v.full_name] = v
        self._headers = {
            name: _HEADER.pack(MAGIC, v.fingerprint) for name, v in self._latest.items()
        }
        # planned up front, so a missing version an upgrade goes through fails at start
        self._plans: dict[int, _ReadPlan] = {}
        for v in versions:
            self._plan(v)

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
        """Decode a record written with any known version of ``expect``'s schema, its fields
        checked (``framewire.contracts.checks``)."""
        record = expect.from_avro(self.decode_dict(payload, expect.SCHEMA))
        validate(record)
        return record

    def decode_dict(self, payload: bytes | None, full_name: str) -> dict[str, Any]:
        """The record as a dict in the shape of ``full_name``'s newest version."""
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
        return self._read_body(payload, _HEADER.size, writer, full_name)

    def _read_body(self, payload: bytes, offset: int, writer: SchemaVersion,
                   full_name: str) -> dict[str, Any]:
        """The Avro body at ``offset``, written with ``writer``, as the newest version."""
        if writer.full_name != full_name:
            raise DataError(
                "wrong_schema",
                f"expected a {full_name} record but got {writer.full_name}; "
                "the producer wrote to the wrong topic",
            )
        plan = self._plan(writer)
        body = io.BytesIO(payload)
        body.seek(offset)
        try:
            data: dict[str, Any] = fastavro.schemaless_reader(  # type: ignore[assignment]
                body, writer.parsed, plan.reader)
            for upgrade, resolve in plan.steps:
                data = upgrade(data)
                if resolve is not None:
                    data = _resolve(data, *resolve)
        except Exception as exc:  # fastavro raises many types on truncated or garbled input
            raise DataError(
                "undecodable", f"the {full_name} record could not be decoded: {exc!s}"
            ) from exc
        return data

    def _plan(self, writer: SchemaVersion) -> _ReadPlan:
        plan = self._plans.get(writer.fingerprint)
        if plan is None:
            plan = self._plans[writer.fingerprint] = self._make_plan(writer)
        return plan

    def _make_plan(self, writer: SchemaVersion) -> _ReadPlan:
        name, newest = writer.full_name, self.latest(writer.full_name).version
        if writer.version == newest or self._by_fingerprint.get(writer.fingerprint) is not writer:
            # the newest itself, or a writer this build does not ship (a newer producer on a
            # registry): Avro resolution to the newest is all there is
            return _ReadPlan(self._latest[name].parsed)
        at = self._resolvable_to(name, writer.version)
        reader = writer.parsed if at == writer.version else self._schema(name, at).parsed
        steps = []
        while at < newest:  # an upgrade bridges ``at`` → ``at + 1``
            after = self._resolvable_to(name, at + 1)
            resolve = None if after == at + 1 else (
                self._schema(name, at + 1).parsed, self._schema(name, after).parsed)
            steps.append((self._upgrades[(name, at)], resolve))
            at = after
        return _ReadPlan(reader, tuple(steps))

    def _resolvable_to(self, name: str, version: int) -> int:
        """The newest version Avro resolution can read a ``version`` record as: the newest
        shipped, or the first from ``version`` on that an upgrade must bridge."""
        newest = self._latest[name].version
        while version < newest and (name, version) not in self._upgrades:
            version += 1
        return min(version, newest)

    def _schema(self, name: str, version: int) -> SchemaVersion:
        try:
            return self._by_version[(name, version)]
        except KeyError:
            raise ConfigError(
                f"{name} v{version} is not among the shipped schemas, but reading older "
                f"versions as v{self._latest[name].version} goes through it; ship every "
                "version's file in schemas/"
            ) from None


def _resolve(data: dict[str, Any], writer: Any, reader: Any) -> dict[str, Any]:
    """``data`` (in ``writer``'s shape) as Avro resolution reads it with ``reader``."""
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, writer, data)
    buffer.seek(0)
    return fastavro.schemaless_reader(buffer, writer, reader)  # type: ignore[return-value]


class RegistryCodec(Codec):
    """Confluent wire format (magic 0 + schema id) through a schema registry.

    Writes register the newest version under the subject of the record's full name; reads
    fetch the writer schema by id, and read it as the newest version like ``Codec`` does.
    """

    def __init__(self, url: str, versions: list[SchemaVersion] | None = None,
                 auth: Mapping[str, Any] | None = None) -> None:
        super().__init__(versions)
        from confluent_kafka.schema_registry import (
            SchemaRegistryClient,
            SchemaRegistryError,
            record_subject_name_strategy,
        )
        from confluent_kafka.schema_registry.avro import AvroSerializer
        from confluent_kafka.serialization import MessageField, SerializationContext

        self._url = url
        # auth: the client's own properties (basic.auth.user.info, ssl.ca.location...)
        conf = {k: v.get_secret_value() if hasattr(v, "get_secret_value") else v
                for k, v in (auth or {}).items()}
        try:
            self._client = SchemaRegistryClient({**conf, "url": url})
        except ValueError as exc:
            raise ConfigError(f"schema_registry_auth: {exc}; it takes the schema registry "
                              "client's properties: basic.auth.user.info, ssl.ca.location, "
                              "ssl.certificate.location, ssl.key.location") from None
        self._registry_error = SchemaRegistryError
        self._ctx = lambda name: SerializationContext(name, MessageField.VALUE)
        # subject = the record's full name, so one contract has one subject on every topic
        self._serializers = {
            name: AvroSerializer(self._client, json.dumps(_strip(v.parsed)),
                                 conf={"auto.register.schemas": True,
                                       "subject.name.strategy": record_subject_name_strategy})
            for name, v in self._latest.items()
        }
        self._by_id: dict[int, SchemaVersion] = {}

    def encode_dict(self, full_name: str, data: dict[str, Any]) -> bytes:
        try:
            return self._serializers[full_name](data, self._ctx(full_name))  # type: ignore[no-any-return]
        except self._registry_error as exc:
            if exc.http_status_code != 409:
                raise
            version = self.latest(full_name).version
            raise ConfigError(
                f"the schema registry at {self._url} refused {full_name} v{version} as "
                f"incompatible with the versions registered under subject {full_name}: "
                f"{exc.error_message}. Framewire reads every older version itself; set that "
                "subject's compatibility to NONE (PUT /config/<subject> "
                '{"compatibility": "NONE"}) once every reader of it runs this version'
            ) from exc

    def decode_dict(self, payload: bytes | None, full_name: str) -> dict[str, Any]:
        if not payload or payload[:1] != b"\x00":
            raise DataError("not_avro", "the record is not in Confluent wire format (magic 0)")
        if len(payload) <= _REGISTRY_HEADER.size:
            raise DataError("undecodable", f"the {full_name} record has no body after its "
                                           "schema id")
        _, schema_id = _REGISTRY_HEADER.unpack_from(payload)
        return self._read_body(payload, _REGISTRY_HEADER.size, self._writer(schema_id, full_name),
                               full_name)

    def _writer(self, schema_id: int, full_name: str) -> SchemaVersion:
        """The writer schema registered as ``schema_id``: a shipped version when it is one."""
        writer = self._by_id.get(schema_id)
        if writer is None:
            try:
                text = self._client.get_schema(schema_id).schema_str
                parsed: Any = fastavro.parse_schema(json.loads(text or ""), named_schemas={})
                fp = schema_fingerprint(parsed)
                writer = self._by_fingerprint.get(fp) or SchemaVersion(parsed["name"], 0, parsed,
                                                                       fp)
            except Exception as exc:  # the registry client raises many types
                raise DataError(
                    "undecodable", f"the {full_name} record's writer schema (id {schema_id}) "
                                   f"could not be had from the registry: {exc!s}"
                ) from exc
            self._by_id[schema_id] = writer
        return writer


def _strip(parsed: Any) -> Any:
    """A parsed fastavro schema without fastavro's private keys, for JSON."""
    if isinstance(parsed, dict):
        return {k: _strip(v) for k, v in parsed.items() if not k.startswith("__")}
    if isinstance(parsed, list):
        return [_strip(v) for v in parsed]
    return parsed


def make_codec(schema_registry_url: str | None,
               auth: Mapping[str, Any] | None = None) -> Codec:
    """The codec configured: a registry when a URL is set (``auth``: the client's
    ``schema_registry_auth`` properties), else single-object encoding."""
    return RegistryCodec(schema_registry_url, auth=auth) if schema_registry_url else Codec()


__all__ = ["CONTRACTS", "Codec", "RegistryCodec", "SchemaVersion", "load_schema_versions",
           "make_codec", "schema_fingerprint"]
