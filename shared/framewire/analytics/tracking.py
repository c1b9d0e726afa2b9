"""Track ids per camera over Roboflow's ``trackers`` ByteTrack, kept across a worker restart.

``CameraTracker`` feeds one camera's frames, in order, to a ``ByteTrackTracker`` (motion and
box overlap only: no appearance model, no pixels) and hands out its own ids, counted per
camera from 1, so that they survive a rebuilt tracker. It keeps the last ``replay_s`` seconds
of detections with the ids they got; ``export_state()`` is that window (plain JSON), and
``CameraTracker.from_state()`` replays it into a fresh tracker and gives each track the id
its boxes had. The limits of a rebuild are in docs/analytics.md ("Track ids after a restart").
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from framewire.contracts import Detection

STATE_VERSION = 1


@dataclass(frozen=True, slots=True)
class Track:
    """One tracked object in one frame: its id, and the detection it was seen as."""

    track_id: int
    detection: Detection


@dataclass
class _Seen:
    """One frame as the tracker saw it: rows x1 y1 x2 y2 score class_id, labels, given ids."""

    t: float
    rows: np.ndarray
    labels: list[str]
    ids: list[int]


class CameraTracker:
    """One camera's tracker: frames in (in capture order), ``Track``s with stable ids out."""

    def __init__(self, *, frame_rate: float = 10.0, buffer_s: float = 1.0,
                 activation_score: float = 0.5, min_score: float = 0.25,
                 labels: Sequence[str] = (), replay_s: float = 3.0) -> None:
        from trackers import ByteTrackTracker

        # the tracker counts its buffer in frames of 30 fps video and scales it by the
        # timestamps it is given, so a camera's own rate (and dropped frames) need no setting
        self._tracker = ByteTrackTracker(
            lost_track_buffer=max(1, round(buffer_s * 30)), frame_rate=frame_rate,
            track_activation_threshold=activation_score,
            high_conf_det_threshold=activation_score, minimum_consecutive_frames=2)
        self._min_score = min_score
        self._labels = frozenset(labels)
        self._replay_s = replay_s
        self._ids: dict[int, int] = {}  # the tracker's id -> ours
        self._next_id = 1
        self._recent: deque[_Seen] = deque()
        self._last_t: float | None = None

    def update(self, captured_at: datetime, detections: Sequence[Detection]) -> list[Track]:
        """The tracks seen in this frame (detections not yet confirmed as a track are left
        out); frames must come in capture order: an older one than the last is ignored."""
        t = captured_at.timestamp()
        if self._last_t is not None and t <= self._last_t:
            return []
        kept = [d for d in detections if d.score >= self._min_score
                and (not self._labels or d.label in self._labels)]
        rows = np.array([[d.x1, d.y1, d.x2, d.y2, d.score, d.class_id] for d in kept],
                        dtype=np.float64).reshape(-1, 6)
        labels = [d.label for d in kept]
        ids = self._assign(self._feed(t, rows), allocate=True)
        self._remember(_Seen(t, rows, labels, ids))
        return [Track(track_id, kept[i]) for i, track_id in enumerate(ids) if track_id > 0]

    def _feed(self, t: float, rows: np.ndarray) -> list[int]:
        """The tracker's id for each row (-1: not a confirmed track)."""
        import supervision as sv

        self._last_t = t
        out = self._tracker.update(sv.Detections(
            xyxy=rows[:, :4], confidence=rows[:, 4], class_id=rows[:, 5].astype(int),
            data={"row": np.arange(len(rows))}), timestamp=t)
        internal = [-1] * len(rows)
        tracker_ids: Any = out.tracker_id if out.tracker_id is not None else []
        for row, tracker_id in zip(out.data.get("row", []), tracker_ids, strict=True):
            internal[int(row)] = int(tracker_id)
        return internal

    def _assign(self, internal: list[int], allocate: bool) -> list[int]:
        alive = {t.tracker_id for t in self._tracker.tracks}
        for gone in [i for i in self._ids if i not in alive]:
            del self._ids[gone]
        ids = []
        for tracker_id in internal:
            if tracker_id < 0:
                ids.append(-1)
                continue
            if tracker_id not in self._ids and allocate:
                self._ids[tracker_id] = self._next_id
                self._next_id += 1
            ids.append(self._ids.get(tracker_id, -1))
        return ids

    def _remember(self, seen: _Seen) -> None:
        self._recent.append(seen)
        while self._recent and self._recent[0].t < seen.t - self._replay_s:
            self._recent.popleft()

    def export_state(self) -> dict[str, Any]:
        """The recent window and the id counter, as plain JSON (for a changelog table)."""
        return {"version": STATE_VERSION, "next_id": self._next_id,
                "frames": [{"t": s.t, "rows": s.rows.tolist(), "labels": s.labels,
                            "ids": s.ids} for s in self._recent]}

    @classmethod
    def from_state(cls, state: dict[str, Any], **options: Any) -> CameraTracker:
        """A tracker rebuilt from ``export_state()``: the window replayed, each track given
        the id its boxes had in it; ids go on from where they were."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"tracker state version {state.get('version')!r} is not "
                             f"{STATE_VERSION}; start the camera's tracks afresh")
        tracker = cls(**options)
        for frame in state["frames"]:
            rows = np.array(frame["rows"], dtype=np.float64).reshape(-1, 6)
            internal = tracker._feed(frame["t"], rows)
            for tracker_id, given in zip(internal, frame["ids"], strict=True):
                # a track split or merged by the replay keeps one id, never two tracks one id
                if tracker_id >= 0 and given > 0 and tracker_id not in tracker._ids and \
                        given not in tracker._ids.values():
                    tracker._ids[tracker_id] = given
            tracker._remember(_Seen(frame["t"], rows, list(frame["labels"]),
                                    list(frame["ids"])))
        tracker._next_id = max(int(state["next_id"]), tracker._next_id)
        return tracker
