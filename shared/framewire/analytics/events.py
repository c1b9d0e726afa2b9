"""One camera's analytics: from tracks per frame to events, window counts and alerts.

``CameraAnalyzer.observe()`` takes one frame's tracks (``CameraTracker.update``) in capture
order and returns what happened, as the contracts the service publishes:

- ``line_cross``: a track's anchor (the bottom-centre of its box) moved from one side of a
  line to the other through the line's segment. ``in`` is the direction of the line (first
  point to second) turned a quarter turn counter-clockwise as seen on the image: for a line
  drawn from top to bottom, left to right is ``in``; for one drawn from left to right, upwards
  is ``in``. A track standing on the line counts once it is off it on the other side.
- ``zone_enter`` / ``zone_leave``: the anchor came inside a zone's polygon / went out of it, or
  the track ended (not seen for ``lost_after_s``: the leave is then stamped with the frame and
  time it was last seen). ``dwell_s`` of a leave is the time from enter to leave.
- ``dwell``: once per stay, at the first frame the track has been in the zone ``dwell_s``.
- ``window_count``: per line or zone, event type and direction, the count in each tumbling
  and hopping window (aligned to the epoch; a window without events sends nothing), sent at
  the first frame ``lost_after_s`` or more after the window's end (``WindowCounter``).
- alerts: ``zone_count`` rules (``AlertWatch``), counted over the tracks in the zone.

All times are frame times (``captured_at``), so a replay gives the same answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from framewire.analytics.geometry import Point, anchor, inside, segments_cross, side
from framewire.analytics.records import Alert, AnalyticsEvent, WindowCount
from framewire.analytics.settings import AlertRule, AnalyticsSettings, CameraAnalytics
from framewire.analytics.tracking import CameraTracker, Track
from framewire.contracts import utcnow

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
STATE_VERSION = 1


def micros(t: datetime) -> int:
    """``t`` as integer microseconds since the epoch: window arithmetic without rounding."""
    return (t - EPOCH) // timedelta(microseconds=1)


def from_micros(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


@dataclass
class Findings:
    """What one frame brought: events (window counts among them) and alert changes."""

    events: list[AnalyticsEvent] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)


@dataclass
class _Stay:
    entered: datetime
    dwelled: bool = False


@dataclass
class _TrackState:
    label: str
    last_seen: datetime
    last_frame: str
    sides: dict[str, tuple[int, Point]] = field(default_factory=dict)  # line -> side, anchor
    zones: dict[str, _Stay] = field(default_factory=dict)
    anchor: Point | None = None  # where it was last seen


class WindowCounter:
    """Counts per (line or zone, event type, direction) in tumbling and hopping windows,
    aligned to the epoch; a window is sent once a frame at or after its end is seen."""

    def __init__(self, camera_id: str, tumbling_s: int, hopping_s: int, hop_s: int) -> None:
        self.camera_id = camera_id
        self._sizes = {"tumbling": (tumbling_s * 1_000_000, tumbling_s * 1_000_000),
                       "hopping": (hopping_s * 1_000_000, hop_s * 1_000_000)}
        # (kind, start us, name, counted, direction) -> count
        self.open: dict[tuple[str, int, str, str, str], int] = {}

    def add(self, event: AnalyticsEvent) -> None:
        t = micros(event.at)
        for kind, (size, step) in self._sizes.items():
            first = (t - size) // step + 1  # the earliest window start that still holds t
            for k in range(max(first, 0), t // step + 1):
                key = (kind, k * step, event.name, event.type, event.direction or "")
                self.open[key] = self.open.get(key, 0) + 1

    def close(self, now: datetime) -> list[AnalyticsEvent]:
        """The counts of every window that ended at or before ``now``, oldest first."""
        t = micros(now)
        done = sorted((k for k in self.open if k[1] + self._sizes[k[0]][0] <= t),
                      key=lambda k: (k[1] + self._sizes[k[0]][0], k))
        out = []
        emitted = utcnow()
        for key in done:
            kind, start, name, counted, direction = key
            end = start + self._sizes[kind][0]
            out.append(AnalyticsEvent(
                event_id=f"{self.camera_id}:{kind}:{start}:{end}:{name}:{counted}:{direction}",
                camera_id=self.camera_id, type="window_count", name=name,
                at=from_micros(end), emitted_at=emitted,
                window=WindowCount(kind, from_micros(start), from_micros(end), counted,
                                   self.open.pop(key), direction or None)))
        return out


class AlertWatch:
    """One ``zone_count`` rule: fires once when the count stayed above ``above`` for
    ``for_s`` seconds of frame time, resolves at the first frame it is not above."""

    def __init__(self, camera_id: str, rule: AlertRule) -> None:
        self.camera_id, self.rule = camera_id, rule
        self.since: datetime | None = None  # the condition holds since
        self.firing = False
        self.peak = 0

    def observe(self, frame_id: str, t: datetime, value: int) -> Alert | None:
        rule = self.rule
        if value > rule.above:
            if self.since is None:
                self.since, self.peak = t, value
            self.peak = max(self.peak, value)
            if not self.firing and (t - self.since).total_seconds() >= rule.for_s:
                self.firing = True
                return self._alert("firing", frame_id, t, value)
            return None
        alert = self._alert("resolved", frame_id, t, value) if self.firing else None
        self.since, self.firing, self.peak = None, False, 0
        return alert

    def _alert(self, state: str, frame_id: str, t: datetime, value: int) -> Alert:
        assert self.since is not None
        return Alert(
            alert_id=f"{self.camera_id}:{self.rule.rule_name}:{micros(self.since)}",
            camera_id=self.camera_id, rule=self.rule.rule_name, when=self.rule.when,
            zone=self.rule.zone, above=self.rule.above, for_s=self.rule.for_s, state=state,
            started_at=self.since, at=t, emitted_at=utcnow(), frame_id=frame_id, value=value,
            peak=self.peak)


class CameraAnalyzer:
    """Events, window counts and alerts of one camera, from its tracks frame by frame."""

    def __init__(self, camera_id: str, camera: CameraAnalytics,
                 settings: AnalyticsSettings) -> None:
        self.camera_id = camera_id
        self.camera = camera
        # what the tracks' sides and stays and the alerts' states are reckoned against: saved
        # with every state (once per frame), so worked out once
        self.rules = self._rules()
        self.settings = settings
        self.tracks: dict[int, _TrackState] = {}
        self.windows = WindowCounter(camera_id, settings.tumbling_s, settings.hopping_s,
                                     settings.hop_s)
        self.alerts = [AlertWatch(camera_id, rule) for rule in camera.alerts]
        self.last_at: datetime | None = None
        self._lost_after = timedelta(seconds=settings.lost_after_s)

    def observe(self, frame_id: str, captured_at: datetime, tracks: list[Track]) -> Findings:
        """One frame's tracks (in capture order; an older frame than the last is ignored)."""
        found = Findings()
        if self.last_at is not None and captured_at <= self.last_at:
            return found
        self.last_at = captured_at
        events = found.events
        for track in tracks:
            events.extend(self._move(frame_id, captured_at, track))
        events.extend(self._end_lost(captured_at))
        for event in events:
            self.windows.add(event)
        # a window closes lost_after_s after its end: a track's leave, stamped when it was
        # last seen, is known only then
        events.extend(self.windows.close(captured_at - self._lost_after))
        for watch in self.alerts:
            count = sum(watch.rule.zone in s.zones for s in self.tracks.values())
            alert = watch.observe(frame_id, captured_at, count)
            if alert is not None:
                found.alerts.append(alert)
        return found

    def _event(self, kind: str, name: str, frame_id: str, t: datetime, track_id: int,
               label: str, **extra: Any) -> AnalyticsEvent:
        return AnalyticsEvent(
            event_id=f"{self.camera_id}:{frame_id}:{kind}:{name}:{track_id}",
            camera_id=self.camera_id, type=kind, name=name, at=t, emitted_at=utcnow(),
            frame_id=frame_id, track_id=track_id, label=label, **extra)

    def _move(self, frame_id: str, t: datetime, track: Track) -> list[AnalyticsEvent]:
        events = []
        state = self.tracks.get(track.track_id)
        if state is None:
            state = self.tracks[track.track_id] = _TrackState(track.detection.label, t,
                                                               frame_id)
        state.last_seen, state.last_frame = t, frame_id
        d = track.detection
        p = state.anchor = anchor(d.x1, d.y1, d.x2, d.y2)
        tid, label = track.track_id, state.label
        for line in self.camera.lines:
            a, b = line.points
            now = side(a, b, p)
            if now == 0:
                continue
            before = state.sides.get(line.name)
            if before is not None and before[0] != now and segments_cross(before[1], p, a, b):
                # from the right-hand side (+1) to the left (-1) of the line as drawn: in
                direction = "in" if before[0] > 0 else "out"
                events.append(self._event("line_cross", line.name, frame_id, t, tid, label,
                                          direction=direction))
            state.sides[line.name] = (now, p)
        for zone in self.camera.zones:
            stay = state.zones.get(zone.name)
            if inside(zone.points, p):
                if stay is None:
                    stay = state.zones[zone.name] = _Stay(t)
                    events.append(self._event("zone_enter", zone.name, frame_id, t, tid, label))
                stayed = (t - stay.entered).total_seconds()
                if not stay.dwelled and stayed >= (zone.dwell_s or self.settings.dwell_s):
                    stay.dwelled = True
                    events.append(self._event("dwell", zone.name, frame_id, t, tid, label,
                                              dwell_s=stayed))
            elif stay is not None:
                del state.zones[zone.name]
                events.append(self._event("zone_leave", zone.name, frame_id, t, tid, label,
                                          dwell_s=(t - stay.entered).total_seconds()))
        return events

    def _end_lost(self, now: datetime) -> list[AnalyticsEvent]:
        """Tracks not seen for lost_after_s have ended: they leave their zones."""
        events = []
        for tid in [t for t, s in self.tracks.items() if now - s.last_seen >= self._lost_after]:
            state = self.tracks.pop(tid)
            for name, stay in state.zones.items():
                events.append(self._event(
                    "zone_leave", name, state.last_frame, state.last_seen, tid, state.label,
                    dwell_s=(state.last_seen - stay.entered).total_seconds()))
        return events

    def export_state(self) -> dict[str, Any]:
        """Tracks' sides and stays, open windows and alert states, as plain JSON."""
        return {
            "version": STATE_VERSION,
            "last_at": None if self.last_at is None else micros(self.last_at),
            "tracks": {str(tid): {
                "label": s.label, "last_seen": micros(s.last_seen), "last_frame": s.last_frame,
                "sides": {n: [v, list(p)] for n, (v, p) in s.sides.items()},
                "zones": {n: [micros(z.entered), z.dwelled] for n, z in s.zones.items()},
                "anchor": None if s.anchor is None else list(s.anchor),
            } for tid, s in self.tracks.items()},
            "windows": [[*key, n] for key, n in self.windows.open.items()],
            "alerts": {w.rule.rule_name: [None if w.since is None else micros(w.since),
                                          w.firing, w.peak] for w in self.alerts},
            "rules": self.rules,
        }

    def _rules(self) -> dict[str, list[Any]]:
        """Each line's and zone's points and each alert rule, by name: what the tracks'
        sides and stays and the alerts' states were reckoned against."""
        rules: dict[str, Any] = {f"{kind}:{rule.name}": [list(p) for p in rule.points]
                                 for kind, found in (("line", self.camera.lines),
                                                     ("zone", self.camera.zones))
                                 for rule in found}
        rules.update({f"alert:{r.rule_name}": r.model_dump(mode="json")
                      for r in self.camera.alerts})
        return rules

    def import_state(self, state: dict[str, Any], frame_id: str = "",
                     at: datetime | None = None) -> Findings:
        """Take up where ``export_state()`` left off, under this analyzer's settings.

        They may differ from those the state was saved under (the camera's settings changed;
        ``frame_id`` and ``at``: the frame the change is seen at). Then what the change ends
        is returned, and counted in the windows:

        - a line redrawn: each track's side of it is taken again, under the new points, from
          its last point off the line (a pass spanning the change counts once);
        - a zone redrawn: a track whose last anchor is inside the new polygon stays (same
          entry time); one outside leaves it (``zone_leave`` stamped when it was last seen);
        - a zone taken away: its tracks leave it, likewise; a line taken away is forgotten;
        - an alert rule taken away or changed (zone, threshold, duration): ``resolved`` if
          it was firing; a changed rule starts counting afresh.

        Windows still open are kept, and sent when they close. A state without rules (an
        older one) is taken as saved under these settings."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"analytics state version {state.get('version')!r} is not "
                             f"{STATE_VERSION}; start the camera's analytics afresh")
        last = state.get("last_at")
        self.last_at = None if last is None else from_micros(last)
        then, now = state.get("rules"), self.rules
        same = (lambda key: True) if then is None else (lambda key: then.get(key) == now.get(key))
        lines = {line.name: line.points for line in self.camera.lines}
        zones = {zone.name: zone.points for zone in self.camera.zones}
        found = Findings()

        def sides(saved: dict[str, Any]) -> dict[str, tuple[int, Point]]:
            out = {}
            for name, (v, p) in saved.items():
                if name not in lines:
                    continue
                if not same(f"line:{name}"):
                    v = side(lines[name][0], lines[name][1], (p[0], p[1]))
                if v:
                    out[name] = (v, (p[0], p[1]))
            return out

        self.tracks = {}
        for key, saved in state["tracks"].items():
            tid, point = int(key), saved.get("anchor")
            track = self.tracks[tid] = _TrackState(
                saved["label"], from_micros(saved["last_seen"]), saved["last_frame"],
                sides(saved["sides"]), {},
                None if point is None else (point[0], point[1]))
            for name, (entered, dwelled) in saved["zones"].items():
                stay = _Stay(from_micros(entered), dwelled)
                if name in zones and (same(f"zone:{name}") or (
                        track.anchor is not None and inside(zones[name], track.anchor))):
                    track.zones[name] = stay
                else:
                    found.events.append(self._event(
                        "zone_leave", name, track.last_frame, track.last_seen, tid,
                        track.label, dwell_s=(track.last_seen - stay.entered).total_seconds()))
        self.windows.open = {(k, s, n, c, d): count
                             for k, s, n, c, d, count in state["windows"]}
        for event in found.events:
            self.windows.add(event)
        saved_alerts, kept = state["alerts"], set()
        for watch in self.alerts:
            name = watch.rule.rule_name
            if same(f"alert:{name}"):
                kept.add(name)
                since, firing, peak = saved_alerts.get(name, (None, False, 0))
                watch.since = None if since is None else from_micros(since)
                watch.firing, watch.peak = firing, peak
        for name, (since, firing, peak) in saved_alerts.items():
            old_rule = (then or {}).get(f"alert:{name}")
            if name in kept or not firing or since is None or old_rule is None:
                continue
            ended = AlertWatch(self.camera_id, AlertRule.model_validate(old_rule))
            ended.since, ended.peak = from_micros(since), peak
            value = sum(ended.rule.zone in t.zones for t in self.tracks.values())
            found.alerts.append(ended._alert("resolved", frame_id, at or self.last_at or
                                             ended.since, value))
        return found


def camera_tracker(settings: AnalyticsSettings, camera: CameraAnalytics,
                   state: dict[str, Any] | None = None) -> CameraTracker:
    """The camera's tracker as the settings say, rebuilt from ``state`` when given."""
    options: dict[str, Any] = {
        "buffer_s": settings.track_buffer_s, "activation_score": settings.activation_score,
        "min_score": settings.min_score, "labels": camera.labels, "replay_s": settings.replay_s}
    return CameraTracker(**options) if state is None else CameraTracker.from_state(state,
                                                                                   **options)
