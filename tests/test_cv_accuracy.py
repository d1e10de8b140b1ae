"""Proof of issue 5 on held-out synthetic scenes: each rule pipeline's reference camera (edge_cv/evaluate.py) runs
through the real pipeline (shipped ONNX models, tracker, rules) and is scored against the scenes' ground truth.

Targets: line counts exact in ≥ 99 % of runs; defect, PPE (mask) and spill events precision and recall ≥ 0.95;
marking counters equal to the truth. The seeds here (1020…) are held out from the models' training (< 1000) and
differ from the CLI's default table (1000-1019), so the two are separate samples. The fast tests check the
scoring itself on hand-made runs, so a scoring bug cannot hide a pipeline's mistakes.
"""

from __future__ import annotations

import numpy as np
import pytest

from edge_cv import evaluate as ev
from edge_cv.config import CameraConfig
from edge_cv.scenes import FrameTruth, PersonTruth, ProductTruth, SceneSpec, SpillTruth
from edge_cv.types import CvEvent

TEST_SEEDS = {"counting": range(1020, 1024), "quality": range(1020, 1023), "marking": range(1020, 1023),
              "personnel": range(1020, 1023), "sanitation": range(1020, 1024)}  # fmt: skip


def _need_models(pipeline: str) -> None:
    missing = ev.models_missing(pipeline)  # type: ignore[arg-type]
    if missing:
        pytest.skip(f"shipped models missing: {', '.join(missing)} (python -m edge_cv.models.build)")


# ---------------------------------------------------------------------------------------------------------------
# the harness itself (fast)


def test_seed_ranges_parse_and_training_seeds_are_refused() -> None:
    assert ev.parse_seeds("1000-1003,1010") == [1000, 1001, 1002, 1003, 1010]
    with pytest.raises(ValueError, match="backwards"):
        ev.parse_seeds("1005-1001")
    with pytest.raises(ValueError, match="training seeds"):
        ev.check_held_out([999, 1000])
    assert ev.main(["--seeds", "3-4"]) == 2


@pytest.mark.parametrize("pipeline", ev.PIPELINES)
def test_reference_cameras_validate_and_play_their_own_scene(pipeline: str) -> None:
    _need_models(pipeline)
    spec = ev.scene_spec(pipeline, 1000)  # type: ignore[arg-type]
    camera = ev.reference_camera(pipeline, spec)  # type: ignore[arg-type]
    assert isinstance(camera, CameraConfig)
    # The camera's source string stands for exactly the scene the evaluation plays.
    from edge_cv.config import synthetic_scene_fields

    assert SceneSpec.model_validate(synthetic_scene_fields(camera.spec, fps=camera.fps)) == spec


def test_blob_counting_camera_needs_no_model() -> None:
    camera = ev.reference_camera("counting", ev.scene_spec("counting", 1000), counting_detector="blob")
    assert camera.detector is not None and camera.detector.type == "blob"
    assert camera.rules["packed"].line == "exit"


def _run(kind: str, truths: list[FrameTruth], metrics: list[dict] | None = None,
         events: list[tuple[int, CvEvent]] | None = None) -> ev.SceneRun:  # fmt: skip
    spec = SceneSpec(kind=kind, seed=1000, fps=10, duration_s=len(truths) / 10)  # type: ignore[arg-type]
    return ev.SceneRun(spec, truths, events or [], metrics or [{} for _ in truths])


def _product(pid: int, cx: float, *, defective: bool = False, text: str = "A", damaged: bool = False,
             foreign: bool = False) -> ProductTruth:  # fmt: skip
    box = (cx - 150, 300.0, cx + 150, 440.0)
    code = (cx + 40, 320.0, cx + 120, 400.0)
    return ProductTruth(pid, "OB-40", box, 1.0, defective, "torn" if defective else None, text, code, damaged, None,
                        foreign, False)  # fmt: skip


def test_counting_score_compares_the_counter_between_quiet_frames() -> None:
    # One product moves across the line (x = 640) during frames 25..35; quiet before and after it.
    truths, metrics = [], []
    for i in range(60):
        cx = 300 + (i - 20) * 32 if 20 <= i < 45 else None
        products = (_product(1, cx),) if cx is not None else ()
        crossed = 1 if cx is not None and cx >= 640 or i >= 45 else 0
        truths.append(FrameTruth(products=products, crossed_total=crossed))
        metrics.append({"packed/count": 1 if i >= 32 else 0})
    assert ev.score_counting_run(_run("conveyor", truths, metrics)) == (1, 1)
    # A counter that counted the product twice is not exact.
    doubled = [{"packed/count": m["packed/count"] * 2} for m in metrics]
    assert ev.score_counting_run(_run("conveyor", truths, doubled)) == (2, 1)


def _event(kind: str, box: tuple[float, float, float, float] | None, **payload) -> CvEvent:
    return CvEvent(camera="eval", rule={"defect": "looks", "ppe_violation": "people", "spill": "hygiene"}[kind],
                   kind=kind, time_ms=0, box=box, payload=payload)  # fmt: skip


def test_quality_score_is_per_product_and_counts_intact_or_empty_flags_as_false() -> None:
    truths = [FrameTruth(products=(_product(1, 400, defective=True), _product(2, 900))) for _ in range(30)]
    bad, good = truths[0].products[0].box, truths[0].products[1].box
    events = [(22, _event("defect", bad)), (25, _event("defect", bad)), (26, _event("defect", good)),
              (27, _event("defect", (0.0, 0.0, 10.0, 10.0)))]  # fmt: skip
    score = ev.score_quality_run(_run("conveyor", truths, events=events))
    # Per product: the defective one flagged (twice: one repeat), the intact one flagged, and one event on nothing.
    assert (score.true_positives, score.false_positives, score.repeats, score.found, score.positives) == (1, 2, 1, 1, 1)
    assert score.precision == 1 / 3 and score.recall == 1.0


def test_ppe_score_judges_only_people_whose_face_was_in_clear_view() -> None:
    def person(pid: int, x: float, feet_y: float, mask: bool, height: float = 250) -> PersonTruth:
        box = (x - 40, feet_y - height, x + 40, feet_y)
        return PersonTruth(pid, box, 1.0, mask, True, "white", (x, feet_y), False, "floor")

    # Person 2 (no mask) always stands behind person 3 (nearer, in front of the head): not judgeable, not a miss.
    truths = [FrameTruth(people=(person(1, 200, 500, False), person(2, 800, 450, False), person(3, 810, 650, True, 440)))
              for _ in range(40)]  # fmt: skip
    score = ev.score_ppe_run(_run("floor", truths))
    assert (score.positives, score.found, score.recall) == (1, 0, 0.0)
    events = [(30, _event("ppe_violation", truths[0].people[0].box, attribute="mask")),
              (31, _event("ppe_violation", truths[0].people[2].box, attribute="mask"))]  # fmt: skip
    score = ev.score_ppe_run(_run("floor", truths, events=events))
    assert (score.true_positives, score.false_positives, score.recall) == (1, 1, 1.0)


def test_spill_score_wants_one_event_on_the_spill_after_it_appeared() -> None:
    spill = SpillTruth(((100.0, 500.0), (300.0, 500.0), (300.0, 600.0)), (100.0, 500.0, 300.0, 600.0), 5_000, "floor")
    truths = [FrameTruth(spill=spill if i >= 50 else None) for i in range(200)]
    on, off = (120.0, 510.0, 280.0, 590.0), (700.0, 500.0, 800.0, 600.0)
    score = ev.score_spill_run(_run("floor", truths, events=[(40, _event("spill", on)), (150, _event("spill", on)),
                                                             (160, _event("spill", off))]))  # fmt: skip
    assert (score.true_positives, score.false_positives, score.found, score.positives) == (1, 2, 1, 1)
    clean = ev.score_spill_run(_run("floor", [FrameTruth() for _ in range(50)]))
    assert (clean.positives, clean.precision, clean.recall) == (0, None, None)


def test_marking_truth_follows_the_order_packs_reach_the_zone() -> None:
    # Packs pass the reading zone (x 512..768) one after another; the third repeats the first one's code.
    plan = [(1, "A", False, False), (2, "B", True, False), (3, "A", False, False), (4, "C", False, True)]
    truths, metrics = [], []
    for i in range(170):
        products = []
        for k, (pid, text, damaged, foreign) in enumerate(plan):
            cx = -200 + (i - 30 - 25 * k) * 40
            if -150 < cx < 1430:
                products.append(_product(pid, cx, text=text, damaged=damaged, foreign=foreign))
        truths.append(FrameTruth(products=tuple(products)))
        metrics.append({})
    counted, true = ev.score_marking_run(_run("conveyor", truths, metrics))
    assert true == {"read": 3, "valid": 1, "duplicate": 1, "foreign": 1, "unreadable": 1}
    assert counted == dict.fromkeys(ev.MARKING_COUNTERS, 0)


def test_marking_truth_calls_a_repeat_of_a_foreign_code_foreign() -> None:
    # The scene plans a pack repeating an earlier pack's code as a plain repeat (`foreign` False) even when that
    # code carries another SKU's GTIN; the register judges the GTIN first, and so must the truth.
    from edge_cv.gs1 import compose
    from edge_cv.scenes.skus import SKUS, line_skus

    running = SKUS[line_skus("oatbar")[0]].gtin
    other = next(s.gtin for s in SKUS.values() if s.gtin != running)
    mine, theirs = compose(running, "SER0001"), compose(other, "SER0002")
    plan = [(1, mine, False), (2, theirs, True), (3, theirs, False), (4, mine, False)]
    truths = []
    for i in range(170):
        products = []
        for k, (pid, text, foreign) in enumerate(plan):
            cx = -200 + (i - 30 - 25 * k) * 40
            if -150 < cx < 1430:
                products.append(_product(pid, cx, text=text, foreign=foreign))
        truths.append(FrameTruth(products=tuple(products)))
    _, true = ev.score_marking_run(_run("conveyor", truths, [{} for _ in truths]))
    assert true == {"read": 4, "valid": 1, "duplicate": 1, "foreign": 2, "unreadable": 0}


# ---------------------------------------------------------------------------------------------------------------
# the proof (slow: the real pipeline over held-out scenes)


@pytest.mark.slow
def test_line_counts_are_exact_on_held_out_conveyors() -> None:
    _need_models("counting")
    score = ev.evaluate_counting(TEST_SEEDS["counting"])
    assert score.errors == 0
    assert score.crossed > 40, "the scenes must carry real traffic"
    assert score.exact_rate >= 0.99, f"exact in {score.exact}/{score.runs} runs: {score.mismatches}"


@pytest.mark.slow
def test_defect_events_reach_precision_and_recall_targets() -> None:
    _need_models("quality")
    score = ev.evaluate_quality(TEST_SEEDS["quality"])
    assert score.errors == 0 and score.positives >= 10
    assert score.precision >= 0.95 and score.recall >= 0.95, (score.precision, score.recall, score.notes)


@pytest.mark.slow
def test_mask_violations_reach_precision_and_recall_targets() -> None:
    _need_models("personnel")
    score = ev.evaluate_personnel(TEST_SEEDS["personnel"])
    assert score.errors == 0 and score.positives >= 5
    assert score.precision >= 0.95 and score.recall >= 0.95, (score.precision, score.recall, score.notes)


@pytest.mark.slow
def test_spills_are_reported_once_and_only_where_they_are() -> None:
    _need_models("sanitation")
    score = ev.evaluate_sanitation(TEST_SEEDS["sanitation"])
    assert score.errors == 0 and score.positives == 2
    assert score.precision >= 0.95 and score.recall >= 0.95, (score.precision, score.recall, score.notes)


@pytest.mark.slow
def test_marking_counters_match_the_packs_that_passed() -> None:
    _need_models("marking")
    score = ev.evaluate_marking(TEST_SEEDS["marking"])
    assert score.errors == 0 and score.truth["read"] > 20
    assert score.counted == score.truth, score.mismatches
    assert np.isclose(score.counted["read"], score.counted["valid"] + score.counted["duplicate"]
                      + score.counted["foreign"])  # fmt: skip
