#!/usr/bin/env python3
"""Edge CV per rule pipeline on this machine: frames/s per camera and the latency from a frame to its events.

Each pipeline is the reference camera of `edge_cv.evaluate` (the configuration a plant would use) over its
synthetic scene; the frames are rendered before timing starts, so the figures are the pipeline's own (motion
gate, detector, classifiers, tracker, rules), not the scene generator's or a video decoder's. Measured:
  * one camera alone: frames/s as fast as the pipeline goes, and the processing latency from handing a frame
    in to its events coming out (p50/p95 over the frames that raised events, and over all frames);
  * two cameras of the same kind at once, each in its own thread with its own pipeline: frames/s of each, which
    shows they share the CPU but neither stalls the other.
Targets (issue 5): ≥ 10 frames/s per camera for people detection with motion gating at 640 px; ≥ 25 frames/s
for counting and marking at 720p. Rules wait for evidence by design (a spill must stay still for seconds, a
mask must be missing in 6 of 10 frames): that decision time is part of the rule, not of the processing latency.

    python bench/cv.py [--frames 120] [--only counting,marking]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_cv.evaluate import models_missing, reference_camera, scene_spec  # noqa: E402
from edge_cv.pipeline import CameraParts, CameraPipeline  # noqa: E402
from edge_cv.scenes import Scene  # noqa: E402
from edge_cv.types import Frame  # noqa: E402

SEED = 1000  # a held-out scene, as in the accuracy evaluation


@dataclass(frozen=True)
class Case:
    """One benchmarked pipeline: which reference camera, at what frame size, against which target."""

    name: str
    pipeline: str
    width: int
    height: int
    target_fps: float | None
    what: str


CASES = (
    Case("people", "personnel", 640, 360, 10.0, "YOLO person + ppe-mask, motion gating, personnel rule"),
    Case("counting", "counting", 1280, 720, 25.0, "YOLO product, tracker, count line"),
    Case("marking", "marking", 1280, 720, 25.0, "YOLO product (pack presence), zxing DataMatrix, code register"),
    Case("quality", "quality", 1280, 720, None, "YOLO product + product-appearance classifier, quality rule"),
    Case("sanitation", "sanitation", 640, 360, None, "YOLO person (motion gating), spill model on the floor zone"),
)


class ProviderLog(logging.Handler):
    """Collects the 'model X runs on [providers]' lines onnx_model logs when it opens a session."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("model ") and " runs on " in record.getMessage():
            model, _, providers = record.getMessage().removeprefix("model ").partition(" runs on ")
            self.lines[model] = providers


def frames_for(case: Case, seed: int, count: int) -> tuple[Any, list[Frame]]:
    """The case's scene spec and its first `count` frames, rendered up front."""
    spec = scene_spec(case.pipeline, seed, width=case.width, height=case.height,  # type: ignore[arg-type]
                      duration_s=max(10.0, count / 10.0 + 1), **({"spill_at_s": 3.0} if case.pipeline == "sanitation"
                                                                 else {}))  # fmt: skip
    scene = Scene(spec)
    return spec, [scene.frame(i).to_frame(f"cam{seed}") for i in range(count)]


def build(case: Case, spec: Any, camera_id: str) -> CameraPipeline:
    camera = reference_camera(case.pipeline, spec)  # type: ignore[arg-type]
    return CameraPipeline("bench", camera_id, CameraParts.build(camera), sink=lambda _: None)


@dataclass
class Run:
    fps: float
    latency_ms: list[float]
    event_latency_ms: list[float]
    events: int
    gated: int


def play(pipeline: CameraPipeline, frames: list[Frame]) -> Run:
    """Process the frames as fast as possible; keep per-frame latency and that of frames with events."""
    latency, event_latency, events = [], [], 0
    started = time.perf_counter()
    for frame in frames:
        out = pipeline.process(frame)
        latency.append(out.latency_ms)
        if out.events:
            events += len(out.events)
            event_latency.append(out.latency_ms)
    elapsed = time.perf_counter() - started
    return Run(len(frames) / elapsed, latency, event_latency, events, pipeline.frames_gated)


def pct(values: list[float], q: float) -> str:
    return f"{np.percentile(values, q):6.1f}" if values else "   n/a"


def bench_case(case: Case, frames: int, warmup: int) -> list[str]:
    """One case: a camera alone, then two cameras at once."""
    spec_a, frames_a = frames_for(case, SEED, frames + warmup)
    spec_b, frames_b = frames_for(case, SEED + 1, frames + warmup)
    lines = []
    one = build(case, spec_a, "cam1")
    play(one, frames_a[:warmup])  # model sessions, background models and trackers settle
    alone = play(one, frames_a[warmup:])
    target = f"≥ {case.target_fps:.0f}" if case.target_fps else "—"
    verdict = "" if case.target_fps is None else ("  ok" if alone.fps >= case.target_fps else "  BELOW TARGET")
    lines.append(f"{case.name:<11} {case.width}x{case.height:<5} 1 camera   {alone.fps:7.1f} fps  target {target:<5}"
                 f"{verdict}")  # fmt: skip
    lines.append(f"{'':<11} latency frame→events p50 {pct(alone.event_latency_ms, 50)} ms  p95 "
                 f"{pct(alone.event_latency_ms, 95)} ms ({len(alone.event_latency_ms)} frames with events); all frames "
                 f"p50 {pct(alone.latency_ms, 50)} p95 {pct(alone.latency_ms, 95)} ms; gated {alone.gated}/{frames}")  # fmt: skip

    pair = [build(case, spec_a, "cam1"), build(case, spec_b, "cam2")]
    play(pair[0], frames_a[:warmup])
    play(pair[1], frames_b[:warmup])
    results: list[Run | None] = [None, None]

    def worker(k: int, pipeline: CameraPipeline, data: list[Frame]) -> None:
        results[k] = play(pipeline, data)

    threads = [threading.Thread(target=worker, args=(k, p, f[warmup:]), name=f"bench-cam{k + 1}")
               for k, (p, f) in enumerate(zip(pair, (frames_a, frames_b)))]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    fps = [r.fps for r in results if r is not None]
    lines.append(f"{'':<11} 2 cameras in 2 threads: {fps[0]:.1f} + {fps[1]:.1f} fps (each camera; "
                 f"p95 latency {pct(results[0].latency_ms, 95).strip()} / {pct(results[1].latency_ms, 95).strip()} ms)")  # type: ignore[union-attr]  # fmt: skip
    return lines


def main(argv: list[str] | None = None) -> int:
    """Print frames/s and latency per rule pipeline."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=120, help="frames timed per camera (default 120)")
    ap.add_argument("--warmup", type=int, default=20, help="frames before timing starts (default 20)")
    ap.add_argument("--only", default="", help="comma list of: " + ", ".join(c.name for c in CASES))
    args = ap.parse_args(argv)
    wanted = {n.strip() for n in args.only.split(",") if n.strip()}
    providers = ProviderLog()
    log = logging.getLogger("edge_cv.detectors.onnx_model")
    log.addHandler(providers)
    log.setLevel(logging.INFO)
    import cv2
    import onnxruntime as ort

    print(f"edge CV pipelines, {os.cpu_count()} CPUs, onnxruntime {ort.__version__} (available providers: "
          f"{', '.join(ort.get_available_providers())}), OpenCV {cv2.__version__}; {args.frames} frames timed")  # fmt: skip
    for case in CASES:
        if wanted and case.name not in wanted:
            continue
        missing = models_missing(case.pipeline)  # type: ignore[arg-type]
        if missing:
            print(f"{case.name:<11} skipped: missing {', '.join(missing)} (python -m edge_cv.models.build)")
            continue
        print(f"{case.name:<11} {case.what}")
        for line in bench_case(case, args.frames, args.warmup):
            print(line, flush=True)
    for model, used in sorted(providers.lines.items()):
        print(f"providers used: {model} → {used}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
