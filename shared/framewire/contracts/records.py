"""Typed records for the Avro contracts in ``schemas/``: what flows between services.

Each class mirrors one schema (``SCHEMA`` names it); ``framewire.contracts.codec`` turns them
into bytes and back. Timestamps are timezone-aware UTC datetimes (Avro ``timestamp-micros``).
The per-frame records start with one ``FrameHeader``, which each stage carries forward as it is.
A schema change that Avro resolution cannot bridge comes with an entry in ``UPGRADES``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, ClassVar, Self

from framewire.errors import DataError

CAMERA_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def check_camera_id(camera_id: str, key: bytes | None) -> None:
    """Reject a record whose camera id is malformed or differs from its Kafka key."""
    if not CAMERA_ID_PATTERN.match(camera_id or ""):
        raise DataError(
            "unknown_camera",
            f"camera id {camera_id!r} is empty or has characters other than letters, digits and "
            "._:- (at most 128); fix the producer's camera id",
        )
    if key is not None and key != camera_id.encode():
        raise DataError(
            "unknown_camera",
            f"record for camera {camera_id!r} arrived with key {key!r}; the key must be the "
            "camera id so that a camera's frames stay on one partition, in order",
        )


def utcnow() -> datetime:
    """Now, as the timezone-aware UTC datetime every contract timestamp uses."""
    return datetime.now(UTC)


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def field_names(cls: type) -> tuple[str, ...]:
    """The dataclass ``cls``'s field names, in order (looked up once per class)."""
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls))
    return names


@dataclass(slots=True)
class Contract:
    """Base of every record type; ``SCHEMA`` is the Avro full name it is written with."""

    SCHEMA: ClassVar[str] = ""

    def to_avro(self) -> dict[str, Any]:
        """The record as the plain dict fastavro writes."""
        return {name: getattr(self, name) for name in field_names(type(self))}

    @classmethod
    def from_avro(cls, data: dict[str, Any]) -> Self:
        """Build from a dict read by fastavro (fields unknown to this version are ignored)."""
        return cls(**{name: data[name] for name in field_names(cls) if name in data})


@dataclass(frozen=True, slots=True)
class FrameHeader:
    """What every per-frame record carries, set at capture and passed on unchanged at each hop."""

    frame_id: str
    camera_id: str
    seq: int
    captured_at: datetime
    ingested_at: datetime
    image_uri: str | None = None  # the original frame in the blob store, when stored
    # privacy mode, decided at capture (privacy_mode, or the camera's own): the raw frame stays
    # off the blob store, and every face found is blurred in the frame that is stored
    privacy: bool = True

    def to_avro(self) -> dict[str, Any]:
        """The header as the plain dict fastavro writes."""
        return {name: getattr(self, name) for name in HEADER_FIELDS}

    @classmethod
    def from_avro(cls, data: dict[str, Any]) -> Self:
        """Build from a dict read by fastavro (fields unknown to this version are ignored)."""
        return cls(**{name: data[name] for name in HEADER_FIELDS if name in data})


HEADER_FIELDS = field_names(FrameHeader)


@dataclass(slots=True)
class FrameRecord(Contract):
    """Base of the per-frame records: the frame header first; its fields read as the record's.

    A stage passes the header on in one line: ``FramePreprocessed(header=frame.header, ...)``.
    """

    header: FrameHeader

    @property
    def frame_id(self) -> str:
        return self.header.frame_id

    @property
    def camera_id(self) -> str:
        return self.header.camera_id

    @property
    def seq(self) -> int:
        return self.header.seq

    @property
    def captured_at(self) -> datetime:
        return self.header.captured_at

    @property
    def ingested_at(self) -> datetime:
        return self.header.ingested_at

    @property
    def image_uri(self) -> str | None:
        return self.header.image_uri

    @property
    def privacy(self) -> bool:
        return self.header.privacy

    def to_avro(self) -> dict[str, Any]:
        data = Contract.to_avro(self)
        data["header"] = self.header.to_avro()
        return data

    @classmethod
    def from_avro(cls, data: dict[str, Any]) -> Self:
        header = data["header"]
        if not isinstance(header, FrameHeader):
            data = {**data, "header": FrameHeader.from_avro(header)}
        return super(FrameRecord, cls).from_avro(data)


@dataclass(slots=True)
class FrameCaptured(FrameRecord):
    SCHEMA: ClassVar[str] = "io.framewire.FrameCaptured"

    source: str
    content_type: str
    width: int
    height: int
    image: bytes | None = None
    image_sha256: str | None = None  # with header.image_uri when the image rides by reference
    schema_version: int = 3


@dataclass(slots=True)
class FramePreprocessed(FrameRecord):
    SCHEMA: ClassVar[str] = "io.framewire.FramePreprocessed"

    preprocessed_at: datetime
    orig_width: int
    orig_height: int
    input_width: int
    input_height: int
    scale: float
    pad_x: float
    pad_y: float
    pixel_format: str
    brightness: float
    sharpness: float
    too_dark: bool
    blurred: bool
    frozen: bool
    pixels: bytes | None = None
    pixels_uri: str | None = None
    pixels_sha256: str | None = None
    schema_version: int = 3


@dataclass(slots=True)
class Detection:
    """One detected object; box corners in original-frame pixels."""

    label: str
    class_id: int
    score: float
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass(slots=True)
class InferenceResult(FrameRecord):
    SCHEMA: ClassVar[str] = "io.framewire.InferenceResult"

    preprocessed_at: datetime
    inferred_at: datetime
    orig_width: int
    orig_height: int
    model_name: str
    model_version: str
    provider: str
    too_dark: bool
    blurred: bool
    frozen: bool
    detections: list[Detection] = field(default_factory=list)
    # the frame as stored (a JPEG as the model saw it, faces blurred under header.privacy)
    frame_uri: str | None = None
    thumbnail_uri: str | None = None
    faces_blurred: int = 0
    schema_version: int = 3

    def to_avro(self) -> dict[str, Any]:
        data = FrameRecord.to_avro(self)
        names = field_names(Detection)
        data["detections"] = [{n: getattr(d, n) for n in names} for d in self.detections]
        return data

    @classmethod
    def from_avro(cls, data: dict[str, Any]) -> Self:
        data = {**data, "detections": [
            d if isinstance(d, Detection) else Detection(**d) for d in data.get("detections", [])
        ]}
        return super(InferenceResult, cls).from_avro(data)


@dataclass(slots=True)
class DeadLetter(Contract):
    SCHEMA: ClassVar[str] = "io.framewire.DeadLetter"

    service: str
    code: str
    reason: str
    failed_at: datetime
    source_topic: str | None = None
    source_partition: int | None = None
    source_offset: int | None = None
    camera_id: str | None = None
    frame_id: str | None = None
    key: bytes | None = None
    payload: bytes | None = None
    payload_uri: str | None = None
    schema_version: int = 1


@dataclass(slots=True)
class ServiceHeartbeat(Contract):
    SCHEMA: ClassVar[str] = "io.framewire.ServiceHeartbeat"

    service: str
    instance: str
    host: str
    pid: int
    version: str
    sent_at: datetime
    state: str
    partitions: list[str]
    records_in: int
    records_out: int
    dead_lettered: int
    produced_offsets: dict[str, int]
    group: str | None = None
    restarts: int = 0
    dropped: int = 0
    broker_ok: bool = True
    stalled_cameras: list[str] = field(default_factory=list)
    last_commit_at: datetime | None = None
    metrics_port: int | None = None
    cpu_s_per_1000_frames: float | None = None
    out_per_s: float | None = None
    host_watts: float | None = None
    gpu_watts: float | None = None
    faults: list[str] = field(default_factory=list)
    drop_reasons: dict[str, int] = field(default_factory=dict)
    model_name: str | None = None
    model_version: str | None = None
    schema_version: int = 6


CONTRACTS: dict[str, type[Contract]] = {
    c.SCHEMA: c for c in (FrameCaptured, FramePreprocessed, InferenceResult, DeadLetter,
                          ServiceHeartbeat)
}


# A record of version N of a contract, read with its own schema, in the shape of version N + 1:
# for the changes Avro's writer → reader resolution cannot make. The codec chains them.
Upgrade = Callable[[dict[str, Any]], dict[str, Any]]


def nest_frame_header(data: dict[str, Any]) -> dict[str, Any]:
    """A v1 frame record (header fields at the top level) in the v2 shape (under ``header``)."""
    nested = {k: v for k, v in data.items() if k not in HEADER_FIELDS}
    # header fields added after v2 (privacy) come from Avro resolution to the newer version
    nested["header"] = {name: data[name] for name in HEADER_FIELDS if name in data}
    return nested


UPGRADES: dict[tuple[str, int], Upgrade] = {
    (FrameCaptured.SCHEMA, 1): nest_frame_header,
    (FramePreprocessed.SCHEMA, 1): nest_frame_header,
    (InferenceResult.SCHEMA, 1): nest_frame_header,
}

# The analytics' contracts live with the analytics and add themselves to CONTRACTS; imported
# here, at the end, so that every reader of CONTRACTS finds them (a plain import: it works
# whichever of the two modules is imported first).
import framewire.analytics.records  # noqa: E402, F401
