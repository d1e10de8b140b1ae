"""ONNX crop classifiers: a verdict per detection (mask / no_mask, ok / defective) stored in its attributes.

The crops of one frame go through the model in one run when its batch axis is dynamic (at most `max_batch` per
run), one run per crop when the model was exported with batch 1.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from edge_cv.detectors.base import ClassifierConfig, DetectorError
from edge_cv.detectors.onnx_model import open_session
from edge_cv.detectors.yolo import letterbox
from edge_cv.types import Box, Detection

HEAD_FRACTION = 0.3  # the top 30% of a standing person's box holds the head (hair net, mask)


def crop_box(box: Box, mode: str, padding: float, width: int, height: int) -> tuple[int, int, int, int]:
    """The pixel rectangle (x1, y1, x2, y2) to classify for a detection box: all of it or its head part, grown by
    `padding` (a fraction of its size per side) and clipped to the frame."""
    x1, y1, x2, y2 = box
    if mode == "head":
        y2 = y1 + HEAD_FRACTION * (y2 - y1)
    dx, dy = padding * (x2 - x1), padding * (y2 - y1)
    return (
        max(0, int(round(x1 - dx))),
        max(0, int(round(y1 - dy))),
        min(width, int(round(x2 + dx))),
        min(height, int(round(y2 + dy))),
    )


def softmax(scores: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    shifted = scores - scores.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


class Classifier:
    """Classifies the crops of detections whose label is in `apply_to`; built by `build_classifier`."""

    def __init__(self, config: ClassifierConfig) -> None:
        self.config = config
        self.attribute = config.attribute
        self.labels: tuple[str, ...] = tuple(config.names)
        self._apply_to = frozenset(config.apply_to)
        info = config._info
        self._session = open_session(config.model, config.threads, config.providers)
        self._input_name = info.input_name
        self._fp16 = info.input_type == "tensor(float16)"
        self._size = config._input_wh
        self._batch = config.max_batch if config._dynamic_batch else 1
        settings = config._settings
        self._rgb = settings["color"] == "rgb"
        self._resize = settings["resize"]
        self._output = settings["output"]
        self._mean = np.asarray(settings["mean"], dtype=np.float32).reshape(3, 1, 1)
        self._std = np.asarray(settings["std"], dtype=np.float32).reshape(3, 1, 1)
        self.stats = {"runs": 0, "crops": 0}

    @property
    def providers(self) -> list[str]:
        """Execution providers onnxruntime actually uses, best first."""
        return list(self._session.get_providers())

    def classify(self, image: np.ndarray, detections: list[Detection]) -> list[Detection]:
        """The detections with `attributes[attribute] = (label, score)` set on those in `apply_to` whose best
        score reaches `min_score`; the others are returned unchanged (new objects, the inputs are not touched)."""
        height, width = image.shape[:2]
        targets: list[int] = []
        tensors: list[np.ndarray] = []
        for i, det in enumerate(detections):
            if det.label not in self._apply_to:
                continue
            x1, y1, x2, y2 = crop_box(det.box, self.config.crop, self.config.padding, width, height)
            if x2 - x1 < 2 or y2 - y1 < 2:
                continue  # a box squeezed to a line at the frame edge has nothing to classify
            targets.append(i)
            tensors.append(self._prepare(image[y1:y2, x1:x2]))
        if not targets:
            return list(detections)
        probs = self._scores(np.stack(tensors))
        out = list(detections)
        for i, row in zip(targets, probs, strict=True):
            k = int(row.argmax())
            score = float(row[k])
            if score >= self.config.min_score:
                det = out[i]
                verdicts = {**det.attributes, self.attribute: (self.labels[k], score)}
                out[i] = dataclasses.replace(det, attributes=verdicts)
        return out

    def _prepare(self, crop: np.ndarray) -> np.ndarray:
        w, h = self._size
        if self._resize == "letterbox":
            crop = letterbox(crop, (w, h))[0]
        elif self._resize == "center_crop":
            # Shortest side to the input size, then the centre (Ultralytics' classification preprocessing).
            gain = max(w / crop.shape[1], h / crop.shape[0])
            crop = cv2.resize(crop, (max(w, round(crop.shape[1] * gain)), max(h, round(crop.shape[0] * gain))))
            top, left = (crop.shape[0] - h) // 2, (crop.shape[1] - w) // 2
            crop = crop[top : top + h, left : left + w]
        else:
            shrink = crop.shape[1] > w and crop.shape[0] > h
            crop = cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        if self._rgb:
            crop = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)
        chw = crop.transpose(2, 0, 1).astype(np.float32) / 255.0
        return (chw - self._mean) / self._std

    def _scores(self, batch: np.ndarray) -> np.ndarray:
        rows = []
        for start in range(0, len(batch), self._batch):
            chunk = batch[start : start + self._batch]
            if self._fp16:
                chunk = chunk.astype(np.float16)
            out = np.asarray(self._session.run(None, {self._input_name: chunk})[0], dtype=np.float32)
            self.stats["runs"] += 1
            if out.shape != (len(chunk), len(self.labels)):
                raise DetectorError(
                    f"{self.config.model.name} returned {list(out.shape)} for {len(chunk)} crops, "
                    f"expected [{len(chunk)}, {len(self.labels)}]"
                )
            rows.append(out)
        self.stats["crops"] += len(batch)
        scores = np.concatenate(rows)
        if self._output == "logits" or (self._output == "auto" and not _are_probabilities(scores)):
            scores = softmax(scores)
        return scores


def _are_probabilities(scores: np.ndarray) -> bool:
    return bool((scores >= 0).all() and (scores <= 1).all() and np.allclose(scores.sum(axis=1), 1.0, atol=1e-3))
