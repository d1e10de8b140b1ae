"""Ground truth the generator knows for each frame: what is where, and what a perfect pipeline would report."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edge_cv.types import Box, Frame

Point = tuple[float, float]


@dataclass(frozen=True, slots=True)
class ProductTruth:
    """One product on the belt. `box` is clipped to the frame; `visible` is the fraction of it inside the frame.
    `crossed` is true on the one frame in which its centre passed the count line (the frame's vertical centre line)
    in the belt direction."""

    id: int
    sku: str
    box: Box
    visible: float
    defective: bool
    defect: str | None
    code_text: str  # the element string with GS (0x1D) separators, as zxing-cpp reads it in TextMode.Plain
    code_box: Box | None  # None while the code is outside the frame
    code_damaged: bool
    duplicate_of: int | None  # id of the earlier product whose code this one repeats
    foreign: bool  # the code carries another SKU's GTIN
    crossed: bool


@dataclass(frozen=True, slots=True)
class PersonTruth:
    """One person (one visit to the floor). `feet` is the point between the feet, where zones judge a person."""

    id: int
    box: Box
    visible: float
    mask: bool
    hairnet: bool
    coat: str
    feet: Point
    dwelling: bool
    zone: str | None  # the most specific zone of the layout containing `feet`, if any


@dataclass(frozen=True, slots=True)
class SpillTruth:
    """A spill on the floor, present from `appeared_ms` on."""

    polygon: tuple[Point, ...]
    box: Box
    appeared_ms: int
    zone: str | None


@dataclass(frozen=True, slots=True)
class FrameTruth:
    products: tuple[ProductTruth, ...] = ()
    people: tuple[PersonTruth, ...] = ()
    spill: SpillTruth | None = None
    crossings: tuple[int, ...] = ()  # ids of products that crossed the count line in this frame
    crossed_total: int = 0  # products that crossed the count line up to and including this frame


@dataclass(frozen=True, slots=True)
class SceneLayout:
    """Fixed geometry of a scene: named floor zones (polygons), count lines (two points) and the belt band."""

    zones: dict[str, tuple[Point, ...]] = field(default_factory=dict)
    lines: dict[str, tuple[Point, Point]] = field(default_factory=dict)
    belt: Box | None = None
    direction: str = "ltr"


@dataclass(frozen=True, slots=True)
class SceneFrame:
    """One generated picture and what is truly in it."""

    index: int
    time_ms: int
    image: np.ndarray
    truth: FrameTruth

    def to_frame(self, camera: str) -> Frame:
        """The same picture as the pipeline's `Frame`."""
        return Frame(camera=camera, index=self.index, time_ms=self.time_ms, image=self.image)
