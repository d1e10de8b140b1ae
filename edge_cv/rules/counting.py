"""Counting: tracks crossing a count line, per direction.

Counts are cumulative metrics (`count_<direction>` for both direction names of the line, `count_net` = first minus
second, and `count`, the crossings in the directions this rule counts). Per-crossing events are off by default,
because a packing line passes several products a second and the counters already carry the information.

    packed:
      type: counting
      line: exit
      labels: [product]
      directions: [in]          # default: both
      emit_events: false
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from edge_cv.rules.base import RuleSettings, check_references, select
from edge_cv.types import CvEvent, Detection, Frame, RuleResult, Track
from edge_cv.zones import CameraGeometry
from hub.errors import ConfigError


class CountingConfig(RuleSettings):
    """Count tracks with one of `labels` crossing `line`."""

    type: Literal["counting"]
    line: str = Field(min_length=1, description="name of a count line of this camera")
    labels: tuple[str, ...] = Field(("product",), description="track labels to count (empty: every track)")
    directions: tuple[str, ...] | None = Field(
        None, description="direction names (of the line's `directions`) that `count` adds up; default both"
    )
    emit_events: bool = Field(False, description="also publish one event per crossing (off for high rates)")

    @model_validator(mode="after")
    def _check(self) -> CountingConfig:
        if self.directions is not None:
            if not self.directions:
                raise ValueError("directions is empty: leave it out to count both, or name one, e.g. [in]")
            if len(set(self.directions)) != len(self.directions):
                raise ValueError(f"directions lists a name twice: {list(self.directions)}")
        return self

    def referenced_lines(self) -> set[str]:
        return {self.line}


class CountingRule:
    """See the module docstring."""

    def __init__(self, name: str, config: CountingConfig, geometry: CameraGeometry) -> None:
        self.name = name
        self.config = config
        check_references(name, config, geometry.zones, geometry.lines)
        line = geometry.lines[config.line]
        self._names = line.directions
        wanted = config.directions or line.directions
        unknown = [d for d in wanted if d not in line.directions]
        if unknown:
            raise ConfigError(
                f"rule {name!r}: line {config.line!r} has directions {list(line.directions)}, not {unknown}; "
                "use those names or rename them in the line's `directions`"
            )
        self._wanted = frozenset(wanted)
        self._crossings = line.crossings()
        self._counts = {d: 0 for d in line.directions}

    def process(self, frame: Frame, detections: list[Detection], tracks: list[Track]) -> RuleResult:
        """Count the crossings completed on this frame."""
        result = RuleResult()
        for c in self._crossings.update(select(tracks, self.config.labels), frame.time_ms):
            self._counts[c.direction] += 1
            if self.config.emit_events and c.direction in self._wanted:
                result.events.append(
                    CvEvent(
                        camera=frame.camera,
                        rule=self.name,
                        kind="crossing",
                        time_ms=frame.time_ms,
                        label=c.track.label,
                        score=float(c.track.score),
                        box=c.track.box,
                        track_id=c.track_id,
                        payload={"line": self.config.line, "direction": c.direction},
                        image=frame.image,
                    )
                )
        m = result.metrics
        first, second = self._names
        for d, n in self._counts.items():
            m[f"count_{d}"] = n
        m["count_net"] = self._counts[first] - self._counts[second]
        m["count"] = sum(n for d, n in self._counts.items() if d in self._wanted)
        return result
