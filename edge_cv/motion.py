"""Motion gating: run the detector only where something moves or is being tracked, as Frigate does to keep CPU low.

`MotionGate.update` compares a small grey copy of each frame with a running-average background, turns the changed
pixels into padded, merged boxes (frame pixels) and decides:
  - nothing moving and nothing tracked: skip the detector for this frame (gated out);
  - otherwise: run it on ROIs = motion boxes ∪ boxes of live tracks (a person standing still stays tracked because
    their track box keeps being an ROI, not because they move);
  - every `full_frame_every` frames / `full_frame_seconds`, on the first frame and after a sudden global change
    (lights switched, camera knocked): run it on the whole frame, so an object that appeared without moving
    enough, or that the background absorbed, is still found.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge_cv.detectors.boxes import merge, pad
from edge_cv.types import Box

Reason = Literal["first", "periodic", "recalibrate", "disabled", "motion", "tracks", "idle"]


class MotionConfig(BaseModel):
    """How a camera's motion gate works; defaults suit a 640-1280 px frame at 5-15 frames/s."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="false: the detector sees every whole frame")
    width: int = Field(default=320, ge=64, le=1920, description="working width in pixels (aspect kept)")
    threshold: int = Field(default=25, ge=1, le=254, description="grey-level change that counts as motion")
    blur: int = Field(default=5, ge=1, le=31, description="Gaussian kernel (odd) against sensor noise")
    alpha: float = Field(default=0.05, gt=0.0, lt=1.0, description="background update rate per frame")
    min_area: int = Field(default=150, ge=1, description="smallest moving region in frame pixels²")
    padding: int = Field(default=16, ge=0, le=512, description="pixels added around each motion box")
    merge_gap: int = Field(default=24, ge=0, le=512, description="motion boxes closer than this become one")
    full_frame_every: int | None = Field(default=50, ge=1, description="whole-frame check every N frames")
    full_frame_seconds: float | None = Field(default=None, gt=0.0, description="… or every so many seconds")
    recalibrate_fraction: float = Field(
        default=0.5, gt=0.0, le=1.0, description="this much of the frame changing at once restarts the background"
    )
    ignore: list[list[tuple[float, float]]] = Field(
        default_factory=list, description="polygons (frame pixels) whose motion is ignored: clocks, fans, screens"
    )

    @field_validator("blur")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"blur must be odd (a Gaussian kernel size), got {value}")
        return value

    @model_validator(mode="after")
    def _polygons(self) -> MotionConfig:
        for i, polygon in enumerate(self.ignore):
            if len(polygon) < 3:
                raise ValueError(f"ignore[{i}] needs at least 3 points, has {len(polygon)}")
        return self


@dataclass(frozen=True, slots=True)
class GateDecision:
    """Whether to run the detector on this frame, and where: `rois` None means the whole frame."""

    run: bool
    rois: list[Box] | None
    reason: Reason
    motion: list[Box] = field(default_factory=list)


class MotionGate:
    """Per-camera motion gate; feed it every frame in order (it keeps the background model)."""

    def __init__(self, config: MotionConfig | None = None) -> None:
        self.config = config or MotionConfig()
        self._background: np.ndarray | None = None
        self._ignore: np.ndarray | None = None
        self._gain = 1.0
        self._kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
        self._frames_since_full = 0
        self._last_full_ms: int | None = None
        self.counters = {"frames": 0, "gated_out": 0, "roi_frames": 0, "full_frame_checks": 0, "recalibrations": 0}

    def update(self, image: np.ndarray, time_ms: int, track_boxes: Sequence[Box] = ()) -> GateDecision:
        """Learn from `image` (BGR, frame time `time_ms`) and decide how to run the detector on it."""
        c = self.config
        self.counters["frames"] += 1
        if not c.enabled:
            return self._full("disabled", time_ms, [])
        small = self._prepare(image)
        if self._background is None:
            self._background = small.astype(np.float32)
            return self._full("first", time_ms, [])
        diff = cv2.absdiff(small, cv2.convertScaleAbs(self._background))
        _, mask = cv2.threshold(diff, c.threshold, 255, cv2.THRESH_BINARY)
        if self._ignore is not None:
            mask[self._ignore] = 0
        changed = cv2.countNonZero(mask) / mask.size
        if changed > c.recalibrate_fraction:
            # A global change is lighting or a knocked camera, not an object: start the background again.
            self._background = small.astype(np.float32)
            self.counters["recalibrations"] += 1
            return self._full("recalibrate", time_ms, [])
        cv2.accumulateWeighted(small, self._background, c.alpha)
        motion = self._boxes(mask, image.shape[1], image.shape[0])
        self._frames_since_full += 1
        if self._periodic_due(time_ms):
            return self._full("periodic", time_ms, motion)
        rois = merge([*motion, *(tuple(map(float, b)) for b in track_boxes)])
        if not rois:
            self.counters["gated_out"] += 1
            return GateDecision(run=False, rois=[], reason="idle", motion=[])
        self.counters["roi_frames"] += 1
        return GateDecision(run=True, rois=rois, reason="motion" if motion else "tracks", motion=motion)

    def _prepare(self, image: np.ndarray) -> np.ndarray:
        c = self.config
        height, width = image.shape[:2]
        self._gain = min(1.0, c.width / width)
        size = (max(1, round(width * self._gain)), max(1, round(height * self._gain)))
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA) if self._gain < 1.0 else image
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
        if c.blur > 1:
            grey = cv2.GaussianBlur(grey, (c.blur, c.blur), 0)
        if c.ignore and (self._ignore is None or self._ignore.shape != grey.shape):
            canvas = np.zeros(grey.shape, dtype=np.uint8)
            for polygon in c.ignore:
                points = np.round(np.asarray(polygon, dtype=np.float64) * self._gain).astype(np.int32)
                cv2.fillPoly(canvas, [points], 255)
            self._ignore = canvas > 0
        return grey

    def _boxes(self, mask: np.ndarray, width: int, height: int) -> list[Box]:
        c = self.config
        # Dilation joins the pieces of one moving object (a person's limbs and torso) before contours are taken.
        mask = cv2.dilate(mask, self._kernel, iterations=2)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        to_frame = 1.0 / self._gain
        boxes: list[Box] = []
        for contour in contours:
            x, y, w, h = cv2.boundingRect(contour)
            if cv2.contourArea(contour) * to_frame * to_frame < c.min_area:
                continue
            box = (x * to_frame, y * to_frame, (x + w) * to_frame, (y + h) * to_frame)
            boxes.append(pad(box, c.padding, width, height))
        return merge(boxes, gap=c.merge_gap)

    def _periodic_due(self, time_ms: int) -> bool:
        c = self.config
        if c.full_frame_every is not None and self._frames_since_full >= c.full_frame_every:
            return True
        return (
            c.full_frame_seconds is not None
            and self._last_full_ms is not None
            and time_ms - self._last_full_ms >= c.full_frame_seconds * 1000.0
        )

    def _full(self, reason: Reason, time_ms: int, motion: list[Box]) -> GateDecision:
        self._frames_since_full = 0
        self._last_full_ms = time_ms
        self.counters["full_frame_checks"] += 1
        return GateDecision(run=True, rois=None, reason=reason, motion=motion)
