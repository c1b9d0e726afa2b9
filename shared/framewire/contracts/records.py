"""Typed records for the Avro contracts in ``schemas/``: what flows between services.

Each class mirrors one schema (``SCHEMA`` names it); ``framewire.contracts.codec`` turns them
into bytes and back. Timestamps are timezone-aware UTC datetimes (Avro ``timestamp-micros``).
"""

from __future__ import annotations

import re
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


@dataclass(slots=True)
class Contract:
    """Base of every record type; ``SCHEMA`` is the Avro full name it is written with."""

    SCHEMA: ClassVar[str] = ""

    def to_avro(self) -> dict[str, Any]:
        """The record as the plain dict fastavro writes."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_avro(cls, data: dict[str, Any]) -> Self:
        """Build from a dict read by fastavro (fields unknown to this version are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(slots=True)
class FrameCaptured(Contract):
    SCHEMA: ClassVar[str] = "io.framewire.FrameCaptured"

    frame_id: str
    camera_id: str
    seq: int
    captured_at: datetime
    ingested_at: datetime
    source: str
    content_type: str
    width: int
    height: int
    image: bytes | None = None
    image_uri: str | None = None
    image_sha256: str | None = None
    schema_version: int = 1


@dataclass(slots=True)
class FramePreprocessed(Contract):
    SCHEMA: ClassVar[str] = "io.framewire.FramePreprocessed"

    frame_id: str
    camera_id: str
    seq: int
    captured_at: datetime
    ingested_at: datetime
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
    image_uri: str | None = None
    schema_version: int = 1


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
class InferenceResult(Contract):
    SCHEMA: ClassVar[str] = "io.framewire.InferenceResult"

    frame_id: str
    camera_id: str
    seq: int
    captured_at: datetime
    ingested_at: datetime
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
    image_uri: str | None = None
    schema_version: int = 1

    def to_avro(self) -> dict[str, Any]:
        data = Contract.to_avro(self)
        data["detections"] = [
            {f.name: getattr(d, f.name) for f in fields(Detection)} for d in self.detections
        ]
        return data

    @classmethod
    def from_avro(cls, data: dict[str, Any]) -> Self:
        # zero-argument super() does not work in slotted dataclasses
        data = dict(data)
        data["detections"] = [
            d if isinstance(d, Detection) else Detection(**d) for d in data.get("detections", [])
        ]
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


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
    schema_version: int = 4


CONTRACTS: dict[str, type[Contract]] = {
    c.SCHEMA: c for c in (FrameCaptured, FramePreprocessed, InferenceResult, DeadLetter,
                          ServiceHeartbeat)
}
