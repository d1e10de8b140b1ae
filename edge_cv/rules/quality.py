"""Quality: appearance of products from a crop classifier (`Track.attributes[attribute]`), one `defect` event per
defective product with its crop.

A product is judged over the frames it is seen (inside `zone`, when one is given): it is defective when at least
`min_defects` of its last `window` verdicts name a defect label with at least `min_score`. A detector trained with a
defect class works too: a track whose own label is a defect label votes defective with its detection score.

    appearance:
      type: quality
      attribute: appearance
      defect_labels: [defective]
      zone: inspection
      window: 5
      min_defects: 3
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from edge_cv.rules.base import RuleSettings, TrackClock, Votes, check_references, crop
from edge_cv.types import CvEvent, Detection, Frame, RuleResult, Track
from edge_cv.zones import CameraGeometry, ZoneMembership
from hub.events import Severity


class QualityConfig(RuleSettings):
    """Defect detection on product tracks from a classifier attribute, debounced K of N per track."""

    type: Literal["quality"]
    attribute: str = Field("appearance", min_length=1, description="classifier attribute that judges appearance")
    defect_labels: tuple[str, ...] = Field(("defective",), min_length=1, description="verdicts that mean a defect")
    labels: tuple[str, ...] = Field(("product",), description="track labels that are products (empty: all)")
    min_score: float = Field(0.5, ge=0.0, le=1.0, description="a defect verdict below this confidence counts as ok")
    zone: str | None = Field(None, min_length=1, description="judge products only inside this zone")
    window: int = Field(5, ge=1, le=1000, description="N: recent verdicts of a product that are judged")
    min_defects: int = Field(3, ge=1, description="K: defect verdicts among the last N that make a defect event")

    @model_validator(mode="after")
    def _check(self) -> QualityConfig:
        if self.min_defects > self.window:
            raise ValueError(f"min_defects ({self.min_defects}) cannot exceed window ({self.window})")
        if any(not label for label in self.defect_labels):
            raise ValueError("defect_labels must be non-empty names")
        return self

    def referenced_zones(self) -> set[str]:
        return {self.zone} if self.zone else set()


class QualityRule:
    """See the module docstring."""

    def __init__(self, name: str, config: QualityConfig, geometry: CameraGeometry) -> None:
        self.name = name
        self.config = config
        check_references(name, config, geometry.zones, geometry.lines)
        self._members: ZoneMembership | None = geometry.zones[config.zone].membership() if config.zone else None
        self._defect_labels = frozenset(config.defect_labels)
        self._product_labels = frozenset(config.labels) | self._defect_labels if config.labels else frozenset()
        self._votes = Votes(config.window)
        self._clock = TrackClock()
        self._inspected_ids: set[int] = set()
        self._reported: set[int] = set()
        self._inspected = 0
        self._defects = 0

    def process(self, frame: Frame, detections: list[Detection], tracks: list[Track]) -> RuleResult:
        """Vote on this frame's product verdicts; report each product that turns out defective once."""
        cfg = self.config
        now = frame.time_ms
        products = [t for t in tracks if not self._product_labels or t.label in self._product_labels]
        self._clock.see(products, now)
        if self._members is not None:
            self._members.update(products, now)
        result = RuleResult()
        for t in products:
            if t.misses > 0 or (self._members is not None and t.id not in self._members):
                continue
            verdict = self._verdict(t)
            if verdict is None:
                continue
            label, score = verdict
            if t.id not in self._inspected_ids:
                self._inspected_ids.add(t.id)
                self._inspected += 1
            bad = label in self._defect_labels and score >= cfg.min_score
            n_bad = self._votes.add(t.id, bad)
            if bad and n_bad >= cfg.min_defects and t.id not in self._reported:
                self._reported.add(t.id)
                self._defects += 1
                result.events.append(
                    CvEvent(
                        camera=frame.camera,
                        rule=self.name,
                        kind="defect",
                        time_ms=now,
                        label=t.label,
                        zone=cfg.zone,
                        score=float(score),
                        box=t.box,
                        track_id=t.id,
                        severity=Severity.LOW,
                        payload={
                            "attribute": cfg.attribute,
                            "verdict": label,
                            "defect_frames": n_bad,
                            "window": cfg.window,
                        },
                        image=crop(frame.image, t.box),
                    )
                )
        gone = self._clock.expire(now)
        if gone:
            self._votes.drop_tracks(gone)
            self._inspected_ids -= gone
            self._reported -= gone
        m = result.metrics
        m["inspected"] = self._inspected
        m["defects"] = self._defects
        m["defect_rate"] = round(self._defects / self._inspected, 6) if self._inspected else 0.0
        return result

    def _verdict(self, t: Track) -> tuple[str, float] | None:
        verdict = t.attributes.get(self.config.attribute)
        if verdict is not None:
            return verdict
        if t.label in self._defect_labels:
            return t.label, float(t.score)
        return None
