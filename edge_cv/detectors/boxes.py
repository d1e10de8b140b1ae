"""Box arithmetic shared by the detectors, the motion gate and the tracker, vectorised with numpy.

Boxes are (x1, y1, x2, y2) floats in frame pixels, as in `edge_cv.types.Box`; arrays of boxes are float (N, 4).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge_cv.types import Box


def as_array(boxes: Sequence[Box] | np.ndarray) -> np.ndarray:
    """Boxes as a float64 (N, 4) array (an empty sequence gives shape (0, 4))."""
    arr = np.asarray(boxes, dtype=np.float64)
    return arr.reshape(-1, 4)


def as_box(row: np.ndarray) -> Box:
    """One array row as a `Box` of plain floats."""
    return (float(row[0]), float(row[1]), float(row[2]), float(row[3]))


def area(boxes: np.ndarray) -> np.ndarray:
    """Areas of (N, 4) boxes; inverted boxes count as empty."""
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box in `a` (N, 4) with every box in `b` (M, 4): an (N, M) array."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression: indices of the kept boxes, best score first.

    A box is dropped when its IoU with an already kept, higher-scoring box is above `iou_threshold`.
    """
    order = np.argsort(-scores, kind="stable")
    boxes = boxes[order]
    areas = area(boxes)
    keep: list[int] = []
    alive = np.ones(len(order), dtype=bool)
    for i in range(len(order)):
        if not alive[i]:
            continue
        keep.append(i)
        rest = np.nonzero(alive[i + 1 :])[0] + i + 1
        if len(rest) == 0:
            break
        xx1 = np.maximum(boxes[i, 0], boxes[rest, 0])
        yy1 = np.maximum(boxes[i, 1], boxes[rest, 1])
        xx2 = np.minimum(boxes[i, 2], boxes[rest, 2])
        yy2 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        union = areas[i] + areas[rest] - inter
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
        alive[rest[iou > iou_threshold]] = False
    return order[np.asarray(keep, dtype=np.int64)]


def batched_nms(boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou_threshold: float) -> np.ndarray:
    """NMS within each class only: boxes of different classes never suppress each other."""
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    # Shifting each class into its own far-away band lets one NMS pass do all classes (boxes of different
    # classes can then never overlap), the trick Ultralytics and torchvision use.
    span = float(max(boxes[:, 2].max(), boxes[:, 3].max()) - min(boxes[:, 0].min(), boxes[:, 1].min())) + 1.0
    offsets = class_ids.astype(np.float64)[:, None] * span
    return nms(boxes + offsets, scores, iou_threshold)


def clip(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Boxes clipped to a width x height frame (in place and returned)."""
    boxes[:, 0] = np.clip(boxes[:, 0], 0, width)
    boxes[:, 2] = np.clip(boxes[:, 2], 0, width)
    boxes[:, 1] = np.clip(boxes[:, 1], 0, height)
    boxes[:, 3] = np.clip(boxes[:, 3], 0, height)
    return boxes


def pad(box: Box, padding: float, width: int, height: int) -> Box:
    """A box grown by `padding` pixels on every side, clipped to the frame."""
    return (
        max(0.0, box[0] - padding),
        max(0.0, box[1] - padding),
        min(float(width), box[2] + padding),
        min(float(height), box[3] + padding),
    )


def _touch(a: Box, b: Box, gap: float) -> bool:
    return a[0] <= b[2] + gap and b[0] <= a[2] + gap and a[1] <= b[3] + gap and b[1] <= a[3] + gap


def merge(boxes: Sequence[Box], gap: float = 0.0) -> list[Box]:
    """Union boxes that overlap (or come within `gap` pixels) until none do; the result is sorted by x1, y1."""
    merged = [tuple(map(float, b)) for b in boxes]
    changed = True
    while changed:
        changed = False
        out: list[Box] = []
        for box in merged:
            for i, other in enumerate(out):
                if _touch(box, other, gap):
                    out[i] = (
                        min(box[0], other[0]),
                        min(box[1], other[1]),
                        max(box[2], other[2]),
                        max(box[3], other[3]),
                    )
                    changed = True
                    break
            else:
                out.append(box)  # type: ignore[arg-type]
        merged = out  # type: ignore[assignment]
    return sorted(merged, key=lambda b: (b[0], b[1]))  # type: ignore[arg-type]


def grow_to(box: Box, min_width: float, min_height: float, width: int, height: int) -> Box:
    """A box grown around its centre to at least min_width x min_height, shifted (not shrunk) to stay inside
    the frame; it is capped at the frame size."""
    w = min(float(width), max(box[2] - box[0], min_width))
    h = min(float(height), max(box[3] - box[1], min_height))
    cx, cy = (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0
    x1 = min(max(0.0, cx - w / 2.0), width - w)
    y1 = min(max(0.0, cy - h / 2.0), height - h)
    return (x1, y1, x1 + w, y1 + h)


def plan_regions(
    rois: Sequence[Box],
    width: int,
    height: int,
    *,
    padding: float,
    min_size: tuple[float, float],
    max_regions: int,
    max_fraction: float,
) -> list[Box] | None:
    """Crops to run a detector on instead of the whole frame, or None when the whole frame is the better deal
    (an empty list when no ROI lies inside the frame).

    Each ROI is padded, overlapping ones merged, every crop grown to at least `min_size` (so the detector never
    upscales a tiny crop into its input) and merged again. The whole frame wins when more than `max_regions`
    crops remain or they cover more than `max_fraction` of the frame: past that point crops cost more
    inference runs than they save.
    """
    # A coasting track's predicted box may lie partly or wholly outside the frame: keep only what is inside.
    padded = [p for p in (pad(r, padding, width, height) for r in rois) if p[2] > p[0] and p[3] > p[1]]
    if not padded:
        return []
    regions = merge(padded)
    regions = merge([grow_to(r, min_size[0], min_size[1], width, height) for r in regions])
    covered = float(area(as_array(regions)).sum())
    if len(regions) > max_regions or covered >= max_fraction * width * height:
        return None
    return [tuple(round(v) for v in r) for r in regions]  # type: ignore[misc]
