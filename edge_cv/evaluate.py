"""Accuracy of the rule pipelines on held-out synthetic scenes, scored against the generator's ground truth.

Each pipeline runs a *reference camera* — the configuration a plant would use for that job, kept here so the demo
and the benchmarks use the same ones (`reference_camera`) — through `CameraPipeline.process` in this thread, frame
by frame, on scenes whose seeds the shipped models never saw (they trained on seeds < 1000, see
edge_cv/models/build.py), and compares what the rules said with what the scene holds:

  counting    the counter's increase between two quiet frames (no product near the count line) against the
              products that truly crossed in between; a run is exact when they are equal;
  quality     `defect` events matched to products by box overlap: precision over events, recall over defective
              products that were fully in view long enough to be judged;
  personnel   mask `ppe_violation` events matched to people (one person = one visit) by box overlap: precision over
              events, recall over visits without a mask whose face was in clear view long enough to be judged;
  sanitation  per scene: a `spill` event after the spill appeared, on it (recall over spill scenes), and no spill
              event anywhere else, spill-free scenes included (precision over events);
  marking     the code counters' increase between two quiet frames (no pack or code in the reading zone) against
              the truth of the packs that passed the zone in between: read, valid, duplicate, foreign, unreadable.

    python -m edge_cv.evaluate --seeds 1000-1019 [--pipelines counting,quality] [--counting-detector blob]

Quiet frames are used because a counter is only comparable with the truth when nothing is half-way through being
counted; they are chosen from the truth alone, before looking at what the pipeline said.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from edge_cv.config import CameraConfig
from edge_cv.gs1 import Gs1Error, parse
from edge_cv.pipeline import CameraParts, CameraPipeline
from edge_cv.scenes import FrameTruth, SceneSpec, generate, scene_layout
from edge_cv.scenes.skus import SKUS, line_skus
from edge_cv.types import Box, CvEvent

Pipeline = Literal["counting", "quality", "personnel", "sanitation", "marking"]
PIPELINES: tuple[Pipeline, ...] = ("counting", "quality", "personnel", "sanitation", "marking")

# The shipped models trained on seeds 0..999 (edge_cv/models/build.py: TRAIN_SEEDS, "training < 1000 ≤ held-out").
FIRST_HELD_OUT_SEED = 1000

DETECTOR_MODEL = "plantbus-det-320.onnx"
PRODUCT_MODEL = "product-appearance.onnx"
MASK_MODEL = "ppe-mask.onnx"
MODELS_NEEDED: dict[str, tuple[str, ...]] = {
    "counting": (DETECTOR_MODEL,),
    "quality": (DETECTOR_MODEL, PRODUCT_MODEL),
    "personnel": (DETECTOR_MODEL, MASK_MODEL),
    "sanitation": (DETECTOR_MODEL,),
    "marking": (DETECTOR_MODEL,),
}

# Reference camera settings, and why.
# The reading zone of a verifier: the middle of the belt, as wide as this share of the frame. Packs are judged
# while their centre is in it; narrower than the gap between two pack centres, so the zone is empty now and then.
READING_ZONE_WIDTH = 0.2
# The inspection zone of the quality camera leaves this share of the width out on each side, so a product whose
# centre is inside is wholly in view (the widest pack is about a quarter of the frame width).
INSPECTION_MARGIN = 0.15
# YOLO confidence: the shipped detector's cards give precision/recall at 0.4.
DETECTOR_CONFIDENCE = 0.4
# Quality: 3 defective verdicts among a product's last 5 (one glare frame never raises a defect).
QUALITY_WINDOW, QUALITY_MIN_DEFECTS = 5, 3
# PPE: 8 sure "no mask" verdicts (score ≥ 0.9) among a person's last 10 (a second at 10 frames/s). The shipped
# detector now and then puts a box across two people standing close; the mask classifier is unsure on such a
# box (0.5–0.85), while a bare face in a proper box scores ≥ 0.98. Measured on seeds 1000-1007: 6 of 10 at 0.5
# gave 5 false alarms in 23; these settings none, for one missed person in 18.
PPE_WINDOW, PPE_MIN_BAD, PPE_MIN_SCORE = 10, 8, 0.9
# A person's track coasts at most half a second (5 frames) unseen: a track left behind by someone who walked off
# must not take over the next stray box near the bench (the default 15 frames let it).
PEOPLE_MAX_MISSES = 5
# Spill: still for 8 s; at least 1500 px² at 720p (a puddle, not a crumb).
SPILL_PERSIST_S, SPILL_MIN_AREA = 8.0, 1500.0

# Packs run in single file on a belt, never overlapping: two product boxes sharing more than half of the smaller
# one are parts of one pack (the shipped detector now and then answers a dark bar with two overlapping part boxes,
# in alternate frames; tracked apart, the second part crossed the count line too: seed 1004). Used by the
# counting and marking cameras, which count tracks.
CONVEYOR_MERGE_OVERLAP = 0.5


# Scoring constants.
MATCH_IOU = 0.4  # an event box and a truth box overlapping this much are the same object
SETTLE_S = 2.0  # the first seconds of a run are the camera starting (background models learn): not scored
LINE_CLEARANCE_PX = 80.0  # a quiet frame for counting has no product centre this close to the count line (720p)
MIN_JUDGED_FRAMES = 8  # a product or person must be in clear view this many frames to be counted as judged


def parse_seeds(text: str) -> list[int]:
    """`1000-1019`, `1000,1003,1007` or a mix, as a sorted list of seeds."""
    seeds: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise ValueError(f"seed range {part!r}: write N, N-M or a comma-separated list of those") from None
        if last < first:
            raise ValueError(f"seed range {part!r} runs backwards")
        seeds.update(range(first, last + 1))
    if not seeds:
        raise ValueError("no seeds given")
    return sorted(seeds)


def check_held_out(seeds: Iterable[int]) -> list[int]:
    """The seeds, refusing any the shipped models were trained on."""
    seeds = list(seeds)
    trained = [s for s in seeds if s < FIRST_HELD_OUT_SEED]
    if trained:
        raise ValueError(
            f"seeds {trained[:5]} are training seeds of the shipped models (< {FIRST_HELD_OUT_SEED}); use held-out "
            f"seeds ≥ {FIRST_HELD_OUT_SEED}"
        )
    return seeds


def models_missing(pipeline: Pipeline) -> list[str]:
    """Model files the pipeline's reference camera needs and cannot find (working directory, edge_cv/models/)."""
    from edge_cv.detectors.onnx_model import resolve_model_path

    missing = []
    for name in MODELS_NEEDED[pipeline]:
        try:
            resolve_model_path(name)
        except ValueError:
            missing.append(name)
    return missing


# ---------------------------------------------------------------------------------------------------------------
# scenes and reference cameras


def scene_spec(pipeline: Pipeline, seed: int, **overrides: Any) -> SceneSpec:
    """The held-out scene a pipeline is judged on for one seed: both lines, all SKUs and both belt directions
    take turns over the seeds; the floor scenes have three people, masks off for 40 %, and (sanitation) a spill
    in every other scene."""
    lines = ("oatbar", "salad")
    line = lines[seed % 2]
    skus = line_skus(line)
    base: dict[str, Any] = {"seed": seed, "fps": 10.0, "width": 1280, "height": 720}
    if pipeline in ("counting", "quality", "marking"):
        base |= {
            "kind": "conveyor", "line": line, "sku": skus[(seed // 2) % len(skus)], "duration_s": 30.0,
            "direction": ("ltr", "rtl")[(seed // 2) % 2],
        }  # fmt: skip
        if pipeline == "quality":
            base["defect_rate"] = 0.3
        if pipeline == "marking":
            base |= {"duplicate_rate": 0.1, "damaged_rate": 0.06, "foreign_rate": 0.05}
    elif pipeline == "personnel":
        base |= {"kind": "floor", "width": 640, "height": 360, "people": 3, "mask_off_rate": 0.4, "duration_s": 40.0}
    else:
        base |= {"kind": "floor", "width": 640, "height": 360, "people": 3, "duration_s": 30.0,
                 "spill_at_s": 6.0 if seed % 2 == 0 else None}
    base.update(overrides)
    return SceneSpec(**base)


def source_for(spec: SceneSpec) -> str:
    """The `synthetic:` camera source that plays `spec` (options that differ from the scene defaults)."""
    defaults = SceneSpec(kind=spec.kind)
    options = []
    for name in type(spec).model_fields:
        if name == "kind":
            continue
        value = getattr(spec, name)
        if value == getattr(defaults, name) or value is None or isinstance(value, tuple):
            continue
        options.append(f"{name}={value}")
    return f"synthetic:{spec.kind}" + ("?" + "&".join(options) if options else "")


def _polygon(points: Iterable[tuple[float, float]]) -> list[list[float]]:
    return [[round(float(x), 1), round(float(y), 1)] for x, y in points]


def reference_camera_dict(
    pipeline: Pipeline, spec: SceneSpec, counting_detector: Literal["yolo", "blob"] = "yolo"
) -> dict[str, Any]:
    """The camera a plant would configure for one rule pipeline over the scene's view, as YAML-shaped data
    (`cv.nodes.<node>.cameras.<camera>`). Model files are the shipped ones in edge_cv/models/."""
    layout = scene_layout(spec)
    w = spec.width
    camera: dict[str, Any] = {"source": source_for(spec), "fps": spec.fps, "rules": {}}
    if pipeline in ("counting", "quality", "marking"):
        if pipeline == "counting" and counting_detector == "blob":
            # No model: background subtraction, products at least a fifth of the smallest pack's area.
            camera["detector"] = {"type": "blob", "label": "product", "min_area": int(6000 * (spec.height / 720) ** 2)}
        else:
            camera["detector"] = {"type": "yolo", "model": DETECTOR_MODEL, "keep": ["product"],
                                  "confidence": DETECTOR_CONFIDENCE}  # fmt: skip
        # A running belt moves everywhere in view all the time: gating would never skip a frame.
        camera["motion"] = {"enabled": False}
        belt = layout.zones["belt"]
        camera["zones"] = {"belt": {"polygon": _polygon(belt), "kind": "conveyor"}}
        in_direction = "right" if spec.direction == "ltr" else "left"
        if pipeline in ("counting", "marking"):
            camera["tracker"] = {"merge_overlap": CONVEYOR_MERGE_OVERLAP}
        if pipeline == "counting":
            camera["lines"] = {"exit": {"points": _polygon(layout.lines["centre"]), "in_direction": in_direction}}
            camera["rules"]["packed"] = {"type": "counting", "line": "exit", "labels": ["product"],
                                         "directions": ["in"], "emit_events": True}  # fmt: skip
        elif pipeline == "quality":
            # Products are judged only where they are wholly in view: a pack cut by the frame edge looks torn.
            x0, x1 = w * INSPECTION_MARGIN, w * (1 - INSPECTION_MARGIN)
            y0, y1 = belt[0][1], belt[2][1]
            camera["zones"]["inspection"] = {"polygon": _polygon([(x0, y0), (x1, y0), (x1, y1), (x0, y1)]),
                                             "kind": "conveyor"}  # fmt: skip
            camera["classifiers"] = [{"model": PRODUCT_MODEL, "attribute": "appearance", "apply_to": ["product"]}]
            camera["rules"]["looks"] = {"type": "quality", "attribute": "appearance", "defect_labels": ["defective"],
                                        "labels": ["product"], "zone": "inspection", "window": QUALITY_WINDOW,
                                        "min_defects": QUALITY_MIN_DEFECTS}  # fmt: skip
        else:
            x0, x1 = w * (0.5 - READING_ZONE_WIDTH / 2), w * (0.5 + READING_ZONE_WIDTH / 2)
            y0, y1 = belt[0][1], belt[2][1]
            camera["zones"]["reading"] = {"polygon": _polygon([(x0, y0), (x1, y0), (x1, y1), (x0, y1)]),
                                          "kind": "reading"}  # fmt: skip
            camera["rules"]["codes"] = {"type": "marking", "gtins": [SKUS[spec.sku or line_skus(spec.line)[0]].gtin],
                                        "zone": "reading", "presence": "track", "pack_labels": ["product"]}  # fmt: skip
        return camera
    # Motion gating (the default) skips the detector while the floor is still; crops around motion are fed to the
    # model at the whole frame's scale (roi_scale: frame), the scale the shipped detector was trained on.
    camera["detector"] = {"type": "yolo", "model": DETECTOR_MODEL, "keep": ["person"],
                          "confidence": DETECTOR_CONFIDENCE}  # fmt: skip
    camera["tracker"] = {"max_misses": PEOPLE_MAX_MISSES}
    camera["zones"] = {
        "floor": {"polygon": _polygon(layout.zones["floor"]), "kind": "floor"},
        "workstation": {"polygon": _polygon(layout.zones["workstation"]), "kind": "work", "operation": "sleeving"},
    }
    if pipeline == "personnel":
        # The card of ppe-mask: it judges the whole person box, not a head crop.
        camera["classifiers"] = [{"model": MASK_MODEL, "attribute": "mask", "apply_to": ["person"], "crop": "box"}]
        camera["rules"]["people"] = {"type": "personnel", "labels": ["person"], "zones": ["floor", "workstation"],
                                     "dwell_min_s": 5,
                                     "ppe": {"required": {"mask": "mask"}, "window": PPE_WINDOW,
                                             "min_bad": PPE_MIN_BAD, "min_score": PPE_MIN_SCORE}}  # fmt: skip
    else:
        camera["rules"]["hygiene"] = {"type": "sanitation", "zone": "floor", "people": ["person"],
                                      "spill": {"persist_s": SPILL_PERSIST_S,
                                                "min_area": SPILL_MIN_AREA * (spec.height / 720) ** 2}}  # fmt: skip
    return camera


def reference_camera(
    pipeline: Pipeline, spec: SceneSpec, counting_detector: Literal["yolo", "blob"] = "yolo"
) -> CameraConfig:
    """The reference camera of a pipeline, validated."""
    return CameraConfig.model_validate(reference_camera_dict(pipeline, spec, counting_detector))


# ---------------------------------------------------------------------------------------------------------------
# running a scene


@dataclass(slots=True)
class SceneRun:
    """What a camera said over a scene, next to the truth of every frame."""

    spec: SceneSpec
    truth: list[FrameTruth] = field(default_factory=list)
    events: list[tuple[int, CvEvent]] = field(default_factory=list)  # (frame index, event)
    metrics: list[dict[str, int | float]] = field(default_factory=list)  # cumulative rule metrics after each frame
    seconds: float = 0.0
    errors: int = 0


def run_scene(camera: CameraConfig, spec: SceneSpec, camera_id: str = "eval") -> SceneRun:
    """Play the scene through a fresh pipeline of `camera`, in this thread; keep events, metrics and truth."""
    pipeline = CameraPipeline("eval", camera_id, CameraParts.build(camera), sink=lambda _: None)
    run = SceneRun(spec)
    metrics: dict[str, int | float] = {}
    started = time.perf_counter()
    for scene_frame in generate(spec):
        out = pipeline.process(scene_frame.to_frame(camera_id))
        metrics.update(out.metrics)  # only changed metrics come out: keep the running picture
        run.metrics.append(dict(metrics))
        run.truth.append(scene_frame.truth)
        run.events.extend((scene_frame.index, e) for e in out.events)
    run.seconds = time.perf_counter() - started
    run.errors = pipeline.errors
    return run


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _match(box: Box | None, candidates: Iterable[tuple[int, Box]]) -> int | None:
    """The id of the candidate box overlapping `box` best, at least MATCH_IOU."""
    if box is None:
        return None
    best, best_iou = None, MATCH_IOU
    for cid, cbox in candidates:
        v = iou(box, cbox)
        if v >= best_iou:
            best, best_iou = cid, v
    return best


def _settle_frames(spec: SceneSpec) -> int:
    return int(round(SETTLE_S * spec.fps))


def _events(run: SceneRun, kind: str) -> list[tuple[int, CvEvent]]:
    return [(i, e) for i, e in run.events if e.kind == kind]


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


@dataclass(slots=True)
class DetectionScore:
    """Precision and recall of one pipeline's events over some scenes, per object (a product, a person's visit,
    a scene's spill): an object flagged by several events counts once, and the extra events are `repeats`."""

    pipeline: str
    scenes: int = 0
    true_positives: int = 0  # truly bad objects flagged
    false_positives: int = 0  # good objects flagged, plus events on no object at all
    repeats: int = 0  # further events on an object already flagged (an alarm raised twice)
    positives: int = 0  # truly bad objects that were in view long enough to be judged
    found: int = 0  # of those, how many raised an event
    seconds: float = 0.0
    errors: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def precision(self) -> float | None:
        return _ratio(self.true_positives, self.true_positives + self.false_positives)

    @property
    def recall(self) -> float | None:
        return _ratio(self.found, self.positives)

    def judge(self, judged: Sequence[int], flagged: set[int], seed: int, missed: str) -> None:
        """Recall over the truly bad objects in clear view (`judged`): which of them raised an event; each one
        missed is noted as `seed <seed>: <missed with {id}>`."""
        self.positives = len(judged)
        self.found = sum(1 for oid in judged if oid in flagged)
        self.notes += [f"seed {seed}: " + missed.format(id=oid) for oid in judged if oid not in flagged]

    def add(self, other: DetectionScore) -> None:
        self.scenes += other.scenes
        self.true_positives += other.true_positives
        self.false_positives += other.false_positives
        self.repeats += other.repeats
        self.positives += other.positives
        self.found += other.found
        self.seconds += other.seconds
        self.errors += other.errors
        self.notes += other.notes


# ---------------------------------------------------------------------------------------------------------------
# counting


@dataclass(slots=True)
class CountingScore:
    """Line counts per run: the counter's increase against the true crossings between two quiet frames."""

    runs: int = 0
    exact: int = 0
    counted: int = 0
    crossed: int = 0
    seconds: float = 0.0
    errors: int = 0
    mismatches: list[tuple[int, int, int]] = field(default_factory=list)  # (seed, counted, true)

    @property
    def exact_rate(self) -> float | None:
        return _ratio(self.exact, self.runs)


def _count_quiet(spec: SceneSpec, truth: FrameTruth) -> bool:
    line_x = spec.width / 2
    clearance = LINE_CLEARANCE_PX * spec.scale
    return all(abs((p.box[0] + p.box[2]) / 2 - line_x) > clearance for p in truth.products)


def _quiet_span(run: SceneRun, quiet: Any) -> tuple[int, int] | None:
    """The first quiet frame after the settling time and the last quiet frame of the run."""
    start = _settle_frames(run.spec)
    frames = [i for i in range(start, len(run.truth)) if quiet(run.spec, run.truth[i])]
    if len(frames) < 2:
        return None
    return frames[0], frames[-1]


def score_counting_run(run: SceneRun, rule: str = "packed") -> tuple[int, int]:
    """(counted, truly crossed) between the run's first and last quiet frames."""
    span = _quiet_span(run, _count_quiet)
    if span is None:
        raise ValueError(f"scene seed {run.spec.seed} has no two quiet frames to count between")
    a, b = span
    key = f"{rule}/count"
    counted = int(run.metrics[b].get(key, 0)) - int(run.metrics[a].get(key, 0))
    crossed = run.truth[b].crossed_total - run.truth[a].crossed_total
    return counted, crossed


def evaluate_counting(seeds: Sequence[int], counting_detector: Literal["yolo", "blob"] = "yolo") -> CountingScore:
    """Exact-count rate of the counting reference camera over held-out scenes."""
    score = CountingScore()
    for seed in check_held_out(seeds):
        spec = scene_spec("counting", seed)
        run = run_scene(reference_camera("counting", spec, counting_detector), spec)
        counted, crossed = score_counting_run(run)
        score.runs += 1
        score.counted += counted
        score.crossed += crossed
        score.seconds += run.seconds
        score.errors += run.errors
        if counted == crossed:
            score.exact += 1
        else:
            score.mismatches.append((seed, counted, crossed))
    return score


# ---------------------------------------------------------------------------------------------------------------
# quality


def _inspected(spec: SceneSpec, p: Any) -> bool:
    """Whether the quality camera judges the product in this frame: wholly in view, centre in the inspection zone."""
    cx = (p.box[0] + p.box[2]) / 2
    return p.visible >= 0.99 and spec.width * INSPECTION_MARGIN <= cx <= spec.width * (1 - INSPECTION_MARGIN)


def _flag(score: DetectionScore, flagged: set[int], oid: int | None, bad: bool, where: str, what: str) -> None:
    """Count one event on object `oid` (None: on nothing) into the score."""
    if oid is not None and oid in flagged:
        score.repeats += 1
        return
    if oid is not None:
        flagged.add(oid)
    if bad:
        score.true_positives += 1
    else:
        score.false_positives += 1
        score.notes.append(f"{where}: event on {what}")


def score_quality_run(run: SceneRun, rule: str = "looks") -> DetectionScore:
    """Defect events against defective products."""
    score = DetectionScore("quality", scenes=1, seconds=run.seconds, errors=run.errors)
    inspected: dict[int, int] = {}
    defective: dict[int, bool] = {}
    for truth in run.truth:
        for p in truth.products:
            defective[p.id] = p.defective
            if _inspected(run.spec, p):
                inspected[p.id] = inspected.get(p.id, 0) + 1
    flagged: set[int] = set()
    for index, event in _events(run, "defect"):
        if event.rule != rule:
            continue
        pid = _match(event.box, ((p.id, p.box) for p in run.truth[index].products))
        _flag(score, flagged, pid, pid is not None and defective[pid], f"seed {run.spec.seed} frame {index}",
              "nothing" if pid is None else f"intact product {pid}")  # fmt: skip
    judged = [pid for pid, n in inspected.items() if n >= MIN_JUDGED_FRAMES and defective[pid]]
    score.judge(judged, flagged, run.spec.seed, "defective product {id} raised no defect event")
    return score


def _evaluate_events(
    pipeline: Pipeline, scorer: Callable[[SceneRun], DetectionScore], seeds: Sequence[int]
) -> DetectionScore:
    """Run the pipeline's reference camera over the held-out scene of each seed and add up the scores."""
    total = DetectionScore(pipeline)
    for seed in check_held_out(seeds):
        spec = scene_spec(pipeline, seed)
        total.add(scorer(run_scene(reference_camera(pipeline, spec), spec)))
    return total


def evaluate_quality(seeds: Sequence[int]) -> DetectionScore:
    """Defect-event precision and recall of the quality reference camera over held-out scenes."""
    return _evaluate_events("quality", score_quality_run, seeds)


# ---------------------------------------------------------------------------------------------------------------
# personnel (PPE: mask)


def _face_clear(person: Any, others: Iterable[Any]) -> bool:
    """Whole person in the frame, and no one standing in front (nearer the camera) over the head."""
    if person.visible < 0.99:
        return False
    x1, y1, x2, y2 = person.box
    head = (x1, y1, x2, y1 + 0.3 * (y2 - y1))
    for o in others:
        if o.id != person.id and o.feet[1] > person.feet[1]:
            if min(head[2], o.box[2]) > max(head[0], o.box[0]) and min(head[3], o.box[3]) > max(head[1], o.box[1]):
                return False
    return True


def score_ppe_run(run: SceneRun, rule: str = "people", attribute: str = "mask") -> DetectionScore:
    """Mask violation events against people without a mask (one person = one visit to the floor)."""
    score = DetectionScore("personnel", scenes=1, seconds=run.seconds, errors=run.errors)
    settle = _settle_frames(run.spec)
    clear: dict[int, int] = {}
    masked: dict[int, bool] = {}
    for truth in run.truth:
        for p in truth.people:
            masked[p.id] = p.mask
    for truth in run.truth[settle:]:
        for p in truth.people:
            if _face_clear(p, truth.people):
                clear[p.id] = clear.get(p.id, 0) + 1
    flagged: set[int] = set()
    for index, event in _events(run, "ppe_violation"):
        if event.rule != rule or event.payload.get("attribute") != attribute:
            continue
        pid = _match(event.box, ((p.id, p.box) for p in run.truth[index].people))
        _flag(score, flagged, pid, pid is not None and not masked[pid], f"seed {run.spec.seed} frame {index}",
              "nothing" if pid is None else f"masked person {pid}")  # fmt: skip
    judged = [pid for pid, n in clear.items() if n >= MIN_JUDGED_FRAMES and not masked[pid]]
    score.judge(judged, flagged, run.spec.seed, "person {id} without a mask raised no violation")
    return score


def evaluate_personnel(seeds: Sequence[int]) -> DetectionScore:
    """Mask-violation precision and recall of the personnel reference camera over held-out scenes."""
    return _evaluate_events("personnel", score_ppe_run, seeds)


# ---------------------------------------------------------------------------------------------------------------
# sanitation (spill)


def score_spill_run(run: SceneRun, rule: str = "hygiene") -> DetectionScore:
    """Spill events against the scene's spill: one true event after it appeared, on it; nothing else."""
    score = DetectionScore("sanitation", scenes=1, seconds=run.seconds, errors=run.errors)
    spill = next((t.spill for t in reversed(run.truth) if t.spill is not None), None)
    if spill is not None:
        score.positives = 1
    for index, event in _events(run, "spill"):
        if event.rule != rule:
            continue
        on_spill = (
            spill is not None
            and run.truth[index].spill is not None
            and event.box is not None
            and min(event.box[2], spill.box[2]) > max(event.box[0], spill.box[0])
            and min(event.box[3], spill.box[3]) > max(event.box[1], spill.box[1])
        )
        if on_spill and score.found:
            score.repeats += 1
        elif on_spill:
            score.true_positives += 1
            score.found = 1
            delay = (event.time_ms - spill.appeared_ms) / 1000.0
            score.notes.append(f"seed {run.spec.seed}: spill reported {delay:.1f} s after it appeared")
        else:
            score.false_positives += 1
            score.notes.append(f"seed {run.spec.seed} frame {index}: spill event where there is no spill, "
                               f"at {tuple(round(v) for v in event.box or ())}")  # fmt: skip
    if spill is not None and not score.found:
        score.notes.append(f"seed {run.spec.seed}: the spill was never reported")
    return score


def evaluate_sanitation(seeds: Sequence[int]) -> DetectionScore:
    """Spill precision and recall of the sanitation reference camera over held-out scenes (every other one
    without a spill)."""
    return _evaluate_events("sanitation", score_spill_run, seeds)


# ---------------------------------------------------------------------------------------------------------------
# marking

MARKING_COUNTERS = ("read", "valid", "duplicate", "foreign", "unreadable")


def _reading_zone(spec: SceneSpec) -> tuple[float, float]:
    w = spec.width
    return w * (0.5 - READING_ZONE_WIDTH / 2), w * (0.5 + READING_ZONE_WIDTH / 2)


def _marking_quiet(spec: SceneSpec, truth: FrameTruth) -> bool:
    x0, x1 = _reading_zone(spec)
    for p in truth.products:
        points = [(p.box[0] + p.box[2]) / 2]
        if p.code_box is not None:
            points.append((p.code_box[0] + p.code_box[2]) / 2)
        if any(x0 <= x <= x1 for x in points):
            return False
    return True


@dataclass(slots=True)
class MarkingScore:
    """Code counters against the truth of the packs that passed the reading zone."""

    runs: int = 0
    exact_runs: int = 0
    counted: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MARKING_COUNTERS, 0))
    truth: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MARKING_COUNTERS, 0))
    seconds: float = 0.0
    errors: int = 0
    mismatches: list[str] = field(default_factory=list)


def score_marking_run(run: SceneRun, rule: str = "codes") -> tuple[dict[str, int], dict[str, int]]:
    """(counted, true) code counters between the run's first and last quiet frames."""
    spec = run.spec
    span = _quiet_span(run, _marking_quiet)
    if span is None:
        raise ValueError(f"scene seed {spec.seed} has no two quiet frames for the reading zone")
    a, b = span
    x0, x1 = _reading_zone(spec)
    # The order in which packs reach the zone, and which codes the camera saw before `a` (their repeats are
    # duplicates, also when the first sighting was before the scored span).
    seen_codes: set[str] = set()
    true = dict.fromkeys(MARKING_COUNTERS, 0)
    reached: dict[int, int] = {}
    products: dict[int, Any] = {}
    for i, truth in enumerate(run.truth[: b + 1]):
        for p in truth.products:
            cx = (p.box[0] + p.box[2]) / 2
            code_in = p.code_box is not None and x0 <= (p.code_box[0] + p.code_box[2]) / 2 <= x1
            if (x0 <= cx <= x1 or code_in) and p.id not in reached:
                reached[p.id] = i
                products[p.id] = p
    running_gtin = SKUS[spec.sku or line_skus(spec.line)[0]].gtin
    for pid in sorted(reached, key=lambda k: (reached[k], k)):
        p = products[pid]
        scored = a < reached[pid] <= b
        if p.code_damaged:
            status = "unreadable"
        elif p.foreign or _code_gtin(p.code_text) not in (None, running_gtin):
            status = "foreign"
        elif p.code_text in seen_codes:
            status = "duplicate"
        else:
            status = "valid"
        if not p.code_damaged and not p.foreign:
            seen_codes.add(p.code_text)
        if scored:
            true[status] += 1
            if status != "unreadable":
                true["read"] += 1
    counted = {c: int(run.metrics[b].get(f"{rule}/codes/{c}", 0)) - int(run.metrics[a].get(f"{rule}/codes/{c}", 0))
               for c in MARKING_COUNTERS}  # fmt: skip
    return counted, true


def _code_gtin(text: str) -> str | None:
    """The GTIN a code carries. The scene marks `foreign` only on the pack its generator gave another SKU's GTIN;
    a later pack repeating that pack's code carries the same foreign GTIN but is planned as a plain repeat
    (`foreign` False), and the register rightly calls it foreign: the truth is what the code says. None when the
    text is no GS1 element string (hand-made truths in tests)."""
    try:
        return parse(text).gtin
    except Gs1Error:
        return None


def evaluate_marking(seeds: Sequence[int]) -> MarkingScore:
    """Code counters of the marking reference camera against the truth over held-out scenes."""
    score = MarkingScore()
    for seed in check_held_out(seeds):
        spec = scene_spec("marking", seed)
        run = run_scene(reference_camera("marking", spec), spec)
        counted, true = score_marking_run(run)
        score.runs += 1
        score.seconds += run.seconds
        score.errors += run.errors
        for c in MARKING_COUNTERS:
            score.counted[c] += counted[c]
            score.truth[c] += true[c]
        if counted == true:
            score.exact_runs += 1
        else:
            diff = ", ".join(f"{c} {counted[c]} vs {true[c]}" for c in MARKING_COUNTERS if counted[c] != true[c])
            score.mismatches.append(f"seed {seed}: {diff}")
    return score


# ---------------------------------------------------------------------------------------------------------------
# the table


TARGETS = {"counting": 0.99, "quality": 0.95, "personnel": 0.95, "sanitation": 0.95}


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def report(seeds: Sequence[int], pipelines: Sequence[Pipeline], counting_detector: Literal["yolo", "blob"] = "yolo",
           verbose: bool = False) -> str:  # fmt: skip
    """Evaluate the pipelines and format the accuracy table."""
    rows = [f"held-out seeds {seeds[0]}..{seeds[-1]} ({len(seeds)} scenes per pipeline; conveyors 1280x720, floors 640x360; 10 frames/s)",
            f"{'pipeline':<11} {'figure':<34} {'measured':>12} {'target':>8}  {'ok':<3} {'s/scene':>7}"]  # fmt: skip
    notes: list[str] = []

    def row(name: str, figure: str, value: float | None, target: float | None, seconds: float, n: int) -> None:
        ok = "-" if target is None else ("yes" if value is not None and value >= target else "NO")
        tgt = "" if target is None else f"≥ {target:.2f}"
        rows.append(f"{name:<11} {figure:<34} {_pct(value):>12} {tgt:>8}  {ok:<3} {seconds / max(1, n):>7.1f}")

    for pipeline in pipelines:
        missing = models_missing(pipeline)
        if missing and not (pipeline == "counting" and counting_detector == "blob"):
            rows.append(f"{pipeline:<11} skipped: missing {', '.join(missing)} (python -m edge_cv.models.build)")
            continue
        if pipeline == "counting":
            c = evaluate_counting(seeds, counting_detector)
            row("counting", f"exact runs ({counting_detector}) {c.exact}/{c.runs}", c.exact_rate, TARGETS["counting"],
                c.seconds, c.runs)  # fmt: skip
            rows.append(f"{'':<11} counted {c.counted}, truly crossed {c.crossed}")
            notes += [f"counting seed {s}: counted {n}, truly crossed {t}" for s, n, t in c.mismatches]
        elif pipeline == "marking":
            m = evaluate_marking(seeds)
            exact = _ratio(m.exact_runs, m.runs)
            row("marking", f"runs with all counters exact {m.exact_runs}/{m.runs}", exact, None, m.seconds, m.runs)
            for cname in MARKING_COUNTERS:
                rows.append(f"{'':<11} {cname:<12} counted {m.counted[cname]:>5}   true {m.truth[cname]:>5}")
            notes += [f"marking {x}" for x in m.mismatches]
        else:
            fn = {"quality": evaluate_quality, "personnel": evaluate_personnel, "sanitation": evaluate_sanitation}
            s = fn[pipeline](seeds)
            label = {"quality": "defect", "personnel": "mask violation", "sanitation": "spill"}[pipeline]
            row(pipeline, f"{label} precision {s.true_positives}/{s.true_positives + s.false_positives}",
                s.precision, TARGETS[pipeline], s.seconds, s.scenes)  # fmt: skip
            row("", f"{label} recall {s.found}/{s.positives}", s.recall, TARGETS[pipeline], 0.0, 1)
            rows.append(f"{'':<11} repeated events on an object already flagged: {s.repeats}")
            notes += [f"{pipeline} {n}" for n in s.notes if verbose or "reported" not in n]
    out = "\n".join(rows)
    if notes:
        out += "\n\n" + "\n".join(notes)
    return out


def main(argv: list[str] | None = None) -> int:
    """`python -m edge_cv.evaluate --seeds 1000-1019`: print the accuracy table."""
    ap = argparse.ArgumentParser(prog="python -m edge_cv.evaluate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="1000-1019", help="held-out seeds: N-M or a comma list (default 1000-1019)")
    ap.add_argument("--pipelines", default=",".join(PIPELINES), help="comma list of " + ", ".join(PIPELINES))
    ap.add_argument("--counting-detector", choices=["yolo", "blob"], default="yolo")
    ap.add_argument("-v", "--verbose", action="store_true", help="also list each spill's delay")
    args = ap.parse_args(argv)
    try:
        seeds = check_held_out(parse_seeds(args.seeds))
        pipelines = [p.strip() for p in args.pipelines.split(",") if p.strip()]
        unknown = [p for p in pipelines if p not in PIPELINES]
        if unknown:
            raise ValueError(f"unknown pipeline(s) {unknown}; choose from {', '.join(PIPELINES)}")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report(seeds, pipelines, args.counting_detector, args.verbose))  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main())
