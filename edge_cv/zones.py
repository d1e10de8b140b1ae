"""Where things are on a camera's picture: zones (polygons), count lines and masks, and the per-rule state that
judges tracks against them.

An object is judged by the bottom-centre of its box, the point where it stands on the floor (`types.bottom_centre`).
Zone membership has inertia: a track enters after `enter_frames` consecutive frames inside and leaves after
`leave_frames` consecutive frames outside, so a box that flickers across an edge does not enter and leave each frame.
A count line counts a track when its point ends up at least `hysteresis_px` past the line on the other side from
where it was last seen, and only if the path went through the segment, so jitter on the line never double counts.

OpenCV is imported only where a mask image is drawn, so validating a configuration does not load the vision stack.

The geometry (`Zone`, `CountLine`) is shared by every rule of a camera and holds no per-track state; each rule asks
for its own `ZoneMembership` / `LineCrossings`, because two rules must not advance one another's inertia counters.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge_cv.types import Box, Track, bottom_centre
from hub.errors import ConfigError

Point = tuple[float, float]
ZoneKind = Literal["floor", "work", "conveyor", "reading", "other"]
Direction = Literal["up", "down", "left", "right"]

_UNIT = {"up": (0.0, -1.0), "down": (0.0, 1.0), "left": (-1.0, 0.0), "right": (1.0, 0.0)}
# A crossing must move at least this much across the line for in_direction to mean anything (sin 15°).
_MIN_CROSS_COMPONENT = math.sin(math.radians(15))
_MIN_AREA_PX = 1.0
_MIN_LINE_PX = 2.0


# ---------------------------------------------------------------------------------------------------------------
# polygon checks


def _cross(o: Point, a: Point, b: Point) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def _on_segment(p: Point, q: Point, r: Point) -> bool:
    """r lies within the bounding box of segment p-q (used only when the three are collinear)."""
    return min(p[0], q[0]) <= r[0] <= max(p[0], q[0]) and min(p[1], q[1]) <= r[1] <= max(p[1], q[1])


def segments_intersect(p1: Point, p2: Point, q1: Point, q2: Point) -> bool:
    """Whether closed segments p1-p2 and q1-q2 share a point (touching and collinear overlap count)."""
    d1, d2 = _cross(q1, q2, p1), _cross(q1, q2, p2)
    d3, d4 = _cross(p1, p2, q1), _cross(p1, p2, q2)
    if ((d1 > 0 > d2) or (d1 < 0 < d2)) and ((d3 > 0 > d4) or (d3 < 0 < d4)):
        return True
    return (
        (d1 == 0 and _on_segment(q1, q2, p1))
        or (d2 == 0 and _on_segment(q1, q2, p2))
        or (d3 == 0 and _on_segment(p1, p2, q1))
        or (d4 == 0 and _on_segment(p1, p2, q2))
    )


def point_in_polygon(point: Point, points: Sequence[Point]) -> bool:
    """Even-odd test; a point on an edge counts as inside."""
    x, y = point
    inside = False
    n = len(points)
    for i in range(n):
        (x1, y1), (x2, y2) = points[i], points[(i + 1) % n]
        if abs(_cross((x1, y1), (x2, y2), (x, y))) <= 1e-9 * max(1.0, abs(x2 - x1) + abs(y2 - y1)) and _on_segment(
            (x1, y1), (x2, y2), (x, y)
        ):
            return True
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


def polygon_area(points: Sequence[Point]) -> float:
    """Unsigned area by the shoelace formula."""
    n = len(points)
    twice = sum(points[i][0] * points[(i + 1) % n][1] - points[(i + 1) % n][0] * points[i][1] for i in range(n))
    return abs(twice) / 2.0


def check_polygon(points: Sequence[Point]) -> list[Point]:
    """Validate a polygon given as [[x, y], …] in frame pixels; raise ValueError saying what to fix."""
    pts = [(float(x), float(y)) for x, y in points]
    if len(pts) > 1 and pts[0] == pts[-1]:
        pts = pts[:-1]  # a closed ring written with its first point repeated is the same polygon
    if len(pts) < 3:
        raise ValueError(f"a polygon needs at least 3 points [[x, y], …] in frame pixels, got {len(pts)}")
    if any(not (math.isfinite(x) and math.isfinite(y)) for x, y in pts):
        raise ValueError("polygon points must be finite numbers")
    for i in range(len(pts)):
        if pts[i] == pts[(i + 1) % len(pts)]:
            raise ValueError(f"polygon points {i} and {(i + 1) % len(pts)} are the same point {list(pts[i])}")
    if all(abs(_cross(pts[0], pts[1], p)) < 1e-9 for p in pts[2:]):
        raise ValueError("polygon has no area (its points lie on one line); give the corners of a real region")
    n = len(pts)
    for i in range(n):
        a1, a2 = pts[i], pts[(i + 1) % n]
        for j in range(i + 1, n):
            if j == i or (j + 1) % n == i or j == (i + 1) % n:
                continue  # neighbouring edges share a corner by construction
            b1, b2 = pts[j], pts[(j + 1) % n]
            if segments_intersect(a1, a2, b1, b2):
                raise ValueError(
                    f"polygon is self-intersecting: edge {i}->{(i + 1) % n} {[list(a1), list(a2)]} crosses edge "
                    f"{j}->{(j + 1) % n} {[list(b1), list(b2)]}; list the corners in order around the region"
                )
    if polygon_area(pts) < _MIN_AREA_PX:
        raise ValueError(f"polygon encloses less than {_MIN_AREA_PX:.0f} px²; give the corners of a real region")
    return pts


Polygon = Annotated[list[tuple[float, float]], AfterValidator(check_polygon)]
"""A validated polygon type for config models (zones here; camera masks in edge_cv/config.py)."""


def check_name(what: str, name: str) -> str:
    """Zone and line names become parts of metric names (`<rule>/<zone>/people`): no slashes, no blanks."""
    if not name or name != name.strip() or "/" in name or any(c in name for c in "#+ \t"):
        raise ConfigError(f"{what} name {name!r} must be non-empty, without spaces, '/', '#' or '+'")
    return name


# ---------------------------------------------------------------------------------------------------------------
# configuration models


class ZoneConfig(BaseModel):
    """A named region of the picture: `cameras.<camera>.zones.<name>`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    polygon: Polygon = Field(description="corners [[x, y], …] in pixels of the resized frame, in order, ≥ 3")
    kind: ZoneKind = Field("other", description="floor | work | conveyor | reading | other")
    operation: str | None = Field(
        None, min_length=1, description="the operation done here (e.g. sleeving); enables dwell time events"
    )
    enter_frames: int = Field(3, ge=1, le=1000, description="consecutive frames inside before a track enters")
    leave_frames: int = Field(5, ge=1, le=1000, description="consecutive frames outside before a track leaves")


class LineConfig(BaseModel):
    """A named count line: `cameras.<camera>.lines.<name>`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    points: tuple[tuple[float, float], tuple[float, float]] = Field(description="[[x1, y1], [x2, y2]] in pixels")
    in_direction: Direction | None = Field(
        None,
        description="which way across the line is the first direction name (default: down for a mostly "
        "horizontal line, right for a mostly vertical one)",
    )
    directions: tuple[str, str] = Field(
        ("in", "out"), description="names of the two crossing directions: moving toward in_direction, then back"
    )
    hysteresis_px: float = Field(
        10.0, ge=0.0, description="how far past the line a point must get before a crossing counts (jitter guard)"
    )

    @model_validator(mode="after")
    def _check(self) -> LineConfig:
        (x1, y1), (x2, y2) = self.points
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
            raise ValueError("line points must be finite numbers")
        length = math.hypot(x2 - x1, y2 - y1)
        if length < _MIN_LINE_PX:
            raise ValueError(
                f"line is degenerate: its two points {[x1, y1]} and {[x2, y2]} are {length:.1f} px apart; "
                f"give two distinct points at least {_MIN_LINE_PX:.0f} px apart"
            )
        if self.in_direction is not None:
            ux, uy = _UNIT[self.in_direction]
            # normal of the line; a crossing moves along it
            nx, ny = -(y2 - y1) / length, (x2 - x1) / length
            if abs(ux * nx + uy * ny) < _MIN_CROSS_COMPONENT:
                raise ValueError(
                    f"in_direction {self.in_direction!r} runs along the line {[[x1, y1], [x2, y2]]}, so it cannot "
                    "tell the two crossing directions apart; choose a direction across the line"
                )
        a, b = self.directions
        if not a or not b or a == b:
            raise ValueError(f"directions must be two different non-empty names, got {list(self.directions)}")
        for d in self.directions:
            if not all(c.isalnum() or c == "_" for c in d):
                raise ValueError(f"direction name {d!r} becomes a metric name (count_{d}): use letters, digits, _")
        return self


# ---------------------------------------------------------------------------------------------------------------
# zones and membership


class Zone:
    """A polygon of the picture; `contains` judges a point, `membership()` a fresh per-rule inertia state."""

    def __init__(self, name: str, config: ZoneConfig) -> None:
        self.name = name
        self.config = config
        self.kind: ZoneKind = config.kind
        self.operation = config.operation
        self.points: list[Point] = list(config.polygon)
        xs = [p[0] for p in self.points]
        ys = [p[1] for p in self.points]
        self.bbox: Box = (min(xs), min(ys), max(xs), max(ys))

    def contains(self, point: Point) -> bool:
        """Whether the point lies inside the polygon or on its edge."""
        x, y = float(point[0]), float(point[1])
        x1, y1, x2, y2 = self.bbox
        if x < x1 or x > x2 or y < y1 or y > y2:
            return False
        return point_in_polygon((x, y), self.points)

    def contains_box(self, box: Box) -> bool:
        """Whether the box's bottom-centre (where the object stands) lies inside."""
        return self.contains(bottom_centre(box))

    def mask(self, size: tuple[int, int]) -> np.ndarray:
        """A uint8 (height, width) image: 255 inside the polygon, 0 outside; size is (width, height)."""
        import cv2

        w, h = size
        out = np.zeros((h, w), np.uint8)
        cv2.fillPoly(out, [np.round(np.asarray(self.points)).astype(np.int32)], 255)
        return out

    def membership(self) -> ZoneMembership:
        """A new, empty inertia state for one rule."""
        return ZoneMembership(self)

    def __repr__(self) -> str:
        return f"Zone({self.name!r}, kind={self.kind!r}, points={len(self.points)})"


@dataclass(frozen=True, slots=True)
class ZoneTransition:
    """A track entered (`entered=True`) or left a zone. For a leave, `time_ms` is the first frame it was seen
    outside (or missing), so `dwell_ms` does not include the frames of inertia."""

    zone: str
    track_id: int
    entered: bool
    time_ms: int
    entered_ms: int
    track: Track

    @property
    def dwell_ms(self) -> int:
        return self.time_ms - self.entered_ms


@dataclass(slots=True)
class _Member:
    inside: bool
    track: Track
    run: int = 0  # consecutive frames that contradict `inside`
    pending_ms: int = 0  # time of the first of those frames
    entered_ms: int = 0


class ZoneMembership:
    """Which tracks are in one zone, with inertia; one instance per rule per zone."""

    def __init__(self, zone: Zone) -> None:
        self.zone = zone
        self._state: dict[int, _Member] = {}

    def update(self, tracks: Iterable[Track], time_ms: int) -> list[ZoneTransition]:
        """Feed this frame's tracks (a track not given counts as outside); returns enters and leaves."""
        out: list[ZoneTransition] = []
        seen: set[int] = set()
        for track in tracks:
            seen.add(track.id)
            inside_now = self.zone.contains_box(track.box)
            st = self._state.get(track.id)
            if st is None:
                if not inside_now:
                    continue
                st = self._state[track.id] = _Member(inside=False, track=track)
            st.track = track
            self._step(st, inside_now, time_ms, out)
        for tid in list(self._state):
            if tid not in seen:
                self._step(self._state[tid], False, time_ms, out)
        for tid in [tid for tid, st in self._state.items() if not st.inside and st.run == 0]:
            del self._state[tid]  # outside and settled: nothing to remember
        return out

    def _step(self, st: _Member, inside_now: bool, time_ms: int, out: list[ZoneTransition]) -> None:
        if inside_now == st.inside:
            st.run = 0
            return
        if st.run == 0:
            st.pending_ms = time_ms
        st.run += 1
        need = self.zone.config.leave_frames if st.inside else self.zone.config.enter_frames
        if st.run < need:
            return
        st.run = 0
        if st.inside:
            st.inside = False
            out.append(ZoneTransition(self.zone.name, st.track.id, False, st.pending_ms, st.entered_ms, st.track))
        else:
            st.inside = True
            st.entered_ms = st.pending_ms
            out.append(ZoneTransition(self.zone.name, st.track.id, True, time_ms, st.entered_ms, st.track))

    @property
    def members(self) -> dict[int, int]:
        """Track id -> time it entered, for the tracks inside now."""
        return {tid: st.entered_ms for tid, st in self._state.items() if st.inside}

    def member_tracks(self) -> list[Track]:
        """The latest Track of each member (a member missing this frame keeps its last box)."""
        return [st.track for st in self._state.values() if st.inside]

    def __contains__(self, track_id: object) -> bool:
        st = self._state.get(track_id)  # type: ignore[arg-type]
        return st is not None and st.inside

    def __len__(self) -> int:
        return sum(1 for st in self._state.values() if st.inside)


# ---------------------------------------------------------------------------------------------------------------
# count lines


@dataclass(frozen=True, slots=True)
class Crossing:
    """A track went across a count line in `direction` (one of the line's two direction names)."""

    line: str
    track_id: int
    direction: str
    time_ms: int
    point: Point
    track: Track


@dataclass(slots=True)
class _Side:
    side: int  # +1 / -1: the side of the line the track was last established on
    anchor: Point  # the last point seen on that side
    last_seen_ms: int


class CountLine:
    """A segment with two named crossing directions; `crossings()` gives a fresh per-rule crossing state."""

    def __init__(self, name: str, config: LineConfig) -> None:
        self.name = name
        self.config = config
        (x1, y1), (x2, y2) = config.points
        self.a: Point = (float(x1), float(y1))
        self.b: Point = (float(x2), float(y2))
        self._dx, self._dy = x2 - x1, y2 - y1
        self.length = math.hypot(self._dx, self._dy)
        direction = config.in_direction or ("down" if abs(self._dx) >= abs(self._dy) else "right")
        self.in_direction: Direction = direction
        ux, uy = _UNIT[direction]
        # signed distance grows along the normal (-dy, dx); moving that way is "in" when it points like `direction`
        self._in_sign = 1 if (ux * -self._dy + uy * self._dx) > 0 else -1
        self.directions: tuple[str, str] = config.directions
        self.hysteresis = float(config.hysteresis_px)

    def signed_distance(self, point: Point) -> float:
        """Perpendicular distance from the (infinite) line, positive on the side a track reaches going "in"."""
        d = (self._dx * (point[1] - self.a[1]) - self._dy * (point[0] - self.a[0])) / self.length
        return d * self._in_sign

    def through_segment(self, p: Point, q: Point) -> bool:
        """Whether the path p→q (on opposite sides) crosses the line between its two end points."""
        sp, sq = self.signed_distance(p), self.signed_distance(q)
        if sp == sq:
            return False
        f = sp / (sp - sq)
        cx, cy = p[0] + (q[0] - p[0]) * f, p[1] + (q[1] - p[1]) * f
        t = ((cx - self.a[0]) * self._dx + (cy - self.a[1]) * self._dy) / (self.length**2)
        return 0.0 <= t <= 1.0

    def crossings(self, forget_ms: int = 10_000) -> LineCrossings:
        """A new, empty crossing state for one rule."""
        return LineCrossings(self, forget_ms)

    def __repr__(self) -> str:
        return f"CountLine({self.name!r}, {self.a}->{self.b}, in={self.in_direction})"


class LineCrossings:
    """Per-track side memory for one count line and one rule."""

    def __init__(self, line: CountLine, forget_ms: int = 10_000) -> None:
        self.line = line
        self.forget_ms = forget_ms
        self._state: dict[int, _Side] = {}

    def update(self, tracks: Iterable[Track], time_ms: int) -> list[Crossing]:
        """Feed this frame's tracks; returns the crossings completed on this frame."""
        line = self.line
        out: list[Crossing] = []
        for track in tracks:
            p = track.history[-1] if track.history else bottom_centre(track.box)
            st = self._state.get(track.id)
            if st is None:
                st = self._seed(track, p, time_ms)
                if st is None:
                    continue
            st.last_seen_ms = time_ms
            s = line.signed_distance(p)
            side_now = 1 if s > 0 else -1 if s < 0 else 0
            if side_now == 0:
                continue
            if side_now == st.side:
                st.anchor = p
                continue
            if abs(s) < line.hysteresis:
                continue  # on the other side but not far enough: jitter until proven otherwise
            if line.through_segment(st.anchor, p):
                direction = line.directions[0] if side_now > 0 else line.directions[1]
                out.append(Crossing(line.name, track.id, direction, time_ms, p, track))
            st.side, st.anchor = side_now, p
        for tid in [tid for tid, st in self._state.items() if time_ms - st.last_seen_ms > self.forget_ms]:
            del self._state[tid]
        return out

    def _seed(self, track: Track, p: Point, time_ms: int) -> _Side | None:
        # A tracker confirms a track some frames after it first saw it: its oldest point says where it came from.
        for q in [*track.history, p]:
            s = self.line.signed_distance(q)
            if s != 0:
                st = self._state[track.id] = _Side(1 if s > 0 else -1, q, time_ms)
                return st
        return None

    def __len__(self) -> int:
        return len(self._state)


# ---------------------------------------------------------------------------------------------------------------
# the camera's geometry


@dataclass
class CameraGeometry:
    """A camera's named zones and count lines, plus masks: polygons excluded from detection and motion.
    `zones`/`lines` may be given as ZoneConfig/LineConfig values (the camera config's); they are built here."""

    zones: dict[str, Zone] = field(default_factory=dict)
    lines: dict[str, CountLine] = field(default_factory=dict)
    frame_size: tuple[int, int] | None = None
    masks: list[list[Point]] = field(default_factory=list)
    _mask_cache: dict[tuple[int, int], np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        # Accept the camera config's ZoneConfig/LineConfig values directly as well as built Zones and CountLines.
        for n in self.zones:
            check_name("zone", n)
        for n in self.lines:
            check_name("line", n)
        self.zones = {n: z if isinstance(z, Zone) else Zone(n, z) for n, z in self.zones.items()}
        self.lines = {n: ln if isinstance(ln, CountLine) else CountLine(n, ln) for n, ln in self.lines.items()}
        self.masks = [list(m) for m in self.masks]

    @classmethod
    def from_configs(
        cls,
        zones: Mapping[str, ZoneConfig | Mapping[str, Any]] | None = None,
        lines: Mapping[str, LineConfig | Mapping[str, Any]] | None = None,
        frame_size: tuple[int, int] | None = None,
        masks: Sequence[Sequence[Point]] = (),
    ) -> CameraGeometry:
        """Build from validated (or raw) configs; with `frame_size` (width, height) points must lie in the frame."""
        built_zones: dict[str, Zone] = {}
        for name, cfg in (zones or {}).items():
            built_zones[name] = Zone(name, _validated(ZoneConfig, cfg, f"zones.{name}"))
        built_lines: dict[str, CountLine] = {}
        for name, cfg in (lines or {}).items():
            built_lines[name] = CountLine(name, _validated(LineConfig, cfg, f"lines.{name}"))
        built_masks: list[list[Point]] = []
        for i, poly in enumerate(masks):
            try:
                built_masks.append(check_polygon(poly))
            except ValueError as exc:
                raise ConfigError(f"masks[{i}]: {exc}") from None
        geometry = cls(built_zones, built_lines, frame_size, built_masks)
        if frame_size is not None:
            geometry.check_inside_frame(frame_size)
        return geometry

    def check_inside_frame(self, frame_size: tuple[int, int]) -> None:
        """Raise ConfigError when a zone, line or mask point lies outside a (width, height) frame."""
        w, h = frame_size
        named: list[tuple[str, Sequence[Point]]] = [(f"zones.{n}", z.points) for n, z in self.zones.items()]
        named += [(f"lines.{n}", (ln.a, ln.b)) for n, ln in self.lines.items()]
        named += [(f"masks[{i}]", m) for i, m in enumerate(self.masks)]
        for where, points in named:
            for x, y in points:
                if not (0 <= x <= w and 0 <= y <= h):
                    raise ConfigError(
                        f"{where}: point {[x, y]} lies outside the {w}x{h} frame; coordinates are pixels of the "
                        "frame after the camera's resize (width)"
                    )

    def detection_mask(self, size: tuple[int, int]) -> np.ndarray | None:
        """uint8 (height, width): 255 where detection and motion count, 0 in masks; None without masks."""
        if not self.masks:
            return None
        cached = self._mask_cache.get(size)
        if cached is None:
            import cv2

            w, h = size
            cached = np.full((h, w), 255, np.uint8)
            cv2.fillPoly(cached, [np.round(np.asarray(m)).astype(np.int32) for m in self.masks], 0)
            self._mask_cache[size] = cached
        return cached

    def is_masked(self, point: Point) -> bool:
        """Whether a point (say, a detection's bottom-centre) lies in a mask."""
        p = (float(point[0]), float(point[1]))
        return any(point_in_polygon(p, m) for m in self.masks)


def _validated(model: type[BaseModel], cfg: Any, where: str) -> Any:
    if isinstance(cfg, model):
        return cfg
    try:
        return model.model_validate(cfg)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{where}{'.' + loc if loc else ''}: {first['msg']}") from None
