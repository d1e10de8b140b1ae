"""Marking: verify the GS1 DataMatrix (Chestny ZNAK) code on every pack under a verifier camera.

Each frame is read with zxing-cpp (grayscale, inside `roi` when given, keeping GS separators); a symbol seen in
consecutive frames is one sighting (same text within `dedupe_window_s`, or the same pack track), so a pack still
under the camera counts once. Each newly read code is judged by a `CodeRegister`: invalid structure, a GTIN not of
the running SKU (foreign), a duplicate within the shift or the order, else valid. Rejects raise events; counters
are published as metrics; each shift's reconciliation is an event when the shift closes.

How an *unreadable* pack is noticed (`presence`):
  - `symbol` (default, no detector needed): zxing locates the DataMatrix finder pattern but cannot decode it, and
    no clean read of that symbol follows while it stays in view. Misses packs whose code is absent or so damaged
    that not even the finder pattern is found.
  - `track`: the camera's detector/tracker follows packs (`pack_labels`); a confirmed pack track that leaves the
    zone (or ends) without any code read on it is unreadable. This counts missing codes too, and is the sound
    choice when a detector (`blob` on a fixed conveyor camera, or a YOLO `product` class) runs on the camera.

Optionally (`ocr:`), the printed expiry date and batch beside every n-th code are read with tesseract and compared
with the code's (17) and (10); a difference raises `marking_print_mismatch`.

    codes:
      type: marking
      gtins: ["04601234567893"]   # the running SKU's GTINs (empty: any GTIN); `set_gtins` at a changeover
      zone: reading               # optional camera zone; codes and packs outside it are ignored
      roi: [320, 0, 960, 720]     # optional crop where zxing reads (saves CPU)
      presence: track
      pack_labels: [product]
      shifts: {timezone: Europe/Moscow}   # A/B/C of PLANT.md unless `shifts:` lists others
      ocr: {region: [1.1, 0, 4.5, 1], every_nth: 10}   # print right of the code; apt tesseract-ocr(-rus)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge_cv.gs1 import GS, gtin_check_digit
from edge_cv.marking import (
    COUNTERS,
    CodeRead,
    CodeRegister,
    CodeStatus,
    CodeVerdict,
    ShiftSchedule,
    SightingTracker,
    read_codes,
)
from edge_cv.ocr import OcrError, TesseractOcr, check_print
from edge_cv.rules.base import RuleSettings, crop
from edge_cv.types import Box, CvEvent, Detection, Frame, RuleResult, Track, centre
from edge_cv.zones import CameraGeometry, Zone
from hub.errors import ConfigError
from hub.events import Severity


def normalise_gtins(values: Iterable[str]) -> tuple[str, ...]:
    """GTIN-8/12/13/14 strings checked and zero-padded to the GTIN-14 that codes carry; ValueError says which."""
    out = []
    for v in values:
        v = v.strip()
        if not v.isdigit() or len(v) not in (8, 12, 13, 14):
            raise ValueError(f"GTIN {v!r} must be 8, 12, 13 or 14 digits")
        if int(v[-1]) != gtin_check_digit(v[:-1]):
            raise ValueError(f"GTIN {v} has a wrong check digit: expected {gtin_check_digit(v[:-1])}")
        out.append(v.zfill(14))  # a GTIN-13 is the same number as the GTIN-14 with a leading zero
    return tuple(out)


class MarkingOcrConfig(BaseModel):
    """Read the printed date/batch next to each n-th code and compare it with the code's (17) and (10)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    region: tuple[float, float, float, float] = Field(
        description="where the print is, relative to the code's box in code sizes: [x1, y1, x2, y2] with (0, 0) "
        "the code's top-left and (1, 1) its bottom-right; [1.1, 0, 4, 1] is a strip right of the code"
    )
    lang: str = Field("rus+eng", pattern=r"^[a-z_]+(\+[a-z_]+)*$", description="tesseract languages")
    psm: int = Field(6, ge=0, le=13, description="tesseract page segmentation mode (6: a block of text)")
    every_nth: int = Field(10, ge=1, description="OCR one pack in n (tesseract takes ~0.1–0.3 s per crop)")
    timeout_s: float = Field(5.0, gt=0, le=60)

    @model_validator(mode="after")
    def _region(self) -> MarkingOcrConfig:
        x1, y1, x2, y2 = self.region
        if x2 <= x1 or y2 <= y1:
            raise ValueError(f"ocr.region {list(self.region)} must be [x1, y1, x2, y2] with x2 > x1 and y2 > y1")
        return self


class MarkingConfig(RuleSettings):
    """Verify marking codes: see the module docstring."""

    type: Literal["marking"]
    gtins: tuple[str, ...] = Field((), description="GTINs of the running SKU (8/12/13/14 digits); empty: any")
    structure: Literal["chestny_znak", "gs1"] = Field(
        "chestny_znak", description="chestny_znak: (01)(21) and a crypto tail required; gs1: any GS1 code with (01)"
    )
    serial_lengths: tuple[int, ...] | None = Field(
        None, description="allowed (21) lengths for the product group, e.g. [13]; default 6–20"
    )
    zone: str | None = Field(None, min_length=1, description="camera zone where codes and packs are judged")
    roi: tuple[float, float, float, float] | None = Field(
        None, description="[x1, y1, x2, y2] pixels where zxing reads; default the whole frame"
    )
    shifts: ShiftSchedule = Field(default_factory=ShiftSchedule)
    dedupe_window_s: float = Field(
        2.0, gt=0, le=600, description="a code unseen this long, then seen again, is a second pack"
    )
    max_jump_px: float = Field(150.0, gt=0, description="how far a symbol may move between frames and stay one")
    min_symbol_px: float = Field(
        32.0, ge=0, description="undecodable finds smaller than this (px, longer box side) are noise, not symbols"
    )
    min_failed_frames: int = Field(
        2, ge=1, description="frames an undecodable symbol must fail in before it counts as unreadable"
    )
    presence: Literal["symbol", "track"] = Field("symbol", description="how unreadable packs are noticed")
    pack_labels: tuple[str, ...] = Field(("product",), min_length=1, description="track labels that are packs")
    min_pack_frames: int = Field(3, ge=1, description="frames a pack track must be seen before it can be judged")
    max_orders: int = Field(8, ge=1, le=1000, description="order duplicate sets kept (least recent dropped)")
    try_invert: bool = Field(False, description="also read light-on-dark codes (laser on dark film)")
    try_downscale: bool = Field(
        False, description="also search shrunken copies (for codes far above 8 px/module; ~40 % slower)"
    )
    ocr: MarkingOcrConfig | None = Field(None, description="check the printed date/batch (needs tesseract)")

    @field_validator("gtins")
    @classmethod
    def _gtin14(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        return normalise_gtins(values)

    @field_validator("serial_lengths")
    @classmethod
    def _serials(cls, values: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if values is not None and (not values or any(not 1 <= v <= 20 for v in values)):
            raise ValueError("serial_lengths must list lengths 1–20 (AI 21 holds at most 20 characters)")
        return values

    @model_validator(mode="after")
    def _roi(self) -> MarkingConfig:
        if self.roi is not None:
            x1, y1, x2, y2 = self.roi
            if min(self.roi) < 0 or x2 <= x1 or y2 <= y1:
                raise ValueError(f"roi {list(self.roi)} must be [x1, y1, x2, y2] pixels with x2 > x1 ≥ 0, y2 > y1 ≥ 0")
        return self

    def referenced_zones(self) -> set[str]:
        return {self.zone} if self.zone else set()


@dataclass(slots=True)
class _Pack:
    track_id: int
    first_ms: int
    box: Box
    frames: int = 0
    has_code: bool = False
    failures: int = 0


_SEVERITY = {
    "print_mismatch": Severity.MEDIUM,
    CodeStatus.DUPLICATE.value: Severity.HIGH,
    CodeStatus.FOREIGN.value: Severity.HIGH,
    CodeStatus.INVALID.value: Severity.MEDIUM,
    CodeStatus.UNREADABLE.value: Severity.MEDIUM,
}


class MarkingRule:
    """See the module docstring. `set_order` and `set_gtins` let the runner follow the MES (order, SKU)."""

    def __init__(self, name: str, config: MarkingConfig, geometry: CameraGeometry | None) -> None:
        self.name = name
        self.config = config
        self.zone: Zone | None = None
        if config.zone is not None:
            self.zone = geometry.zones.get(config.zone) if geometry is not None else None
            if self.zone is None:
                raise ConfigError(
                    f"rule {name!r}: zone {config.zone!r} is not a zone of this camera; define it under the "
                    f"camera's `zones:` or remove `zone:` from the rule"
                )
        self.register = CodeRegister(
            config.shifts,
            gtins=config.gtins,
            structure=config.structure,
            serial_lengths=config.serial_lengths,
            max_orders=config.max_orders,
        )
        self.sightings = SightingTracker(
            int(config.dedupe_window_s * 1000), config.max_jump_px, config.min_failed_frames
        )
        self.order_id: str | None = None
        self._ocr: TesseractOcr | None = None
        self._ocr_counts = {"ocr_checked": 0, "ocr_mismatch": 0, "ocr_errors": 0}
        self._ocr_candidates = 0
        if config.ocr is not None:
            self._ocr = TesseractOcr(config.ocr.lang, config.ocr.psm, config.ocr.timeout_s)
            try:
                self._ocr.check()
            except OcrError as exc:
                raise ConfigError(f"rule {name!r}: {exc}") from None
        self._camera = ""
        self._packs: dict[int, _Pack] = {}
        # Track ids already judged, so a pack wobbling at the zone edge is not judged twice; bounded.
        self._judged: dict[int, None] = {}

    def set_order(self, order_id: str | None) -> None:
        """The order now running (from the MES), or None; duplicates are also judged within it."""
        self.order_id = order_id

    def set_gtins(self, gtins: Iterable[str]) -> None:
        """The running SKU's GTINs after a changeover (validated like the config's `gtins`)."""
        self.register.set_gtins(normalise_gtins(gtins))

    def process(self, frame: Frame, detections: list[Detection], tracks: list[Track]) -> RuleResult:
        """Read the frame's codes, judge the new ones, notice unreadable packs, close ended shifts."""
        now = frame.time_ms
        self._camera = frame.camera
        result = RuleResult()
        for rec in self.register.advance(now):
            result.events.append(self._event("marking_shift_summary", now, payload=rec.to_payload()))

        min_px = self.config.min_symbol_px
        reads = [
            r
            for r in read_codes(
                frame.image, self.config.roi, try_invert=self.config.try_invert, try_downscale=self.config.try_downscale
            )
            if self._in_zone(centre(r.box))
            and (r.decoded or max(r.box[2] - r.box[0], r.box[3] - r.box[1]) >= min_px)
        ]
        packs = self._pack_tracks(tracks) if self.config.presence == "track" else []
        self._see_packs(packs, now)
        owned = [(r, _owner(r, packs)) for r in reads]
        update = self.sightings.update(owned, now, live_owners={t.id for t in packs})
        for read, owner in owned:
            pack = self._packs.get(owner) if owner is not None else None
            if pack is not None:
                # Any clean read on the pack clears it, also a repeat of a code first read before the tracker
                # confirmed the pack (that sighting was counted then, without an owner).
                if read.decoded:
                    pack.has_code = True
                else:
                    pack.failures += 1

        for sighting, read in update.new_reads:
            assert read.text is not None
            verdict = self.register.record(read.text, now, self.order_id)
            if self._ocr is not None and verdict.element is not None:
                event = self._check_print(frame, verdict, read.box, sighting.owner)
                if event is not None:
                    result.events.append(event)
            if verdict.reject:
                result.events.append(
                    self._event(
                        f"marking_{verdict.status.value}",
                        now,
                        box=read.box,
                        track_id=sighting.owner,
                        payload=self._verdict_payload(verdict),
                        image=crop(frame.image, read.box, margin=1.0),
                    )
                )
        if self.config.presence == "symbol":
            for sighting in update.never_decoded:
                result.events.append(self._unreadable(now, sighting.box, None, "decode_failed", sighting.failures,
                                                      frame.image))
        else:
            gone = [tid for tid in self._packs if tid not in {t.id for t in packs}]
            for tid in gone:
                event = self._finish_pack(self._packs.pop(tid), now, frame.image)
                if event is not None:
                    result.events.append(event)
        result.metrics = self._metrics()
        return result

    def close(self, time_ms: int) -> RuleResult:
        """The pipeline stops: judge what is still in view and emit the open shift's reconciliation."""
        result = RuleResult()
        undecoded = self.sightings.flush()
        if self.config.presence == "symbol":
            for sighting in undecoded:
                result.events.append(self._unreadable(time_ms, sighting.box, None, "decode_failed", sighting.failures))
        else:
            for pack in list(self._packs.values()):
                event = self._finish_pack(pack, time_ms, None)
                if event is not None:
                    result.events.append(event)
            self._packs.clear()
        for rec in self.register.close(time_ms):
            result.events.append(self._event("marking_shift_summary", time_ms, payload=rec.to_payload()))
        result.metrics = self._metrics()
        return result

    # ---------------------------------------------------------------------------------------------------------

    def _in_zone(self, point: tuple[float, float]) -> bool:
        return self.zone is None or self.zone.contains(point)

    def _pack_tracks(self, tracks: list[Track]) -> list[Track]:
        # A verifier camera looks down on the conveyor: a pack is where its box's centre is, not its bottom edge.
        wanted = set(self.config.pack_labels)
        return [t for t in tracks if t.label in wanted and self._in_zone(centre(t.box)) and t.id not in self._judged]

    def _see_packs(self, packs: list[Track], now: int) -> None:
        for track in packs:
            pack = self._packs.get(track.id)
            if pack is None:
                pack = self._packs[track.id] = _Pack(track.id, now, track.box)
            pack.frames += 1
            pack.box = track.box

    def _finish_pack(self, pack: _Pack, now: int, image: np.ndarray | None) -> CvEvent | None:
        self._judged[pack.track_id] = None
        while len(self._judged) > 4096:
            del self._judged[next(iter(self._judged))]
        if pack.has_code or pack.frames < self.config.min_pack_frames:
            return None  # judged at read time, or too brief to be a pack rather than a detector flicker
        reason = "decode_failed" if pack.failures else "no_code_found"
        return self._unreadable(now, pack.box, pack.track_id, reason, pack.failures, image)

    def _unreadable(
        self,
        now: int,
        box: Box,
        track_id: int | None,
        reason: str,
        failures: int,
        image: np.ndarray | None = None,
    ) -> CvEvent:
        verdict = self.register.record_unreadable(now, self.order_id)
        # The symbol (or pack) may have moved on since it was last seen: the crop shows where it was.
        return self._event(
            "marking_unreadable",
            now,
            box=box,
            track_id=track_id,
            payload=self._verdict_payload(verdict) | {"reason": reason, "decode_failures": failures},
            image=None if image is None else crop(image, box, margin=0.5),
        )

    def _event(
        self,
        kind: str,
        time_ms: int,
        *,
        box: Box | None = None,
        track_id: int | None = None,
        payload: dict[str, Any],
        image: np.ndarray | None = None,
    ) -> CvEvent:
        status = kind.removeprefix("marking_")
        return CvEvent(
            camera=self._camera,
            rule=self.name,
            kind=kind,
            time_ms=time_ms,
            label=None if kind == "marking_shift_summary" else "marking_code",
            zone=self.config.zone,
            box=box,
            track_id=track_id,
            severity=_SEVERITY.get(status, Severity.INFO),
            payload=payload,
            image=image,
        )

    def _check_print(self, frame: Frame, verdict: CodeVerdict, box: Box, track_id: int | None) -> CvEvent | None:
        assert self._ocr is not None and self.config.ocr is not None and verdict.element is not None
        if "17" not in verdict.element and "10" not in verdict.element:
            return None  # nothing printed in the code to compare with
        self._ocr_candidates += 1
        if (self._ocr_candidates - 1) % self.config.ocr.every_nth:
            return None
        x1, y1, x2, y2 = box
        w, h = x2 - x1, y2 - y1
        rx1, ry1, rx2, ry2 = self.config.ocr.region
        region = (x1 + rx1 * w, y1 + ry1 * h, x1 + rx2 * w, y1 + ry2 * h)
        try:
            text = self._ocr.read(crop(frame.image, region, margin=0.0))
        except OcrError:
            # One failed crop must not stop code verification; the counter shows it on the console.
            self._ocr_counts["ocr_errors"] += 1
            return None
        check = check_print(text, verdict.element)
        self._ocr_counts["ocr_checked"] += 1
        if not check.mismatch:
            return None
        self._ocr_counts["ocr_mismatch"] += 1
        payload = self._verdict_payload(verdict) | {
            "printed": check.text,
            "printed_dates": [d.isoformat() for d in check.dates],
            "problems": list(check.problems),
        }
        return self._event(
            "marking_print_mismatch",
            frame.time_ms,
            box=region,
            track_id=track_id,
            payload=payload,
            image=crop(frame.image, region, margin=0.2),
        )

    def _metrics(self) -> dict[str, int | float]:
        totals = self.register.totals
        shift = self.register.shift_counters
        metrics: dict[str, int | float] = {f"codes/{c}": getattr(totals, c) for c in COUNTERS}
        # Gauges of the open shift, for the console's live reconciliation.
        metrics.update({f"shift/{c}": getattr(shift, c) for c in COUNTERS})
        if self._ocr is not None:
            metrics.update({f"codes/{k}": v for k, v in self._ocr_counts.items()})
        return metrics

    def _verdict_payload(self, verdict: CodeVerdict) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "status": verdict.status.value,
            "shift": verdict.shift.name,
            "shift_key": verdict.shift.key,
            "order_id": verdict.order_id,
        }
        if verdict.text is not None:
            payload["code"] = verdict.text.replace(GS, "<GS>")
        if verdict.element is not None:
            payload["hri"] = verdict.element.hri()
            payload["gtin"] = verdict.element.gtin
            payload["serial"] = verdict.element.serial
        if verdict.error is not None:
            payload["error"] = verdict.error.code
            payload["message"] = str(verdict.error)
        if verdict.duplicate_scope:
            payload["duplicate_scope"] = list(verdict.duplicate_scope)
            payload["first_seen"] = verdict.first_seen_ms
        if verdict.status is CodeStatus.FOREIGN:
            payload["expected_gtins"] = sorted(self.register.gtins)
        return payload


def _owner(read: CodeRead, packs: list[Track]) -> int | None:
    """The pack track whose box holds the code's centre (the smallest, when boxes overlap)."""
    cx, cy = centre(read.box)
    inside = [t for t in packs if t.box[0] <= cx <= t.box[2] and t.box[1] <= cy <= t.box[3]]
    if not inside:
        return None
    return min(inside, key=lambda t: (t.box[2] - t.box[0]) * (t.box[3] - t.box[1])).id
