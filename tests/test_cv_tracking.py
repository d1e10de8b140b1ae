"""Tracker: ids survive crossings and short misses, labels never mix, tracks confirm after 3 hits and go after
max misses, history and classifier votes are bounded."""

from __future__ import annotations

import numpy as np
import pytest

from edge_cv.tracking import Tracker, TrackerConfig, attribute_vote, merge_fragments
from edge_cv.types import Detection
from edge_cv.zones import CountLine, LineConfig


def det(x: float, y: float, w: float = 40, h: float = 80, label: str = "person", **attrs) -> Detection:
    return Detection(box=(x, y, x + w, y + h), score=0.9, label=label, attributes=dict(attrs))


def _id_at(tracks, x: float, y: float) -> int:
    """Id of the track whose box starts nearest to (x, y)."""
    return min(tracks, key=lambda t: abs(t.box[0] - x) + abs(t.box[1] - y)).id


def test_two_people_crossing_head_on_keep_their_ids():
    tracker = Tracker()
    ids_a, ids_b = set(), set()
    for i in range(40):
        ax, bx = 100 + 12 * i, 568 - 12 * i  # they meet around frame 19, boxes overlapping almost fully
        tracks = tracker.update([det(ax, 200), det(bx, 210)], time_ms=i * 100)
        assert len(tracks) == 2
        ids_a.add(_id_at(tracks, ax, 200))
        ids_b.add(_id_at(tracks, bx, 210))
    assert len(ids_a) == 1 and len(ids_b) == 1 and ids_a != ids_b
    assert tracker.counters["created"] == 2


def test_crossing_with_irregular_frame_times_still_keeps_ids():
    # Motion gating makes frame intervals uneven: velocity is per millisecond, so prediction stays right.
    tracker = Tracker()
    times = np.cumsum([0, 100, 100, 250, 80, 100, 400, 100, 100, 150, 100, 100, 300, 100, 100, 100])
    ids = []
    for t in times:
        ax, bx = 100 + 0.12 * t, 500 - 0.12 * t
        tracks = tracker.update([det(ax, 200), det(bx, 205)], time_ms=int(t))
        ids.append((_id_at(tracks, ax, 200), _id_at(tracks, bx, 205)))
    assert set(ids) == {ids[0]}


def test_a_track_coasts_through_a_short_occlusion_and_keeps_its_id():
    tracker = Tracker(TrackerConfig(max_misses=5))
    for i in range(6):
        tracker.update([det(100 + 20 * i, 200)], time_ms=i * 100)
    (track,) = tracker.tracks
    assert track.confirmed
    for i in range(6, 9):  # hidden behind a rack for three frames
        (coasting,) = tracker.update([], time_ms=i * 100)
        assert coasting.misses == i - 5
        assert coasting.box[0] == pytest.approx(100 + 20 * i)  # predicted along its path
    (back,) = tracker.update([det(100 + 20 * 9, 200)], time_ms=900)
    assert back.id == track.id and back.misses == 0


def test_confirmation_after_three_hits_and_deletion_after_max_misses():
    tracker = Tracker(TrackerConfig(max_misses=2, tentative_misses=0))
    assert not tracker.update([det(0, 0)], 0)[0].confirmed
    assert not tracker.update([det(2, 0)], 100)[0].confirmed
    assert tracker.update([det(4, 0)], 200)[0].confirmed
    assert len(tracker.update([], 300)) == 1
    assert len(tracker.update([], 400)) == 1
    assert tracker.update([], 500) == []
    assert tracker.counters == {"created": 1, "confirmed": 1, "deleted": 1}
    tracker.update([det(500, 0)], 600)
    assert tracker.update([], 700) == []  # a tentative track with no second sighting goes at once


def test_labels_never_share_a_track():
    tracker = Tracker()
    tracker.update([det(100, 100, label="person")], 0)
    tracks = tracker.update([det(101, 100, label="product")], 100)
    labels = {t.label: t.id for t in tracks}
    assert set(labels) == {"person", "product"} and labels["person"] != labels["product"]


def test_a_far_jump_starts_a_new_track_instead_of_teleporting():
    tracker = Tracker()
    first = tracker.update([det(100, 100)], 0)[0].id
    tracks = tracker.update([det(900, 500)], 100)
    assert {t.id for t in tracks} == {first, first + 1}


def test_history_holds_bounded_bottom_centres_oldest_first():
    tracker = Tracker(TrackerConfig(history=5))
    for i in range(8):
        (track,) = tracker.update([det(10 * i, 0)], i * 100)
    assert track.history == [(10 * i + 20.0, 80.0) for i in range(3, 8)]


def test_classifier_attributes_carry_latest_and_a_bounded_vote_window():
    tracker = Tracker(TrackerConfig(vote_window=5))
    verdicts = ["mask", "mask", "no_mask", "mask", "mask", "mask", "no_mask"]
    for i, label in enumerate(verdicts):
        (track,) = tracker.update([det(5 * i, 0, mask=(label, 0.8))], i * 100)
    assert track.attributes["mask"] == ("no_mask", 0.8)  # the latest
    assert [v[0] for v in track.votes["mask"]] == verdicts[-5:]
    assert attribute_vote(track, "mask") == ("mask", 0.6, 5)
    # A frame the classifier skipped (no verdict) leaves the votes as they were.
    (track,) = tracker.update([det(40, 0)], 800)
    assert len(track.votes["mask"]) == 5 and attribute_vote(track, "hairnet") is None


def test_fifty_objects_on_a_grid_keep_their_ids_over_a_hundred_frames():
    rng = np.random.default_rng(11)
    starts = np.array([(60 + 120 * (k % 10), 60 + 140 * (k // 10)) for k in range(50)], dtype=float)
    speeds = rng.uniform(-3, 3, size=(50, 2))
    tracker = Tracker()
    first_ids = None
    for i in range(100):
        pos = starts + speeds * i
        order = rng.permutation(50)  # detectors list objects in no particular order
        dets = [det(*pos[k], w=50, h=60) for k in order]
        tracks = tracker.update(dets, time_ms=i * 100)
        ids = [_id_at(tracks, *pos[k]) for k in range(50)]
        first_ids = first_ids or ids
        assert ids == first_ids, f"frame {i}"
    assert tracker.counters["created"] == 50


def _belt(i: int, packs: int = 8, width: float = 1280.0, pitch: float = 320.0, pack_w: float = 260.0,
          speed: float = 32.0) -> list[tuple[int, Detection]]:  # fmt: skip
    """Frame `i` of same-size packs 60 px apart running right-to-left through a 1280-px view: (pack, detection),
    boxes cut by the frame edges as a detector sees them, none when less than 40 px of a pack is in view."""
    out = []
    for k in range(packs):
        left = width + k * pitch - speed * i - 40
        x1, x2 = max(0.0, left), min(width, left + pack_w)
        if x2 - x1 >= 40:
            out.append((k, Detection(box=(x1, 300.0, x2, 500.0), score=0.9, label="product")))
    return out


def test_neighbouring_packs_right_to_left_keep_their_ids_when_one_leaves_as_another_enters():
    # The pack leaving at the left edge coasts unseen while a new one appears at the right edge: the matching must
    # leave both unmatched rather than shift every track on the belt to its neighbour's box to make one more pair.
    tracker = Tracker()
    line = CountLine("exit", LineConfig(points=[[640, 0], [640, 720]], in_direction="left"))
    crossings = line.crossings()
    ids: dict[int, set[int]] = {}
    counted: list[str] = []
    for i in range(120):
        frame = _belt(i)
        tracks = tracker.update([d for _, d in frame], time_ms=i * 100)
        for k, d in frame:
            ids.setdefault(k, set()).add(next(t.id for t in tracks if t.box == d.box))
        counted += [c.direction for c in crossings.update(tracks, i * 100)]
    assert all(len(v) == 1 for v in ids.values()), ids
    assert len({next(iter(v)) for v in ids.values()}) == len(ids)
    truly_crossed = sum(1 for k in range(8) if 1280 + k * 320 - 32 * 119 - 40 + 130 < 640)
    assert counted == ["in"] * truly_crossed and truly_crossed >= 5


def test_part_boxes_of_one_pack_in_alternate_frames_make_one_track_when_merging():
    # A detector answers one pack with one box, then with two overlapping part boxes, frame after frame. Where
    # objects of a label cannot overlap (packs on a belt), the parts are merged and the pack keeps one track.
    def frame(i: int) -> list[Detection]:
        x = 100 + 32 * i
        if i % 2:
            return [Detection((x, 300, x + 180, 500), 0.97, "product"),
                    Detection((x + 90, 300, x + 260, 500), 0.6, "product")]
        return [Detection((x, 300, x + 260, 500), 0.99, "product")]

    merging, plain = Tracker(TrackerConfig(merge_overlap=0.5)), Tracker()
    for i in range(20):
        tracks = merging.update(frame(i), i * 100)
        plain.update(frame(i), i * 100)
        assert len(tracks) == 1 and tracks[0].box[2] - tracks[0].box[0] == 260
    assert merging.counters["created"] == 1
    assert plain.counters["created"] > 1  # without merging the second part box starts tracks of its own


def test_merging_keeps_neighbouring_packs_and_other_labels_apart():
    packs = [Detection((0, 300, 260, 500), 0.9, "product"), Detection((250, 300, 510, 500), 0.8, "product"),
             Detection((10, 310, 200, 480), 0.7, "person")]  # fmt: skip
    merged = merge_fragments(packs, 0.5)
    # Touching neighbours (10 px of 260 shared) stay two packs; a person over a pack is not part of it.
    assert sorted(d.box for d in merged) == sorted(d.box for d in packs)
    parts = [Detection((0, 0, 100, 100), 0.6, "product", attributes={"a": ("x", 0.6)}),
             Detection((40, 0, 160, 100), 0.9, "product", attributes={"a": ("y", 0.9)}),
             Detection((110, 0, 200, 100), 0.5, "product")]  # fmt: skip
    (one,) = merge_fragments(parts, 0.5)  # three parts of one pack: one box, the surest part's verdicts
    assert one.box == (0, 0, 200, 100) and one.score == 0.9 and one.attributes == {"a": ("y", 0.9)}
