"""Blurring regions of an image (faces) so that nothing in them can be recognised again."""

from __future__ import annotations

import cv2
import numpy as np

# how far a region is widened on each side, as a fraction of its width and height: a face
# box is drawn cheek to cheek and fringe to chin, and hair, ears and jaw identify too
MARGIN = 0.25
# a blurred region keeps at most this many blocks across its longer side: colour and rough
# shape stay (a dashboard still shows where a person was), features do not
BLOCKS = 4


def blur_regions(image: np.ndarray, boxes: np.ndarray, margin: float = MARGIN) -> np.ndarray:
    """A copy of the HxWx3 ``image`` with every box (rows of x1, y1, x2, y2 in its pixels)
    widened by ``margin`` and blurred beyond recognition: shrunk to a few blocks, then smoothed
    back to size (a Gaussian blur alone leaves a face a detector still finds)."""
    out = image.copy()
    height, width = out.shape[:2]
    for x1, y1, x2, y2 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        dx, dy = (x2 - x1) * margin, (y2 - y1) * margin
        left, top = max(0, int(x1 - dx)), max(0, int(y1 - dy))
        right, bottom = min(width, int(np.ceil(x2 + dx))), min(height, int(np.ceil(y2 + dy)))
        if right - left < 1 or bottom - top < 1:
            continue
        region = out[top:bottom, left:right]
        w, h = right - left, bottom - top
        side = max(w, h)
        small = cv2.resize(region, (max(1, round(BLOCKS * w / side)),
                                    max(1, round(BLOCKS * h / side))),
                           interpolation=cv2.INTER_AREA)
        out[top:bottom, left:right] = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    return out


def fit_within(image: np.ndarray, longest: int) -> np.ndarray:
    """``image`` shrunk (aspect kept) so that its longer side is at most ``longest``."""
    height, width = image.shape[:2]
    if max(width, height) <= longest:
        return image
    scale = longest / max(width, height)
    return cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))),
                      interpolation=cv2.INTER_AREA)
