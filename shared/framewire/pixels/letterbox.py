"""Letterbox geometry: fit a frame into a model's input, and map boxes back to the frame."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Letterbox:
    """How an image was fitted into the model input: input = original * scale + pad."""

    scale: float
    pad_x: float
    pad_y: float
    input_width: int
    input_height: int
    # the resized image inside the padding (0 when not known, as for a received record)
    content_width: int = 0
    content_height: int = 0


def letterbox(
    img: np.ndarray, width: int, height: int, fill: int = 114,
    source_size: tuple[int, int] | None = None,
) -> tuple[np.ndarray, Letterbox]:
    """Resize ``img`` into width x height keeping its aspect ratio, padding the rest with fill.

    ``source_size`` (width, height) is the original frame's size when ``img`` was decoded
    smaller than it: the returned scale and padding map the original's pixels.
    """
    have_h, have_w = img.shape[:2]
    src_w, src_h = source_size or (have_w, have_h)
    scale = min(width / src_w, height / src_h)
    new_w = min(width, max(1, round(src_w * scale)))
    new_h = min(height, max(1, round(src_h * scale)))
    if (new_w, new_h) != (have_w, have_h):
        # INTER_AREA averages source pixels when shrinking hard, where INTER_LINEAR would alias.
        interpolation = cv2.INTER_AREA if new_w / have_w < 0.5 else cv2.INTER_LINEAR
        img = cv2.resize(img, (new_w, new_h), interpolation=interpolation)
    left = (width - new_w) // 2
    top = (height - new_h) // 2
    boxed = cv2.copyMakeBorder(
        img,
        top,
        height - new_h - top,
        left,
        width - new_w - left,
        cv2.BORDER_CONSTANT,
        value=(fill, fill, fill),
    )
    return boxed, Letterbox(scale, float(left), float(top), width, height, new_w, new_h)


def content(boxed: np.ndarray, lb: Letterbox) -> np.ndarray:
    """The resized frame inside a letterbox's padding (a view of ``boxed``)."""
    top, left = int(lb.pad_y), int(lb.pad_x)
    return boxed[top:top + lb.content_height, left:left + lb.content_width]


def unletterbox_boxes(
    boxes: np.ndarray, lb: Letterbox, orig_width: int, orig_height: int
) -> np.ndarray:
    """Map x1,y1,x2,y2 (columns 0-3) from model input back to original pixels, clipped."""
    if boxes.ndim != 2 or boxes.shape[1] < 4:
        raise ValueError(f"boxes must have shape (N, >=4), got {boxes.shape}")
    out = np.array(boxes, dtype=np.float32)
    out[:, [0, 2]] = np.clip((out[:, [0, 2]] - lb.pad_x) / lb.scale, 0, orig_width)
    out[:, [1, 3]] = np.clip((out[:, [1, 3]] - lb.pad_y) / lb.scale, 0, orig_height)
    return out
