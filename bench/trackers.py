"""The tracker choice, measured: id switches and speed of each candidate on the same scene.

The scene (``framewire.analytics.synthetic``) has boxes moving on known paths at 10 frames a
second for 60 s, with corner noise and missed detections, and three pairs of objects whose
paths cross (one pair head-on at the same height, boxes fully overlapping as they pass). Each
candidate that imports in this environment is fed the same frames; for each true object the
ids it got are followed frame by frame:

- ``id_switches``: how many times an object's id changed (the CLEAR-MOT count), over
  ``--seeds`` scenes drawn with different noise and misses;
- ``ids_per_object``: distinct ids an object got, on average (1.0 is perfect);
- ``kept``: the share of objects whose last id is the id they started with (a swap at a
  crossing that was undone a frame later still counts as switches, but not here);
- ``coverage``: the share of detections that came back with a track id;
- ``ms_per_1000``: tracker time per 1,000 detections (median of ``--repeat`` runs);
- ``footprint_kb``: the installed size of the candidate and the pure packages it needs here.

Run: ``.venv/bin/python -m bench.trackers [--only NAME] [--json]``. A candidate is installed
next to the project without touching its environment, e.g.
``pip install --no-deps --target .trackers/supervision supervision==0.30.9 pydeprecate==0.13.0
defusedxml==0.7.1 tqdm==4.70.1`` then ``PYTHONPATH=.trackers/supervision .venv/bin/python -m
bench.trackers --only supervision`` (docs/analytics.md has the three commands and the numbers).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import statistics
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from framewire.analytics.synthetic import Mover, SceneFrame, scene

FPS = 10.0
# what each candidate needs installed (--no-deps) beyond what Framewire already ships
NEEDS = {
    "trackers": ["trackers", "supervision", "pydeprecate", "defusedxml", "tqdm"],
    "supervision": ["supervision", "pydeprecate", "defusedxml", "tqdm"],
    "norfair": ["norfair", "filterpy"],
}

# (frame ids) -> ids per row, -1 for a row without a track id
Update = Callable[[SceneFrame], list[int]]


def bench_scene(seed: int = 0) -> list[SceneFrame]:
    """60 s at 10 fps on a 1280x720 view: walkers, three crossings, one who stands still."""
    movers = [
        # head-on at the same height: the boxes overlap fully as they pass (t = 10 s)
        Mover((80, 600), (1200, 600), 0, 20),
        Mover((1200, 600), (80, 600), 0, 20),
        # head-on, one a little nearer the camera (lower and larger)
        Mover((100, 420), (1180, 470), 15, 35, size=(50, 100)),
        Mover((1180, 480), (100, 430), 15, 35, size=(70, 140)),
        # diagonal, crossing at right angles
        Mover((200, 200), (1000, 700), 30, 50),
        Mover((1000, 200), (200, 700), 30, 50),
        # someone standing still, and walkers through the rest of the minute
        Mover((640, 360), (645, 362), 5, 55),
        Mover((0, 300), (1280, 320), 40, 58),
        Mover((600, 720), (700, 150), 2, 14, size=(40, 90)),
    ]
    return scene(movers, FPS, 60.0, noise_px=3.0, miss_rate=0.1, seed=seed)


def detections(sv: Any, boxes: np.ndarray) -> Any:
    """The rows as supervision's Detections, each carrying its row number."""
    return sv.Detections(xyxy=boxes[:, :4], confidence=boxes[:, 4],
                         class_id=boxes[:, 5].astype(int), data={"row": np.arange(len(boxes))})


def ids_by_row(out: Any, boxes: np.ndarray) -> list[int]:
    """The track id the tracker gave each row (-1: none)."""
    ids = [-1] * len(boxes)
    tracked = out.tracker_id if out.tracker_id is not None else []
    for row, track in zip(out.data.get("row", []), tracked, strict=True):
        ids[int(row)] = int(track)
    return ids


def trackers_update() -> Update:
    import supervision as sv
    from trackers import ByteTrackTracker

    # 10 fps; a track lost for up to 1 s (30 frames at 30 fps) can be picked up again
    tracker = ByteTrackTracker(frame_rate=FPS, lost_track_buffer=30, minimum_consecutive_frames=1)

    def update(frame: SceneFrame) -> list[int]:
        boxes = frame.boxes
        return ids_by_row(tracker.update(detections(sv, boxes), timestamp=frame.t), boxes)

    return update


def supervision_update() -> Update:
    import supervision as sv  # 0.30 at most: 0.31 no longer has ByteTrack

    with warnings.catch_warnings():  # deprecated since 0.28 in favour of `trackers`
        warnings.simplefilter("ignore")
        tracker = sv.ByteTrack(  # type: ignore[attr-defined]
            frame_rate=int(FPS), lost_track_buffer=30, minimum_consecutive_frames=1)

    def update(frame: SceneFrame) -> list[int]:
        boxes = frame.boxes
        return ids_by_row(tracker.update_with_detections(detections(sv, boxes)), boxes)

    return update


def norfair_update() -> Update:
    import norfair

    # iou distance is 1 - IoU: 0.9 keeps a match down to IoU 0.1, like the ByteTracks above
    tracker = norfair.Tracker(distance_function="iou", distance_threshold=0.9,
                              hit_counter_max=10, initialization_delay=0)

    def update(frame: SceneFrame) -> list[int]:
        boxes = frame.boxes
        detections = [norfair.Detection(points=row[:4].reshape(2, 2),
                                        scores=np.array([row[4], row[4]]), data=(frame.seq, i))
                      for i, row in enumerate(boxes)]
        ids = [-1] * len(boxes)
        for obj in tracker.update(detections=detections):
            seq, row = obj.last_detection.data
            if seq == frame.seq and obj.id is not None:
                ids[row] = int(obj.id)
        return ids

    return update


CANDIDATES: dict[str, Callable[[], Update]] = {
    "trackers": trackers_update, "supervision": supervision_update, "norfair": norfair_update,
}


@dataclass
class Row:
    candidate: str
    version: str
    id_switches: int
    ids_per_object: float
    kept: float
    coverage: float
    ms_per_1000: float
    footprint_kb: int


def score(frames: list[SceneFrame], ids: list[list[int]]) -> tuple[int, float, float, float]:
    """(id switches, distinct ids per object, share of objects ending with their first id,
    share of rows with an id) against the truth."""
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    seen: dict[int, set[int]] = {}
    switches = tracked = rows = 0
    for frame, frame_ids in zip(frames, ids, strict=True):
        for truth, track in zip(frame.truth, frame_ids, strict=True):
            rows += 1
            if track < 0:
                continue
            tracked += 1
            first.setdefault(truth, track)
            seen.setdefault(truth, set()).add(track)
            if truth in last and last[truth] != track:
                switches += 1
            last[truth] = track
    per_object = statistics.mean(len(s) for s in seen.values()) if seen else 0.0
    kept = sum(first[k] == last[k] for k in first) / len(first) if first else 0.0
    return switches, per_object, kept, tracked / rows if rows else 0.0


def footprint_kb(names: Iterable[str]) -> int:
    total = 0
    for name in names:
        try:
            files = importlib.metadata.distribution(name).files or []
        except importlib.metadata.PackageNotFoundError:
            continue
        total += sum(f.size or 0 for f in files)
    return total // 1024


def measure(name: str, seeds: int = 5, repeat: int = 3) -> Row:
    """``name`` on the scene drawn with each of ``seeds`` seeds (noise and misses differ)."""
    switches, per_object, kept, coverage, per_1000 = 0, [], [], [], []
    for seed in range(seeds):
        frames = bench_scene(seed)
        detections = sum(len(f.boxes) for f in frames)
        timings: list[float] = []
        ids: list[list[int]] = []
        for _ in range(repeat):
            update = CANDIDATES[name]()
            ids = []
            start = time.perf_counter()
            for frame in frames:
                ids.append(update(frame))
            timings.append(time.perf_counter() - start)
        s, p, k, c = score(frames, ids)
        switches += s
        per_object.append(p)
        kept.append(k)
        coverage.append(c)
        per_1000.append(statistics.median(timings) / detections * 1e6)
    return Row(name, importlib.metadata.version(name), switches,
               round(statistics.mean(per_object), 2), round(statistics.mean(kept), 3),
               round(statistics.mean(coverage), 3),
               round(statistics.median(per_1000), 1), footprint_kb(NEEDS[name]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(CANDIDATES), action="append")
    parser.add_argument("--seeds", type=int, default=5, help="scenes to draw (default 5)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each (default 3)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = []
    for name in args.only or CANDIDATES:
        try:
            rows.append(measure(name, args.seeds, args.repeat))
        except ImportError as exc:
            print(f"{name}: not installed here ({exc}); see this module's docstring")
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
        return
    print("| candidate | version | id switches | ids per object | kept | coverage | "
          "ms per 1,000 detections | installed (KiB) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r.candidate} | {r.version} | {r.id_switches} | {r.ids_per_object} | "
              f"{r.kept} | {r.coverage} | {r.ms_per_1000} | {r.footprint_kb} |")


if __name__ == "__main__":
    main()
