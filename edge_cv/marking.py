"""Marking-code verification: reading GS1 DataMatrix codes with zxing-cpp, following each printed symbol across
frames so a pack under the camera counts once, and the per-shift / per-order register that tells valid codes from
duplicates, foreign GTINs, invalid structure and unreadable packs, with the reconciliation closed at each shift end.

Everything here is plain synchronous code for the pipeline thread; times are the frames' milliseconds since the
epoch, never the wall clock, so a replayed file or a synthetic scene reconciles exactly as a live camera would.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import cv2
import numpy as np
import zxingcpp
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge_cv.gs1 import Gs1Element, Gs1Error, check_chestny_znak, parse
from edge_cv.types import Box, centre

# ---------------------------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True, slots=True)
class CodeRead:
    """One DataMatrix symbol found in a frame. `text` keeps GS (0x1D) separators and is None when zxing located
    the symbol (finder pattern) but could not decode it; `error` then says why."""

    text: str | None
    box: Box
    quad: tuple[tuple[int, int], ...]
    symbology: str = ""
    error: str | None = None

    @property
    def decoded(self) -> bool:
        """True when the symbol's data came out."""
        return self.text is not None


def read_codes(
    image: np.ndarray,
    roi: Box | None = None,
    *,
    failures: bool = True,
    try_downscale: bool = False,
    try_invert: bool = False,
) -> list[CodeRead]:
    """Read every DataMatrix in `image` (BGR or grayscale), only inside `roi` if given; boxes are in frame pixels.

    Text comes in zxing's Plain mode, which keeps the GS separators that variable-length AIs need (HRI mode
    would turn them into brackets, and pylibdmtx drops them). With `failures`, symbols zxing locates but cannot
    decode (damaged, smeared, cut) come back too, as reads with `text=None`: they are the evidence of an
    unreadable code when no pack tracker says where packs are. `try_invert` is for light-on-dark laser codes.
    `try_downscale` (zxing's extra passes on shrunken copies) is off: verifier codes at 2–8 px/module read as well
    without it, and on a noisy 720p frame it costs ~40 % more time (bench/cv_marking.py).
    """
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    ox = oy = 0
    if roi is not None:
        h, w = gray.shape[:2]
        x1, y1 = max(0, int(roi[0])), max(0, int(roi[1]))
        x2, y2 = min(w, int(math.ceil(roi[2]))), min(h, int(math.ceil(roi[3])))
        if x2 <= x1 or y2 <= y1:
            return []
        gray = gray[y1:y2, x1:x2]
        ox, oy = x1, y1
    found = zxingcpp.read_barcodes(
        np.ascontiguousarray(gray),
        formats=zxingcpp.BarcodeFormat.DataMatrix,
        text_mode=zxingcpp.TextMode.Plain,
        try_rotate=True,
        try_downscale=try_downscale,
        try_invert=try_invert,
        return_errors=failures,
    )
    reads: list[CodeRead] = []
    for barcode in found:
        p = barcode.position
        quad = tuple(
            (pt.x + ox, pt.y + oy) for pt in (p.top_left, p.top_right, p.bottom_right, p.bottom_left)
        )
        xs = [q[0] for q in quad]
        ys = [q[1] for q in quad]
        box = (float(min(xs)), float(min(ys)), float(max(xs)), float(max(ys)))
        if barcode.valid:
            reads.append(CodeRead(barcode.text, box, quad, barcode.symbology_identifier))
        else:
            reads.append(CodeRead(None, box, quad, barcode.symbology_identifier, error=str(barcode.error)))
    return reads


# ---------------------------------------------------------------------------------------------------------------
# Shifts


class ShiftWindow(BaseModel):
    """One shift of the day, e.g. A 06:00–14:00; an end at or before the start runs past midnight."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    start: dt.time
    end: dt.time

    def minutes(self) -> tuple[int, int]:
        """(start, end) in minutes from midnight, end > start (may exceed 1440 for a night shift)."""
        s = self.start.hour * 60 + self.start.minute
        e = self.end.hour * 60 + self.end.minute
        return s, e if e > s else e + 1440


def _plant_shifts() -> list[ShiftWindow]:
    return [
        ShiftWindow(name="A", start=dt.time(6), end=dt.time(14)),
        ShiftWindow(name="B", start=dt.time(14), end=dt.time(22)),
        ShiftWindow(name="C", start=dt.time(22), end=dt.time(6)),
    ]


@dataclass(frozen=True, slots=True)
class ShiftPeriod:
    """One occurrence of a shift: `key` such as `2024-05-01/C` names it uniquely; times in ms since the epoch."""

    name: str
    key: str
    start_ms: int
    end_ms: int

    def contains(self, time_ms: int) -> bool:
        """True when `time_ms` falls in [start, end)."""
        return self.start_ms <= time_ms < self.end_ms


OFF_SHIFT = "off"


class ShiftSchedule(BaseModel):
    """The plant's shifts (PLANT.md A/B/C by default) in a time zone; hours no shift covers form `off` periods."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    shifts: list[ShiftWindow] = Field(default_factory=_plant_shifts, min_length=1)
    timezone: str | None = Field(
        default=None, description="IANA zone such as Europe/Moscow; unset means the edge computer's local time"
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {value!r}: use an IANA name such as Europe/Moscow") from None
        return value

    @model_validator(mode="after")
    def _no_overlap(self) -> ShiftSchedule:
        names = [s.name for s in self.shifts]
        if len(set(names)) != len(names) or OFF_SHIFT in names:
            raise ValueError(f"shift names must be unique and not {OFF_SHIFT!r}, got {names}")
        spans = [(s.name, *s.minutes()) for s in self.shifts]
        for i, (a, a0, a1) in enumerate(spans):
            if a1 - a0 > 1440:
                raise ValueError(f"shift {a} is longer than a day")
            for b, b0, b1 in spans[i + 1 :]:
                for shift in (-1440, 0, 1440):
                    if a0 < b1 + shift and b0 + shift < a1:
                        raise ValueError(f"shifts {a} and {b} overlap: a moment must belong to one shift only")
        return self

    def period_at(self, time_ms: int) -> ShiftPeriod:
        """The shift occurrence (or the `off` gap between two) that `time_ms` falls in."""
        zone = ZoneInfo(self.timezone) if self.timezone else None
        local = dt.datetime.fromtimestamp(time_ms / 1000.0, zone)
        day0 = local.date()
        occurrences: list[tuple[int, int, str, dt.date]] = []
        for offset in (-2, -1, 0, 1):
            day = day0 + dt.timedelta(days=offset)
            for window in self.shifts:
                s, e = window.minutes()
                start = _local_ms(day, s, zone)
                end = _local_ms(day, e, zone)
                occurrences.append((start, end, window.name, day))
        occurrences.sort()
        for start, end, name, day in occurrences:
            if start <= time_ms < end:
                return ShiftPeriod(name, f"{day.isoformat()}/{name}", start, end)
        before = max(end for start, end, _, _ in occurrences if end <= time_ms)
        after = min(start for start, _, _, _ in occurrences if start > time_ms)
        gap_day = dt.datetime.fromtimestamp(before / 1000.0, zone).date()
        return ShiftPeriod(OFF_SHIFT, f"{gap_day.isoformat()}/{OFF_SHIFT}@{before}", before, after)


def _local_ms(day: dt.date, minutes: int, zone: ZoneInfo | None) -> int:
    # Wall-clock arithmetic in the plant's zone, so a shift keeps its printed hours across a DST change.
    naive = dt.datetime.combine(day, dt.time()) + dt.timedelta(minutes=minutes)
    when = naive.replace(tzinfo=zone) if zone is not None else naive
    return int(round(when.timestamp() * 1000))


# ---------------------------------------------------------------------------------------------------------------
# The register


class CodeStatus(StrEnum):
    """What a pack's code turned out to be. Exactly one per pack, judged in this order: unreadable, invalid,
    foreign, duplicate, valid — so the per-shift counters add up (see `ShiftCounters`)."""

    VALID = "valid"
    DUPLICATE = "duplicate"
    FOREIGN = "foreign"
    INVALID = "invalid"
    UNREADABLE = "unreadable"


@dataclass(frozen=True, slots=True)
class CodeVerdict:
    """The register's judgement on one pack."""

    status: CodeStatus
    time_ms: int
    shift: ShiftPeriod
    text: str | None = None
    element: Gs1Element | None = None
    error: Gs1Error | None = None
    order_id: str | None = None
    duplicate_scope: tuple[str, ...] = ()
    first_seen_ms: int | None = None

    @property
    def reject(self) -> bool:
        """True for every status but valid: the pack must leave the line."""
        return self.status is not CodeStatus.VALID


COUNTERS = ("read", "valid", "duplicate", "unreadable", "foreign", "invalid")


@dataclass(slots=True)
class ShiftCounters:
    """Reconciliation counters. Identities that always hold: read = valid + duplicate + foreign + invalid, and
    packs = read + unreadable (every pack the verifier saw falls in exactly one category)."""

    read: int = 0
    valid: int = 0
    duplicate: int = 0
    unreadable: int = 0
    foreign: int = 0
    invalid: int = 0

    @property
    def packs(self) -> int:
        """Packs the verifier judged: codes read plus packs without a readable code."""
        return self.read + self.unreadable

    def add(self, status: CodeStatus) -> None:
        """Count one verdict."""
        if status is not CodeStatus.UNREADABLE:
            self.read += 1
        setattr(self, status.value, getattr(self, status.value) + 1)

    def as_dict(self) -> dict[str, int]:
        """The six counters and `packs`, by name."""
        out = {name: getattr(self, name) for name in COUNTERS}
        out["packs"] = self.packs
        return out


@dataclass(frozen=True, slots=True)
class ShiftReconciliation:
    """The counters of one shift occurrence, emitted once when it closes."""

    shift: ShiftPeriod
    counters: dict[str, int]
    closed_ms: int

    def to_payload(self) -> dict[str, object]:
        """JSON-ready form for the `marking_shift_summary` event."""
        return {
            "shift": self.shift.name,
            "shift_key": self.shift.key,
            "start": self.shift.start_ms,
            "end": self.shift.end_ms,
            **self.counters,
        }


@dataclass(slots=True)
class _OpenShift:
    period: ShiftPeriod
    counters: ShiftCounters = field(default_factory=ShiftCounters)
    # identity -> first time seen in this shift; dropped with the shift, which bounds memory to one shift's packs
    seen: dict[str, int] = field(default_factory=dict)


class CodeRegister:
    """Judges each pack's code and keeps per-shift and per-order counters and duplicate sets.

    Duplicates are judged on the code's identity (GTIN + serial): within the open shift, and within the order the
    caller names (an order may span shifts). Memory is bounded: a shift's set is dropped when the shift closes, and
    at most `max_orders` order sets are kept, least recently used dropped first (or closed by `close_order`).
    Time only moves forward: a verdict stamped before the open shift's start counts in the open shift.
    """

    def __init__(
        self,
        schedule: ShiftSchedule | None = None,
        *,
        gtins: Iterable[str] = (),
        structure: Literal["chestny_znak", "gs1"] = "chestny_znak",
        serial_lengths: Iterable[int] | None = None,
        max_orders: int = 8,
    ) -> None:
        self.schedule = schedule or ShiftSchedule()
        self.gtins: frozenset[str] = frozenset(gtins)
        self.structure = structure
        self.serial_lengths = tuple(serial_lengths) if serial_lengths else None
        self.max_orders = max_orders
        self.totals = ShiftCounters()
        self._shift: _OpenShift | None = None
        self._orders: OrderedDict[str, dict[str, int]] = OrderedDict()
        self._closed: deque[ShiftReconciliation] = deque()

    def set_gtins(self, gtins: Iterable[str]) -> None:
        """Change the running SKU's GTINs (at a changeover); an empty set accepts any GTIN."""
        self.gtins = frozenset(gtins)

    @property
    def shift(self) -> ShiftPeriod | None:
        """The open shift occurrence, if any verdict or `advance` opened one."""
        return None if self._shift is None else self._shift.period

    @property
    def shift_counters(self) -> ShiftCounters:
        """Counters of the open shift (zeros before the first verdict)."""
        return self._shift.counters if self._shift is not None else ShiftCounters()

    @property
    def open_orders(self) -> tuple[str, ...]:
        """Orders whose duplicate sets are still kept, oldest first."""
        return tuple(self._orders)

    def seen_in_shift(self) -> int:
        """How many identities the open shift's duplicate set holds."""
        return 0 if self._shift is None else len(self._shift.seen)

    def advance(self, time_ms: int) -> list[ShiftReconciliation]:
        """Close the open shift if `time_ms` is past its end; returns every reconciliation not yet handed out."""
        if self._shift is None:
            self._shift = _OpenShift(self.schedule.period_at(time_ms))
        elif time_ms >= self._shift.period.end_ms:
            self._close_shift(time_ms)
            self._shift = _OpenShift(self.schedule.period_at(time_ms))
        out = list(self._closed)
        self._closed.clear()
        return out

    def close(self, time_ms: int) -> list[ShiftReconciliation]:
        """Close the open shift now (the pipeline stops); returns the pending reconciliations."""
        if self._shift is not None:
            self._close_shift(time_ms)
            self._shift = None
        out = list(self._closed)
        self._closed.clear()
        return out

    def close_order(self, order_id: str) -> None:
        """Forget an order's duplicate set (the order is finished)."""
        self._orders.pop(order_id, None)

    def record(self, text: str, time_ms: int, order_id: str | None = None) -> CodeVerdict:
        """Judge one decoded code (counted once per physical pack: the caller debounces repeated sightings)."""
        shift = self._open(time_ms)
        status = CodeStatus.VALID
        element: Gs1Element | None = None
        error: Gs1Error | None = None
        scope: list[str] = []
        first_seen: int | None = None
        try:
            element = parse(text)
            if self.structure == "chestny_znak":
                check_chestny_znak(element, serial_lengths=self.serial_lengths)
            elif element.gtin is None:
                raise Gs1Error("(01) GTIN is missing")
        except Gs1Error as exc:
            status, error = CodeStatus.INVALID, exc
        if status is CodeStatus.VALID and self.gtins and element.gtin not in self.gtins:
            status = CodeStatus.FOREIGN
        if status is CodeStatus.VALID:
            identity = element.identity
            if identity in shift.seen:
                scope.append("shift")
                first_seen = shift.seen[identity]
            order_seen = self._order_set(order_id)
            if order_seen is not None and identity in order_seen:
                scope.append("order")
                first_seen = order_seen[identity] if first_seen is None else min(first_seen, order_seen[identity])
            if scope:
                status = CodeStatus.DUPLICATE
            shift.seen.setdefault(identity, time_ms)
            if order_seen is not None:
                order_seen.setdefault(identity, time_ms)
        shift.counters.add(status)
        self.totals.add(status)
        return CodeVerdict(
            status, time_ms, shift.period, text, element, error, order_id, tuple(scope), first_seen
        )

    def record_unreadable(self, time_ms: int, order_id: str | None = None) -> CodeVerdict:
        """Count a pack that passed the verifier without any code read."""
        shift = self._open(time_ms)
        shift.counters.add(CodeStatus.UNREADABLE)
        self.totals.add(CodeStatus.UNREADABLE)
        return CodeVerdict(CodeStatus.UNREADABLE, time_ms, shift.period, order_id=order_id)

    def _open(self, time_ms: int) -> _OpenShift:
        closed = self.advance(time_ms)
        # advance() hands reconciliations out; keep them for the caller's next advance() instead of losing them
        self._closed.extend(closed)
        assert self._shift is not None
        return self._shift

    def _order_set(self, order_id: str | None) -> dict[str, int] | None:
        if order_id is None:
            return None
        seen = self._orders.get(order_id)
        if seen is None:
            seen = self._orders[order_id] = {}
            while len(self._orders) > self.max_orders:
                self._orders.popitem(last=False)
        else:
            self._orders.move_to_end(order_id)
        return seen

    def _close_shift(self, time_ms: int) -> None:
        assert self._shift is not None
        self._closed.append(
            ShiftReconciliation(self._shift.period, self._shift.counters.as_dict(), closed_ms=time_ms)
        )


# ---------------------------------------------------------------------------------------------------------------
# Sightings: one physical symbol across frames


@dataclass(slots=True)
class Sighting:
    """One printed symbol followed across frames. `owner` is the pack track carrying it, when a tracker says."""

    id: int
    text: str | None
    box: Box
    first_ms: int
    last_ms: int
    owner: int | None = None
    frames: int = 1
    failures: int = 0
    decoded_ms: int | None = None


@dataclass(slots=True)
class SightingUpdate:
    """What one frame changed: symbols decoded for the first time (count them as reads) and symbols that left
    the camera without ever being decoded (count them as unreadable)."""

    new_reads: list[tuple[Sighting, CodeRead]] = field(default_factory=list)
    never_decoded: list[Sighting] = field(default_factory=list)


class SightingTracker:
    """Debounces reads: the same physical code in consecutive frames is one sighting.

    A decoded read continues a live sighting with the same text (and the same owner track, when owners are
    known: the same code on two different packs is two sightings — a duplicate, not a repeat). A failed decode
    continues the nearest live sighting within `max_jump_px`, or starts an undecoded one that a later clean read
    nearby upgrades. A sighting ends when it has not been seen for `window_ms` (and its owner track is gone); one
    never decoded counts as unreadable only if it failed in at least `min_failures` frames.
    A code seen in the previous frame more than `max_jump_px` away from a new read of the same text is another
    print of it, so `max_jump_px` must exceed how far the belt moves between two processed frames. Without owner
    tracks, a repeat that enters the view only after the first left it, but within the window, counts once; a pack
    tracker removes that blind spot.
    """

    def __init__(self, window_ms: int = 2000, max_jump_px: float = 150.0, min_failures: int = 2) -> None:
        self.window_ms = window_ms
        self.max_jump_px = max_jump_px
        # Texture, print on the film and sensor noise sometimes look like a finder pattern for one frame; a real
        # symbol that will not decode stays in view and fails again.
        self.min_failures = min_failures
        self._live: dict[int, Sighting] = {}
        self._next_id = 1
        self._previous_ms: int | None = None

    @property
    def live(self) -> list[Sighting]:
        """Sightings still open."""
        return list(self._live.values())

    def update(
        self,
        reads: list[tuple[CodeRead, int | None]],
        time_ms: int,
        live_owners: set[int] | frozenset[int] = frozenset(),
    ) -> SightingUpdate:
        """Feed one frame's reads, each with its owner track id (or None); returns what changed."""
        out = SightingUpdate()
        # Expire first: a code back after a gap longer than the window is another pack, not this sighting.
        for sid, sighting in list(self._live.items()):
            if time_ms - sighting.last_ms < self.window_ms:
                continue
            if sighting.owner is not None and sighting.owner in live_owners:
                continue
            del self._live[sid]
            if sighting.text is None and sighting.failures >= self.min_failures:
                out.never_decoded.append(sighting)
        matched: set[int] = set()
        # Decoded reads first: their text identifies the symbol, failed ones only have a position.
        for read, owner in sorted(reads, key=lambda r: not r[0].decoded):
            if read.decoded:
                sighting = self._match_text(read, owner, matched, live_owners)
                if sighting is None:
                    sighting = self._match_position(read, owner, matched, undecoded_only=True)
                    if sighting is not None:
                        sighting.text = read.text
                if sighting is None:
                    sighting = self._start(read, owner, time_ms)
                if sighting.decoded_ms is None:
                    sighting.decoded_ms = time_ms
                    out.new_reads.append((sighting, read))
            else:
                sighting = self._match_position(read, owner, matched, undecoded_only=False)
                if sighting is None:
                    sighting = self._start(read, owner, time_ms)
                sighting.failures += 1
            if sighting.id not in matched:
                sighting.frames += 1
            matched.add(sighting.id)
            sighting.box = read.box
            sighting.last_ms = time_ms
            if sighting.owner is None:
                sighting.owner = owner
        self._previous_ms = time_ms
        return out

    def flush(self) -> list[Sighting]:
        """End every live sighting (the source stopped); returns those never decoded."""
        undecoded = [s for s in self._live.values() if s.text is None and s.failures >= self.min_failures]
        self._live.clear()
        return undecoded

    def _start(self, read: CodeRead, owner: int | None, time_ms: int) -> Sighting:
        sighting = Sighting(self._next_id, read.text, read.box, time_ms, time_ms, owner, frames=0)
        self._next_id += 1
        self._live[sighting.id] = sighting
        return sighting

    def _match_text(
        self, read: CodeRead, owner: int | None, matched: set[int], live_owners: set[int] | frozenset[int]
    ) -> Sighting | None:
        candidates = []
        for s in self._live.values():
            if s.text != read.text or s.id in matched:
                continue
            if owner is not None and s.owner not in (None, owner):
                continue  # the same code on another pack: a second physical code
            if owner is None and s.owner is not None and s.owner in live_owners and not self._followed(s, read):
                continue  # its pack is in view and this read is not on it
            if s.last_ms == self._previous_ms and _distance(s.box, read.box) > self.max_jump_px:
                continue  # seen last frame somewhere else: the same code printed twice, both in view
            candidates.append(s)
        return min(candidates, key=lambda s: _distance(s.box, read.box), default=None)

    def _followed(self, s: Sighting, read: CodeRead) -> bool:
        """Whether `read` is where sighting `s` was a frame ago: the same physical symbol, whatever the pack
        tracks say. A pack's box does not always cover its code (a prediction while the detector misses the
        pack, a part box of it), and such a read has no owner while the sighting's pack is still in view."""
        return s.last_ms == self._previous_ms and _distance(s.box, read.box) <= self.max_jump_px

    def _match_position(
        self, read: CodeRead, owner: int | None, matched: set[int], *, undecoded_only: bool
    ) -> Sighting | None:
        best, best_d = None, self.max_jump_px
        for s in self._live.values():
            if s.id in matched or (undecoded_only and s.text is not None):
                continue
            if owner is not None and s.owner is not None and s.owner != owner:
                continue
            d = _distance(s.box, read.box)
            if d <= best_d:
                best, best_d = s, d
        return best


def _distance(a: Box, b: Box) -> float:
    (ax, ay), (bx, by) = centre(a), centre(b)
    return math.hypot(ax - bx, ay - by)
