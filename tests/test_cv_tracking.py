"""Tracker: ids survive crossings and short misses, labels never mix, tracks confirm after 3 hits and go after
max misses, history and classifier votes are bounded."""

from __future__ import annotations

import numpy as np
import pytest

from edge_cv.tracking import Tracker, TrackerConfig, attribute_vote
from edge_cv.types import Detection


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
