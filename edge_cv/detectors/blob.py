"""Background subtraction for fixed cameras: whatever moves over a still background (products on a conveyor)
becomes a detection with the configured label.

It works on a downscaled grey copy (MOG2, or a running average, then opening/closing and outer contours), which
keeps a 720p frame in a few milliseconds. MOG2's background is what a pixel shows at least `background_ratio` of
its recent history (default 0.4, not OpenCV's 0.9), so a belt that is half covered by passing products still has
the bare belt as its background. It keeps a background model, so it must see the frames in order and one
instance serves one camera. With `rois` it still updates the model on the whole frame (the model must not go
stale where nothing moved) and reports only blobs that touch a ROI.
"""

from __future__ import annotations

import cv2
import numpy as np

from edge_cv.detectors.base import BlobConfig
from edge_cv.types import Box, Detection


class BlobDetector:
    """Moving foreground blobs from a background model; one instance per camera."""

    def __init__(self, config: BlobConfig) -> None:
        self.config = config
        self.labels: tuple[str, ...] = (config.label,)
        self._frames = 0
        self._mog2 = (
            cv2.createBackgroundSubtractorMOG2(
                history=config.history, varThreshold=config.var_threshold, detectShadows=False
            )
            if config.method == "mog2"
            else None
        )
        if self._mog2 is not None:
            # OpenCV's 0.9 calls background whatever covers 90 % of a pixel's history, so on a busy belt the
            # colours of the products passing join the belt's and products come out as fragments.
            self._mog2.setBackgroundRatio(config.background_ratio)
        self._average: np.ndarray | None = None
        self._kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (config.kernel, config.kernel))
        self.stats = {"runs": 0}

    def foreground(self, image: np.ndarray) -> np.ndarray:
        """Update the background model with `image` and return its cleaned foreground mask (working size, 0/255)."""
        c = self.config
        small = image
        if c.scale < 1.0:
            small = cv2.resize(image, None, fx=c.scale, fy=c.scale, interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
        grey = cv2.GaussianBlur(grey, (5, 5), 0)
        self._frames += 1
        self.stats["runs"] += 1
        # While warming up the model is the plain mean of the frames so far: a product that lay on the belt at
        # start-up then moved on is averaged away instead of staying behind as a "ghost" blob for `history` frames.
        warming = self._frames <= c.warmup_frames
        if self._mog2 is not None:
            # After warm-up a fixed 1/history rate: MOG2's own default (1/min(2·frames, history)) learns fast early
            # on and soon takes the inside of a plain-coloured product, which covers the same pixels for several
            # frames, for background.
            rate = 1.0 / self._frames if warming else 1.0 / c.history
            mask = self._mog2.apply(grey, learningRate=rate)
        else:
            if self._average is None:
                self._average = grey.astype(np.float32)
            diff = cv2.absdiff(grey, cv2.convertScaleAbs(self._average))
            _, mask = cv2.threshold(diff, c.threshold, 255, cv2.THRESH_BINARY)
            cv2.accumulateWeighted(grey, self._average, max(c.alpha, 1.0 / self._frames) if warming else c.alpha)
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, self._kernel)
        return cv2.morphologyEx(mask, cv2.MORPH_CLOSE, self._kernel)

    def detect(self, image: np.ndarray, rois: list[Box] | None = None) -> list[Detection]:
        """Blobs in `image` (BGR) within the configured area range; none while the background is warming up."""
        c = self.config
        mask = self.foreground(image)
        if self._frames <= c.warmup_frames:
            return []
        height, width = image.shape[:2]
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        to_frame = 1.0 / c.scale
        area_gain = to_frame * to_frame
        found: list[Detection] = []
        for contour in contours:
            x, y, w, h = cv2.boundingRect(contour)
            blob_area = float(np.count_nonzero(mask[y : y + h, x : x + w])) * area_gain
            if blob_area < c.min_area or (c.max_area is not None and blob_area > c.max_area):
                continue
            box = (
                max(0.0, x * to_frame),
                max(0.0, y * to_frame),
                min(float(width), (x + w) * to_frame),
                min(float(height), (y + h) * to_frame),
            )
            if rois is not None and not any(_overlaps(box, r) for r in rois):
                continue
            # How solidly the box is filled: near 1 for a product, low for a ragged blob of noise or a shadow.
            fill = blob_area / max(1.0, (box[2] - box[0]) * (box[3] - box[1]))
            found.append(Detection(box=box, score=float(min(1.0, fill)), label=c.label, class_id=0))
        found.sort(key=lambda d: (d.box[0], d.box[1]))
        return found


def _overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
