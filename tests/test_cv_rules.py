"""The rules of edge_cv (personnel, counting, quality, sanitation) and their registry, driven by synthetic frames and
tracks built here; time comes only from `frame.time_ms`."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import cv2
import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from edge_cv.rules import RULES, RuleConfig, build_rule, referenced_lines, referenced_zones
from edge_cv.rules.counting import CountingConfig, CountingRule
from edge_cv.rules.personnel import PersonnelConfig, PersonnelRule
from edge_cv.rules.quality import QualityConfig, QualityRule
from edge_cv.rules.sanitation import SanitationConfig, SanitationRule
from edge_cv.types import CvEvent, Frame, Track, bottom_centre
from edge_cv.zones import CameraGeometry
from hub.errors import ConfigError
from hub.events import Severity

BLANK = np.zeros((240, 320, 3), np.uint8)
RULE_CONFIG = TypeAdapter(RuleConfig)


def frame(t_ms: int, image: np.ndarray = BLANK, index: int = 0) -> Frame:
    return Frame(camera="cam1", index=index, time_ms=t_ms, image=image)


def person(tid: int, foot: tuple[float, float], t_ms: int = 0, **kw) -> Track:
    x, y = foot
    return Track(
        id=tid,
        box=(x - 15, y - 70, x + 15, y),
        label=kw.pop("label", "person"),
        score=kw.pop("score", 0.9),
        first_seen_ms=0,
        last_seen_ms=t_ms,
        hits=kw.pop("hits", 5),
        **kw,
    )


def geometry() -> CameraGeometry:
    return CameraGeometry.from_configs(
        zones={
            "station": {"polygon": [[0, 0], [160, 0], [160, 240], [0, 240]], "kind": "work",
                        "operation": "sleeving", "enter_frames": 2, "leave_frames": 2},
            "floor": {"polygon": [[160, 0], [320, 0], [320, 240], [160, 240]], "kind": "floor",
                      "enter_frames": 2, "leave_frames": 2},
        },
        lines={"exit": {"points": [[0, 120], [320, 120]], "hysteresis_px": 8}},
        frame_size=(320, 240),
    )


def kinds(events: list[CvEvent]) -> list[str]:
    return [e.kind for e in events]


# ---------------------------------------------------------------------------------------------------------------
# registry


def test_registry_holds_every_rule_type_and_the_union_picks_the_model_by_type() -> None:
    assert set(RULES) == {"personnel", "counting", "quality", "sanitation", "marking"}
    samples = {
        "personnel": {"type": "personnel", "zones": ["station"]},
        "counting": {"type": "counting", "line": "exit"},
        "quality": {"type": "quality"},
        "sanitation": {"type": "sanitation", "zone": "floor"},
        "marking": {"type": "marking"},
    }
    for type_name, raw in samples.items():
        model, _ = RULES[type_name]
        assert isinstance(RULE_CONFIG.validate_python(raw), model)


def test_rule_config_errors_name_the_problem() -> None:
    with pytest.raises(ValidationError, match="does not match any of the expected tags"):
        RULE_CONFIG.validate_python({"type": "countin", "line": "exit"})
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        RULE_CONFIG.validate_python({"type": "counting", "line": "exit", "colour": "red"})
    with pytest.raises(ValidationError, match="line"):
        RULE_CONFIG.validate_python({"type": "counting"})
    with pytest.raises(ValidationError, match="min_bad .* cannot exceed ppe.window"):
        RULE_CONFIG.validate_python({"type": "personnel", "ppe": {"required": {"mask": "mask"}, "window": 3,
                                                                  "min_bad": 4}})
    with pytest.raises(ValidationError, match="listed twice"):
        RULE_CONFIG.validate_python({"type": "personnel", "zones": ["a", "a"]})
    with pytest.raises(ValidationError, match="spill: null and no cleaning"):
        RULE_CONFIG.validate_python({"type": "sanitation", "zone": "floor", "spill": None})
    with pytest.raises(ValidationError, match="unknown time zone"):
        RULE_CONFIG.validate_python({"type": "sanitation", "zone": "floor",
                                     "cleaning": {"windows": [{"start": "22:00", "end": "23:00"}],
                                                  "timezone": "Mars/Olympus"}})


def test_rule_configs_name_the_zones_and_lines_they_need() -> None:
    p = RULE_CONFIG.validate_python({"type": "personnel", "zones": ["station"], "ppe": {"required": {"mask": "mask"},
                                                                                         "zones": ["floor"]}})
    assert referenced_zones(p) == {"station", "floor"} and referenced_lines(p) == set()
    c = RULE_CONFIG.validate_python({"type": "counting", "line": "exit"})
    assert referenced_lines(c) == {"exit"} and referenced_zones(c) == set()
    q = RULE_CONFIG.validate_python({"type": "quality", "zone": "belt"})
    assert referenced_zones(q) == {"belt"}
    s = RULE_CONFIG.validate_python({"type": "sanitation", "zone": "floor",
                                     "cleaning": {"windows": [{"start": "22:00", "end": "23:00"}], "zone": "sink"}})
    assert referenced_zones(s) == {"floor", "sink"}


def test_build_rule_refuses_a_zone_the_camera_lacks_and_lists_those_it_has() -> None:
    cfg = RULE_CONFIG.validate_python({"type": "personnel", "zones": ["packing"]})
    with pytest.raises(ConfigError, match=r"names zone 'packing'.*its zones: floor, station"):
        build_rule("ppe", cfg, geometry())
    cfg = RULE_CONFIG.validate_python({"type": "counting", "line": "entry"})
    with pytest.raises(ConfigError, match=r"names line 'entry'.*its lines: exit"):
        build_rule("packed", cfg, geometry())


def test_build_rule_builds_each_of_our_rule_types() -> None:
    g = geometry()
    built = {
        "personnel": build_rule("p", RULE_CONFIG.validate_python({"type": "personnel", "zones": ["station"]}), g),
        "counting": build_rule("c", RULE_CONFIG.validate_python({"type": "counting", "line": "exit"}), g),
        "quality": build_rule("q", RULE_CONFIG.validate_python({"type": "quality"}), g),
        "sanitation": build_rule("s", RULE_CONFIG.validate_python({"type": "sanitation", "zone": "floor"}), g),
    }
    for type_name, rule in built.items():
        assert isinstance(rule, RULES[type_name][1])
        result = rule.process(frame(0), [], [])
        assert result.events == [] and result.metrics  # every rule reports its counters from the first frame


def test_sanitation_refuses_spills_on_a_zone_that_is_not_floor() -> None:
    cfg = RULE_CONFIG.validate_python({"type": "sanitation", "zone": "station"})
    with pytest.raises(ConfigError, match="has kind 'work'; set its kind: floor"):
        build_rule("s", cfg, geometry())


# ---------------------------------------------------------------------------------------------------------------
# personnel


def run_personnel(rule: PersonnelRule, frames: list[list[Track]], step_ms: int = 1000, t0: int = 0):
    events, metrics = [], {}
    for i, tracks in enumerate(frames):
        result = rule.process(frame(t0 + i * step_ms), [], tracks)
        events += result.events
        metrics = result.metrics
    return events, metrics


def test_personnel_gauges_people_per_zone() -> None:
    rule = PersonnelRule("staff", PersonnelConfig(type="personnel", zones=("station", "floor")), geometry())
    tracks = [person(1, (50, 200)), person(2, (100, 200)), person(3, (250, 200)),
              person(4, (250, 200), label="product")]
    _, m = run_personnel(rule, [tracks, tracks])
    assert m["station/people"] == 2 and m["floor/people"] == 1 and m["people"] == 3
    _, m = run_personnel(rule, [[person(3, (250, 200))]] * 2, t0=5000)
    assert m["station/people"] == 0 and m["floor/people"] == 1


def test_personnel_reports_dwell_at_an_operation_after_the_person_leaves() -> None:
    rule = PersonnelRule("staff", PersonnelConfig(type="personnel", zones=("station", "floor"), dwell_min_s=10),
                         geometry())
    # person 1 works at the station for 30 s then walks to the floor; person 2 passes through in 4 s
    frames = []
    for t in range(40):
        tracks = [person(1, (80, 200) if t < 30 else (250, 200))]
        if 10 <= t < 14:
            tracks.append(person(2, (60, 150)))
        frames.append(tracks)
    events, m = run_personnel(rule, frames)
    dwell = [e for e in events if e.kind == "dwell"]
    assert len(dwell) == 1
    e = dwell[0]
    assert e.track_id == 1 and e.zone == "station" and e.payload["operation"] == "sleeving"
    assert e.payload["duration_s"] == pytest.approx(30.0)
    assert m["station/person_seconds"] == pytest.approx(34.0)  # 30 s of person 1 plus 4 s of person 2
    assert "floor/person_seconds" not in m  # the floor has no operation
    assert m["dwells"] == 1


def test_person_seconds_include_people_still_at_the_operation() -> None:
    rule = PersonnelRule("staff", PersonnelConfig(type="personnel", zones=("station",)), geometry())
    _, m = run_personnel(rule, [[person(1, (80, 200))]] * 11)
    assert m["station/person_seconds"] == pytest.approx(10.0)


def test_people_seen_counts_each_confirmed_person_once() -> None:
    rule = PersonnelRule("staff", PersonnelConfig(type="personnel"), geometry())
    frames = [[person(1, (80, 200), hits=h), person(2, (250, 200), hits=1)] for h in (1, 2, 3, 4, 5)]
    _, m = run_personnel(rule, frames)
    assert m["people_seen"] == 1  # track 2 never got confirmed


def ppe_rule(**ppe) -> PersonnelRule:
    cfg = {"required": {"mask": "mask", "coat": ["coat", "apron"]}, "window": 5, "min_bad": 3, "cooldown_s": 60}
    cfg.update(ppe)
    return PersonnelRule("ppe", PersonnelConfig(type="personnel", zones=("station",), ppe=cfg), geometry())


def masked(tid: int, verdicts: dict[str, tuple[str, float]], **kw) -> Track:
    return person(tid, (80, 200), attributes=verdicts, **kw)


def test_one_bad_ppe_frame_raises_nothing() -> None:
    rule = ppe_rule()
    seq = [("mask", 0.9)] * 4 + [("no_mask", 0.95)] + [("mask", 0.9)] * 10
    events, m = run_personnel(rule, [[masked(1, {"mask": v})] for v in seq], step_ms=100)
    assert events == [] and m["violations"] == 0


def test_two_bad_frames_in_the_window_still_raise_nothing() -> None:
    rule = ppe_rule()
    seq = [("no_mask", 0.9), ("mask", 0.9), ("mask", 0.9), ("mask", 0.9), ("no_mask", 0.9)] * 4
    events, _ = run_personnel(rule, [[masked(1, {"mask": v})] for v in seq], step_ms=100)
    assert events == []


def test_k_of_n_bad_frames_raise_exactly_one_violation_with_the_frame() -> None:
    rule = ppe_rule()
    seq = [("mask", 0.9), ("no_mask", 0.9), ("mask", 0.9), ("no_mask", 0.8), ("no_mask", 0.85)]
    seq += [("no_mask", 0.9)] * 20
    images = []
    events = []
    for i, v in enumerate(seq):
        img = np.full((240, 320, 3), i, np.uint8)
        images.append(img)
        events += rule.process(frame(i * 100, img), [], [masked(7, {"mask": v, "coat": ("coat", 0.9)})]).events
    assert kinds(events) == ["ppe_violation"]
    e = events[0]
    assert e.time_ms == 400  # the third bad frame of the window
    assert e.image is images[4]  # the publisher blurs faces in it before storing
    assert (e.track_id, e.zone, e.label, e.box) == (7, "station", "person", (65, 130, 95, 200))
    assert e.score == pytest.approx(0.85) and e.severity is Severity.MEDIUM
    assert e.payload == {"attribute": "mask", "value": "no_mask", "expected": ["mask"], "bad_frames": 3, "window": 5}


def test_a_violation_repeats_only_after_the_cooldown() -> None:
    rule = ppe_rule(cooldown_s=60)
    frames = [[masked(1, {"mask": ("no_mask", 0.9)})] for _ in range(130)]  # 130 s of no mask at 1 frame/s
    events, m = run_personnel(rule, frames)
    assert [e.time_ms for e in events] == [2000, 62000, 122000]
    assert m["violations"] == 3 and m["violations/mask"] == 3 and m["violations/coat"] == 0


def test_each_attribute_and_each_track_is_judged_apart() -> None:
    rule = ppe_rule()
    frames = [[masked(1, {"mask": ("no_mask", 0.9), "coat": ("coat", 0.9)}),
               masked(2, {"mask": ("mask", 0.9), "coat": ("no_coat", 0.9)}),
               masked(3, {"mask": ("mask", 0.9), "coat": ("apron", 0.9)})] for _ in range(6)]
    events, m = run_personnel(rule, frames, step_ms=100)
    assert sorted((e.track_id, e.payload["attribute"]) for e in events) == [(1, "mask"), (2, "coat")]
    assert m["violations/mask"] == 1 and m["violations/coat"] == 1


def test_unsure_or_missing_or_predicted_verdicts_do_not_vote() -> None:
    rule = ppe_rule()
    low = [[masked(1, {"mask": ("no_mask", 0.3)})] for _ in range(10)]  # below min_score 0.5
    missing = [[masked(2, {})] for _ in range(10)]  # classifier did not run on these frames
    predicted = [[masked(3, {"mask": ("no_mask", 0.9)}, misses=1)] for _ in range(10)]  # box only predicted
    events, _ = run_personnel(rule, [a + b + c for a, b, c in zip(low, missing, predicted, strict=True)], step_ms=100)
    assert events == []


def test_ppe_zones_limit_where_ppe_is_checked() -> None:
    rule = ppe_rule(zones=("station",))
    outside = [[person(1, (250, 200), attributes={"mask": ("no_mask", 0.9)})] for _ in range(10)]
    inside = [[person(2, (80, 200), attributes={"mask": ("no_mask", 0.9)})] for _ in range(10)]
    events, _ = run_personnel(rule, outside + inside, step_ms=100)
    assert [e.track_id for e in events] == [2]


# ---------------------------------------------------------------------------------------------------------------
# counting


def product(tid: int, foot: tuple[float, float], history: list[tuple[float, float]], label: str = "product") -> Track:
    x, y = foot
    return Track(id=tid, box=(x - 10, y - 20, x + 10, y), label=label, score=0.8, first_seen_ms=0, last_seen_ms=0,
                 hits=5, history=[*history, foot])


def run_counting(rule: CountingRule, paths: dict[int, list[float]], x: float = 160.0, label: str = "product"):
    """Each path is the y of a track's foot per frame; tracks move in parallel, spaced along x."""
    events, metrics = [], {}
    n = max(len(p) for p in paths.values())
    hist: dict[int, list[tuple[float, float]]] = {tid: [] for tid in paths}
    for i in range(n):
        tracks = []
        for k, (tid, ys) in enumerate(paths.items()):
            if i < len(ys):
                foot = (20 + 25 * k, ys[i])
                tracks.append(product(tid, foot, hist[tid][-8:], label))
                hist[tid].append(foot)
        result = rule.process(frame(i * 100), [], tracks)
        events += result.events
        metrics = result.metrics
    return events, metrics


def test_counting_counts_products_per_direction_and_net() -> None:
    rule = build_rule("packed", CountingConfig(type="counting", line="exit"), geometry())
    down = [60, 80, 100, 115, 130, 150, 170]
    up = list(reversed(down))
    back_and_forth = down + up + down
    events, m = run_counting(rule, {1: down, 2: down, 3: up, 4: back_and_forth, 5: [60, 70, 80]})
    assert (m["count_in"], m["count_out"], m["count_net"], m["count"]) == (4, 2, 2, 6)
    assert events == []  # emit_events is off by default


def test_counting_ignores_jitter_on_the_line() -> None:
    rule = build_rule("packed", CountingConfig(type="counting", line="exit"), geometry())
    jitter = [100, *[120 + (5 if i % 2 else -5) for i in range(50)]]
    _, m = run_counting(rule, {1: jitter, 2: [*jitter, 150]})
    assert (m["count_in"], m["count_out"]) == (1, 0)


def test_counting_only_counts_its_labels() -> None:
    rule = build_rule("packed", CountingConfig(type="counting", line="exit", labels=("product",)), geometry())
    _, m = run_counting(rule, {1: [80, 100, 140, 160]}, label="person")
    assert m["count"] == 0


def test_counting_emits_one_event_per_counted_crossing_when_asked() -> None:
    cfg = CountingConfig(type="counting", line="exit", directions=("in",), emit_events=True)
    rule = build_rule("packed", cfg, geometry())
    down = [60, 90, 110, 130, 150]
    events, m = run_counting(rule, {1: down, 2: list(reversed(down)), 3: down})
    assert [(e.kind, e.track_id, e.payload) for e in events] == [
        ("crossing", 1, {"line": "exit", "direction": "in"}),
        ("crossing", 3, {"line": "exit", "direction": "in"}),
    ]
    assert m["count"] == 2 and m["count_out"] == 1  # the out crossing is tallied but not counted nor sent


def test_counting_refuses_a_direction_the_line_does_not_have() -> None:
    cfg = CountingConfig(type="counting", line="exit", directions=("entry",))
    with pytest.raises(ConfigError, match=r"line 'exit' has directions \['in', 'out'\], not \['entry'\]"):
        build_rule("packed", cfg, geometry())


# ---------------------------------------------------------------------------------------------------------------
# quality


def conveyor_image() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)


def item(tid: int, x: float, verdict: tuple[str, float] | None, label: str = "product", score: float = 0.8) -> Track:
    return Track(id=tid, box=(x, 100.0, x + 40, 140.0), label=label, score=score, first_seen_ms=0, last_seen_ms=0,
                 hits=5, attributes={"appearance": verdict} if verdict else {})


def run_quality(rule: QualityRule, per_frame: list[list[Track]], image: np.ndarray = BLANK):
    events, metrics = [], {}
    for i, tracks in enumerate(per_frame):
        result = rule.process(frame(i * 100, image), [], tracks)
        events += result.events
        metrics = result.metrics
    return events, metrics


def test_quality_one_defective_frame_raises_nothing_but_k_of_n_raise_one_defect_with_the_crop() -> None:
    rule = QualityRule("appearance", QualityConfig(type="quality", window=5, min_defects=3), geometry())
    ok, bad = ("ok", 0.9), ("defective", 0.92)
    a = [ok, ok, bad, ok, ok, ok, ok, ok]  # one bad frame: a glare, not a defect
    b = [ok, bad, bad, ok, bad, bad, bad, bad]  # really defective
    frames = [[item(1, 10 + 10 * i, a[i]), item(2, 150 + 10 * i, b[i])] for i in range(8)]
    image = conveyor_image()
    events, m = run_quality(rule, frames, image)
    assert kinds(events) == ["defect"]
    e = events[0]
    assert e.track_id == 2 and e.time_ms == 400 and e.score == pytest.approx(0.92)
    assert e.payload == {"attribute": "appearance", "verdict": "defective", "defect_frames": 3, "window": 5}
    x1, y1, x2, y2 = (int(v) for v in e.box)
    assert e.image is not None and e.image.shape == (48, 48, 3)  # the box grown by 10 % on each side
    assert np.array_equal(e.image[4:-4, 4:-4], image[y1:y2, x1:x2])
    assert (m["inspected"], m["defects"], m["defect_rate"]) == (2, 1, 0.5)


def test_quality_judges_only_inside_its_zone_and_trusts_confident_verdicts_only() -> None:
    rule = QualityRule("appearance", QualityConfig(type="quality", zone="station", min_score=0.6), geometry())
    bad = ("defective", 0.9)
    outside = [[item(1, 200, bad)] for _ in range(8)]  # on the "floor" half
    unsure = [[item(2, 50, ("defective", 0.4))] for _ in range(8)]
    events, m = run_quality(rule, outside + unsure)
    assert events == [] and m["inspected"] == 1 and m["defects"] == 0


def test_quality_accepts_a_detector_defect_class_as_the_verdict() -> None:
    rule = QualityRule("appearance", QualityConfig(type="quality", defect_labels=("dented",)), geometry())
    frames = [[item(1, 50, None, label="dented", score=0.7), item(2, 150, None)] for _ in range(5)]
    events, m = run_quality(rule, frames)
    assert [(e.track_id, e.label) for e in events] == [(1, "dented")]
    assert m["inspected"] == 1  # track 2 never got a verdict


# ---------------------------------------------------------------------------------------------------------------
# sanitation: spills


def floor_texture(w: int = 320, h: int = 240) -> np.ndarray:
    """Grey tiles with grout and speckle, the kind of floor a spill must be told apart from."""
    rng = np.random.default_rng(42)
    img = np.full((h, w, 3), 150, np.uint8)
    for y in range(0, h, 40):
        for x in range(0, w, 40):
            img[y:y + 40, x:x + 40] = int(rng.integers(135, 170))
    img[::40, :] = 90
    img[:, ::40] = 90
    speckle = rng.normal(0, 8, (h, w, 1))
    return np.clip(img + speckle, 0, 255).astype(np.uint8)


SPILL_CENTRE = (230, 170)


def floor_scene(
    n: int,
    *,
    spill_from: int | None = None,
    spill_to: int | None = None,
    walker: tuple[int, int] | None = None,
    walker_tracked: bool = True,
    seed: int = 3,
):
    """Yield (frame, tracks) at 10 frames/s: an optional spill appears and is cleaned, an optional person walks."""
    base = floor_texture()
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = base.copy()
        if spill_from is not None and i >= spill_from and (spill_to is None or i < spill_to):
            cv2.ellipse(img, SPILL_CENTRE, (28, 16), 15, 0, 360, (40, 70, 110), -1)
        tracks = []
        if walker is not None and walker[0] <= i < walker[1]:
            # walks left to right across the floor, passing over where the spill is
            x = int(170 + (i - walker[0]) * 150 / (walker[1] - walker[0]))
            box = (x - 14, 110, x + 14, 200)
            cv2.rectangle(img, (box[0], box[1]), (box[2], box[3]), (160, 60, 30), -1)
            cv2.circle(img, (x, 100), 10, (120, 150, 200), -1)
            if walker_tracked:
                tracks.append(Track(id=9, box=(box[0], 88.0, box[2], box[3]), label="person", score=0.9,
                                    first_seen_ms=0, last_seen_ms=i * 100, hits=5))
        noise = rng.normal(0, 3, img.shape)
        img = np.clip(img + noise, 0, 255).astype(np.uint8)
        yield frame(i * 100, img, i), tracks


def spill_rule(**spill) -> SanitationRule:
    cfg = {"persist_s": 3, "min_area": 400, "clear_s": 2}
    cfg.update(spill)
    return SanitationRule("floor_watch", SanitationConfig(type="sanitation", zone="floor", spill=cfg), geometry())


def run_scene(rule: SanitationRule, scene):
    events, metrics = [], {}
    for f, tracks in scene:
        result = rule.process(f, [], tracks)
        events += result.events
        metrics = result.metrics
    return events, metrics


def test_a_spill_that_stays_raises_one_spill_event_after_persist_s_and_clears_once() -> None:
    rule = spill_rule()
    events, m = run_scene(rule, floor_scene(160, spill_from=20, spill_to=100))
    assert kinds(events) == ["spill", "spill_cleared"]
    spill, cleared = events
    assert 2000 + 3000 <= spill.time_ms <= 2000 + 3500  # appeared at 2.0 s, still for 3 s
    x1, y1, x2, y2 = spill.box
    assert x1 <= SPILL_CENTRE[0] <= x2 and y1 <= SPILL_CENTRE[1] <= y2
    assert (x2 - x1) < 90 and (y2 - y1) < 70  # the box is the spill, not the zone
    assert 1100 <= spill.payload["area_px"] <= 1700  # ellipse 28x16: about 1,400 px²
    assert spill.zone == "floor" and spill.image is not None and spill.severity is Severity.MEDIUM
    assert 9_900 + 2000 <= cleared.time_ms <= 10_000 + 2500  # last seen at 9.9 s, then gone for 2 s
    assert cleared.payload["spill_id"] == spill.payload["spill_id"]
    assert (m["spills"], m["spills_cleared"], m["spills_active"], m["background_ready"]) == (1, 1, 0, 1)


def test_a_region_gone_before_persist_s_is_not_a_spill() -> None:
    events, m = run_scene(spill_rule(), floor_scene(100, spill_from=20, spill_to=45))  # there for 2.5 s
    assert events == [] and m["spills"] == 0


def test_a_tracked_person_walking_through_is_not_a_spill() -> None:
    events, m = run_scene(spill_rule(), floor_scene(120, walker=(10, 110)))  # 10 s crossing the floor
    assert events == [] and m["spills"] == 0


def test_an_untracked_person_walking_through_is_not_a_spill_because_it_moves() -> None:
    events, _ = run_scene(spill_rule(), floor_scene(120, walker=(10, 110), walker_tracked=False))
    assert events == []


def test_a_spill_is_found_while_a_person_walks_past_and_over_it() -> None:
    events, _ = run_scene(spill_rule(), floor_scene(160, spill_from=5, walker=(20, 120)))
    assert kinds(events) == ["spill"]  # once, not again after the walker uncovered it


def test_a_spill_partly_under_a_stray_track_box_keeps_its_clock() -> None:
    # A detector's false box over the left part of the spill comes and goes every half second: what shows beside
    # it has its centre off the spill's, but lies within where the spill was seen, so it is not a moving thing.
    stray = Track(id=4, box=(180.0, 140.0, 222.0, 200.0), label="person", score=0.5, first_seen_ms=0, last_seen_ms=0)
    scene = ((f, [stray] if 8 <= f.index < 80 and (f.index // 5) % 2 == 0 else tracks)
             for f, tracks in floor_scene(100, spill_from=5))  # fmt: skip
    events, m = run_scene(spill_rule(max_shift_px=8), scene)
    assert kinds(events) == ["spill"] and m["spills"] == 1
    assert 500 + 3000 <= events[0].time_ms <= 500 + 3500  # appeared at 0.5 s, still for 3 s: the box did not reset it


def test_the_background_is_learned_only_from_a_floor_without_people() -> None:
    rule = spill_rule()
    scene = list(floor_scene(30, walker=(0, 30)))
    _, m = run_scene(rule, scene)
    assert m["background_ready"] == 0  # someone was on the floor the whole time
    _, m = run_scene(rule, floor_scene(3))
    assert m["background_ready"] == 1


def test_a_lighting_change_relearns_the_floor_instead_of_raising_a_spill() -> None:
    rule = spill_rule()
    run_scene(rule, floor_scene(10))
    # the lights go brighter by 40 % at 1 s and stay so
    brighter = ((frame(f.time_ms + 1000, cv2.convertScaleAbs(f.image, alpha=1.4)), t) for f, t in floor_scene(60))
    events, m = run_scene(rule, brighter)
    assert events == [] and m["background_resets"] == 1


def test_lights_switched_while_someone_walks_raise_nothing_and_relearn_once() -> None:
    rule = spill_rule()
    run_scene(rule, floor_scene(10))
    brighter = ((frame(f.time_ms + 1000, cv2.convertScaleAbs(f.image, alpha=1.4)), t)
                for f, t in floor_scene(120, walker=(0, 60)))
    events, m = run_scene(rule, brighter)
    assert events == [] and m["background_resets"] == 1


def test_floor_hidden_under_an_object_at_start_is_learned_when_it_shows() -> None:
    # a trolley (tracked, not a person) stands on the floor when the camera starts, then is wheeled away
    base = list(floor_scene(80))
    trolley = (200, 120, 280, 200)
    events = []
    rule = spill_rule()
    for f, _ in base:
        img = f.image.copy()
        tracks = []
        if f.index < 30:
            cv2.rectangle(img, trolley[:2], trolley[2:], (20, 20, 200), -1)
            tracks = [Track(id=3, box=tuple(float(v) for v in trolley), label="trolley", score=0.8, first_seen_ms=0,
                            last_seen_ms=f.time_ms, hits=5)]
        events += rule.process(frame(f.time_ms, img), [], tracks).events
    assert events == []
    assert rule.spill is not None and rule.spill.ready


# ---------------------------------------------------------------------------------------------------------------
# sanitation: cleaning windows

MSK = ZoneInfo("Europe/Moscow")


def ms(day: int, hh: int, mm: int, ss: int = 0, tz: ZoneInfo = MSK) -> int:
    return int(dt.datetime(2025, 6, day, hh, mm, ss, tzinfo=tz).timestamp() * 1000)


def cleaning_rule(windows=({"start": "22:00", "end": "23:00"},), min_s: float = 600) -> SanitationRule:
    cfg = SanitationConfig(type="sanitation", zone="floor", spill=None,
                           cleaning={"windows": list(windows), "min_s": min_s, "timezone": "Europe/Moscow"})
    return SanitationRule("cip", cfg, geometry())


def run_clock(rule: SanitationRule, start: int, end: int, present, step_s: int = 5):
    """Frames every `step_s` from start to end; `present(t_ms)` says whether the cleaner is on the floor."""
    events, metrics = [], {}
    t = start
    while t <= end:
        tracks = [person(1, (250, 200), t)] if present(t) else []
        result = rule.process(frame(t), [], tracks)
        events += result.events
        metrics = result.metrics
        t += step_s * 1000
    return events, metrics


def test_a_cleaner_present_long_enough_in_the_window_is_cleaning_done_with_its_duration() -> None:
    rule = cleaning_rule()
    events, m = run_clock(rule, ms(1, 21, 50), ms(1, 23, 10), lambda t: ms(1, 22, 10) <= t < ms(1, 22, 25))
    assert kinds(events) == ["cleaning_done"]
    e = events[0]
    assert e.payload["window"] == "22:00-23:00"
    assert e.payload["duration_s"] == pytest.approx(900, abs=15)
    assert ms(1, 22, 25) <= e.time_ms <= ms(1, 22, 26)  # decided when the cleaner left
    assert e.zone == "floor" and e.severity is Severity.INFO
    assert (m["cleaning_done"], m["cleaning_missed"], m["cleaning_window_open"]) == (1, 0, 0)


def test_a_window_that_closes_with_too_little_presence_is_cleaning_missed() -> None:
    rule = cleaning_rule()
    # 8 minutes before the window do not count; 5 minutes inside are too few
    present = lambda t: ms(1, 21, 50) <= t < ms(1, 21, 58) or ms(1, 22, 30) <= t < ms(1, 22, 35)  # noqa: E731
    events, m = run_clock(rule, ms(1, 21, 45), ms(1, 23, 5), present)
    assert kinds(events) == ["cleaning_missed"]
    e = events[0]
    assert e.time_ms == ms(1, 23, 0) and e.severity is Severity.HIGH
    assert e.payload["duration_s"] == pytest.approx(300, abs=10) and e.payload["min_s"] == 600
    assert e.image is not None
    assert m["cleaning_missed"] == 1


def test_presence_split_over_visits_adds_up() -> None:
    rule = cleaning_rule()
    present = lambda t: ms(1, 22, 5) <= t < ms(1, 22, 11) or ms(1, 22, 40) <= t < ms(1, 22, 45)  # noqa: E731
    events, _ = run_clock(rule, ms(1, 21, 55), ms(1, 23, 5), present)
    assert kinds(events) == ["cleaning_done"]
    assert events[0].payload["duration_s"] == pytest.approx(660, abs=15)


def test_a_cleaner_still_there_when_the_window_closes_is_done_at_the_close() -> None:
    rule = cleaning_rule()
    events, _ = run_clock(rule, ms(1, 21, 55), ms(1, 23, 10), lambda t: t >= ms(1, 22, 45))
    assert kinds(events) == ["cleaning_done"]
    assert events[0].payload["reason"].startswith("the window closed")
    assert events[0].payload["duration_s"] == pytest.approx(900, abs=10)


def test_a_window_past_midnight_in_the_plant_time_zone() -> None:
    rule = cleaning_rule(windows=({"start": "23:30", "end": "00:30"},), min_s=60)
    events, m = run_clock(rule, ms(1, 23, 0), ms(2, 0, 20), lambda t: False, step_s=30)
    assert events == [] and m["cleaning_window_open"] == 1
    events, m = run_clock(rule, ms(2, 0, 20, 30), ms(2, 1, 0), lambda t: False, step_s=30)
    assert kinds(events) == ["cleaning_missed"] and events[0].time_ms == ms(2, 0, 30)
    assert m["cleaning_window_open"] == 0


def test_a_window_the_camera_never_saw_is_missed_without_a_picture() -> None:
    rule = cleaning_rule()
    rule.process(frame(ms(1, 21, 0)), [], [])
    events = rule.process(frame(ms(2, 9, 0)), [], []).events  # offline from 21:00 to 09:00 next day
    assert kinds(events) == ["cleaning_missed"]
    assert events[0].payload["reason"].startswith("no frames") and events[0].image is None
    assert events[0].time_ms == ms(1, 23, 0)


def test_each_day_has_its_own_window() -> None:
    rule = cleaning_rule(min_s=120)
    day1 = lambda t: ms(1, 22, 10) <= t < ms(1, 22, 15)  # noqa: E731
    events, m = run_clock(rule, ms(1, 21, 58), ms(2, 23, 2), day1, step_s=20)
    assert kinds(events) == ["cleaning_done", "cleaning_missed"]
    assert events[1].time_ms == ms(2, 23, 0)
    assert (m["cleaning_done"], m["cleaning_missed"]) == (1, 1)


def test_bottom_centre_is_what_zones_judge() -> None:
    # a cleaner whose head is in the floor zone but whose feet are at the station is not on the floor
    rule = cleaning_rule(min_s=60)
    feet_at_station = Track(id=1, box=(140, 100, 170, 200), label="person", score=0.9, first_seen_ms=0,
                            last_seen_ms=0, hits=5)
    assert bottom_centre(feet_at_station.box)[0] < 160
    events = []
    for t in range(ms(1, 22, 0), ms(1, 23, 1), 10_000):
        events += rule.process(frame(t), [], [feet_at_station]).events
    assert kinds(events) == ["cleaning_missed"]


# ---------------------------------------------------------------------------------------------------------------
# on the project's synthetic scenes (edge_cv/scenes), with ground-truth boxes standing in for detector + tracker


def scene_geometry(layout, size: tuple[int, int]) -> CameraGeometry:
    zones = {
        name: {"polygon": list(poly), "kind": "floor" if name == "floor" else "work",
               **({"operation": "packing"} if name == "workstation" else {})}
        for name, poly in layout.zones.items()
    }
    return CameraGeometry.from_configs(zones, frame_size=size)


def truth_tracks(scene_frame, attributes=lambda p, i: {}) -> list[Track]:
    return [
        Track(id=p.id, box=p.box, label="person", score=0.9, first_seen_ms=0, last_seen_ms=scene_frame.time_ms,
              hits=5, attributes=attributes(p, scene_frame.index))
        for p in scene_frame.truth.people
        if p.visible >= 0.5
    ]


@pytest.mark.parametrize("seed", [3, 4])
def test_spill_on_a_synthetic_floor_scene_is_found_once_where_it_is(seed: int) -> None:
    from edge_cv.scenes import SceneSpec, generate, scene_layout

    spec = SceneSpec(kind="floor", seed=seed, width=640, height=360, duration_s=25, spill_at_s=8, people=3)
    rule = SanitationRule("floor_watch", SanitationConfig(type="sanitation", zone="floor",
                                                          spill={"persist_s": 5, "min_area": 300}),
                          scene_geometry(scene_layout(spec), (640, 360)))
    events, truth = [], None
    for sf in generate(spec):
        events += rule.process(sf.to_frame("floor_cam"), [], truth_tracks(sf)).events
        truth = sf.truth.spill or truth
    assert truth is not None
    assert kinds(events) == ["spill"]
    e = events[0]
    assert e.time_ms >= truth.appeared_ms + 5000
    ex1, ey1, ex2, ey2 = e.box
    tx1, ty1, tx2, ty2 = truth.box
    inter = max(0.0, min(ex2, tx2) - max(ex1, tx1)) * max(0.0, min(ey2, ty2) - max(ey1, ty1))
    union = (ex2 - ex1) * (ey2 - ey1) + (tx2 - tx1) * (ty2 - ty1) - inter
    assert inter / union > 0.7


def test_people_walking_on_a_synthetic_floor_without_a_spill_raise_nothing() -> None:
    from edge_cv.scenes import SceneSpec, generate, scene_layout

    spec = SceneSpec(kind="floor", seed=11, width=640, height=360, duration_s=25, spill_at_s=None, people=4)
    rule = SanitationRule("floor_watch", SanitationConfig(type="sanitation", zone="floor",
                                                          spill={"persist_s": 5, "min_area": 300}),
                          scene_geometry(scene_layout(spec), (640, 360)))
    events = []
    for sf in generate(spec):
        events += rule.process(sf.to_frame("floor_cam"), [], truth_tracks(sf)).events
    assert events == []


def test_ppe_and_dwell_on_a_synthetic_floor_scene_match_the_ground_truth() -> None:
    from edge_cv.scenes import SceneSpec, generate, scene_layout

    spec = SceneSpec(kind="floor", seed=5, width=640, height=360, duration_s=40, people=4)
    cfg = PersonnelConfig(type="personnel", zones=("floor", "workstation"), dwell_min_s=3,
                          ppe={"required": {"mask": "mask"}, "window": 5, "min_bad": 3, "cooldown_s": 600})
    rule = PersonnelRule("staff", cfg, scene_geometry(scene_layout(spec), (640, 360)))

    def verdicts(p, i):
        # a perfect mask classifier, except that it wrongly says no_mask on every 10th frame of masked people
        wrong = p.mask and (i + p.id) % 10 == 0
        return {"mask": ("mask" if p.mask and not wrong else "no_mask", 0.9)}

    events, maskless = [], set()
    station: dict[int, list[int]] = {}  # person -> frame indices at the workstation
    last = 0
    for sf in generate(spec):
        tracks = truth_tracks(sf, verdicts)
        events += rule.process(sf.to_frame("floor_cam"), [], tracks).events
        last = sf.index
        for p in sf.truth.people:
            if p.visible >= 0.5:
                if not p.mask:
                    maskless.add(p.id)
                if p.zone == "workstation":
                    station.setdefault(p.id, []).append(sf.index)
    assert maskless and len(maskless) < len({*maskless, *station})  # the scene has both kinds of people
    assert sorted(e.track_id for e in events if e.kind == "ppe_violation") == sorted(maskless)
    # stays: runs of frames at the workstation (gaps under the zone's 5 frames of leave inertia do not split one),
    # reported once the person has left, when they last at least dwell_min_s
    expected = []
    for pid, idx in station.items():
        runs = [[idx[0]]]
        for i in idx[1:]:
            if i - runs[-1][-1] >= 5:
                runs.append([i])
            else:
                runs[-1].append(i)
        for run in runs:
            seconds = (run[-1] - run[0] + 1) / spec.fps
            if run[-1] < last - 5 and seconds >= 3:
                expected.append((pid, seconds))
    dwell = sorted((e.track_id, e.payload["duration_s"]) for e in events if e.kind == "dwell")
    assert len(expected) >= 3 and [pid for pid, _ in dwell] == [pid for pid, _ in sorted(expected)]
    for (_, got), (_, want) in zip(dwell, sorted(expected), strict=True):
        assert got == pytest.approx(want, abs=0.3)
