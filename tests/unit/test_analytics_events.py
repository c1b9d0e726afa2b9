"""Known answers: tracks walking known paths give exact line crossings, zone stays, window
counts and alerts, at exact frame times."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from framewire.analytics.events import CameraAnalyzer, Findings
from framewire.analytics.records import AnalyticsEvent
from framewire.analytics.settings import AnalyticsSettings
from framewire.analytics.tracking import Track
from framewire.contracts import Detection

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)  # on a minute: windows start at T0 + k * 60 s
Waypoints = Sequence[tuple[float, float, float]]  # (t, x, y) of the anchor, walked in lines


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def position(waypoints: Waypoints, t: float) -> tuple[float, float] | None:
    """The anchor at ``t`` on the piecewise-linear walk, None before its start or after its end."""
    for (ta, xa, ya), (tb, xb, yb) in zip(waypoints, waypoints[1:], strict=False):
        if ta <= t <= tb:
            f = 0.0 if tb == ta else (t - ta) / (tb - ta)
            return xa + f * (xb - xa), ya + f * (yb - ya)
    if len(waypoints) == 1 and waypoints[0][0] == t:
        return waypoints[0][1], waypoints[0][2]
    return None


def walk(analyzer: CameraAnalyzer, walks: dict[int, Waypoints], until: float,
         fps: float = 10.0, start: float = 0.0) -> list[tuple[float, Findings]]:
    """Every frame from ``start`` to ``until`` (frame k at k / fps s), each walker a 60x120
    box."""
    out = []
    for k in range(round(start * fps), round(until * fps) + 1):
        t = k / fps
        tracks = []
        for track_id, waypoints in walks.items():
            p = position(waypoints, t)
            if p is not None:
                tracks.append(Track(track_id, Detection("person", 0, 0.9, p[0] - 30,
                                                        p[1] - 120, p[0] + 30, p[1])))
        out.append((t, analyzer.observe(f"f{k}", at(t), tracks)))
    return out


def events(frames: list[tuple[float, Findings]], kind: str | None = None) -> list[AnalyticsEvent]:
    return [e for _, f in frames for e in f.events if kind is None or e.type == kind]


def analyzer(settings: dict, **camera: object) -> CameraAnalyzer:
    s = AnalyticsSettings.model_validate({"cameras": {"door-1": camera}, **settings})
    return CameraAnalyzer("door-1", s.cameras["door-1"], s)


DOOR = {"name": "door", "points": [[640, 0], [640, 720]]}  # drawn top to bottom
SHORT = {"name": "short", "points": [[900, 100], [900, 400]]}
BAY = {"name": "bay", "points": [[0, 400], [600, 400], [600, 700], [0, 700]]}


def test_line_crossings_are_counted_once_per_pass_with_their_direction():
    a = analyzer({}, lines=[DOOR, SHORT])
    frames = walk(a, {
        1: [(0, 100, 600), (10, 1180, 600)],  # left to right, below the short line's end
        2: [(0, 1180, 300), (10, 100, 300)],  # right to left, through both lines
        3: [(0, 100, 650), (4, 1180, 650), (8, 100, 650), (12, 1180, 650)],  # there and back
        4: [(0, 500, 200), (12, 520, 260)],  # never reaches a line
    }, until=12)
    crossings = Counter((e.name, e.direction) for e in events(frames, "line_cross"))
    assert crossings == {("door", "in"): 3, ("door", "out"): 2, ("short", "out"): 1}
    first = [e for e in events(frames, "line_cross") if e.track_id == 1]
    # x = 640 exactly at 5.0 s is on the line; the first frame past it, 5.1 s, crosses
    assert [(e.at, e.frame_id, e.label) for e in first] == [(at(5.1), "f51", "person")]


def test_a_track_that_stops_on_the_line_counts_once_it_is_off_it():
    a = analyzer({}, lines=[DOOR])
    frames = walk(a, {7: [(0, 600, 500), (2, 640, 500), (5, 640, 500), (6, 660, 500)]},
                  until=6)
    assert [(e.direction, e.at) for e in events(frames, "line_cross")] == [("in", at(5.1))]


def test_zone_enter_leave_and_dwell_at_known_times():
    a = analyzer({"dwell_s": 3, "lost_after_s": 2}, zones=[BAY])
    frames = walk(a, {
        # walks in (y = 400 at 0.45 s: inside from the 0.5 s frame), stands, walks out the
        # right edge (x = 600 at 12.95 s: outside from the 13.0 s frame)
        1: [(0, 300, 355), (3, 300, 655), (10, 300, 655), (15, 800, 655)],
        # appears inside at 2 s and is last seen there at 6 s: the track ends
        2: [(2, 100, 500), (6, 100, 500)],
    }, until=15)
    got = [(e.type, e.track_id, e.at, e.frame_id, e.dwell_s) for e in events(frames)
           if e.type != "window_count"]
    assert got == [
        ("zone_enter", 1, at(0.5), "f5", None),
        ("zone_enter", 2, at(2.0), "f20", None),
        ("dwell", 1, at(3.5), "f35", 3.0),
        ("dwell", 2, at(5.0), "f50", 3.0),
        ("zone_leave", 2, at(6.0), "f60", 4.0),  # stamped when last seen...
        ("zone_leave", 1, at(13.0), "f130", 12.5),
    ]
    leave = next(t for t, f in frames if any(e.track_id == 2 and e.type == "zone_leave"
                                             for e in f.events))
    assert leave == 8.0  # ...and known once it has not been seen for lost_after_s


def test_window_counts_in_tumbling_and_hopping_windows():
    a = analyzer({"tumbling_s": 60, "hopping_s": 300, "hop_s": 60, "lost_after_s": 2},
                 lines=[DOOR])
    # each walker crosses the door at its time: x = 625 half a second before, 645 at it
    def crossing(tc: float, rightwards: bool = True) -> Waypoints:
        d = 1 if rightwards else -1
        return [(tc - 1, 640 - d * 35, 500), (tc + 1, 640 + d * 45, 500)]

    walks = {i + 1: crossing(tc) for i, tc in enumerate([10, 70, 130, 250, 310])}
    walks[9] = crossing(65, rightwards=False)
    frames = walk(a, walks, until=605, fps=2)
    assert [(e.at, e.direction) for e in events(frames, "line_cross")] == [
        (at(10), "in"), (at(65), "out"), (at(70), "in"), (at(130), "in"), (at(250), "in"),
        (at(310), "in")]
    counts = {(w.window.kind, w.window.direction, (w.window.start - T0).total_seconds()):
              w.window.count for w in events(frames, "window_count")}
    tumbling_in = {s: n for (k, d, s), n in counts.items() if k == "tumbling" and d == "in"}
    assert tumbling_in == {0: 1, 60: 1, 120: 1, 240: 1, 300: 1}
    assert {(k, s): n for (k, d, s), n in counts.items() if d == "out"} == {
        ("tumbling", 60): 1, **{("hopping", s): 1 for s in (-180, -120, -60, 0, 60)}}
    hopping_in = {s: n for (k, d, s), n in counts.items() if k == "hopping" and d == "in"}
    assert hopping_in == {-240: 1, -180: 2, -120: 3, -60: 3, 0: 4, 60: 4, 120: 3, 180: 2,
                          240: 2, 300: 1}
    window = next(w for w in events(frames, "window_count")
                  if w.window.kind == "tumbling" and w.window.start == at(60)
                  and w.window.direction == "in")
    assert (window.name, window.window.counted, window.at, window.window.end) == (
        "door", "line_cross", at(120), at(120))
    sent = next(t for t, f in frames if window in f.events)
    assert sent == 122.0  # the first frame lost_after_s past the window's end
    assert len({w.event_id for w in events(frames, "window_count")}) == len(counts)


def test_a_zone_count_alert_fires_once_after_for_s_and_resolves():
    a = analyzer({"lost_after_s": 2}, zones=[BAY],
                 alerts=[{"when": "zone_count", "zone": "bay", "above": 2, "for_s": 5}])
    inside, outside = (100, 500), (100, 300)
    stand = {i: [(10, *inside), (30, *inside)] for i in (1, 2)}
    frames = walk(a, {
        **stand,
        3: [(10, *inside), (29.95, *inside), (30, *outside), (40, *outside)],
        4: [(12, 300, 500), (19.95, 300, 500), (20, 300, 300), (25, 300, 300)],
        # a second crowd that lasts 3 s, less than for_s: no alert
        5: [(50, *inside), (53, *inside), (53.05, *outside), (55, *outside)],
        6: [(50, 200, 500), (53, 200, 500), (53.05, 200, 300), (55, 200, 300)],
        7: [(50, 300, 500), (53, 300, 500), (53.05, 300, 300), (55, 300, 300)],
    }, until=60)
    alerts = [a for _, f in frames for a in f.alerts]
    assert [(x.state, x.at, x.started_at, x.value, x.peak, x.frame_id) for x in alerts] == [
        ("firing", at(15), at(10), 4, 4, "f150"),
        ("resolved", at(30), at(10), 2, 4, "f300"),
    ]
    assert alerts[0].alert_id == alerts[1].alert_id
    assert (alerts[0].rule, alerts[0].zone, alerts[0].above, alerts[0].for_s) == (
        "zone_count:bay:2", "bay", 2, 5.0)


def test_the_analyzer_takes_up_from_its_exported_state_as_if_never_stopped():
    settings = {"dwell_s": 3, "lost_after_s": 2, "tumbling_s": 10, "hopping_s": 20, "hop_s": 10}
    rules = {"lines": [DOOR], "zones": [BAY],
             "alerts": [{"when": "zone_count", "zone": "bay", "above": 0, "for_s": 1}]}
    walks = {1: [(0, 100, 450), (30, 1180, 450)], 2: [(0, 1180, 500), (25, 100, 500)],
             3: [(5, 300, 600), (40, 300, 600)]}
    straight = walk(analyzer(settings, **rules), walks, until=45)
    first = analyzer(settings, **rules)
    before = walk(first, walks, until=17)
    second = analyzer(settings, **rules)
    second.import_state(json.loads(json.dumps(first.export_state())))
    resumed = before + walk(second, walks, until=45, start=17.1)

    def ids(frames: list[tuple[float, Findings]]) -> list[str]:
        return [e.event_id for _, f in frames for e in f.events] + \
            [f"{x.alert_id}:{x.state}" for _, f in frames for x in f.alerts]

    assert ids(resumed) == ids(straight)
    assert len(ids(straight)) > 20
