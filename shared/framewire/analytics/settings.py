"""What the analytics watch, per camera: lines, zones and alert rules; windows and thresholds.

The ``analytics:`` section of the settings (``Settings.analytics``)::

    analytics:
      cameras:
        door-1:
          lines: [{name: door, points: [[640, 0], [640, 720]]}]
          zones: [{name: bay, points: [[0, 400], [600, 400], [600, 720], [0, 720]]}]
          alerts: [{when: "zone_count", zone: bay, above: 5, for_s: 10}]

Points are in the camera's original-frame pixels, as detections' boxes are. A rule that cannot
work (a line without two distinct points, a zone of fewer than three points or no area, two
lines or zones of one name, an alert on a zone the camera does not have) fails at start, with
what to fix.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from framewire.contracts import CAMERA_ID_PATTERN

NAME = r"^[A-Za-z0-9._:-]{1,64}$"
Point = tuple[float, float]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Line(_Strict):
    """A counting line from ``points[0]`` to ``points[1]``: its order sets the directions."""

    name: str = Field(pattern=NAME, description="unique among the camera's lines and zones")
    points: list[Point] = Field(description="[[x, y], [x, y]]: the line's two ends, in pixels")

    @field_validator("points")
    @classmethod
    def _two_distinct_points(cls, points: list[Point]) -> list[Point]:
        if len(points) != 2:
            raise ValueError(f"a line needs exactly 2 points [[x, y], [x, y]], got {len(points)}")
        if points[0] == points[1]:
            raise ValueError(f"a line's 2 points must differ, both are {list(points[0])}")
        return points


class Zone(_Strict):
    """A polygon; a track is in it while its anchor (bottom-centre of its box) is inside."""

    name: str = Field(pattern=NAME, description="unique among the camera's lines and zones")
    points: list[Point] = Field(description="[[x, y], ...]: the polygon's corners, in order")
    dwell_s: float | None = Field(None, gt=0, le=86_400, description="a `dwell` event once a "
                                  "track stayed this long; unset = analytics.dwell_s")

    @field_validator("points")
    @classmethod
    def _a_polygon(cls, points: list[Point]) -> list[Point]:
        if len(points) < 3:
            raise ValueError(f"a zone needs at least 3 points (a polygon), got {len(points)}")
        if polygon_area(points) == 0:
            raise ValueError("a zone's points all lie on one line: the polygon has no area")
        return points


def polygon_area(points: list[Point]) -> float:
    """The area the polygon encloses (shoelace formula), in square pixels."""
    twice = sum(x1 * y2 - x2 * y1
                for (x1, y1), (x2, y2) in zip(points, points[1:] + points[:1], strict=True))
    return abs(twice) / 2


class AlertRule(_Strict):
    """``zone_count``: more than ``above`` tracks in ``zone`` for ``for_s`` seconds on end."""

    when: Literal["zone_count"] = Field(description="the condition; zone_count is the one kind")
    zone: str = Field(description="a zone of this camera")
    above: int = Field(ge=0, description="fires while the count is greater than this")
    for_s: float = Field(0.0, ge=0, le=86_400, description="seconds the condition must hold "
                         "(in frame time) before the alert fires")
    name: str | None = Field(None, pattern=NAME, description="unset = WHEN:ZONE:ABOVE")

    @property
    def rule_name(self) -> str:
        return self.name or f"{self.when}:{self.zone}:{self.above}"


class CameraAnalytics(_Strict):
    lines: list[Line] = Field(default_factory=list)
    zones: list[Zone] = Field(default_factory=list)
    alerts: list[AlertRule] = Field(default_factory=list)
    labels: list[str] = Field(default_factory=list, description="track only detections of "
                              "these labels (e.g. [person]); empty = every label")

    @model_validator(mode="after")
    def _names_unique_and_alerts_on_zones(self) -> Self:
        names = [line.name for line in self.lines] + [zone.name for zone in self.zones]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"line and zone names must be unique per camera: {twice} used more "
                             "than once; rename one")
        zones = {z.name for z in self.zones}
        for rule in self.alerts:
            if rule.zone not in zones:
                raise ValueError(f"alert on zone {rule.zone!r}, which this camera does not have "
                                 f"(zones: {sorted(zones)}); add the zone or fix the name")
        rules = [r.rule_name for r in self.alerts]
        if len(set(rules)) != len(rules):
            raise ValueError("two alert rules of this camera have one name; give them `name`s")
        return self


class AnalyticsSettings(_Strict):
    """The analytics service's settings: ``cameras`` maps camera ids to what to watch."""

    cameras: dict[str, CameraAnalytics] = Field(default_factory=dict)
    replicas: int = Field(1, ge=1, le=64, description="analytics workers `framewire run` "
                          "starts (--replicas overrides); cameras spread over them by partition")
    tumbling_s: int = Field(60, ge=1, le=86_400, description="counts per window of this many "
                            "seconds, back to back (aligned to the epoch)")
    hopping_s: int = Field(300, ge=1, le=86_400, description="counts per window of this many "
                           "seconds too, one starting every hop_s")
    hop_s: int = Field(60, ge=1, le=86_400, description="a hopping window starts this often; it "
                       "divides hopping_s")
    dwell_s: float = Field(120.0, gt=0, le=86_400, description="a `dwell` event once a track "
                           "stayed this long in a zone (per zone: zones[].dwell_s)")
    lost_after_s: float = Field(2.0, gt=0, le=600, description="a track not seen for this long "
                                "has ended: it leaves its zones")
    min_score: float = Field(0.25, ge=0, le=1, description="detections below this score are "
                             "not tracked")
    activation_score: float = Field(0.5, ge=0, le=1, description="a detection starts a track "
                                    "only from this score (weaker ones only continue one)")
    track_buffer_s: float = Field(1.0, gt=0, le=60, description="the tracker keeps a lost "
                                  "track this long for the object to be seen again")
    replay_s: float = Field(3.0, ge=0, le=60, description="recent detections kept per camera "
                            "to rebuild its tracks after a restart")

    @field_validator("cameras")
    @classmethod
    def _camera_ids(cls, cameras: dict[str, CameraAnalytics]) -> dict[str, CameraAnalytics]:
        bad = [c for c in cameras if not CAMERA_ID_PATTERN.match(c)]
        if bad:
            raise ValueError(f"camera ids {bad} have characters other than letters, digits and "
                             "._:- (at most 128); use the cameras' ids")
        return cameras

    @model_validator(mode="after")
    def _hops_divide_the_window(self) -> Self:
        if self.hopping_s % self.hop_s:
            raise ValueError(f"analytics.hop_s ({self.hop_s}) must divide analytics.hopping_s "
                             f"({self.hopping_s}), e.g. hopping_s 300 and hop_s 60")
        return self
