"""What the gateway answers, as typed records: results, cameras, dead letters, traces.

Each ``from_json`` takes the JSON object of the route (docs/gateway.md) with times as
aware UTC datetimes. Fields a newer gateway adds are left out, so an older client keeps
working against it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Self

from framewire.contracts import Detection

_DETECTION_FIELDS = tuple(f.name for f in fields(Detection))


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``data`` that are fields of ``cls``."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


@dataclass(frozen=True)
class Result:
    """One stored inference result (``GET /api/v1/results/{frame_id}``).

    ``detections`` have their boxes in the original frame's pixels. ``frame_url`` and
    ``thumbnail_url`` are the gateway paths of the stored frame (faces blurred under privacy
    mode) and its thumbnail, None when the result has none: read them with
    ``Client.frame()`` and ``Client.thumbnail()``.
    """

    frame_id: str
    camera_id: str
    seq: int
    captured_at: datetime
    ingested_at: datetime
    preprocessed_at: datetime
    inferred_at: datetime
    stored_at: datetime
    orig_width: int
    orig_height: int
    model_name: str
    model_version: str
    provider: str
    too_dark: bool
    blurred: bool
    frozen: bool
    detections: list[Detection] = field(default_factory=list)
    detection_count: int = 0
    privacy: bool = False
    faces_blurred: int = 0
    frame_url: str | None = None
    thumbnail_url: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        known = _known(cls, data)
        for name in ("captured_at", "ingested_at", "preprocessed_at", "inferred_at",
                     "stored_at"):
            known[name] = _time(known.get(name))
        known["detections"] = [Detection(**{k: d[k] for k in _DETECTION_FIELDS})
                               for d in data.get("detections", [])]
        return cls(**known)


@dataclass(frozen=True)
class Camera:
    """A camera the site runs (``GET /api/v1/cameras``): its settings, URL masked, and
    ``origin``: ``config`` (the ``cameras`` setting) or ``topic`` (added at run time)."""

    camera_id: str
    url: str
    fps: float | None = None
    loop: bool = False
    retention: str | None = None
    privacy_mode: bool | None = None
    origin: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        return cls(**_known(cls, data))


@dataclass(frozen=True)
class DeadLetterReport:
    """A dead letter as ``GET /api/v1/deadletters`` lists it: which service refused which
    record, why (``code``, ``reason``), and where the record came from."""

    service: str
    code: str
    reason: str
    failed_at: datetime
    source_topic: str | None = None
    source_partition: int | None = None
    source_offset: int | None = None
    camera_id: str | None = None
    frame_id: str | None = None
    payload_bytes: int | None = None
    payload_uri: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        known = _known(cls, data)
        known["failed_at"] = _time(known.get("failed_at"))
        return cls(**known)


@dataclass(frozen=True)
class ReplayOutcome:
    """What ``POST /api/v1/deadletters/replay`` did: how many letters matched, and how many
    went where (``{"replayed to frames.raw": 4}``; empty for a dry run)."""

    matched: int
    dry_run: bool
    outcome: dict[str, int]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        return cls(**_known(cls, data))


@dataclass(frozen=True)
class Span:
    """One span of a frame's trace: a service's step, start and end in ns since the epoch."""

    trace_id: str
    span_id: str
    parent_id: str | None
    service: str
    name: str
    start_ns: int
    end_ns: int
    status: str
    duration_ms: float
    frame_id: str | None = None
    camera_id: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        return cls(**_known(cls, data))


@dataclass(frozen=True)
class Trace:
    """One frame's spans across the services, in start order (``GET /api/v1/traces/...``)."""

    frame_id: str
    trace_id: str
    spans: list[Span]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        return cls(data["frame_id"], data["trace_id"],
                   [Span.from_json(s) for s in data.get("spans", [])])
