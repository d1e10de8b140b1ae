#!/usr/bin/env python3
"""Detection core measured on this machine: YOLO-format decode + NMS, the non-model part of a YOLO frame
(letterbox, tensor, decode, NMS, mapping), HOG people per 640-px frame, background-subtraction blobs per 720p
frame, the motion gate per frame, the tracker with 50 objects, and face blurring of a 720p snapshot.

Model inference itself is not measured here (no YOLO weights ship with Plantbus; see ENVIRONMENT-NOTES for
onnxruntime timings of a YOLOv8n-sized model). Medians of repeated runs, milliseconds, one process.

    python bench/cv_detection.py [--repeat 30]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_cv.detectors import BlobConfig, HogConfig, YoloConfig, build_detector  # noqa: E402
from edge_cv.detectors.boxes import batched_nms  # noqa: E402
from edge_cv.detectors.yolo import decode  # noqa: E402
from edge_cv.faces import FaceBlurrer  # noqa: E402
from edge_cv.motion import MotionConfig, MotionGate  # noqa: E402
from edge_cv.tracking import Tracker  # noqa: E402
from edge_cv.types import Detection  # noqa: E402

DARKNET = Path("/usr/share/darknet/data")


def median_ms(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median wall and CPU milliseconds per call. CPU time is the steadier figure on a shared machine; it exceeds
    wall time where OpenCV or onnxruntime use several threads."""
    fn()  # warm caches and lazy initialisation
    wall, cpu = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - t) * 1000.0)
        cpu.append((time.process_time() - c) * 1000.0)
    return statistics.median(wall), statistics.median(cpu)


def yolo_output(rng: np.random.Generator, objects: int = 10, classes: int = 80, anchors: int = 8400) -> np.ndarray:
    """A realistic [1, 84, 8400] output: background scores ~0.001-0.05, and for each object a cluster of ~15
    overlapping candidates of one class with scores 0.3-0.9 (what a trained model emits before NMS)."""
    pred = np.empty((4 + classes, anchors), np.float32)
    pred[0:2] = rng.uniform(0, 640, (2, anchors))
    pred[2:4] = rng.uniform(8, 200, (2, anchors))
    pred[4:] = rng.uniform(0.0005, 0.05, (classes, anchors))
    for k in range(objects):
        cols = rng.choice(anchors, 15, replace=False)
        cx, cy, w, h = rng.uniform(100, 540), rng.uniform(100, 540), rng.uniform(30, 150), rng.uniform(30, 150)
        pred[0, cols] = cx + rng.normal(0, 3, 15)
        pred[1, cols] = cy + rng.normal(0, 3, 15)
        pred[2, cols] = w * rng.uniform(0.9, 1.1, 15)
        pred[3, cols] = h * rng.uniform(0.9, 1.1, 15)
        pred[4 + k % classes, cols] = rng.uniform(0.3, 0.9, 15)
    return pred[None]


def constant_model(path: Path, pred: np.ndarray) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("ReduceMax", ["images"], ["peak"], keepdims=0),
        helper.make_node("Mul", ["peak", "zero"], ["nothing"]),
        helper.make_node("Add", ["pred", "nothing"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes, "constant", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 640, 640])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(pred.shape))],
        [numpy_helper.from_array(pred, "pred"), numpy_helper.from_array(np.float32(0), "zero")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    model.metadata_props.append(onnx.StringStringEntryProto(key="names", value=str({i: f"c{i}" for i in range(80)})))
    onnx.save(model, str(path))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    n = args.repeat
    rng = np.random.default_rng(0)
    rows: list[tuple[str, tuple[float, float] | None]] = []

    out = yolo_output(rng)

    def decode_nms() -> None:
        boxes, scores, ids = decode(out[0], 0.25)
        batched_nms(boxes, scores, ids, 0.45)

    rows.append(("YOLO decode + per-class NMS, [1,84,8400], 10 objects (conf 0.25)", median_ms(decode_nms, n * 3)))
    boxes, scores, ids = decode(out[0], 0.25)
    rows.append((f"  (candidates above 0.25 before NMS: {len(boxes)}, kept: "
                 f"{len(batched_nms(boxes, scores, ids, 0.45))})", None))  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        model = constant_model(Path(tmp) / "const.onnx", out)
        yolo = build_detector(YoloConfig(type="yolo", model=model, confidence=0.25))
        frame = rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8)
        rows.append(("YOLO frame path minus inference, 1280x720 -> 640 (constant-output model)",
                     median_ms(lambda: yolo.detect(frame), n)))  # fmt: skip

    photo = cv2.imread(str(DARKNET / "person.jpg")) if (DARKNET / "person.jpg").is_file() else None
    if photo is None:
        photo = rng.integers(0, 255, (424, 640, 3), dtype=np.uint8)
    for scale in (1.05, 1.1, 1.2):
        hog = build_detector(HogConfig(type="hog", scale=scale))
        ms = median_ms(lambda h=hog: h.detect(photo), max(5, n // 3))
        rows.append((f"HOG people, 640x424 photo, scale {scale}", ms))
    hog = build_detector(HogConfig(type="hog"))
    wide = cv2.resize(photo, (1280, 848))
    rows.append(("HOG people, ROI crop around one person in a 1280-px frame (max_width 640)",
                 median_ms(lambda: hog.detect(wide, rois=[(380.0, 196.0, 550.0, 746.0)]), max(5, n // 3))))  # fmt: skip

    belt = np.full((720, 1280, 3), 90, np.uint8)
    belt[::40] = 70
    belt_frames = []
    for i in range(60):
        image = belt.copy()
        image[300:380, 20 * i % 1280 : 20 * i % 1280 + 120] = (40, 160, 220)
        belt_frames.append(image)
    for method in ("mog2", "average"):
        blob = build_detector(BlobConfig(type="blob", method=method, warmup_frames=0))
        it = iter(range(10**9))
        rows.append((f"blob ({method}), 1280x720", median_ms(lambda b=blob: b.detect(belt_frames[next(it) % 60]), n)))

    gate = MotionGate(MotionConfig(full_frame_every=None))
    it2 = iter(range(10**9))
    ms = median_ms(lambda: gate.update(belt_frames[next(it2) % 60], 0), n)
    rows.append(("motion gate, 1280x720 (working width 320)", ms))
    gate640 = MotionGate(MotionConfig(full_frame_every=None))
    small = [cv2.resize(f, (640, 360)) for f in belt_frames]
    it3 = iter(range(10**9))
    rows.append(("motion gate, 640x360", median_ms(lambda: gate640.update(small[next(it3) % 60], 0), n)))

    tracker = Tracker()
    starts = np.array([(60 + 120 * (k % 10), 60 + 140 * (k // 10)) for k in range(50)], dtype=float)
    speeds = rng.uniform(-3, 3, size=(50, 2))
    step = iter(range(10**9))

    def track() -> None:
        i = next(step)
        pos = starts + speeds * i
        tracker.update([Detection(box=(x, y, x + 50, y + 60), score=0.9, label="person") for x, y in pos], i * 100)

    rows.append(("tracker update, 50 objects", median_ms(track, n * 3)))

    blurrer = FaceBlurrer()
    from skimage import data

    snapshot = cv2.resize(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR), (1280, 720))
    rows.append(("face blur of a 1280x720 snapshot (frontal + 2 profile passes at 800 px)",
                 median_ms(lambda: blurrer.blur(snapshot), max(3, n // 10))))  # fmt: skip

    width = max(len(r[0]) for r in rows)
    print(f"{'':<{width}}  {'wall ms':>9} {'cpu ms':>9}")
    for name, ms in rows:
        print(f"{name:<{width}}  " + ("" if ms is None else f"{ms[0]:9.2f} {ms[1]:9.2f}"))


if __name__ == "__main__":
    main()
