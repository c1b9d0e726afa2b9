"""Every field of every contract checked when a record is decoded.

A record on a topic comes from anyone who can write to the broker, not only from Framewire's
own stages: a field outside what a stage can handle (a 5,000-character frame id, a time in
the year 9999, a negative size, a NaN score) is refused at decode, with the code
``invalid_record`` and the field named, before any stage or database sees it. A camera id
keeps its own check and code (``check_camera_id``: ``unknown_camera``) where a stage consumes
the record, against the record's key.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from framewire.analytics.records import Alert, AnalyticsEvent
from framewire.contracts.records import (
    Contract,
    DeadLetter,
    FrameCaptured,
    FramePreprocessed,
    FrameRecord,
    InferenceResult,
    ServiceHeartbeat,
)
from framewire.errors import DataError

FRAME_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")
CODE_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
NAME_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
# clocks drift: a record may be stamped a little ahead of the reader's clock
AHEAD = timedelta(days=1)
MAX_SIDE = 65_535  # pixels, as JPEG and PNG headers can say
MAX_MODEL_SIDE = 8192
MAX_DETECTIONS = 10_000
MAX_TEXT = 4096
MAX_SECONDS = 10 * 365 * 86_400.0  # a dwell or an alert's for_s


def invalid(name: str, value: Any, rule: str) -> DataError:
    shown = repr(value)
    shown = shown if len(shown) <= 80 else f"{shown[:77]}... ({len(str(value))} characters)"
    return DataError("invalid_record", f"field {name} = {shown}: {rule}; fix the producer")


def text(name: str, value: str | None, limit: int = MAX_TEXT,
         pattern: re.Pattern[str] | None = None, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or len(value) > limit:
        raise invalid(name, value, f"must be text of at most {limit} characters")
    if pattern is not None and not pattern.fullmatch(value):
        raise invalid(name, value, f"must match {pattern.pattern}")


def count(name: str, value: int, low: int = 0, high: int | None = None) -> None:
    if value < low or (high is not None and value > high):
        raise invalid(name, value, f"must be from {low} to {high}" if high is not None
                      else f"must be at least {low}")


def number(name: str, value: float, low: float | None = None,
           high: float | None = None) -> None:
    if not math.isfinite(value) or (low is not None and value < low) or \
            (high is not None and value > high):
        raise invalid(name, value, "must be a finite number"
                      + (f" from {low} to {high}" if low is not None and high is not None else ""))


def when(name: str, value: datetime | None, optional: bool = False) -> None:
    if value is None and optional:
        return
    latest = datetime.now(UTC) + AHEAD
    if value is None or not EARLIEST <= value <= latest:
        raise invalid(name, value, f"must be a time from {EARLIEST:%Y-%m-%d} to a day from now")


def _frame(r: FrameRecord) -> None:
    h = r.header
    text("header.frame_id", h.frame_id, 128, FRAME_ID_PATTERN)
    # the camera id is checked against the record's key where it is consumed
    # (check_camera_id: unknown_camera); here only bounded
    text("header.camera_id", h.camera_id, 1024)
    count("header.seq", h.seq)
    when("header.captured_at", h.captured_at)
    when("header.ingested_at", h.ingested_at)
    text("header.image_uri", h.image_uri, optional=True)


def _captured(r: FrameCaptured) -> None:
    _frame(r)
    text("source", r.source)
    text("content_type", r.content_type, 64)
    count("width", r.width, 1, MAX_SIDE)
    count("height", r.height, 1, MAX_SIDE)
    text("image_sha256", r.image_sha256, 64, optional=True)


def _preprocessed(r: FramePreprocessed) -> None:
    _frame(r)
    when("preprocessed_at", r.preprocessed_at)
    count("orig_width", r.orig_width, 1, MAX_SIDE)
    count("orig_height", r.orig_height, 1, MAX_SIDE)
    count("input_width", r.input_width, 1, MAX_MODEL_SIDE)
    count("input_height", r.input_height, 1, MAX_MODEL_SIDE)
    number("scale", r.scale, 1e-6, float(MAX_SIDE))
    number("pad_x", r.pad_x, 0.0, float(MAX_MODEL_SIDE))
    number("pad_y", r.pad_y, 0.0, float(MAX_MODEL_SIDE))
    number("brightness", r.brightness)
    number("sharpness", r.sharpness)
    text("pixel_format", r.pixel_format, 32)
    text("pixels_uri", r.pixels_uri, optional=True)
    text("pixels_sha256", r.pixels_sha256, 64, optional=True)


def _result(r: InferenceResult) -> None:
    _frame(r)
    when("preprocessed_at", r.preprocessed_at)
    when("inferred_at", r.inferred_at)
    count("orig_width", r.orig_width, 1, MAX_SIDE)
    count("orig_height", r.orig_height, 1, MAX_SIDE)
    for name in ("model_name", "model_version", "provider"):
        text(name, getattr(r, name), 256)
    count("len(detections)", len(r.detections), 0, MAX_DETECTIONS)
    text("frame_uri", r.frame_uri, optional=True)
    text("thumbnail_uri", r.thumbnail_uri, optional=True)
    count("faces_blurred", r.faces_blurred, 0, MAX_DETECTIONS)
    for i, d in enumerate(r.detections):
        text(f"detections[{i}].label", d.label, 256)
        count(f"detections[{i}].class_id", d.class_id)
        number(f"detections[{i}].score", d.score)
        for corner in ("x1", "y1", "x2", "y2"):
            number(f"detections[{i}].{corner}", getattr(d, corner))


def _dead_letter(r: DeadLetter) -> None:
    # a dead letter describes a bad record: its camera and frame ids are whatever that record
    # carried, so they are only bounded, to stay readable by `framewire deadletters`
    text("service", r.service, 128, NAME_PATTERN)
    text("code", r.code, 64, CODE_PATTERN)
    text("reason", r.reason, 100_000)
    when("failed_at", r.failed_at)
    text("source_topic", r.source_topic, 249, optional=True)
    for name in ("frame_id", "camera_id", "payload_uri"):
        text(name, getattr(r, name), 100_000, optional=True)


def _heartbeat(r: ServiceHeartbeat) -> None:
    text("service", r.service, 128, NAME_PATTERN)
    text("instance", r.instance, 512)
    text("host", r.host, 256)
    count("pid", r.pid)
    when("sent_at", r.sent_at)
    for name in ("records_in", "records_out", "dead_lettered", "restarts", "dropped"):
        count(name, getattr(r, name))
    count("len(partitions)", len(r.partitions), 0, 100_000)
    count("len(stalled_cameras)", len(r.stalled_cameras), 0, 100_000)
    count("len(faults)", len(r.faults), 0, 100)
    for fault in r.faults:
        text("faults[]", fault, 2_000)
    count("len(drop_reasons)", len(r.drop_reasons), 0, 100)
    for reason, dropped in r.drop_reasons.items():
        text("drop_reasons key", reason, 64, NAME_PATTERN)
        count("drop_reasons value", dropped)
    text("model_name", r.model_name, 256, optional=True)
    text("model_version", r.model_version, 256, optional=True)


def _event(r: AnalyticsEvent) -> None:
    # type, direction, kind and state are checked as names, not against today's values, so
    # that a reader of this version still reads the event types a later version adds
    text("event_id", r.event_id, 512)
    text("camera_id", r.camera_id, 1024)
    text("type", r.type, 64, CODE_PATTERN)
    text("name", r.name, 64, NAME_PATTERN)
    when("at", r.at)
    when("emitted_at", r.emitted_at)
    text("frame_id", r.frame_id, 128, FRAME_ID_PATTERN, optional=True)
    if r.track_id is not None:
        count("track_id", r.track_id)
    text("label", r.label, 256, optional=True)
    text("direction", r.direction, 64, CODE_PATTERN, optional=True)
    if r.dwell_s is not None:
        number("dwell_s", r.dwell_s, 0.0, MAX_SECONDS)
    if r.window is not None:
        text("window.kind", r.window.kind, 64, CODE_PATTERN)
        when("window.start", r.window.start)
        when("window.end", r.window.end)
        text("window.counted", r.window.counted, 64, CODE_PATTERN)
        text("window.direction", r.window.direction, 64, CODE_PATTERN, optional=True)
        count("window.count", r.window.count)


def _alert(r: Alert) -> None:
    text("alert_id", r.alert_id, 512)
    text("camera_id", r.camera_id, 1024)
    text("rule", r.rule, 256)
    text("when", r.when, 64, CODE_PATTERN)
    text("zone", r.zone, 64, NAME_PATTERN)
    count("above", r.above)
    number("for_s", r.for_s, 0.0, MAX_SECONDS)
    text("state", r.state, 64, CODE_PATTERN)
    for name in ("started_at", "at", "emitted_at"):
        when(name, getattr(r, name))
    text("frame_id", r.frame_id, 128, FRAME_ID_PATTERN)
    count("value", r.value)
    count("peak", r.peak)


CHECKS: dict[type[Contract], Callable[[Any], None]] = {
    FrameCaptured: _captured, FramePreprocessed: _preprocessed, InferenceResult: _result,
    DeadLetter: _dead_letter, ServiceHeartbeat: _heartbeat, AnalyticsEvent: _event,
    Alert: _alert,
}


def validate(record: Contract) -> None:
    """Refuse a decoded record with a field out of what Framewire handles (``invalid_record``)."""
    check = CHECKS.get(type(record))
    if check is not None:
        check(record)
