"""The values every part of the CV pipeline passes around: frames, detections, tracks, events, rule output.

Boxes are (x1, y1, x2, y2) in pixels of the frame the camera delivered (after the configured resize), floats.
Times are milliseconds since the epoch. Images are BGR uint8 numpy arrays as OpenCV gives them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from hub.events import Severity

Box = tuple[float, float, float, float]


def bottom_centre(box: Box) -> tuple[float, float]:
    """Where an object stands on the floor: the point zones and count lines judge it by."""
    return ((box[0] + box[2]) / 2.0, box[3])


def centre(box: Box) -> tuple[float, float]:
    return ((box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0)


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded picture from a camera; `index` counts frames the source delivered since it started."""

    camera: str
    index: int
    time_ms: int
    image: np.ndarray

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return int(self.image.shape[1]), int(self.image.shape[0])


@dataclass(frozen=True, slots=True)
class Detection:
    """One object a detector found. `attributes` holds classifier verdicts on its crop: name -> (label, score),
    e.g. {"mask": ("no_mask", 0.93)}."""

    box: Box
    score: float
    label: str
    class_id: int = -1
    attributes: dict[str, tuple[str, float]] = field(default_factory=dict)


@dataclass(slots=True)
class Track:
    """An object followed across frames. `id` is unique per camera for the life of the pipeline.
    `history` keeps recent bottom-centre points (oldest first), which line counting needs.
    `attributes` holds the latest classifier verdicts; `votes` the recent ones per attribute (oldest first, bounded
    by the tracker's vote window) so rules can debounce: see `edge_cv.tracking.attribute_vote`."""

    id: int
    box: Box
    label: str
    score: float
    first_seen_ms: int
    last_seen_ms: int
    hits: int = 1
    misses: int = 0
    history: list[tuple[float, float]] = field(default_factory=list)
    attributes: dict[str, tuple[str, float]] = field(default_factory=dict)
    votes: dict[str, list[tuple[str, float]]] = field(default_factory=dict)

    @property
    def confirmed(self) -> bool:
        return self.hits >= 3


@dataclass(frozen=True, slots=True)
class CvEvent:
    """Something a rule decided happened. `image` (a snapshot or crop, BGR) travels with the event to the publisher,
    which stores it (faces blurred) and replaces it by `snapshot`, a reference the console can fetch."""

    camera: str
    rule: str
    kind: str
    time_ms: int
    label: str | None = None
    zone: str | None = None
    score: float | None = None
    box: Box | None = None
    track_id: int | None = None
    severity: Severity = Severity.INFO
    payload: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    image: np.ndarray | None = field(default=None, repr=False, compare=False)
    snapshot: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON published on the unified namespace (`…/cv/events`); no image bytes, only the reference."""
        return {
            "id": self.id,
            "camera": self.camera,
            "rule": self.rule,
            "kind": self.kind,
            "label": self.label,
            "zone": self.zone,
            "score": None if self.score is None else round(float(self.score), 4),
            "box": None if self.box is None else [round(float(v), 1) for v in self.box],
            "track_id": self.track_id,
            "severity": self.severity.name.lower(),
            "time": self.time_ms,
            "snapshot": self.snapshot,
            "payload": self.payload,
        }


@dataclass(slots=True)
class RuleResult:
    """What a rule returns for one frame: new events, and its counters/gauges (name -> number) which the publisher
    sends as Sparkplug metrics of the camera's device under `<rule name>/<counter>`. Counters are cumulative
    totals since the pipeline started (the publisher's RBE sends only changes); gauges are current values."""

    events: list[CvEvent] = field(default_factory=list)
    metrics: dict[str, int | float] = field(default_factory=dict)


class Rule(Protocol):
    """A rule judges one camera's frames. It is built from its validated config model and the camera's zones
    and lines, and must be cheap: it runs on the pipeline thread after detection and tracking."""

    name: str

    def process(self, frame: Frame, detections: list[Detection], tracks: list[Track]) -> RuleResult: ...


class Detector(Protocol):
    """Finds objects in a frame, optionally only inside `rois` (boxes with motion or tracked objects)."""

    labels: tuple[str, ...]

    def detect(self, image: np.ndarray, rois: list[Box] | None = None) -> list[Detection]: ...
