"""`SceneSpec`: every knob of a synthetic scene, validated once. Sizes are given for a 720-pixel-high frame and
scale with `height`, except DataMatrix modules, which stay `module_px` wide so the code stays readable."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# 2026-03-02 06:00:00 UTC, the start of shift A: a fixed default so time-based rules see the same times every run.
DEFAULT_START_MS = 1_772_431_200_000



class SceneSpec(BaseModel):
    """What a synthetic scene shows; same spec (seed included) → identical frames and ground truth."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["conveyor", "floor", "mixed"] = "conveyor"
    seed: int = Field(default=0, ge=0)
    width: int = Field(default=1280, ge=320, le=3840)
    height: int = Field(default=720, ge=240, le=2160)
    fps: float = Field(default=10.0, gt=0.0, le=120.0)
    duration_s: float = Field(default=60.0, gt=0.0, le=24 * 3600.0)
    start_ms: int = Field(default=DEFAULT_START_MS, ge=0, description="time_ms of frame 0 (epoch milliseconds)")

    # Conveyor ("conveyor" and "mixed").
    line: Literal["oatbar", "salad"] = "oatbar"
    sku: str | None = Field(default=None, description="running SKU; default: the line's first SKU")
    direction: Literal["ltr", "rtl"] = "ltr"
    belt_speed: float = Field(default=320.0, gt=0.0, le=5000.0, description="pixels/s at 720 p")
    product_rate: float = Field(default=40.0, ge=0.0, le=600.0, description="products per minute (mean)")
    defect_rate: float = Field(default=0.1, ge=0.0, le=1.0)
    defects: tuple[Literal["torn", "crushed", "missing_lid"], ...] = ("torn", "crushed", "missing_lid")
    duplicate_rate: float = Field(default=0.03, ge=0.0, le=1.0)
    damaged_rate: float = Field(default=0.03, ge=0.0, le=1.0)
    foreign_rate: float = Field(default=0.0, ge=0.0, le=1.0, description="codes carrying another SKU's GTIN")
    code_format: Literal["long", "short"] = Field(
        default="long", description="long: (01)(21)(91)(92) as PLANT.md; short: (01)(21)(93) as dairy/water groups"
    )
    module_px: int = Field(default=3, ge=1, le=12, description="DataMatrix module size in pixels")
    max_rotation_deg: float = Field(default=4.0, ge=0.0, le=45.0)

    # Floor ("floor" and "mixed").
    people: int = Field(default=3, ge=0, le=20, description="people on the floor at the same time (at most)")
    mask_off_rate: float = Field(default=0.3, ge=0.0, le=1.0)
    hairnet_rate: float = Field(default=0.7, ge=0.0, le=1.0)
    dwell_s: tuple[float, float] = (4.0, 20.0)
    spill_at_s: float | None = Field(default=None, ge=0.0, description="when a spill appears; None: never")

    # Picture.
    noise_sigma: float = Field(default=3.0, ge=0.0, le=40.0)
    lighting: float = Field(default=0.08, ge=0.0, le=0.5, description="amplitude of slow global brightness drift")

    @model_validator(mode="after")
    def _check(self) -> SceneSpec:
        from edge_cv.scenes.skus import SKUS

        if self.sku is not None:
            known = [s for s, info in SKUS.items() if info.line == self.line]
            if self.sku not in known:
                raise ValueError(f"sku {self.sku!r} does not run on line {self.line!r}; choose one of {known}")
        lo, hi = self.dwell_s
        if not 0 <= lo <= hi:
            raise ValueError(f"dwell_s must be (min, max) with 0 <= min <= max, got {self.dwell_s}")
        return self

    @property
    def frame_count(self) -> int:
        """Number of frames the scene lasts."""
        return max(1, int(round(self.duration_s * self.fps)))

    @property
    def scale(self) -> float:
        return self.height / 720.0

    def time_ms(self, index: int) -> int:
        """Timestamp of frame `index`."""
        return self.start_ms + int(round(index * 1000.0 / self.fps))
