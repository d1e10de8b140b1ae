"""ONNX detectors in the Ultralytics YOLOv8/YOLO11 export format, decoded and NMS'd here (no ultralytics import).

The format: input [1, 3, H, W], RGB scaled to 0..1, the frame letterboxed (aspect kept, grey 114 padding, centred);
output [1, 4+C, N] where each of the N columns is cx, cy, w, h in input pixels followed by C class scores that have
already been through a sigmoid (no objectness column). Some converters write [1, N, 4+C]; both are read.

With `rois` the detector runs on crops around them instead of the whole frame. A detector knows objects at the
scale it was trained on; a YOLO model trained (as usual) on whole letterboxed frames finds fragments when a crop
shows them 2-4x larger. So by default (`roi_scale: frame`) a crop is resized by the very gain the whole frame
would get, min(input_w / frame_w, input_h / frame_h), and is at least input / gain frame pixels (centred on the
ROIs, clipped to the frame). For a fixed-size model that is always (nearly) the whole frame, so gating saves
the frames where nothing moves; a dynamic-size model runs a small crop at a small input, the real saving.
With `roi_scale: native` (a model trained on native-resolution tiles) each crop is at least the model's input
size and goes in unscaled. When crops would cost more runs than they save, the whole frame is used.
"""

from __future__ import annotations

import math
import cv2
import numpy as np

from edge_cv.detectors import boxes as bx
from edge_cv.detectors.base import DetectorError, YoloConfig
from edge_cv.detectors.onnx_model import open_session
from edge_cv.types import Box, Detection

PAD_VALUE = 114  # Ultralytics' letterbox grey
MAX_CANDIDATES = 3000  # boxes kept for NMS, best first; a crowded 640 frame has far fewer real objects


def letterbox(
    image: np.ndarray, size: tuple[int, int], max_gain: float | None = None
) -> tuple[np.ndarray, float, tuple[int, int]]:
    """The image resized into `size` (width, height) keeping its aspect, centred on grey 114; with `max_gain`
    it is scaled by at most that much (a crop kept at the scale of its whole frame).

    Returns (canvas, gain, (left, top)): a canvas point (u, v) is the image point ((u - left) / gain,
    (v - top) / gain). Rounding follows Ultralytics' LetterBox so boxes land where its own predictor puts them.
    """
    h, w = image.shape[:2]
    out_w, out_h = size
    gain = min(out_h / h, out_w / w)
    if max_gain is not None:
        gain = min(gain, max_gain)
    new_w, new_h = int(round(w * gain)), int(round(h * gain))
    dw, dh = (out_w - new_w) / 2.0, (out_h - new_h) / 2.0
    top, left = int(round(dh - 0.1)), int(round(dw - 0.1))
    if (new_w, new_h) != (w, h):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((out_h, out_w, 3), PAD_VALUE, dtype=np.uint8)
    canvas[top : top + new_h, left : left + new_w] = image
    return canvas, gain, (left, top)


def to_tensor(canvas: np.ndarray) -> np.ndarray:
    """A BGR uint8 canvas as the model input: [1, 3, H, W] float32 RGB in 0..1."""
    return cv2.dnn.blobFromImage(canvas, scalefactor=1.0 / 255.0, swapRB=True)


def decode(
    pred: np.ndarray, confidence: float, keep_classes: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidates from one image's prediction laid out (4+C, N): xyxy boxes in input pixels, scores, class ids.

    Each column takes its best class (as Ultralytics does with multi_label off); a column whose best class is not
    in `keep_classes`, or whose score is not above `confidence`, is dropped.
    """
    scores = pred[4:]
    best = scores.max(axis=0)
    idx = np.nonzero(best > confidence)[0]
    if len(idx) > MAX_CANDIDATES:
        idx = idx[np.argsort(-best[idx])[:MAX_CANDIDATES]]
    class_ids = scores[:, idx].argmax(axis=0)
    if keep_classes is not None:
        wanted = np.isin(class_ids, keep_classes)
        idx, class_ids = idx[wanted], class_ids[wanted]
    cx, cy, w, h = (pred[i, idx].astype(np.float64) for i in range(4))
    xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    return xyxy, best[idx].astype(np.float64), class_ids.astype(np.int64)


class YoloDetector:
    """A YOLOv8/YOLO11-format ONNX model behind the `Detector` protocol; one instance per camera (its `stats`
    counters are per camera)."""

    def __init__(self, config: YoloConfig) -> None:
        self.config = config
        names = config.names
        self._names = names
        self.labels: tuple[str, ...] = tuple(config.keep or names)
        self._keep = None if config.keep is None else np.array([names.index(n) for n in config.keep])
        info = config._info
        self._session = open_session(config.model, config.threads, config.providers)
        self._input_name = info.input_name
        self._fp16 = info.input_type == "tensor(float16)"
        self._input_wh = config._input_wh
        self._dynamic = config._dynamic_hw
        self._rows = 4 + len(names)
        self.stats = {"runs": 0, "full_frames": 0, "crops": 0, "input_pixels": 0}

    @property
    def providers(self) -> list[str]:
        """Execution providers onnxruntime actually uses, best first."""
        return list(self._session.get_providers())

    def detect(self, image: np.ndarray, rois: list[Box] | None = None) -> list[Detection]:
        """Objects in `image` (BGR); with `rois`, only those found in crops around them (an empty list: none)."""
        height, width = image.shape[:2]
        regions: list[Box] | None = None
        crop_gain: float | None = None
        if rois is not None:
            min_w, min_h = self._input_wh if not self._dynamic else (self._input_wh[0] / 2, self._input_wh[1] / 2)
            if self.config.roi_scale == "frame":
                # The crop must reach the model as large as the whole frame would: at least the model's (minimum)
                # input at that gain, in frame pixels.
                crop_gain = self._frame_gain(width, height)
                min_w, min_h = min_w / crop_gain, min_h / crop_gain
            min_size = (min_w, min_h)
            regions = bx.plan_regions(
                rois,
                width,
                height,
                padding=self.config.roi_padding,
                min_size=min_size,
                max_regions=self.config.max_regions,
                max_fraction=0.8,
            )
        if regions == []:
            return []
        if regions is None:
            self.stats["full_frames"] += 1
            boxes, scores, ids = self._infer(image)
        else:
            parts = []
            for x1, y1, x2, y2 in ((int(v) for v in r) for r in regions):
                self.stats["crops"] += 1
                b, s, c = self._infer(image[y1:y2, x1:x2], crop_gain)
                parts.append((b + [x1, y1, x1, y1], s, c))
            boxes = np.concatenate([p[0] for p in parts])
            scores = np.concatenate([p[1] for p in parts])
            ids = np.concatenate([p[2] for p in parts])
            if len(parts) > 1:  # crops can touch after growing: one object may be seen twice at a seam
                keep = self._nms(boxes, scores, ids)
                boxes, scores, ids = boxes[keep], scores[keep], ids[keep]
        bx.clip(boxes, width, height)
        return [
            Detection(box=bx.as_box(b), score=float(s), label=self._names[c], class_id=int(c))
            for b, s, c in zip(boxes, scores, ids, strict=True)
            if b[2] > b[0] and b[3] > b[1]
        ]

    def _frame_gain(self, w: int, h: int) -> float:
        """The scale a whole w x h frame is fed to the model at (a dynamic-size model never upscales)."""
        gain = min(self._input_wh[0] / w, self._input_wh[1] / h)
        return min(1.0, gain) if self._dynamic else gain

    def _input_size_for(self, w: int, h: int, max_gain: float | None = None) -> tuple[int, int]:
        if not self._dynamic:
            return self._input_wh
        # A dynamic-size model runs small crops at their own size (rounded up to the 32-px stride): the compute
        # saving of motion gating. Larger ones shrink to fit the configured size.
        gain = self._frame_gain(w, h)
        if max_gain is not None:
            gain = min(gain, max_gain)
        return 32 * math.ceil(w * gain / 32), 32 * math.ceil(h * gain / 32)

    def _infer(self, image: np.ndarray, max_gain: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        h, w = image.shape[:2]
        size = self._input_size_for(w, h, max_gain)
        canvas, gain, (left, top) = letterbox(image, size, max_gain)
        tensor = to_tensor(canvas)
        if self._fp16:
            tensor = tensor.astype(np.float16)
        out = self._session.run(None, {self._input_name: tensor})[0]
        self.stats["runs"] += 1
        self.stats["input_pixels"] += size[0] * size[1]
        pred = self._channels_first(out)
        boxes, scores, ids = decode(pred, self.config.confidence, self._keep)
        keep = self._nms(boxes, scores, ids)[: self.config.max_detections]
        boxes = (boxes[keep] - [left, top, left, top]) / gain
        return bx.clip(boxes, w, h), scores[keep], ids[keep]

    def _nms(self, boxes: np.ndarray, scores: np.ndarray, ids: np.ndarray) -> np.ndarray:
        if self.config.agnostic_nms:
            return bx.nms(boxes, scores, self.config.iou)
        return bx.batched_nms(boxes, scores, ids, self.config.iou)

    def _channels_first(self, out: np.ndarray) -> np.ndarray:
        if out.ndim != 3 or out.shape[0] != 1:
            raise DetectorError(f"{self.config.model.name} returned shape {list(out.shape)}, expected [1, 4+C, N]")
        layout = self.config._layout
        if layout == "runtime":
            layout = "channels_first" if out.shape[1] == self._rows else "transposed"
        pred = out[0] if layout == "channels_first" else out[0].T
        if pred.shape[0] != self._rows:
            raise DetectorError(
                f"{self.config.model.name} returned {list(out.shape)}: no axis is 4+{len(self._names)} classes"
            )
        return pred.astype(np.float32, copy=False)

