"""Face blurring for every stored snapshot, with what ships offline: OpenCV's Haar cascades (frontal and profile,
in `cv2.data.haarcascades` of opencv-python-headless < 5).

Haar cascades miss faces that are small, turned or in poor light, so snapshots never rely on them alone: given the
person boxes of the frame, the head region (top 30%) of every person in whom no face was found is pixelated too.
Over-blurring a hat is acceptable; showing a face is not.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from edge_cv.detectors.boxes import as_array, merge
from edge_cv.types import Box
from hub.errors import PlantbusError

HEAD_FRACTION = 0.3
_CASCADES = ("haarcascade_frontalface_default.xml", "haarcascade_profileface.xml")


class FaceBlurrer:
    """Finds and pixelates faces; load once (the cascades take tens of ms to parse) and reuse per camera/store.
    Not shared between threads: OpenCV cascade objects are not documented as thread-safe."""

    def __init__(
        self,
        *,
        min_size: int = 20,
        scale_factor: float = 1.15,
        max_width: int = 800,
        profile: bool = True,
        min_neighbors: int = 3,
        margin: float = 0.25,
        blocks: int = 6,
    ) -> None:
        folder = cv2.data.haarcascades
        self._frontal, self._profile = (cv2.CascadeClassifier(folder + name) for name in _CASCADES)
        if self._frontal.empty() or self._profile.empty():
            raise PlantbusError(
                f"OpenCV Haar face cascades not found in {folder!r}: install opencv-python-headless<5 "
                "(OpenCV 5 wheels ship no cascades)"
            )
        self._min_size = (min_size, min_size)
        # Haar cost grows with pixels and pyramid levels (~0.5 s for three passes over 640x360 on one core);
        # faces too small to survive the downscale are too small to recognise, and person heads are covered anyway.
        self._max_width = max_width
        self._use_profile = profile
        self._scale_factor = scale_factor
        # Few neighbours: a false face costs a blurred patch, a missed one a privacy breach.
        self._min_neighbors = min_neighbors
        self._margin = margin
        self._blocks = blocks

    def find(self, image: np.ndarray) -> list[Box]:
        """Faces in `image` (BGR or grey), frontal and profile facing either way, overlapping ones merged."""
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
        gain = min(1.0, self._max_width / grey.shape[1])
        if gain < 1.0:
            grey = cv2.resize(grey, None, fx=gain, fy=gain, interpolation=cv2.INTER_AREA)
        grey = cv2.equalizeHist(grey)
        width = grey.shape[1]
        passes = [(self._detect(self._frontal, grey), False)]
        if self._use_profile:
            passes.append((self._detect(self._profile, grey), False))
            # The profile cascade only knows faces turned one way; the mirrored image gives the other way.
            passes.append((self._detect(self._profile, cv2.flip(grey, 1)), True))
        found: list[Box] = []
        for rects, mirrored in passes:
            for x, y, w, h in rects:
                x1 = width - (x + w) if mirrored else x
                found.append((x1 / gain, y / gain, (x1 + w) / gain, (y + h) / gain))
        return merge(found)

    def blur(self, image: np.ndarray, person_boxes: Sequence[Box] = ()) -> np.ndarray:
        """A copy of `image` with every face found, and the head of every person box without a found face,
        pixelated beyond recognition."""
        out = image.copy()
        height, width = image.shape[:2]
        faces = self.find(image)
        for x1, y1, x2, y2 in faces:
            mx, my = self._margin * (x2 - x1), self._margin * (y2 - y1)
            self._pixelate(out, (x1 - mx, y1 - my, x2 + mx, y2 + my), width, height)
        centres = as_array(faces)
        for box in person_boxes:
            head = (box[0], box[1], box[2], box[1] + HEAD_FRACTION * (box[3] - box[1]))
            if len(centres):
                cx = (centres[:, 0] + centres[:, 2]) / 2
                cy = (centres[:, 1] + centres[:, 3]) / 2
                inside = (cx >= box[0]) & (cx <= box[2]) & (cy >= box[1]) & (cy <= (box[1] + box[3]) / 2)
                if inside.any():
                    continue
            self._pixelate(out, head, width, height)
        return out

    def _detect(self, cascade: cv2.CascadeClassifier, grey: np.ndarray) -> np.ndarray:
        rects = cascade.detectMultiScale(
            grey, scaleFactor=self._scale_factor, minNeighbors=self._min_neighbors, minSize=self._min_size
        )
        return np.asarray(rects, dtype=np.int64).reshape(-1, 4)

    def _pixelate(self, image: np.ndarray, box: Box, width: int, height: int) -> None:
        x1, y1 = max(0, int(box[0])), max(0, int(box[1]))
        x2, y2 = min(width, int(np.ceil(box[2]))), min(height, int(np.ceil(box[3])))
        if x2 - x1 < 2 or y2 - y1 < 2:
            return
        region = image[y1:y2, x1:x2]
        w, h = x2 - x1, y2 - y1
        cols = max(1, self._blocks)
        rows = max(1, round(cols * h / w))
        small = cv2.resize(region, (cols, rows), interpolation=cv2.INTER_AREA)
        blocky = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
        # Blurring the block edges leaves no sharp grid for a face detector (or an eye) to latch on to.
        k = max(3, (min(w, h) // 4) | 1)
        image[y1:y2, x1:x2] = cv2.GaussianBlur(blocky, (k, k), 0)


def blur_faces(
    image: np.ndarray, person_boxes: Sequence[Box] = (), blurrer: FaceBlurrer | None = None
) -> np.ndarray:
    """A copy of `image` with faces (and heads of `person_boxes` where no face was found) pixelated; pass a
    long-lived `blurrer` to avoid reloading the cascades on every call."""
    return (blurrer or FaceBlurrer()).blur(image, person_boxes)
