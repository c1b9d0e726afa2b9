"""The analytics' contracts: ``AnalyticsEvent`` (topic ``events``) and ``Alert`` (``alerts``).

They mirror ``schemas/AnalyticsEvent.v1.avsc`` and ``schemas/Alert.v1.avsc`` and go through the
one codec like every contract; importing this module adds them to ``CONTRACTS`` (which
``framewire.contracts.records`` does at its end, so they are always there). A window's count
is an ``AnalyticsEvent`` of type ``window_count`` carrying a ``WindowCount``: one topic, one
contract, in event-time order with the events it counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Literal, Self

from framewire.contracts.records import CONTRACTS, Contract, field_names

EventType = Literal["line_cross", "zone_enter", "zone_leave", "dwell", "window_count"]
EVENT_TYPES: tuple[str, ...] = ("line_cross", "zone_enter", "zone_leave", "dwell",
                                "window_count")
DIRECTIONS: tuple[str, ...] = ("in", "out")
WINDOW_KINDS: tuple[str, ...] = ("tumbling", "hopping")
ALERT_STATES: tuple[str, ...] = ("firing", "resolved")


@dataclass(frozen=True, slots=True)
class WindowCount:
    """``count`` events of type ``counted`` (and ``direction``) in [start, end)."""

    kind: str
    start: datetime
    end: datetime
    counted: str
    count: int
    direction: str | None = None


@dataclass(slots=True)
class AnalyticsEvent(Contract):
    SCHEMA: ClassVar[str] = "io.framewire.AnalyticsEvent"

    event_id: str
    camera_id: str
    type: str
    name: str
    at: datetime
    emitted_at: datetime
    frame_id: str | None = None
    track_id: int | None = None
    label: str | None = None
    direction: str | None = None
    dwell_s: float | None = None
    window: WindowCount | None = None
    schema_version: int = 1

    def to_avro(self) -> dict[str, Any]:
        data = Contract.to_avro(self)
        if self.window is not None:
            data["window"] = {n: getattr(self.window, n) for n in field_names(WindowCount)}
        return data

    @classmethod
    def from_avro(cls, data: dict[str, Any]) -> Self:
        window = data.get("window")
        if isinstance(window, dict):
            data = {**data, "window": WindowCount(**{
                n: window[n] for n in field_names(WindowCount) if n in window})}
        return super(AnalyticsEvent, cls).from_avro(data)


@dataclass(slots=True)
class Alert(Contract):
    SCHEMA: ClassVar[str] = "io.framewire.Alert"

    alert_id: str
    camera_id: str
    rule: str
    when: str
    zone: str
    above: int
    for_s: float
    state: str
    started_at: datetime
    at: datetime
    emitted_at: datetime
    frame_id: str
    value: int
    peak: int
    schema_version: int = 1


CONTRACTS.update({c.SCHEMA: c for c in (AnalyticsEvent, Alert)})

__all__ = ["ALERT_STATES", "DIRECTIONS", "EVENT_TYPES", "WINDOW_KINDS", "Alert",
           "AnalyticsEvent", "EventType", "WindowCount"]
