"""Zones, count lines and masks (edge_cv/zones.py): validation, membership with inertia, crossings with direction."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from edge_cv.types import Track
from edge_cv.zones import CameraGeometry, CountLine, LineConfig, Zone, ZoneConfig, point_in_polygon
from hub.errors import ConfigError

SQUARE = [[100, 100], [300, 100], [300, 300], [100, 300]]
# an L: the notch (250, 150) is outside
ELL = [[0, 0], [200, 0], [200, 100], [100, 100], [100, 200], [0, 200]]


def track(tid: int, foot: tuple[float, float], *, history: list[tuple[float, float]] | None = None) -> Track:
    """A person-sized box standing with its bottom-centre at `foot`."""
    x, y = foot
    return Track(
        id=tid,
        box=(x - 20, y - 80, x + 20, y),
        label="person",
        score=0.9,
        first_seen_ms=0,
        last_seen_ms=0,
        hits=5,
        history=list(history or []) + [foot],
    )


# ---------------------------------------------------------------------------------------------------------------
# validation


def test_zone_config_refuses_a_self_intersecting_polygon_and_names_the_edges() -> None:
    with pytest.raises(ValidationError, match=r"self-intersecting: edge 0->1 .* crosses edge 2->3"):
        ZoneConfig(polygon=[[0, 0], [100, 100], [100, 0], [0, 100]])


@pytest.mark.parametrize(
    ("polygon", "message"),
    [
        ([[0, 0], [10, 10]], "at least 3 points"),
        ([[0, 0], [10, 10], [20, 20], [30, 30]], "no area"),
        ([[0, 0], [10, 0], [10, 0], [0, 10]], "are the same point"),
    ],
)
def test_zone_config_refuses_degenerate_polygons(polygon: list[list[int]], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ZoneConfig(polygon=polygon)


def test_zone_config_accepts_a_closed_ring_and_forbids_unknown_keys() -> None:
    z = ZoneConfig(polygon=[*SQUARE, SQUARE[0]], kind="floor")
    assert len(z.polygon) == 4 and z.kind == "floor"
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        ZoneConfig(polygon=SQUARE, colour="red")
    with pytest.raises(ValidationError, match="kind"):
        ZoneConfig(polygon=SQUARE, kind="ceiling")


def test_line_config_refuses_a_degenerate_line() -> None:
    with pytest.raises(ValidationError, match="line is degenerate"):
        LineConfig(points=[[50, 50], [50.5, 50]])


def test_line_config_refuses_an_in_direction_along_the_line() -> None:
    with pytest.raises(ValidationError, match="runs along the line"):
        LineConfig(points=[[0, 100], [300, 100]], in_direction="right")
    assert LineConfig(points=[[0, 100], [300, 100]], in_direction="up").in_direction == "up"


def test_line_config_refuses_same_or_unsafe_direction_names() -> None:
    with pytest.raises(ValidationError, match="two different"):
        LineConfig(points=[[0, 0], [10, 0]], directions=("in", "in"))
    with pytest.raises(ValidationError, match="metric name"):
        LineConfig(points=[[0, 0], [10, 0]], directions=("in/x", "out"))


# ---------------------------------------------------------------------------------------------------------------
# zones


def test_zone_contains_inside_outside_edge_and_concave_notch() -> None:
    square = Zone("s", ZoneConfig(polygon=SQUARE))
    assert square.contains((200, 200))
    assert not square.contains((50, 200))
    assert square.contains((100, 200))  # on the edge counts as inside
    ell = Zone("l", ZoneConfig(polygon=ELL))
    assert ell.contains((50, 150)) and ell.contains((150, 50))
    assert not ell.contains((150, 150))  # the notch of the L


def test_point_in_polygon_agrees_with_opencv_on_random_points() -> None:
    rng = np.random.default_rng(7)
    poly = [(10.0, 10.0), (200.0, 30.0), (150.0, 120.0), (220.0, 210.0), (40.0, 190.0), (80.0, 100.0)]
    contour = np.asarray(poly, np.float32).reshape(-1, 1, 2)
    points = rng.uniform(0, 230, size=(2000, 2))
    ours = [point_in_polygon((float(x), float(y)), poly) for x, y in points]
    theirs = [cv2.pointPolygonTest(contour, (float(x), float(y)), False) >= 0 for x, y in points]
    assert ours == theirs
    assert 200 < sum(ours) < 1800  # both outcomes were exercised


def test_zone_judges_a_box_by_its_bottom_centre() -> None:
    z = Zone("s", ZoneConfig(polygon=SQUARE))
    assert z.contains_box((180, 20, 220, 150))  # head outside, feet inside
    assert not z.contains_box((180, 150, 220, 320))  # body inside, feet outside


def test_zone_mask_is_filled_inside_only() -> None:
    m = Zone("s", ZoneConfig(polygon=SQUARE)).mask((400, 400))
    assert m.shape == (400, 400) and m[200, 200] == 255 and m[50, 50] == 0


def test_membership_enters_only_after_enter_frames_consecutive_frames() -> None:
    z = Zone("s", ZoneConfig(polygon=SQUARE, enter_frames=3, leave_frames=2))
    members = z.membership()
    inside, outside = (200, 200), (50, 50)
    assert members.update([track(1, inside)], 0) == []
    assert members.update([track(1, outside)], 100) == []  # one frame inside, then out: never entered
    assert members.update([track(1, inside)], 200) == []
    assert members.update([track(1, inside)], 300) == []
    changes = members.update([track(1, inside)], 400)
    assert [(c.track_id, c.entered) for c in changes] == [(1, True)]
    assert changes[0].entered_ms == 200  # the first of the three frames
    assert 1 in members and len(members) == 1


def test_membership_leaves_after_leave_frames_and_reports_dwell_from_first_in_to_first_out() -> None:
    z = Zone("s", ZoneConfig(polygon=SQUARE, enter_frames=2, leave_frames=3))
    members = z.membership()
    for t in (0, 100, 200, 300):
        members.update([track(1, (200, 200))], t)
    # a single frame outside (a box that flickered) does not make it leave
    assert members.update([track(1, (50, 50))], 400) == []
    members.update([track(1, (200, 200))], 500)
    assert 1 in members
    assert members.update([track(1, (50, 50))], 600) == []
    assert members.update([track(1, (50, 50))], 700) == []
    changes = members.update([track(1, (50, 50))], 800)
    assert [(c.track_id, c.entered) for c in changes] == [(1, False)]
    assert changes[0].time_ms == 600 and changes[0].dwell_ms == 600
    assert 1 not in members


def test_membership_counts_a_vanished_track_as_outside() -> None:
    z = Zone("s", ZoneConfig(polygon=SQUARE, enter_frames=1, leave_frames=2))
    members = z.membership()
    members.update([track(1, (200, 200)), track(2, (150, 150))], 0)
    assert len(members) == 2
    members.update([track(2, (150, 150))], 100)
    changes = members.update([track(2, (150, 150))], 200)
    assert [(c.track_id, c.entered) for c in changes] == [(1, False)]
    assert members.members == {2: 0}


def test_two_memberships_of_one_zone_keep_separate_state() -> None:
    z = Zone("s", ZoneConfig(polygon=SQUARE, enter_frames=2))
    a, b = z.membership(), z.membership()
    a.update([track(1, (200, 200))], 0)
    a.update([track(1, (200, 200))], 100)
    assert 1 in a
    assert 1 not in b  # b never saw those frames
    b.update([track(1, (200, 200))], 200)
    assert 1 not in b


# ---------------------------------------------------------------------------------------------------------------
# count lines


def walk(crossings, tid: int, ys: list[float], x: float = 150.0, t0: int = 0) -> list[str]:
    """Feed a track whose foot moves through the given y positions; return the directions counted."""
    out = []
    history: list[tuple[float, float]] = []
    for i, y in enumerate(ys):
        tr = track(tid, (x, y), history=history[-10:])
        history.append((x, y))
        out += [c.direction for c in crossings.update([tr], t0 + i * 100)]
    return out


def horizontal(**kw) -> CountLine:
    return CountLine("exit", LineConfig(points=[[100, 200], [300, 200]], **kw))


def test_line_counts_a_crossing_downward_as_in_once() -> None:
    line = horizontal()
    assert line.in_direction == "down"  # default for a mostly horizontal line
    assert walk(line.crossings(), 1, [150, 170, 190, 205, 220, 240, 260]) == ["in"]


def test_line_counts_the_way_back_as_out() -> None:
    assert walk(horizontal().crossings(), 1, [150, 180, 230, 250, 230, 180, 150]) == ["in", "out"]


def test_jitter_around_the_line_never_counts() -> None:
    ys = [200 + (6 if i % 2 else -6) for i in range(40)]  # ±6 px about the line, hysteresis 10
    assert walk(horizontal().crossings(), 1, [170, *ys]) == []


def test_jitter_after_a_crossing_does_not_count_twice() -> None:
    ys = [150, 190, 215, 230, *[200 + (7 if i % 2 else -7) for i in range(30)], 240]
    assert walk(horizontal().crossings(), 1, ys) == ["in"]


def test_a_small_step_past_the_line_is_not_a_crossing_until_it_goes_far_enough() -> None:
    line = horizontal(hysteresis_px=20)
    assert walk(line.crossings(), 1, [150, 190, 205, 212, 215]) == []
    assert walk(line.crossings(), 2, [150, 190, 205, 212, 225]) == ["in"]


def test_passing_beyond_the_end_of_the_segment_is_not_counted() -> None:
    crossings = horizontal().crossings()
    assert walk(crossings, 1, [150, 190, 230, 260], x=400) == []
    assert walk(crossings, 2, [150, 190, 230, 260], x=299) == ["in"]


def test_in_direction_and_custom_names_choose_which_way_is_which() -> None:
    line = horizontal(in_direction="up", directions=("entry", "exit"))
    assert walk(line.crossings(), 1, [260, 230, 190, 150]) == ["entry"]
    assert walk(line.crossings(), 2, [150, 190, 230, 260]) == ["exit"]
    vertical = CountLine("gate", LineConfig(points=[[200, 0], [200, 300]]))
    assert vertical.in_direction == "right"
    crossings = vertical.crossings()
    out = []
    for i, x in enumerate([150, 180, 220, 250]):
        tr = track(5, (x, 100))
        out += [c.direction for c in crossings.update([tr], i * 100)]
    assert out == ["in"]


def test_a_track_first_seen_past_the_line_counts_from_its_history() -> None:
    crossings = horizontal().crossings()
    # the tracker confirmed the track only after it had crossed: its history shows where it came from
    tr = track(1, (150, 240), history=[(150, 170), (150, 190), (150, 215)])
    assert [c.direction for c in crossings.update([tr], 0)] == ["in"]


def test_many_tracks_at_once_each_count_once() -> None:
    crossings = horizontal().crossings()
    total: dict[str, int] = {"in": 0, "out": 0}
    for step, y in enumerate(range(150, 260, 10)):
        tracks = [track(i, (110 + i * 15, y)) for i in range(12)]  # 12 products side by side, all on the segment
        tracks += [track(100 + i, (110 + i * 15, 410 - y)) for i in range(5)]  # 5 going the other way
        for c in crossings.update(tracks, step * 100):
            total[c.direction] += 1
    assert total == {"in": 12, "out": 5}


# ---------------------------------------------------------------------------------------------------------------
# camera geometry and masks


def test_geometry_from_configs_builds_named_zones_and_lines() -> None:
    g = CameraGeometry.from_configs(
        {"floor": {"polygon": SQUARE, "kind": "floor"}}, {"exit": {"points": [[0, 200], [400, 200]]}}, (400, 400)
    )
    assert g.zones["floor"].kind == "floor" and g.lines["exit"].in_direction == "down"


def test_geometry_accepts_config_values_directly() -> None:
    g = CameraGeometry(zones={"floor": ZoneConfig(polygon=SQUARE)}, lines={"exit": LineConfig(points=[[0, 0], [9, 0]])})
    assert isinstance(g.zones["floor"], Zone) and isinstance(g.lines["exit"], CountLine)


def test_geometry_refuses_points_outside_the_frame_naming_the_zone() -> None:
    with pytest.raises(ConfigError, match=r"zones\.floor: point \[300\.0, 300\.0\] lies outside the 320x240 frame"):
        CameraGeometry.from_configs({"floor": {"polygon": SQUARE}}, frame_size=(320, 240))


def test_geometry_refuses_bad_names_and_bad_configs_with_their_path() -> None:
    with pytest.raises(ConfigError, match="zone name 'a/b'"):
        CameraGeometry.from_configs({"a/b": {"polygon": SQUARE}})
    with pytest.raises(ConfigError, match=r"lines\.exit.*degenerate"):
        CameraGeometry.from_configs(lines={"exit": {"points": [[1, 1], [1, 1]]}})
    with pytest.raises(ConfigError, match=r"masks\[0\]: .*self-intersecting"):
        CameraGeometry.from_configs(masks=[[[0, 0], [10, 10], [10, 0], [0, 10]]])


def test_masks_exclude_their_polygon_from_detection() -> None:
    g = CameraGeometry.from_configs(masks=[[[0, 0], [100, 0], [100, 50], [0, 50]]])
    m = g.detection_mask((200, 100))
    assert m is not None and m.shape == (100, 200)
    assert m[25, 50] == 0 and m[75, 50] == 255 and m[25, 150] == 255
    assert g.is_masked((50, 25)) and not g.is_masked((150, 25))
    assert CameraGeometry().detection_mask((200, 100)) is None
