"""Sanitation: spills on a floor zone, and cleaning presence during cleaning windows.

Spill — a foreign, persistent, non-moving region on the floor. The rule keeps a slow background model of the zone,
learned only on frames without people in it and never on pixels that differ from it (so a spill is not absorbed).
A region that differs, lies outside every track box (grown by `box_margin`), keeps its centre within
`max_shift_px` for `persist_s` seconds and covers at least `min_area` pixels raises one `spill` event; it raises
`spill_cleared` after it has been gone (and not merely hidden behind someone) for `clear_s`. A walking person is
either inside a track box or a region that moves, so neither makes a spill. The zone is processed at most
`work_width` pixels wide to keep the cost per frame low. OpenCV is imported when the first frame is judged, so
validating a configuration does not load the vision stack.

Cleaning — during each configured window (times of day in `timezone`), someone present in the cleaning zone for a
total of `min_s` seconds is cleaning done (`cleaning_done`, with the time spent, sent once the person leaves or the
window closes); a window that closes without it raises `cleaning_missed`. All times come from `frame.time_ms`.

    floor_watch:
      type: sanitation
      zone: floor                              # kind: floor
      spill: {persist_s: 10, min_area: 600}
      cleaning:                                # the salad line's CIP/sanitation after shift B (PLANT.md)
        windows: [{start: "22:00", end: "23:00"}]
        min_s: 600
        timezone: Europe/Moscow
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge_cv.rules.base import RuleSettings, check_references, select
from edge_cv.types import Box, CvEvent, Detection, Frame, RuleResult, Track
from edge_cv.zones import CameraGeometry, Zone, ZoneMembership
from hub.errors import ConfigError
from hub.events import Severity

# How many days of windows a jump in frame time is searched for windows it skipped entirely.
_MAX_SKIP_DAYS = 7


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SpillConfig(_Model):
    """How different, how large and how still a region must be, and for how long, to be a spill."""

    persist_s: float = Field(10.0, gt=0, description="seconds a still, foreign region must stay to be a spill")
    min_area: float = Field(400.0, gt=0, description="smallest spill, in frame pixels²")
    threshold: int = Field(30, ge=1, le=255, description="colour difference (0–255) from the floor that counts")
    max_shift_px: float = Field(15.0, gt=0, description="how far its centre may move and still be non-moving")
    clear_s: float = Field(3.0, gt=0, description="seconds a spill must be gone before it is reported cleared")
    learn_rate: float = Field(0.02, gt=0, le=1, description="background blend per frame without people")
    box_margin: float = Field(0.15, ge=0, le=1, description="track boxes grown by this share of their size")
    work_width: int = Field(320, ge=32, le=4096, description="the zone is processed at most this wide")
    global_change: float = Field(
        0.5, gt=0, le=1, description="share of the zone changing at once that means lighting changed: relearn"
    )


class CleaningWindow(_Model):
    """A daily window, local time; an end before the start runs past midnight."""

    start: dt.time
    end: dt.time

    @model_validator(mode="after")
    def _check(self) -> CleaningWindow:
        if self.start == self.end:
            raise ValueError(f"cleaning window starts and ends at {self.start}: give a start and a later end")
        return self

    def label(self) -> str:
        return f"{self.start.strftime('%H:%M')}-{self.end.strftime('%H:%M')}"


class CleaningConfig(_Model):
    """When cleaning must happen and how long someone must be present for it to count."""

    windows: tuple[CleaningWindow, ...] = Field(min_length=1, description="[{start: '22:00', end: '23:00'}, …]")
    min_s: float = Field(300.0, gt=0, description="person-present seconds in a window that count as cleaning done")
    zone: str | None = Field(None, min_length=1, description="where cleaners are watched (default: the rule's zone)")
    timezone: str = Field("UTC", description="IANA time zone of the window times, e.g. Europe/Moscow")
    max_gap_s: float = Field(
        60.0, gt=0, description="a gap between frames counts as presence for at most this long (a stalled camera)"
    )

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}: use an IANA name such as Europe/Moscow or UTC") from None
        return v


class SanitationConfig(RuleSettings):
    """Spill detection on a floor zone and/or cleaning presence during cleaning windows."""

    type: Literal["sanitation"]
    zone: str = Field(min_length=1, description="the floor zone watched for spills (and, by default, cleaning)")
    people: tuple[str, ...] = Field(("person",), min_length=1, description="track labels that are people")
    spill: SpillConfig | None = Field(default_factory=SpillConfig, description="null turns spill detection off")
    cleaning: CleaningConfig | None = None

    @model_validator(mode="after")
    def _check(self) -> SanitationConfig:
        if self.spill is None and self.cleaning is None:
            raise ValueError("sanitation does nothing with spill: null and no cleaning; configure one of them")
        return self

    def referenced_zones(self) -> set[str]:
        out = {self.zone}
        if self.cleaning is not None and self.cleaning.zone:
            out.add(self.cleaning.zone)
        return out


# ---------------------------------------------------------------------------------------------------------------
# spills


@dataclass(slots=True)
class _Candidate:
    id: int
    anchor: tuple[float, float]  # centre (work pixels) where it settled; moving beyond max_shift restarts the clock
    centre: tuple[float, float]
    bbox: tuple[int, int, int, int]  # work pixels x1, y1, x2, y2 (exclusive)
    area: float  # frame pixels²
    since_ms: int
    last_ms: int
    reported_ms: int | None = None
    # a reported spill does not move, so it keeps the union of where it was seen: a person standing on part of it
    # shrinks what is visible, and the pieces that reappear must still be recognised as the same spill
    footprint: tuple[int, int, int, int] | None = None
    # where it has been seen since it settled at `anchor` (work pixels): the part of it visible beside a track box
    # (someone standing on it, a stray box over it) lies inside this, which is not moving
    settled: tuple[int, int, int, int] | None = None

    @property
    def extent(self) -> tuple[int, int, int, int]:
        return self.footprint or self.bbox


class SpillWatch:
    """The background model and candidate regions of one floor zone."""

    def __init__(self, zone: Zone, config: SpillConfig) -> None:
        self.zone = zone
        self.config = config
        self._frame_size: tuple[int, int] | None = None
        self._bg: np.ndarray | None = None
        self._known: np.ndarray | None = None  # pixels of the zone whose floor has been seen
        self._relearn_pending = False
        self._candidates: list[_Candidate] = []
        self._next_id = 1
        self.spills = 0
        self.resets = 0

    @property
    def ready(self) -> bool:
        return self._bg is not None

    @property
    def active(self) -> int:
        return sum(1 for c in self._candidates if c.reported_ms is not None)

    def _setup(self, size: tuple[int, int]) -> None:
        import cv2

        w, h = size
        x1, y1, x2, y2 = self.zone.bbox
        self._x1, self._y1 = max(0, int(np.floor(x1))), max(0, int(np.floor(y1)))
        self._x2, self._y2 = min(w, int(np.ceil(x2))), min(h, int(np.ceil(y2)))
        cw, ch = max(1, self._x2 - self._x1), max(1, self._y2 - self._y1)
        self._scale = min(1.0, self.config.work_width / cw)
        self._work = (max(1, round(cw * self._scale)), max(1, round(ch * self._scale)))
        pts = (np.asarray(self.zone.points, np.float64) - (self._x1, self._y1)) * self._scale
        self._zone_mask = np.zeros((self._work[1], self._work[0]), np.uint8)
        cv2.fillPoly(self._zone_mask, [np.round(pts).astype(np.int32)], 255)
        self._frame_size = size
        self._bg = None
        self._known = None
        self._relearn_pending = False
        self._candidates = []

    def _to_work(self, box: Box, margin: float) -> tuple[int, int, int, int]:
        x1, y1, x2, y2 = box
        mx, my = (x2 - x1) * margin, (y2 - y1) * margin
        s = self._scale
        return (
            int(np.floor((x1 - mx - self._x1) * s)),
            int(np.floor((y1 - my - self._y1) * s)),
            int(np.ceil((x2 + mx - self._x1) * s)),
            int(np.ceil((y2 + my - self._y1) * s)),
        )

    def _to_frame(self, bbox: tuple[int, int, int, int]) -> Box:
        s = self._scale
        return (
            self._x1 + bbox[0] / s,
            self._y1 + bbox[1] / s,
            self._x1 + bbox[2] / s,
            self._y1 + bbox[3] / s,
        )

    def update(
        self, image: np.ndarray, tracks: list[Track], people_present: bool, now: int
    ) -> tuple[list[_Candidate], list[_Candidate]]:
        """Judge one frame; returns (spills found now, spills cleared now)."""
        import cv2

        size = (int(image.shape[1]), int(image.shape[0]))
        if size != self._frame_size:
            self._setup(size)
        cfg = self.config
        roi = image[self._y1 : self._y2, self._x1 : self._x2]
        work = cv2.resize(roi, self._work, interpolation=cv2.INTER_AREA) if self._scale < 1.0 else roi
        # smoothing keeps sensor noise and floor texture aliasing from flickering single pixels
        work = cv2.GaussianBlur(work, (5, 5), 0).astype(np.float32)
        covered = np.zeros(self._zone_mask.shape, np.uint8)
        for t in tracks:
            a, b, c, d = self._to_work(t.box, cfg.box_margin)
            cv2.rectangle(covered, (a, b), (c - 1, d - 1), 255, thickness=-1)
        zone = self._zone_mask > 0
        uncovered = zone & (covered == 0)
        if self._bg is None:
            if people_present:
                return [], []  # learn the empty floor first
            self._bg, self._known = work.copy(), uncovered
            return [], []
        assert self._known is not None
        visible = uncovered & self._known
        changed = np.abs(work - self._bg).max(axis=2) > cfg.threshold
        n_visible = int(np.count_nonzero(visible))
        if n_visible and np.count_nonzero(changed & visible) > cfg.global_change * n_visible:
            self._relearn_pending = True  # lights switched or the camera moved
        if self._relearn_pending:
            if not people_present:
                self._relearn(work, uncovered)
            return [], []  # a floor that changed all over says nothing about spills
        if not people_present:
            # never learn a pixel that differs (a spill would fade into the floor) or one under a track box
            learn = visible & ~changed
            self._bg[learn] += cfg.learn_rate * (work[learn] - self._bg[learn])
            # floor that was hidden under an object when the model started is learned once it shows
            new = uncovered & ~self._known
            self._bg[new] = work[new]
            self._known |= new
        fg = (changed & visible).astype(np.uint8) * 255
        fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
        regions = self._regions(fg)
        return self._match(regions, fg, covered, now)

    def _relearn(self, work: np.ndarray, uncovered: np.ndarray) -> None:
        # Start the floor again, but keep the old floor under reported spills so they are judged against what was
        # there before (otherwise a spill present at the switch would count as cleared).
        assert self._bg is not None and self._known is not None
        new_bg, known = work.copy(), uncovered.copy()
        for c in self._candidates:
            if c.reported_ms is not None:
                a, b, cc, d = (max(0, v) for v in c.extent)
                new_bg[b:d, a:cc] = self._bg[b:d, a:cc]
                known[b:d, a:cc] = self._known[b:d, a:cc]
        self._bg, self._known = new_bg, known
        self._candidates = [c for c in self._candidates if c.reported_ms is not None]
        self._relearn_pending = False
        self.resets += 1

    def _regions(self, fg: np.ndarray) -> list[tuple[tuple[float, float], tuple[int, int, int, int], float]]:
        import cv2

        n, _, stats, centroids = cv2.connectedComponentsWithStats(fg, connectivity=8)
        out = []
        s2 = self._scale**2
        for i in range(1, n):
            area = stats[i, cv2.CC_STAT_AREA] / s2
            if area < self.config.min_area:
                continue
            x, y, w, h = (int(v) for v in stats[i, :4])
            out.append(((float(centroids[i][0]), float(centroids[i][1])), (x, y, x + w, y + h), float(area)))
        return out

    def _match(
        self,
        regions: list[tuple[tuple[float, float], tuple[int, int, int, int], float]],
        fg: np.ndarray,
        covered: np.ndarray,
        now: int,
    ) -> tuple[list[_Candidate], list[_Candidate]]:
        cfg = self.config
        shift = cfg.max_shift_px * self._scale
        parts: dict[int, list[tuple[tuple[float, float], tuple[int, int, int, int], float]]] = {}
        for region in sorted(regions, key=lambda r: -r[2]):
            centre, bbox, _ = region
            best, best_key = None, (True, True, float("inf"))
            for c in self._candidates:
                d = float(np.hypot(centre[0] - c.centre[0], centre[1] - c.centre[1]))
                # a reported spill claims every piece inside its footprint (someone standing on it cuts it in
                # pieces); otherwise a candidate with no region yet comes first, and a second region near a taken
                # one is a piece of it
                inside_spill = c.reported_ms is not None and _overlaps(c.extent, bbox)
                key = (not inside_spill, c.id in parts, d)
                if (d <= shift or _overlaps(c.extent, bbox)) and key < best_key:
                    best, best_key = c, key
            if best is None:
                best = _Candidate(self._next_id, centre, centre, bbox, 0.0, now, now)
                self._next_id += 1
                self._candidates.append(best)
            parts.setdefault(best.id, []).append(region)
        matched: list[_Candidate] = []
        free: list[_Candidate] = []
        for c in self._candidates:
            pieces = parts.get(c.id)
            if not pieces:
                free.append(c)
                continue
            area = sum(p[2] for p in pieces)
            centre = (
                sum(p[0][0] * p[2] for p in pieces) / area,
                sum(p[0][1] * p[2] for p in pieces) / area,
            )
            bbox = (
                min(p[1][0] for p in pieces),
                min(p[1][1] for p in pieces),
                max(p[1][2] for p in pieces),
                max(p[1][3] for p in pieces),
            )
            moved = float(np.hypot(centre[0] - c.anchor[0], centre[1] - c.anchor[1]))
            if c.reported_ms is None:
                if moved > shift and not self._partly_hidden(c.settled or c.bbox, bbox, covered, shift):
                    c.anchor, c.since_ms, c.settled = centre, now, bbox  # it moves: whatever it is, not a spill
                else:
                    c.settled = _union(c.settled or c.bbox, bbox)
            c.centre, c.bbox, c.area, c.last_ms = centre, bbox, area, now
            if c.footprint is not None:
                c.footprint = _union(c.footprint, bbox)
            matched.append(c)
        matched = self._merge_overlapping(matched)
        found: list[_Candidate] = []
        for c in matched:
            if c.reported_ms is None and now - c.since_ms >= cfg.persist_s * 1000:
                c.reported_ms = now
                c.footprint = c.bbox
                self.spills += 1
                found.append(c)
        cleared: list[_Candidate] = []
        s2 = self._scale**2
        for c in free:
            if c.reported_ms is None and any(_overlaps(c.extent, m.extent) for m in matched):
                self._candidates.remove(c)  # a leftover piece of a region now seen whole under another candidate
                continue
            a, b, cc, d = (max(0, c.extent[0]), max(0, c.extent[1]), c.extent[2], c.extent[3])
            box_area = max(1, (cc - a) * (d - b))
            hidden = np.count_nonzero(covered[b:d, a:cc]) >= 0.1 * box_area
            # someone standing on it breaks it into pieces smaller than min_area: still there
            remnant = c.reported_ms is not None and np.count_nonzero(fg[b:d, a:cc]) >= 0.25 * c.area * s2
            if hidden or remnant:
                c.last_ms = now  # hidden behind someone (the cleaner, say) or partly: not gone
                continue
            if now - c.last_ms >= cfg.clear_s * 1000:
                self._candidates.remove(c)
                if c.reported_ms is not None:
                    cleared.append(c)
        return found, cleared

    def _partly_hidden(
        self, settled: tuple[int, int, int, int], bbox: tuple[int, int, int, int], covered: np.ndarray, shift: float
    ) -> bool:
        """Whether a region whose centre left its anchor is only the visible part of a still thing: it lies within
        where the thing has been seen since it settled, and track boxes cover part of that. A track box over part
        of a spill moves the centre of what shows; something that really moves leaves its settled extent."""
        a, b, c, d = settled
        m = int(np.ceil(shift))
        if not (bbox[0] >= a - m and bbox[1] >= b - m and bbox[2] <= c + m and bbox[3] <= d + m):
            return False
        a, b = max(0, a), max(0, b)
        area = max(1, (c - a) * (d - b))
        return np.count_nonzero(covered[b:d, a:c]) >= 0.1 * area

    def _merge_overlapping(self, matched: list[_Candidate]) -> list[_Candidate]:
        # Two candidates seen overlapping are one thing (it was cut in two for a while): the older one, which is the
        # reported one if either is, absorbs the newer, so one spill never raises two events.
        kept: list[_Candidate] = []
        for c in sorted(matched, key=lambda c: (c.reported_ms is None, c.id)):
            host = next((k for k in kept if _overlaps(k.extent, c.extent)), None)
            if host is None:
                kept.append(c)
                continue
            if c.reported_ms is not None and host.reported_ms is not None:
                kept.append(c)  # two reported spills that grew into each other stay two: both were announced
                continue
            area = host.area + c.area
            host.centre = (
                (host.centre[0] * host.area + c.centre[0] * c.area) / area,
                (host.centre[1] * host.area + c.centre[1] * c.area) / area,
            )
            host.area, host.bbox = area, _union(host.bbox, c.bbox)
            host.since_ms = min(host.since_ms, c.since_ms) if host.reported_ms is None else host.since_ms
            host.settled = _union(host.settled or host.bbox, c.settled or c.bbox)
            if host.footprint is not None:
                host.footprint = _union(host.footprint, c.bbox)
            self._candidates.remove(c)
        return kept

    def frame_box(self, c: _Candidate) -> Box:
        """A candidate's box in frame pixels."""
        return self._to_frame(c.extent)


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _union(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


# ---------------------------------------------------------------------------------------------------------------
# cleaning windows


@dataclass(slots=True)
class _Window:
    index: int
    start_ms: int
    end_ms: int
    label: str
    occupied_ms: int = 0
    done: bool = False


@dataclass(frozen=True, slots=True)
class _Decision:
    kind: str  # cleaning_done | cleaning_missed
    window: _Window
    reason: str
    seen: bool = True  # whether any frame fell inside the window


class CleaningWatch:
    """Which cleaning window is open and how long someone has been present in it."""

    def __init__(self, zone: Zone, config: CleaningConfig) -> None:
        self.zone = zone
        self.config = config
        self.tz = ZoneInfo(config.timezone)
        self.members: ZoneMembership = zone.membership()
        self.current: _Window | None = None
        self._last_ms: int | None = None
        self._was_present = False
        self.done = 0
        self.missed = 0

    def instances(self, day: dt.date) -> list[_Window]:
        """The windows that start on a local date."""
        out = []
        for i, w in enumerate(self.config.windows):
            start = dt.datetime.combine(day, w.start, tzinfo=self.tz)
            end_day = day if w.end > w.start else day + dt.timedelta(days=1)
            end = dt.datetime.combine(end_day, w.end, tzinfo=self.tz)
            out.append(_Window(i, int(start.timestamp() * 1000), int(end.timestamp() * 1000), w.label()))
        return out

    def _local_day(self, ms: int) -> dt.date:
        return dt.datetime.fromtimestamp(ms / 1000, self.tz).date()

    def _containing(self, ms: int) -> _Window | None:
        day = self._local_day(ms)
        for d in (day - dt.timedelta(days=1), day):
            for w in self.instances(d):
                if w.start_ms <= ms < w.end_ms:
                    return w
        return None

    def _skipped(self, after_ms: int, upto_ms: int) -> list[_Window]:
        """Windows that started after `after_ms` and ended by `upto_ms`: no frame ever fell inside them."""
        first = max(self._local_day(after_ms), self._local_day(upto_ms) - dt.timedelta(days=_MAX_SKIP_DAYS))
        out = []
        day = first - dt.timedelta(days=1)
        while day <= self._local_day(upto_ms):
            out += [w for w in self.instances(day) if w.start_ms > after_ms and w.end_ms <= upto_ms]
            day += dt.timedelta(days=1)
        return sorted(out, key=lambda w: w.end_ms)

    def update(self, people: list[Track], now: int) -> list[_Decision]:
        """Advance to `now`; returns each cleaning_done / cleaning_missed decided on this frame."""
        out: list[_Decision] = []
        self.members.update(people, now)
        present = len(self.members) > 0
        cur = self.current
        if cur is not None and now >= cur.end_ms:
            closed = self._close(cur)
            if closed is not None:
                out.append(closed)
            self.current = cur = None
        if self._last_ms is not None and now > self._last_ms:
            for w in self._skipped(self._last_ms, now):
                self.missed += 1
                out.append(_Decision("cleaning_missed", w, "no frames during the window (camera offline?)", False))
        if cur is None:
            cur = self.current = self._containing(now)
            self._was_present = False
        if cur is not None:
            if present and self._was_present and self._last_ms is not None:
                cur.occupied_ms += min(now - self._last_ms, int(self.config.max_gap_s * 1000))
            qualified = cur.occupied_ms >= self.config.min_s * 1000
            if qualified and not cur.done and not present:
                cur.done = True
                self.done += 1
                out.append(_Decision("cleaning_done", cur, "the cleaner left the zone"))
        self._was_present = present
        self._last_ms = now
        return out

    def _close(self, w: _Window) -> _Decision | None:
        if w.done:
            return None
        if w.occupied_ms >= self.config.min_s * 1000:
            w.done = True
            self.done += 1
            return _Decision("cleaning_done", w, "the window closed with the cleaner still there")
        self.missed += 1
        return _Decision("cleaning_missed", w, "nobody was present long enough")


# ---------------------------------------------------------------------------------------------------------------
# the rule


class SanitationRule:
    """See the module docstring."""

    def __init__(self, name: str, config: SanitationConfig, geometry: CameraGeometry) -> None:
        self.name = name
        self.config = config
        check_references(name, config, geometry.zones, geometry.lines)
        zone = geometry.zones[config.zone]
        self.spill: SpillWatch | None = None
        self.cleaning: CleaningWatch | None = None
        if config.spill is not None:
            if zone.kind != "floor":
                raise ConfigError(
                    f"rule {name!r}: spills are watched on floor zones, but zone {config.zone!r} has kind "
                    f"{zone.kind!r}; set its kind: floor or choose a floor zone"
                )
            self.spill = SpillWatch(zone, config.spill)
        if config.cleaning is not None:
            self.cleaning = CleaningWatch(geometry.zones[config.cleaning.zone or config.zone], config.cleaning)
        self._spill_zone = zone
        self._cleared = 0

    def process(self, frame: Frame, detections: list[Detection], tracks: list[Track]) -> RuleResult:
        """Update the floor model and the cleaning window from one frame."""
        now = frame.time_ms
        people = select(tracks, self.config.people)
        result = RuleResult()
        m = result.metrics
        if self.spill is not None:
            x1, y1, x2, y2 = self._spill_zone.bbox
            present = any(t.box[0] < x2 and x1 < t.box[2] and t.box[1] < y2 and y1 < t.box[3] for t in people)
            found, cleared = self.spill.update(frame.image, tracks, present, now)
            for c in found:
                result.events.append(self._spill_event(frame, "spill", c, Severity.MEDIUM))
            for c in cleared:
                self._cleared += 1
                result.events.append(self._spill_event(frame, "spill_cleared", c, Severity.INFO))
            m["spills"] = self.spill.spills
            m["spills_cleared"] = self._cleared
            m["spills_active"] = self.spill.active
            m["background_ready"] = int(self.spill.ready)
            m["background_resets"] = self.spill.resets
        if self.cleaning is not None:
            for decision in self.cleaning.update(people, now):
                result.events.append(self._cleaning_event(frame, decision))
            cur = self.cleaning.current
            m["cleaning_window_open"] = int(cur is not None)
            m["cleaning_seconds"] = round(cur.occupied_ms / 1000.0, 3) if cur is not None else 0.0
            m["cleaning_done"] = self.cleaning.done
            m["cleaning_missed"] = self.cleaning.missed
        return result

    def _spill_event(self, frame: Frame, kind: str, c: _Candidate, severity: Severity) -> CvEvent:
        assert self.spill is not None and c.reported_ms is not None
        payload: dict[str, object] = {"area_px": round(c.area), "spill_id": c.id}
        if kind == "spill":
            payload["still_s"] = round((frame.time_ms - c.since_ms) / 1000.0, 3)
        else:
            payload["duration_s"] = round((frame.time_ms - c.reported_ms) / 1000.0, 3)
        return CvEvent(
            camera=frame.camera,
            rule=self.name,
            kind=kind,
            time_ms=frame.time_ms,
            label="spill",
            zone=self.config.zone,
            box=self.spill.frame_box(c),
            severity=severity,
            payload=payload,
            image=frame.image,
        )

    def _cleaning_event(self, frame: Frame, decision: _Decision) -> CvEvent:
        assert self.cleaning is not None and self.config.cleaning is not None
        w, kind = decision.window, decision.kind
        missed = kind == "cleaning_missed"
        return CvEvent(
            camera=frame.camera,
            rule=self.name,
            kind=kind,
            time_ms=w.end_ms if missed else frame.time_ms,
            label="person",
            zone=self.cleaning.zone.name,
            severity=Severity.HIGH if missed else Severity.INFO,
            payload={
                "window": w.label,
                "window_start_ms": w.start_ms,
                "window_end_ms": w.end_ms,
                "duration_s": round(w.occupied_ms / 1000.0, 3),
                "min_s": self.config.cleaning.min_s,
                "reason": decision.reason,
            },
            # a window the camera never saw has no picture that shows anything about it
            image=frame.image if decision.seen else None,
        )
