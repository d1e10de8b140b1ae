"""Marking codes end to end: DataMatrix symbols rendered by zxing-cpp's encoder into 720p frames, read back with GS
kept, debounced across frames, judged per shift and order, and reconciled exactly."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import zxingcpp
from pydantic import ValidationError

from edge_cv.gs1 import GS, compose_elements, make_gtin14, parse
from edge_cv.marking import (
    CodeRead,
    CodeRegister,
    CodeStatus,
    ShiftSchedule,
    ShiftWindow,
    SightingTracker,
    read_codes,
)
from edge_cv.ocr import OcrError, TesseractOcr, check_print, find_dates
from edge_cv.rules.marking import MarkingConfig, MarkingRule
from edge_cv.types import Frame, Track
from edge_cv.zones import CameraGeometry
from hub.errors import ConfigError

GTIN = make_gtin14("0460123456789")
OTHER_GTIN = make_gtin14("0460999888777")
CRYPTO = "MEUCIQDvbEfKZ0r8Q7Dq9s3mZ5FJ3o0n1Hk/5n+q2xW="
UTC = dt.timezone.utc
W, H = 1280, 720


def at(hour: int, minute: int = 0, second: float = 0.0, day: int = 1) -> int:
    """Milliseconds since the epoch of 2024-05-<day> hh:mm:ss UTC."""
    t = dt.datetime(2024, 5, day, hour, minute, tzinfo=UTC) + dt.timedelta(seconds=second)
    return int(t.timestamp() * 1000)


def long_code(serial: str, gtin: str = GTIN) -> tuple[tuple[str, str], ...]:
    return (("01", gtin), ("21", serial), ("91", "EE07"), ("92", CRYPTO))


def short_code(serial: str, gtin: str = GTIN) -> tuple[tuple[str, str], ...]:
    return (("01", gtin), ("21", serial), ("93", "dGVz"), ("17", "261231"), ("10", "B-17"))


def symbol(pairs: tuple[tuple[str, str], ...], module_px: int = 3) -> np.ndarray:
    """A grey square GS1 DataMatrix, `module_px` pixels per module, quiet zone included."""
    text = "".join(f"[{ai}]{value}" for ai, value in pairs)
    code = zxingcpp.create_barcode(text, zxingcpp.BarcodeFormat.DataMatrix, gs1=True, forceSquare=True)
    img = np.asarray(code.to_image(scale=module_px), dtype=np.uint8)
    return np.pad(img, 2 * module_px, constant_values=255)


def smudged(img: np.ndarray) -> np.ndarray:
    """Ink over the middle 45 % of the symbol: zxing still finds the L finder but the data fails its ECC."""
    out = img.copy()
    h = out.shape[0]
    s = int(h * 0.45)
    c = h // 2
    out[c - s // 2 : c + s // 2, c - s // 2 : c + s // 2] = 255
    return out


# a few noisy conveyor backgrounds, made once: frame-to-frame sensor noise without a random draw per frame
_BACKGROUNDS = [
    np.clip(np.random.default_rng(seed).normal(120, 6, (H, W)), 0, 255).astype(np.uint8) for seed in range(3)
]


def frame_with(placed: list[tuple[np.ndarray, tuple[int, int]]], *, camera: str = "verifier", index: int = 0,
               time_ms: int = 0) -> Frame:
    """A 1280×720 conveyor-grey BGR frame with each grey symbol pasted at its top-left (x, y)."""
    gray = _BACKGROUNDS[index % len(_BACKGROUNDS)].copy()
    for img, (x, y) in placed:
        gray[y : y + img.shape[0], x : x + img.shape[1]] = img
    return Frame(camera, index, time_ms, cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))


# --- reading ------------------------------------------------------------------------------------------------------


def test_read_keeps_gs_separators_and_parses_back_to_the_printed_elements():
    a, b = long_code("Q5e7!aB/c%2xY"), short_code("5'aXL8")
    frame = frame_with([(symbol(a), (100, 200)), (symbol(b), (700, 300))])
    reads = read_codes(frame.image)
    texts = {r.text for r in reads}
    assert texts == {compose_elements(a), compose_elements(b)}
    assert all(GS in t for t in texts)
    by_text = {r.text: r for r in reads}
    assert parse(by_text[compose_elements(a)].text).elements == a
    box = by_text[compose_elements(a)].box
    size = symbol(a).shape[0]
    assert 100 <= box[0] < box[2] <= 100 + size and 200 <= box[1] < box[3] <= 200 + size
    assert by_text[compose_elements(b)].symbology == "]d2"


def test_read_at_three_px_per_module_and_rotated_45_degrees():
    pairs = long_code("ROT45abcdefgh")
    img = symbol(pairs, module_px=3)
    img = np.pad(img, 40, constant_values=255)
    centre_pt = (img.shape[1] / 2, img.shape[0] / 2)
    rotated = cv2.warpAffine(img, cv2.getRotationMatrix2D(centre_pt, 45, 1.0), img.shape[::-1], borderValue=255)
    reads = read_codes(frame_with([(rotated, (500, 200))]).image)
    assert [r.text for r in reads] == [compose_elements(pairs)]


def test_roi_limits_reading_and_boxes_stay_in_frame_pixels():
    a, b = long_code("LEFTabcdefghi"), long_code("RIGHTbcdefghi")
    frame = frame_with([(symbol(a), (100, 300)), (symbol(b), (900, 300))])
    reads = read_codes(frame.image, roi=(800.0, 200.0, 1280.0, 600.0))
    assert [r.text for r in reads] == [compose_elements(b)]
    assert 900 <= reads[0].box[0] and reads[0].box[2] <= 900 + symbol(b).shape[0]
    assert read_codes(frame.image, roi=(1300.0, 0.0, 1400.0, 10.0)) == []


def test_located_but_undecodable_symbol_is_reported_as_a_failed_read():
    pairs = long_code("SMUDGEdefghij")
    frame = frame_with([(smudged(symbol(pairs)), (400, 250))])
    reads = read_codes(frame.image)
    assert len(reads) == 1 and not reads[0].decoded and reads[0].error
    assert 380 <= reads[0].box[0] <= 420
    assert read_codes(frame.image, failures=False) == []


# --- shifts -------------------------------------------------------------------------------------------------------


def test_plant_schedule_names_shift_occurrences_and_night_shift_spans_midnight():
    schedule = ShiftSchedule(timezone="UTC")
    assert schedule.period_at(at(6)).name == "A"
    assert schedule.period_at(at(13, 59, 59.999)).name == "A"
    assert schedule.period_at(at(14)).name == "B"
    late, early = schedule.period_at(at(23, 30)), schedule.period_at(at(5, 59, day=2))
    assert late == early and late.key == "2024-05-01/C"
    assert (late.start_ms, late.end_ms) == (at(22), at(6, day=2))


def test_schedule_in_plant_time_zone():
    moscow = ShiftSchedule(timezone="Europe/Moscow")  # UTC+3 all year
    assert moscow.period_at(at(3)).name == "A"  # 06:00 in Moscow
    assert moscow.period_at(at(3)).start_ms == at(3)


def test_hours_no_shift_covers_form_an_off_period():
    two_shifts = ShiftSchedule(
        timezone="UTC",
        shifts=[ShiftWindow(name="A", start="06:00", end="14:00"), ShiftWindow(name="B", start="14:00", end="22:00")],
    )
    off = two_shifts.period_at(at(23))
    assert off.name == "off" and (off.start_ms, off.end_ms) == (at(22), at(6, day=2))
    assert two_shifts.period_at(at(2, day=2)) == off


def test_schedule_rejects_overlaps_and_unknown_zones():
    with pytest.raises(ValidationError, match="overlap"):
        ShiftSchedule(shifts=[ShiftWindow(name="A", start="06:00", end="15:00"),
                              ShiftWindow(name="B", start="14:00", end="22:00")])
    with pytest.raises(ValidationError, match="overlap"):
        ShiftSchedule(shifts=[ShiftWindow(name="C", start="22:00", end="07:00"),
                              ShiftWindow(name="A", start="06:00", end="14:00")])
    with pytest.raises(ValidationError, match="unknown time zone"):
        ShiftSchedule(timezone="Mars/Olympus")


# --- the register -------------------------------------------------------------------------------------------------


def register(**kw) -> CodeRegister:
    return CodeRegister(ShiftSchedule(timezone="UTC"), gtins=[GTIN], **kw)


def text(pairs) -> str:
    return compose_elements(pairs)


def test_duplicate_within_shift_is_flagged_and_not_across_shifts():
    reg = register()
    code = text(long_code("DUPabcdefghij"))
    assert reg.record(code, at(7)).status is CodeStatus.VALID
    second = reg.record(code, at(9))
    assert second.status is CodeStatus.DUPLICATE and second.duplicate_scope == ("shift",)
    assert second.first_seen_ms == at(7)
    # the same code after 14:00 belongs to shift B: not a duplicate there
    assert reg.record(code, at(15)).status is CodeStatus.VALID


def test_same_gtin_and_serial_with_another_tail_is_still_a_duplicate():
    reg = register()
    assert reg.record(text(short_code("abcdef")), at(7)).status is CodeStatus.VALID
    other_tail = text((("01", GTIN), ("21", "abcdef"), ("93", "ZZZZ")))
    assert reg.record(other_tail, at(7, 1)).status is CodeStatus.DUPLICATE


def test_duplicate_within_an_order_spans_shifts():
    reg = register()
    code = text(long_code("ORDabcdefghij"))
    assert reg.record(code, at(13), order_id="PO-1").status is CodeStatus.VALID
    verdict = reg.record(code, at(15), order_id="PO-1")
    assert verdict.status is CodeStatus.DUPLICATE and verdict.duplicate_scope == ("order",)
    both = reg.record(code, at(16), order_id="PO-1")
    assert both.duplicate_scope == ("shift", "order")
    assert reg.record(code, at(17), order_id="PO-2").status is CodeStatus.DUPLICATE  # shift B saw it


def test_foreign_invalid_and_unreadable_verdicts():
    reg = register()
    foreign = reg.record(text(long_code("FORabcdefghij", gtin=OTHER_GTIN)), at(7))
    assert foreign.status is CodeStatus.FOREIGN and foreign.element.gtin == OTHER_GTIN
    bad = reg.record(text(long_code("BADabcdefghij", gtin=GTIN[:-1] + "0")), at(7))
    assert bad.status is CodeStatus.INVALID and bad.error.code == "bad_check_digit"
    no_tail = reg.record(text((("01", GTIN), ("21", "NOTAILabcdefg"))), at(7))
    assert no_tail.status is CodeStatus.INVALID and no_tail.error.code == "not_chestny_znak"
    assert reg.record("HELLO", at(7)).error.code == "unknown_ai"
    assert reg.record_unreadable(at(7)).status is CodeStatus.UNREADABLE
    # a foreign code is not remembered as seen: printing the SKU's own code with its serial later is fine
    assert reg.record(text(long_code("FORabcdefghij")), at(8)).status is CodeStatus.VALID


def test_empty_gtin_set_accepts_any_gtin_and_gs1_structure_needs_no_tail():
    reg = CodeRegister(ShiftSchedule(timezone="UTC"), structure="gs1")
    assert reg.record(text((("01", OTHER_GTIN), ("21", "x"))), at(7)).status is CodeStatus.VALID
    assert reg.record(text((("00", "046012345678901239"),)), at(7)).error.code == "gs1_error"


def test_reconciliation_numbers_are_exact_and_emitted_once_when_the_shift_closes():
    reg = register()
    plan = (
        [CodeStatus.VALID] * 7 + [CodeStatus.DUPLICATE] * 3 + [CodeStatus.FOREIGN] * 2 + [CodeStatus.INVALID] * 4
        + [CodeStatus.UNREADABLE] * 5
    )
    for i, kind in enumerate(plan):
        t = at(6, 10, i)
        if kind is CodeStatus.VALID:
            v = reg.record(text(long_code(f"V{i:012d}")), t)
        elif kind is CodeStatus.DUPLICATE:
            v = reg.record(text(long_code(f"V{i - 7:012d}")), t)
        elif kind is CodeStatus.FOREIGN:
            v = reg.record(text(long_code(f"F{i:012d}", gtin=OTHER_GTIN)), t)
        elif kind is CodeStatus.INVALID:
            v = reg.record(f"01{GTIN}21short", t)
        else:
            v = reg.record_unreadable(t)
        assert v.status is kind
    assert reg.advance(at(13, 59)) == []
    assert reg.seen_in_shift() == 7
    closed = reg.advance(at(14, 0, 1))
    assert len(closed) == 1
    rec = closed[0]
    assert rec.shift.key == "2024-05-01/A"
    assert rec.counters == {"read": 16, "valid": 7, "duplicate": 3, "unreadable": 5, "foreign": 2, "invalid": 4,
                            "packs": 21}
    assert reg.advance(at(14, 0, 2)) == []  # handed out once
    assert reg.seen_in_shift() == 0 and reg.shift.name == "B"  # shift A's set is gone
    assert reg.totals.as_dict()["packs"] == 21


def test_a_verdict_in_a_new_shift_keeps_the_old_shifts_reconciliation_for_the_next_advance():
    reg = register()
    reg.record(text(long_code("AAAAabcdefghi")), at(13))
    reg.record(text(long_code("BBBBabcdefghi")), at(22, 30))  # straight into shift C
    closed = reg.advance(at(22, 31))
    assert [r.shift.name for r in closed] == ["A"] and closed[0].counters["valid"] == 1
    assert reg.close(at(23))[0].counters["valid"] == 1


def test_order_sets_are_bounded_least_recent_first():
    reg = register(max_orders=2)
    for order in ("PO-1", "PO-2", "PO-1", "PO-3"):
        reg.record(text(long_code(f"{order}abcdefghi")), at(7), order_id=order)
    assert reg.open_orders == ("PO-1", "PO-3")
    reg.close_order("PO-1")
    assert reg.open_orders == ("PO-3",)


# --- sightings ----------------------------------------------------------------------------------------------------


def read(text_: str | None, x: float, y: float = 300.0, size: float = 60.0) -> CodeRead:
    return CodeRead(text_, (x, y, x + size, y + size), ())


def test_same_code_in_consecutive_frames_is_one_sighting_and_again_after_the_window():
    tracker = SightingTracker(window_ms=1000)
    firsts = [len(tracker.update([(read("C1", 100 + 30 * i), None)], i * 100).new_reads) for i in range(10)]
    assert firsts == [1] + [0] * 9
    assert len(tracker.update([], 2000).new_reads) == 0 and tracker.live == []
    assert len(tracker.update([(read("C1", 100), None)], 2100).new_reads) == 1


def test_same_code_twice_in_one_frame_is_two_packs():
    tracker = SightingTracker()
    update = tracker.update([(read("C1", 100), None), (read("C1", 700), None)], 0)
    assert len(update.new_reads) == 2


def test_failed_decodes_upgraded_by_a_clean_read_are_not_unreadable():
    tracker = SightingTracker(window_ms=500, max_jump_px=100)
    tracker.update([(read(None, 100), None)], 0)
    tracker.update([(read(None, 140), None)], 100)
    update = tracker.update([(read("C1", 180), None)], 200)
    assert len(update.new_reads) == 1
    assert tracker.update([], 1000).never_decoded == []


def test_symbol_never_decoded_is_reported_once_it_leaves():
    tracker = SightingTracker(window_ms=500, max_jump_px=100)
    for i in range(4):
        assert tracker.update([(read(None, 100 + 40 * i), None)], i * 100).never_decoded == []
    gone = tracker.update([], 900).never_decoded
    assert len(gone) == 1 and gone[0].failures == 4 and gone[0].frames == 4


def test_same_code_reappearing_far_from_where_it_was_last_frame_is_another_print():
    tracker = SightingTracker(window_ms=5000, max_jump_px=150)
    assert len(tracker.update([(read("C1", 1100), None)], 0).new_reads) == 1
    # next frame: the first pack left at the right edge and a pack with the same code enters on the left
    assert len(tracker.update([(read("C1", 40), None)], 100).new_reads) == 1
    # close to where it was seen, the same text is the same sighting, also after frames without a read
    assert len(tracker.update([(read("C1", 90), None)], 300).new_reads) == 0


def test_same_code_on_two_pack_tracks_is_two_sightings():
    tracker = SightingTracker(window_ms=5000)
    assert len(tracker.update([(read("C1", 100), 1)], 0).new_reads) == 1
    assert len(tracker.update([(read("C1", 130), 1)], 100).new_reads) == 0
    assert len(tracker.update([(read("C1", 100), 2)], 500).new_reads) == 1


def test_a_read_off_its_flickering_pack_track_continues_the_sighting_it_moved_on_from():
    # Pack track 7 carries code C1; in some frames its box (a prediction while the detector missed the pack) does
    # not cover the code, so that frame's read has no owner while track 7 is still in view. One physical code.
    tracker = SightingTracker(window_ms=2000, max_jump_px=150)
    owners = [7, None, 7, None, None, 7]
    new = [len(tracker.update([(read("C1", 400 + 32 * i), o)], i * 100, live_owners={7}).new_reads)
           for i, o in enumerate(owners)]  # fmt: skip
    assert new == [1, 0, 0, 0, 0, 0] and len(tracker.live) == 1
    # An ownerless read of the same text far from where C1 was a frame ago, its pack in view: another pack's print.
    assert len(tracker.update([(read("C1", 40), None)], 600, live_owners={7}).new_reads) == 1


# --- the rule -----------------------------------------------------------------------------------------------------


def rule(**kw) -> MarkingRule:
    config = MarkingConfig(type="marking", gtins=[GTIN], shifts={"timezone": "UTC"}, **kw)
    return MarkingRule("codes", config, CameraGeometry())


def run(r: MarkingRule, frames: list[Frame], tracks: dict[int, list[Track]] | None = None):
    events = []
    metrics = {}
    for f in frames:
        res = r.process(f, [], (tracks or {}).get(f.index, []))
        events += res.events
        metrics = res.metrics
    return events, metrics


def conveyor(items: list[tuple[np.ndarray, int]], n_frames: int, start_ms: int, step_ms: int = 100,
             speed_px: int = 25) -> list[Frame]:
    """Frames of symbols moving right by `speed_px` per frame; each item is (image, first frame it appears)."""
    frames = []
    for i in range(n_frames):
        placed = []
        for img, first in items:
            k = i - first
            x = 40 + k * speed_px
            if k >= 0 and x + img.shape[1] < W:
                placed.append((img, (x, 300)))
        frames.append(frame_with(placed, index=i, time_ms=start_ms + i * step_ms))
    return frames


def test_rule_counts_each_pack_once_and_flags_every_reject_kind():
    valid1, valid2 = symbol(long_code("VALIDabcdefgh")), symbol(short_code("abc123"))
    foreign = symbol(long_code("FOREIGNbcdefg", gtin=OTHER_GTIN))
    invalid = symbol(long_code("INVALIDbcdefg", gtin=GTIN[:-1] + "1"))
    smudge = smudged(symbol(long_code("SMUDGEDbcdefg")))
    # a pack every 14 frames (1.4 s at 10 fps), each in view 11 frames; the last repeats the first pack's code
    items = [(valid1, 0), (foreign, 14), (invalid, 28), (smudge, 42), (valid2, 56), (valid1, 70)]
    frames = conveyor(items, 90, at(7), speed_px=110)
    r = rule(dedupe_window_s=0.5)
    events, metrics = run(r, frames)
    kinds = sorted(e.kind for e in events)
    assert kinds == ["marking_duplicate", "marking_foreign", "marking_invalid", "marking_unreadable"]
    assert {k: metrics[f"codes/{k}"] for k in ("read", "valid", "duplicate", "foreign", "invalid", "unreadable")} == {
        "read": 5, "valid": 2, "duplicate": 1, "foreign": 1, "invalid": 1, "unreadable": 1}
    dup = next(e for e in events if e.kind == "marking_duplicate")
    assert dup.payload["serial"] == "VALIDabcdefgh" and dup.payload["duplicate_scope"] == ["shift"]
    assert dup.camera == "verifier" and dup.rule == "codes" and dup.image is not None and dup.image.size
    bad = next(e for e in events if e.kind == "marking_invalid")
    assert bad.payload["error"] == "bad_check_digit"
    unreadable = next(e for e in events if e.kind == "marking_unreadable")
    assert unreadable.payload["reason"] == "decode_failed" and unreadable.payload["decode_failures"] >= 3
    assert metrics["shift/read"] == 5


def test_rule_emits_shift_summary_at_the_boundary_and_does_not_flag_the_next_shifts_repeat():
    code = symbol(long_code("SHIFTabcdefgh"))
    before = [frame_with([(code, (300, 300))], index=i, time_ms=at(13, 59, 59) + i * 100) for i in range(5)]
    after = [frame_with([(code, (300, 300))], index=10 + i, time_ms=at(14, 0, 30) + i * 100) for i in range(5)]
    r = rule()
    events, metrics = run(r, before + after)
    summaries = [e for e in events if e.kind == "marking_shift_summary"]
    assert len(summaries) == 1
    assert summaries[0].payload["shift"] == "A" and summaries[0].payload["valid"] == 1
    assert summaries[0].payload["packs"] == 1
    assert [e.kind for e in events] == ["marking_shift_summary"]  # the repeat in shift B is valid there
    assert metrics["codes/valid"] == 2 and metrics["shift/valid"] == 1
    closing = r.close(at(14, 5))
    assert [e.kind for e in closing.events] == ["marking_shift_summary"]
    assert closing.events[0].payload["shift"] == "B" and closing.events[0].camera == "verifier"


def test_rule_with_order_flags_a_repeat_across_shifts():
    code = symbol(long_code("ORDERbcdefghi"))
    r = rule()
    r.set_order("PO-77")
    events, _ = run(r, [frame_with([(code, (300, 300))], index=0, time_ms=at(13, 59)),
                        frame_with([(code, (300, 300))], index=1, time_ms=at(14, 1))])
    dup = [e for e in events if e.kind == "marking_duplicate"]
    assert len(dup) == 1 and dup[0].payload["duplicate_scope"] == ["order"] and dup[0].payload["order_id"] == "PO-77"


def pack_track(tid: int, x: float, t_ms: int, y: float = 260.0, size: float = 160.0) -> Track:
    return Track(tid, (x, y, x + size, y + size), "product", 0.9, t_ms, t_ms, hits=5)


def test_track_presence_counts_a_pack_without_any_code_as_unreadable():
    code = symbol(long_code("TRACKbcdefghi"))
    frames, tracks = [], {}
    # pack 1 carries a code; pack 2 has none at all (nothing for zxing to locate)
    for i in range(24):
        x1, x2 = 20 + 50 * i, 20 + 50 * (i - 12)
        placed = [(code, (int(x1) + 30, 300))] if x1 + 160 < W else []
        frames.append(frame_with(placed, index=i, time_ms=at(8) + 100 * i))
        ts = []
        if x1 + 160 < W:
            ts.append(pack_track(1, x1, at(8) + 100 * i))
        if i >= 12:
            ts.append(pack_track(2, x2, at(8) + 100 * i))
        tracks[i] = ts
    r = rule(presence="track")
    events, metrics = run(r, frames, tracks)
    assert [e.kind for e in events] == []  # pack 2 is still in view
    tail = [frame_with([], index=30 + i, time_ms=at(8, 0, 3 + i / 10)) for i in range(2)]
    events, metrics = run(r, tail, {})
    assert [e.kind for e in events] == ["marking_unreadable"]
    assert events[0].track_id == 2 and events[0].payload["reason"] == "no_code_found"
    assert metrics["codes/read"] == 1 and metrics["codes/valid"] == 1 and metrics["codes/unreadable"] == 1


def test_track_presence_accepts_a_code_first_read_before_the_tracker_confirmed_the_pack():
    code = symbol(long_code("EARLYbcdefghi"))
    frames = [frame_with([(code, (230 + 40 * i, 300))], index=i, time_ms=at(9) + 100 * i) for i in range(8)]
    # the tracker hands the pack over from frame 3 on (confirmed after 3 hits); it leaves after frame 7
    tracks = {i: [pack_track(5, 200 + 40 * i, at(9))] for i in range(3, 8)}
    frames.append(frame_with([], index=8, time_ms=at(9) + 800))
    events, metrics = run(rule(presence="track"), frames, tracks)
    assert events == []
    assert metrics["codes/read"] == 1 and metrics["codes/unreadable"] == 0


def test_close_counts_a_still_visible_undecodable_symbol_and_reports_the_shift():
    bad = smudged(symbol(long_code("CLOSEbcdefghi")))
    r = rule()
    run(r, [frame_with([(bad, (300, 300))], index=i, time_ms=at(10) + 100 * i) for i in range(3)])
    result = r.close(at(10, 0, 1))
    assert [e.kind for e in result.events] == ["marking_unreadable", "marking_shift_summary"]
    assert result.events[1].payload["unreadable"] == 1 and result.events[1].payload["packs"] == 1
    assert result.metrics["codes/unreadable"] == 1


def test_track_presence_judges_two_packs_with_one_code_in_one_frame_as_a_duplicate():
    code = symbol(long_code("TWINSbcdefghi"))
    frames = [frame_with([(code, (230, 300)), (code, (630, 300))], index=i, time_ms=at(9) + 100 * i)
              for i in range(4)]
    tracks = {i: [pack_track(1, 200, at(9)), pack_track(2, 600, at(9))] for i in range(4)}
    events, metrics = run(rule(presence="track"), frames, tracks)
    assert [e.kind for e in events] == ["marking_duplicate"]
    assert metrics["codes/read"] == 2 and metrics["codes/duplicate"] == 1


def test_zone_limits_judging_to_the_reading_zone():
    geometry = CameraGeometry.from_configs(zones={"reading": {"polygon": [[640, 0], [1280, 0], [1280, 720],
                                                                          [640, 720]], "kind": "reading"}})
    config = MarkingConfig(type="marking", gtins=[GTIN], zone="reading", shifts={"timezone": "UTC"})
    r = MarkingRule("codes", config, geometry)
    left = symbol(long_code("OUTSIDEcdefgh", gtin=OTHER_GTIN))
    right = symbol(long_code("INSIDEbcdefgh"))
    _, metrics = run(r, [frame_with([(left, (100, 300)), (right, (900, 300))], time_ms=at(7))])
    assert metrics["codes/read"] == 1 and metrics["codes/valid"] == 1 and metrics["codes/foreign"] == 0
    with pytest.raises(ConfigError, match="not a zone of this camera"):
        MarkingRule("codes", config.model_copy(update={"zone": "nowhere"}), geometry)


def test_marking_config_plugs_into_the_rule_registry():
    from pydantic import TypeAdapter

    from edge_cv.rules import RuleConfig, build_rule

    config = TypeAdapter(RuleConfig).validate_python(
        {"type": "marking", "gtins": ["4601234567893"], "zone": "reading", "presence": "track",
         "shifts": {"timezone": "Europe/Moscow", "shifts": [{"name": "day", "start": "08:00", "end": "20:00"}]}}
    )
    geometry = CameraGeometry.from_configs(zones={"reading": {"polygon": [[0, 0], [640, 0], [640, 720]]}})
    built = build_rule("codes", config, geometry)
    assert isinstance(built, MarkingRule) and built.register.gtins == {GTIN}
    with pytest.raises(ConfigError, match="zone 'reading'"):
        build_rule("codes", config, CameraGeometry())


def test_config_validates_gtins_roi_and_unknown_keys():
    assert MarkingConfig(type="marking", gtins=["4601234567893"]).gtins == (GTIN,)
    with pytest.raises(ValidationError, match="wrong check digit"):
        MarkingConfig(type="marking", gtins=["4601234567890"])
    with pytest.raises(ValidationError, match="roi"):
        MarkingConfig(type="marking", roi=(100, 0, 50, 10))
    with pytest.raises(ValidationError, match="Extra inputs"):
        MarkingConfig(type="marking", gtin=["4601234567893"])
    with pytest.raises(ValidationError):
        MarkingConfig(type="marking", shifts={"shifts": [{"name": "A", "start": "06:00", "end": "25:00"}]})


def test_set_gtins_at_changeover_turns_the_old_sku_foreign():
    r = rule()
    code = symbol(long_code("CHANGEcdefghi"))
    r.set_gtins([OTHER_GTIN])
    events, metrics = run(r, [frame_with([(code, (300, 300))], time_ms=at(7))])
    assert [e.kind for e in events] == ["marking_foreign"]
    assert events[0].payload["expected_gtins"] == [OTHER_GTIN]


# --- printed date/batch (tesseract) -------------------------------------------------------------------------------

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
needs_tesseract = pytest.mark.skipif(
    shutil.which("tesseract") is None or not Path(FONT).exists(),
    reason="needs Debian tesseract-ocr + tesseract-ocr-rus and fonts-dejavu-core",
)


def test_find_dates_and_check_print_against_the_code():
    element = parse(text(short_code("abc123")))  # (17) 261231, (10) B-17
    assert find_dates("Годен до: 31.12.2026 изг. 01/06/26") == [dt.date(2026, 12, 31), dt.date(2026, 6, 1)]
    assert find_dates("31.13.2026") == []
    ok = check_print("Годен до: 31.12.2026\nПартия: В-17", element)  # Cyrillic В read for the Latin B
    assert not ok.mismatch and ok.expiry_matches and ok.batch_matches
    wrong = check_print("Годен до: 30.12.2026\nПартия: B-18", element)
    assert wrong.expiry_matches is False and wrong.batch_matches is False and len(wrong.problems) == 2
    assert not check_print("", element).mismatch  # nothing read is not a mismatch


def test_missing_tesseract_is_a_clear_error():
    with pytest.raises(OcrError, match="install the Debian packages tesseract-ocr"):
        TesseractOcr(binary="no-such-tesseract-binary").check()


def label(lines: list[str], height: int) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(FONT, 18)
    img = Image.new("L", (300, height), 255)
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(lines):
        draw.text((6, 8 + 26 * i), line, font=font, fill=0)
    return np.asarray(img)


@needs_tesseract
def test_rule_reads_the_printed_date_and_batch_and_flags_a_mismatch():
    good, bad = short_code("OCR001"), short_code("OCR002")
    sym_good, sym_bad = symbol(good, module_px=4), symbol(bad, module_px=4)
    size = sym_good.shape[0]
    print_good = label(["Годен до: 31.12.2026", "Партия: B-17"], size)
    print_bad = label(["Годен до: 30.11.2026", "Партия: B-17"], size)
    frames = [
        frame_with([(sym_good, (100, 200)), (print_good, (100 + size + 10, 200))], index=0, time_ms=at(8)),
        frame_with([(sym_bad, (100, 200)), (print_bad, (100 + size + 10, 200))], index=1, time_ms=at(8, 0, 5)),
    ]
    # zxing boxes the symbol without its quiet zone (88 px here): the label spans about 1.2–4.7 code widths
    r = rule(ocr={"region": [1.0, -0.3, 4.8, 1.3], "every_nth": 1})
    events, metrics = run(r, frames)
    assert [e.kind for e in events] == ["marking_print_mismatch"]
    assert events[0].payload["serial"] == "OCR002" and events[0].payload["printed_dates"] == ["2026-11-30"]
    assert metrics["codes/ocr_checked"] == 2 and metrics["codes/ocr_mismatch"] == 1
    assert metrics["codes/valid"] == 2  # a print mismatch is reported, the code itself stays valid


# --- a synthetic conveyor scene (edge_cv.scenes) with its ground truth ------------------------------------------


@pytest.mark.slow
def test_conveyor_scene_reconciles_exactly_with_ground_truth_using_truth_tracks():
    """The scene's products as pack tracks (a perfect tracker), so what is measured is reading and judging: every
    pack whose code came into view is read or, if damaged, unreadable; duplicates and foreign codes match truth."""
    from edge_cv.scenes import SceneSpec, generate

    spec = SceneSpec(kind="conveyor", seed=11, duration_s=30, duplicate_rate=0.15, damaged_rate=0.15,
                     foreign_rate=0.1)
    frames = list(generate(spec))
    first_code_frame: dict[int, int] = {}
    products = {}
    for sf in frames:
        for p in sf.truth.products:
            products[p.id] = p
            if p.code_box is not None:
                first_code_frame.setdefault(p.id, sf.index)
    in_view = sorted(first_code_frame, key=lambda pid: (first_code_frame[pid], pid))
    readable = [pid for pid in in_view if not products[pid].code_damaged]
    expected_unreadable = [pid for pid in in_view if products[pid].code_damaged]
    foreign = {pid for pid in readable if products[pid].foreign}
    seen, duplicates = set(), set()
    for pid in readable:
        if pid in foreign:
            continue
        identity = parse(products[pid].code_text).identity
        if identity in seen:
            duplicates.add(pid)
        seen.add(identity)
    assert duplicates and foreign and expected_unreadable  # the scene exercises every verdict
    gtins = {parse(products[pid].code_text).gtin for pid in readable if pid not in foreign}

    config = MarkingConfig(type="marking", gtins=sorted(gtins), presence="track", shifts={"timezone": "UTC"})
    r = MarkingRule("codes", config, None)
    events = []
    for sf in frames:
        tracks = [Track(p.id, p.box, "product", 1.0, sf.time_ms, sf.time_ms, hits=5)
                  for p in sf.truth.products if p.visible > 0.99]
        events += r.process(Frame("verifier", sf.index, sf.time_ms, sf.image), [], tracks).events
    result = r.close(frames[-1].time_ms + 100)
    events += result.events
    m = result.metrics
    assert m["codes/read"] == len(readable)
    assert m["codes/unreadable"] == len(expected_unreadable)
    assert m["codes/foreign"] == len(foreign)
    assert m["codes/duplicate"] == len(duplicates)
    assert m["codes/valid"] == len(readable) - len(foreign) - len(duplicates)
    assert m["codes/invalid"] == 0
    assert sorted(e.track_id for e in events if e.kind == "marking_unreadable") == sorted(expected_unreadable)
    dup_serials = sorted(e.payload["serial"] for e in events if e.kind == "marking_duplicate")
    assert dup_serials == sorted(parse(products[pid].code_text).serial for pid in duplicates)
    summary = [e for e in events if e.kind == "marking_shift_summary"]
    assert len(summary) == 1 and summary[0].payload["packs"] == len(in_view)
