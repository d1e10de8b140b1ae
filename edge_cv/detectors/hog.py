"""OpenCV's built-in HOG people detector (Dalal & Triggs, linear SVM trained on INRIA persons): the detector that
needs no model file. It looks for upright people in a 64x128 window over an image pyramid.

OpenCV's SVM margin is unbounded; the score reported is 1 - exp(-margin) so that, like a YOLO score, it lies in
0..1 and `confidence` means the same kind of thing for every detector (0.4 ~ margin 0.5, which drops the weak
hits HOG makes on textured backgrounds).
"""

from __future__ import annotations

import cv2
import numpy as np

from edge_cv.detectors import boxes as bx
from edge_cv.detectors.base import HogConfig
from edge_cv.types import Box, Detection

WINDOW = (64, 128)
# The INRIA training windows frame a ~96-px person with a 16-px margin; trimming it makes the box hug the
# person, so the bottom-centre point zones judge by sits at the feet rather than below them.
TRIM_X, TRIM_Y = 0.2, 0.125


class HogDetector:
    """People from OpenCV's HOG + SVM; one instance per camera."""

    def __init__(self, config: HogConfig) -> None:
        self.config = config
        self.labels: tuple[str, ...] = (config.label,)
        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.stats = {"runs": 0, "full_frames": 0, "crops": 0}

    def detect(self, image: np.ndarray, rois: list[Box] | None = None) -> list[Detection]:
        """People in `image` (BGR); with `rois`, only those found in crops around them (an empty list: none)."""
        height, width = image.shape[:2]
        gain = 1.0 if self.config.max_width is None else min(1.0, self.config.max_width / width)
        regions: list[Box] | None = None
        if rois is not None:
            # A crop must hold a detection window with room to slide and a pyramid level or two above it.
            min_size = (2 * WINDOW[0] / gain, 1.5 * WINDOW[1] / gain)
            regions = bx.plan_regions(
                rois,
                width,
                height,
                padding=self.config.roi_padding,
                min_size=min_size,
                max_regions=self.config.max_regions,
                max_fraction=0.7,
            )
        if regions == []:
            return []
        if regions is None:
            self.stats["full_frames"] += 1
            regions = [(0.0, 0.0, float(width), float(height))]
        else:
            self.stats["crops"] += len(regions)
        found_boxes, found_scores = [], []
        for x1, y1, x2, y2 in ((int(v) for v in r) for r in regions):
            b, s = self._run(image[y1:y2, x1:x2], gain)
            found_boxes.append(b + [x1, y1, x1, y1])
            found_scores.append(s)
        boxes = np.concatenate(found_boxes)
        scores = np.concatenate(found_scores)
        keep = bx.nms(boxes, scores, self.config.iou)
        boxes, scores = bx.clip(boxes[keep], width, height), scores[keep]
        return [
            Detection(box=bx.as_box(b), score=float(s), label=self.config.label, class_id=0)
            for b, s in zip(boxes, scores, strict=True)
        ]

    def _run(self, image: np.ndarray, gain: float) -> tuple[np.ndarray, np.ndarray]:
        if gain < 1.0:
            image = cv2.resize(image, None, fx=gain, fy=gain, interpolation=cv2.INTER_AREA)
        if image.shape[0] < WINDOW[1] or image.shape[1] < WINDOW[0]:
            return np.zeros((0, 4)), np.zeros(0)
        c = self.config
        self.stats["runs"] += 1
        rects, weights = self._hog.detectMultiScale(
            image,
            hitThreshold=0.0,
            winStride=(c.win_stride, c.win_stride),
            padding=(c.padding, c.padding),
            scale=c.scale,
            groupThreshold=c.group_threshold,
        )
        if len(rects) == 0:
            return np.zeros((0, 4)), np.zeros(0)
        rects = np.asarray(rects, dtype=np.float64).reshape(-1, 4)
        scores = 1.0 - np.exp(-np.asarray(weights, dtype=np.float64).ravel())
        wanted = scores >= c.confidence
        rects, scores = rects[wanted], scores[wanted]
        x, y, w, h = rects.T
        if c.tight:
            x, y, w, h = x + TRIM_X * w, y + TRIM_Y * h, w * (1 - 2 * TRIM_X), h * (1 - 2 * TRIM_Y)
        boxes = np.stack([x, y, x + w, y + h], axis=1) / gain
        return boxes, scores
