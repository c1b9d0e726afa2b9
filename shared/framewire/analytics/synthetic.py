"""Detections of boxes moving on known paths: the known answers for tests and the tracker bench.

A ``Mover`` is one object: a box of fixed size whose bottom-centre (the anchor the analytics
uses) moves in a straight line at constant speed between two times. ``scene()`` samples the
movers at a frame rate into ``SceneFrame``s, optionally with pixel noise on the corners and
missed detections, and keeps each box's true object index so that a tracker's ids can be scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Mover:
    """A box ``size`` (w, h) whose anchor goes from ``start`` at ``t0`` to ``end`` at ``t1``."""

    start: tuple[float, float]
    end: tuple[float, float]
    t0: float
    t1: float
    size: tuple[float, float] = (60.0, 120.0)
    score: float = 0.9
    class_id: int = 0

    def anchor_at(self, t: float) -> tuple[float, float] | None:
        """The anchor (bottom-centre) at ``t``, or None outside [t0, t1]."""
        if not self.t0 <= t <= self.t1:
            return None
        f = 0.0 if self.t1 == self.t0 else (t - self.t0) / (self.t1 - self.t0)
        return (self.start[0] + f * (self.end[0] - self.start[0]),
                self.start[1] + f * (self.end[1] - self.start[1]))

    def box_at(self, t: float) -> tuple[float, float, float, float] | None:
        """The box (x1, y1, x2, y2) at ``t``, or None outside [t0, t1]."""
        anchor = self.anchor_at(t)
        if anchor is None:
            return None
        w, h = self.size
        return (anchor[0] - w / 2, anchor[1] - h, anchor[0] + w / 2, anchor[1])


@dataclass
class SceneFrame:
    """One frame's detections: ``boxes`` rows are x1, y1, x2, y2, score, class_id; ``truth``
    holds the index (into the movers) of the object each row shows."""

    seq: int
    t: float
    boxes: np.ndarray
    truth: list[int] = field(default_factory=list)


def scene(movers: Sequence[Mover], fps: float, duration_s: float, *, noise_px: float = 0.0,
          miss_rate: float = 0.0, seed: int = 0, t_start: float = 0.0) -> list[SceneFrame]:
    """The movers seen at ``fps`` from ``t_start`` for ``duration_s``; each box is missed with
    probability ``miss_rate`` and its corners get Gaussian noise of ``noise_px`` pixels."""
    rng = np.random.default_rng(seed)
    frames = []
    n = round(duration_s * fps)
    for seq in range(n):
        t = t_start + seq / fps
        rows, truth = [], []
        for index, mover in enumerate(movers):
            box = mover.box_at(t - t_start)
            if box is None or (miss_rate and rng.random() < miss_rate):
                continue
            corners = np.array(box) + (rng.normal(0, noise_px, 4) if noise_px else 0.0)
            rows.append([*corners, mover.score, float(mover.class_id)])
            truth.append(index)
        boxes = np.array(rows, dtype=np.float64).reshape(-1, 6)
        frames.append(SceneFrame(seq, t, boxes, truth))
    return frames
