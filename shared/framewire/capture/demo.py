"""Demo cameras: real photographs with a real face moving across them, so detectors fire.

The face is the astronaut's head from scikit-image's bundled ``astronaut()`` photo, feathered
onto a face-free background (``coffee``, ``chelsea`` or ``rocket``) and moved along a smooth
Lissajous path that is fixed by the camera id. Each frame carries its camera id and number.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Iterator
from functools import cache

import cv2
import numpy as np
import skimage.data

from framewire.capture.sources import CapturedImage, Pacer, encode_jpeg
from framewire.contracts import utcnow

Box = tuple[int, int, int, int]

# In astronaut() pixels, checked by eye and by CenterFace, which finds (182, 59, 270, 177).
HEAD_CROP: Box = (140, 10, 310, 210)
FACE_BOX: Box = (180, 55, 270, 178)
BACKGROUNDS = ("coffee", "chelsea", "rocket")
REFERENCE_HEIGHT = 540  # the head is shown at its photo size in a 540-pixel-high frame
PERIOD_FRAMES = (240, 480)  # one loop of the path takes this many frames, by camera


@cache
def _head() -> tuple[np.ndarray, np.ndarray]:
    """The astronaut's head (BGR float32) and its feathered elliptical alpha (H×W×1)."""
    x1, y1, x2, y2 = HEAD_CROP
    rgb = skimage.data.astronaut()[y1:y2, x1:x2]
    head = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR).astype(np.float32)
    h, w = head.shape[:2]
    mask = np.zeros((h, w), np.float32)
    # The face's corners sit well inside this ellipse, so feathering only softens hair and suit.
    cv2.ellipse(mask, (w // 2, h // 2), (w // 2 - 4, h // 2 - 4), 0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=4)
    return head, mask[:, :, None]


@cache
def _scaled_head(scale: float) -> tuple[np.ndarray, np.ndarray]:
    head, alpha = _head()
    if scale == 1.0:
        return head, alpha
    size = (max(1, round(head.shape[1] * scale)), max(1, round(head.shape[0] * scale)))
    scaled_alpha = cv2.resize(alpha, size, interpolation=cv2.INTER_AREA)[:, :, None]
    return cv2.resize(head, size, interpolation=cv2.INTER_AREA), scaled_alpha


@cache
def _background(name: str, width: int, height: int) -> np.ndarray:
    """A bundled photo, cropped to the frame's aspect and resized to it (BGR uint8)."""
    rgb = getattr(skimage.data, name)()
    h, w = rgb.shape[:2]
    if w * height > h * width:  # too wide: keep the middle columns
        keep = h * width // height
        rgb = rgb[:, (w - keep) // 2 : (w - keep) // 2 + keep]
    else:
        keep = w * height // width
        rgb = rgb[(h - keep) // 2 : (h - keep) // 2 + keep]
    bgr = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
    return cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA)


def camera_seed(camera_id: str) -> int:
    """A seed fixed by the camera id (Python's hash() changes between runs)."""
    return int.from_bytes(hashlib.sha256(camera_id.encode()).digest()[:8], "big")


class DemoScene:
    """One demo camera: a background with the astronaut's face moving along a path."""

    def __init__(
        self, camera_id: str, width: int = 960, height: int = 540, seed: int | None = None
    ) -> None:
        if width < 64 or height < 64:
            raise ValueError(f"a demo frame must be at least 64×64, not {width}×{height}")
        self.camera_id, self.width, self.height = camera_id, width, height
        rng = np.random.default_rng(camera_seed(camera_id) if seed is None else seed)
        self.background = _background(
            BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))], width, height
        )
        scale = min(height / REFERENCE_HEIGHT, width / (REFERENCE_HEIGHT * 16 / 9))
        crop_w, crop_h = HEAD_CROP[2] - HEAD_CROP[0], HEAD_CROP[3] - HEAD_CROP[1]
        # Never larger than 90% of the frame, so the head always has room to move.
        scale = min(scale, 0.9 * width / crop_w, 0.9 * height / crop_h)
        self.head, self.alpha = _scaled_head(round(scale, 3))
        self._face_in_head: Box = _face_in_head(self.head.shape[1] / crop_w)
        self._freq = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        self._phase = (float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(0, 2 * math.pi)))
        self._period = int(rng.integers(*PERIOD_FRAMES))

    def head_position(self, i: int) -> tuple[int, int]:
        """Top-left corner of the pasted head in frame ``i``."""
        h, w = self.head.shape[:2]
        t = 2 * math.pi * i / self._period
        u = 0.5 + 0.5 * math.sin(self._freq[0] * t + self._phase[0])
        v = 0.5 + 0.5 * math.sin(self._freq[1] * t + self._phase[1])
        return round(u * (self.width - w)), round(v * (self.height - h))

    def render(self, i: int) -> tuple[np.ndarray, Box]:
        """Frame ``i`` (BGR uint8) and the face's ground-truth box (x1, y1, x2, y2)."""
        frame = self.background.copy()
        x, y = self.head_position(i)
        h, w = self.head.shape[:2]
        roi = frame[y : y + h, x : x + w]
        # Blend in float only over the head's small patch, not the whole frame.
        roi[:] = (roi + (self.head - roi) * self.alpha).astype(np.uint8)
        self._draw_label(frame, f"{self.camera_id}  #{i:06d}")
        fx1, fy1, fx2, fy2 = self._face_in_head
        return frame, (x + fx1, y + fy1, x + fx2, y + fy2)

    def _draw_label(self, frame: np.ndarray, label: str) -> None:
        font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.7 * self.height / REFERENCE_HEIGHT
        thickness = max(1, round(2 * self.height / REFERENCE_HEIGHT))
        (tw, th), base = cv2.getTextSize(label, font, scale, thickness)
        cv2.rectangle(frame, (4, 4), (16 + tw, 16 + th + base), (0, 0, 0), -1)
        cv2.putText(frame, label, (10, 10 + th), font, scale, (255, 255, 255), thickness)


def _face_in_head(scale: float) -> Box:
    x1, y1, x2, y2 = FACE_BOX
    cx, cy = HEAD_CROP[0], HEAD_CROP[1]
    return (
        round((x1 - cx) * scale),
        round((y1 - cy) * scale),
        round((x2 - cx) * scale),
        round((y2 - cy) * scale),
    )


def demo_source(
    camera_id: str,
    fps: float | None = 5.0,
    stop: threading.Event | None = None,
    width: int = 960,
    height: int = 540,
) -> Iterator[CapturedImage]:
    """JPEG frames of a DemoScene at ``fps`` until ``stop`` is set; source is ``demo``."""
    # Built here, not in the generator, so a bad size or fps fails at the call.
    scene, pacer = DemoScene(camera_id, width, height), Pacer(fps)
    return _demo_frames(scene, pacer, stop or threading.Event())


def _demo_frames(scene: DemoScene, pacer: Pacer, stop: threading.Event) -> Iterator[CapturedImage]:
    i = 0
    while pacer.wait(stop):
        frame, _ = scene.render(i)
        yield CapturedImage(encode_jpeg(frame), utcnow(), "demo")
        pacer.emitted(pacer.clock())
        i += 1
