"""Output decoders: raw model outputs to (N, 6) [x1, y1, x2, y2, score, class] boxes."""

from __future__ import annotations

import numpy as np

# CenterFace predicts on a grid four times coarser than its input.
_CENTERFACE_STRIDE = 4
_EMPTY_DETECTIONS = np.zeros((0, 6), np.float32)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy non-maximum suppression: indices kept, best score first.

    A box is dropped when its IoU with a better-scoring kept box is above ``iou``. The loop
    runs once per kept box, each pass vectorised over the remaining candidates.
    """
    x1, y1, x2, y2 = np.asarray(boxes[:, :4], np.float64).T
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    order = np.argsort(-np.asarray(scores), kind="stable")
    kept = []
    while order.size:
        best, rest = order[0], order[1:]
        kept.append(best)
        inter_w = np.clip(np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]), 0, None)
        inter_h = np.clip(np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]), 0, None)
        inter = inter_w * inter_h
        union = areas[best] + areas[rest] - inter
        # Degenerate boxes (zero union) overlap nothing rather than dividing by zero.
        overlap = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[overlap <= iou]
    return np.asarray(kept, np.int64)


def _detections(
    boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, nms_iou: float
) -> np.ndarray:
    """NMS within each class, then stack as (N,6) [x1,y1,x2,y2,score,class] float32."""
    if len(boxes) == 0:
        return _EMPTY_DETECTIONS.copy()
    # Shifting each class by more than the boxes' whole extent keeps boxes of different
    # classes from ever overlapping, so one NMS call suppresses within classes only.
    span = float(boxes.max() - boxes.min()) + 1.0
    shift = (class_ids * span)[:, None]
    kept = nms(boxes + shift, scores, nms_iou)
    return np.column_stack([boxes[kept], scores[kept], class_ids[kept]]).astype(np.float32)


def decode_centerface(
    heatmap: np.ndarray,
    scale: np.ndarray,
    offset: np.ndarray,
    landmarks: np.ndarray,
    input_width: int,
    input_height: int,
    threshold: float,
    nms_iou: float,
) -> list[np.ndarray]:
    """Decode CenterFace outputs (B,1,h,w), (B,2,h,w), (B,2,h,w), (B,10,h,w) to boxes.

    Boxes are in model-input pixels, clipped to it; class id is 0 (face). Landmarks are
    accepted so the model's four outputs pass through unchanged, but the (N,6) detection
    contract has no place for them, so they are not decoded.
    """
    grid = (input_height // _CENTERFACE_STRIDE, input_width // _CENTERFACE_STRIDE)
    if heatmap.shape[2:] != grid or scale.shape[2:] != grid or offset.shape[2:] != grid:
        raise ValueError(
            f"CenterFace outputs must be on a {grid[1]}x{grid[0]} grid for a "
            f"{input_width}x{input_height} input, got {heatmap.shape[2:]}"
        )
    results = []
    for b in range(heatmap.shape[0]):
        rows, cols = np.nonzero(heatmap[b, 0] > threshold)
        scores = heatmap[b, 0, rows, cols]
        # Channel 0 is along y (rows), channel 1 along x (columns); sizes are log-scaled.
        box_h = np.exp(scale[b, 0, rows, cols]) * _CENTERFACE_STRIDE
        box_w = np.exp(scale[b, 1, rows, cols]) * _CENTERFACE_STRIDE
        centre_y = (rows + offset[b, 0, rows, cols] + 0.5) * _CENTERFACE_STRIDE
        centre_x = (cols + offset[b, 1, rows, cols] + 0.5) * _CENTERFACE_STRIDE
        boxes = np.column_stack(
            [
                np.clip(centre_x - box_w / 2, 0, input_width),
                np.clip(centre_y - box_h / 2, 0, input_height),
                np.clip(centre_x + box_w / 2, 0, input_width),
                np.clip(centre_y + box_h / 2, 0, input_height),
            ]
        )
        results.append(_detections(boxes, scores, np.zeros(len(scores)), nms_iou))
    return results


def decode_yolov8(output: np.ndarray, threshold: float, nms_iou: float) -> list[np.ndarray]:
    """Decode YOLOv8 output (B, 4+nc, N): cx,cy,w,h rows then class scores; NMS per class."""
    if output.ndim != 3 or output.shape[1] < 5:
        raise ValueError(f"YOLOv8 output must have shape (B, 4+classes, N), got {output.shape}")
    results = []
    for pred in output:
        class_scores = pred[4:]
        class_ids = class_scores.argmax(axis=0)
        scores = np.take_along_axis(class_scores, class_ids[None], axis=0)[0]
        keep = scores > threshold
        cx, cy, w, h = pred[:4, keep]
        boxes = np.column_stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
        results.append(_detections(boxes, scores[keep], class_ids[keep], nms_iou))
    return results
