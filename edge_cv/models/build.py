"""Reproduce the shipped models: export datasets from the synthetic scenes → train → export ONNX → evaluate on
held-out seeds → write the model cards. `python -m edge_cv.models.build [--out DIR] [--only NAME]`.

Training seeds and held-out seeds never overlap (training < 1000 ≤ held-out). Deterministic for a given torch
version and thread count (1 thread here, which is also the fastest on a shared 2-core machine)."""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from edge_cv.models import MODELS_DIR
from edge_cv.scenes import SceneSpec
from edge_cv.train import (
    evaluate_classifier,
    evaluate_detector,
    export_scene_dataset,
    load_detection_set,
    train_classifier,
    train_detector,
)

TRAIN_SEEDS = range(0, 4)
DETECTOR_SEEDS = range(0, 6)
DETECTOR_EPOCHS = 35
HELD_OUT_SEEDS = range(1000, 1002)
SKU_CYCLE = {"oatbar": ("OB-40", "OB-40-CH", "GR-250"), "salad": ("SB-300", "SB-450")}


def _conveyor_specs(seeds, **kw) -> list[SceneSpec]:
    specs = []
    for seed in seeds:
        for line, skus in SKU_CYCLE.items():
            specs.append(SceneSpec(kind="conveyor", line=line, sku=skus[seed % len(skus)], seed=seed, **kw))
    return specs


def detector_specs(seeds) -> list[SceneSpec]:
    """Scenes the detector learns from: both lines' conveyors, the floor and the mixed view."""
    specs = _conveyor_specs(seeds, duration_s=30, product_rate=60)
    for seed in seeds:
        specs.append(SceneSpec(kind="floor", seed=seed, people=5, duration_s=30, spill_at_s=5))
        line = ("oatbar", "salad")[seed % 2]
        specs.append(SceneSpec(kind="mixed", line=line, sku=SKU_CYCLE[line][seed % len(SKU_CYCLE[line])], seed=seed,
                               people=4, duration_s=30, product_rate=60))
    return specs


def product_specs(seeds) -> list[SceneSpec]:
    return _conveyor_specs(seeds, duration_s=40, product_rate=60, defect_rate=0.4)


def mask_specs(seeds) -> list[SceneSpec]:
    specs = []
    for seed in seeds:
        specs.append(SceneSpec(kind="floor", seed=seed, people=5, mask_off_rate=0.5, duration_s=40))
        specs.append(SceneSpec(kind="mixed", seed=seed, people=4, mask_off_rate=0.5, duration_s=40))
    return specs


def _time_ms(model: Path, shape: tuple[int, ...], threads: int = 2, runs: int = 50) -> float:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    s = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    name = s.get_inputs()[0].name
    for _ in range(5):
        s.run(None, {name: x})
    t = time.perf_counter()
    for _ in range(runs):
        s.run(None, {name: x})
    return (time.perf_counter() - t) / runs * 1000


def build_classifier(name: str, task: str, specs_fn, every: int, input_size, epochs: int, out_dir: Path,
                     work: Path) -> dict:
    train_dir, held_dir = work / f"{name}-train", work / f"{name}-held"
    n_train = sum(export_scene_dataset(s, train_dir, task, every=every) for s in specs_fn(TRAIN_SEEDS))
    n_held = sum(export_scene_dataset(s, held_dir, task, every=every) for s in specs_fn(HELD_OUT_SEEDS))
    result = train_classifier(train_dir, out_dir / f"{name}.onnx", input_size=input_size, epochs=epochs, seed=0,
                              description=f"plantbus {name}, trained on synthetic scenes seeds "
                                          f"{TRAIN_SEEDS.start}..{TRAIN_SEEDS.stop - 1}")
    held = evaluate_classifier(result.out, held_dir)
    return {"name": name, "classes": list(result.classes), "input": [1, 3, *input_size], "train_samples": n_train,
            "epochs": epochs, "seeds": [TRAIN_SEEDS.start, TRAIN_SEEDS.stop - 1],
            "held_out_samples": n_held, "train_seconds": round(result.seconds, 1), "val": result.metrics,
            "held_out": held, "ms_per_call": round(_time_ms(result.out, (1, 3, *input_size)), 3),
            "bytes": result.out.stat().st_size, "torch": _torch_version()}


def _torch_version() -> str:
    import torch

    return str(torch.__version__)


def build_detector(out_dir: Path, work: Path, imgsz: int = 320, epochs: int = DETECTOR_EPOCHS) -> dict:
    name = f"plantbus-det-{imgsz}"
    train_dir, held_dir = work / "det-train", work / "det-held"
    n_train = sum(export_scene_dataset(s, train_dir, "detect", every=6) for s in detector_specs(DETECTOR_SEEDS))
    n_held = sum(export_scene_dataset(s, held_dir, "detect", every=6) for s in detector_specs(HELD_OUT_SEEDS))
    result = train_detector(train_dir, out_dir / f"{name}.onnx", imgsz=imgsz, epochs=epochs, seed=0,
                            description=f"plantbus {name}, trained on synthetic scenes seeds "
                                        f"{DETECTOR_SEEDS.start}..{DETECTOR_SEEDS.stop - 1}")
    classes, imgs, labels = load_detection_set(held_dir, imgsz)
    held = evaluate_detector(result.out, imgs, labels, len(classes))
    return {"name": name, "classes": list(result.classes), "input": [1, 3, imgsz, imgsz], "train_samples": n_train,
            "held_out_samples": n_held, "train_seconds": round(result.seconds, 1), "val": result.metrics,
            "held_out": held, "ms_per_call": round(_time_ms(result.out, (1, 3, imgsz, imgsz)), 3),
            "bytes": result.out.stat().st_size, "torch": _torch_version(), "epochs": epochs,
            "seeds": [DETECTOR_SEEDS.start, DETECTOR_SEEDS.stop - 1]}


CARD_INTRO = {
    "plantbus-det-320": (
        "Tiny object detector for the synthetic conveyor and floor scenes (people and products).",
        "Input `images` [1,3,320,320] float32, RGB/255, the frame letterboxed (aspect kept) onto grey 114.\n"
        "Output `output0` [1,6,500] in the Ultralytics YOLOv8 export layout: rows cx, cy, w, h (input pixels), then\n"
        "one score per class, already sigmoid, no objectness; 500 = 20×20 cells at stride 16 + 10×10 at stride 32.\n"
        "Decode and NMS as for any YOLOv8 export (edge_cv/detectors/yolo.py); class names are in the ONNX metadata\n"
        "(`names`, Ultralytics style).",
    ),
    "product-appearance": (
        "Crop classifier: is a product on the conveyor intact (`ok`) or visibly damaged (`defective`: torn wrapper\n"
        "or sleeve, crushed pack, salad bowl without its lid).",
        "Input `images` [N,3,64,64] float32, RGB/255, the product's box cropped and resized to 64×64 (stretched, no\n"
        "letterbox). Output `probs` [N,2] softmax in class order `defective`, `ok` (metadata `names`).",
    ),
    "ppe-mask": (
        "Crop classifier: does a worker wear a face mask (`mask`) or not (`no_mask`). It takes the whole person box\n"
        "(not a head crop) so it plugs in behind any person detector with no extra head finder; the 2:1 input keeps\n"
        "a standing person's proportions so the face stays large enough to judge.",
        "Input `images` [N,3,128,64] float32 (height 128, width 64), RGB/255, the person's box resized to 64×128\n"
        "(stretched, no letterbox). Output `probs` [N,2] softmax in class order `mask`, `no_mask` (metadata `names`).",
    ),
}


CARD_NOTES = {
    "ppe-mask": (
        "\nThe held-out crops, like the training ones, leave out people whose head and shoulders another person\n"
        "overlaps: there the crop shows two faces and the label is ambiguous. The test suite also checks it on all\n"
        "fully visible people of another held-out scene, overlaps included.\n"
    ),
    "plantbus-det-320": (
        "\nWhere it errs: people standing partly behind one another (a box spanning two people, or the one behind\n"
        "missed) and people cut by the frame edge; people standing clear of others are found almost always.\n"
        "Products on the belt are found essentially always. The figures are per frame; tracking smooths them.\n"
    ),
}


def _figures(entry: dict) -> str:
    held = entry["held_out"]
    if entry["name"].startswith("plantbus-det"):
        names = entry["classes"]
        lines = [f"- mAP@0.5 (held-out): {held['map50']:.3f}"]
        for i, n in enumerate(names):
            lines.append(f"- {n}: AP@0.5 {held[f'ap50_{i}']:.3f}, precision {held[f'precision_{i}']:.3f}, "
                         f"recall {held[f'recall_{i}']:.3f} at score ≥ 0.4, NMS IoU 0.5")
        return "\n".join(lines)
    lines = [f"- accuracy (held-out): {held['accuracy']:.3f}"]
    for n in entry["classes"]:
        lines.append(f"- {n}: accuracy {held[f'accuracy_{n}']:.3f} on {int(held[f'n_{n}'])} crops")
    return "\n".join(lines)


def write_cards(report: list[dict], out_dir: Path) -> None:
    """One markdown card per model, from the build's measured figures."""
    for entry in report:
        what, io = CARD_INTRO[entry["name"]]
        card = f"""# {entry['name']}

{what}

- File: `{entry['name']}.onnx` ({entry['bytes'] / 1024:.0f} KiB), opset 17, made by `python -m edge_cv.models.build`.
- Classes: {', '.join(f'`{c}`' for c in entry['classes'])}
- Licence: Apache-2.0, the same as Plantbus. Weights trained by this project from random initialisation; no
  third-party weights or data.

## Input and output

{io}

## Trained on

Synthetic scenes from `edge_cv.scenes` only, seeds {entry['seeds'][0]}..{entry['seeds'][1]}
({entry['train_samples']} samples; see `edge_cv/models/build.py` for the exact scene specs), {entry['epochs']}
epochs. Training took {entry['train_seconds']:.0f} s on one CPU thread (torch {entry['torch']} CPU).

## Accuracy

Held-out synthetic scenes, seeds {HELD_OUT_SEEDS.start}..{HELD_OUT_SEEDS.stop - 1} (never seen in training,
{entry['held_out_samples']} samples):

{_figures(entry)}

onnxruntime CPU, 2 threads, one call: {entry['ms_per_call']:.2f} ms (build machine, shared 2-core VM).
{CARD_NOTES.get(entry['name'], '')}

**Accuracy on real footage is unproven.** The model has only ever seen drawn pictures: flat colours, simple
shapes, one camera angle. Expect it to fail on real cameras until it is retrained on the plant's own labelled
footage with `plantbus cv train` (same input/output contract, so the configuration does not change).
"""
        (out_dir / f"{entry['name']}.md").write_text(card)


def main(argv: list[str] | None = None) -> None:
    """Build the shipped models and print their figures as JSON."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=MODELS_DIR)
    ap.add_argument("--only", choices=["detector", "product-appearance", "ppe-mask"], action="append")
    ap.add_argument("--keep-data", type=Path, help="write the datasets here and keep them")
    ap.add_argument("--cards-only", action="store_true", help="rewrite the cards from OUT/build-report.json")
    args = ap.parse_args(argv)
    if args.cards_only:
        write_cards(json.loads((args.out / "build-report.json").read_text()), args.out)
        return
    work = args.keep_data or Path(tempfile.mkdtemp(prefix="plantbus-build-"))
    only = set(args.only or ["detector", "product-appearance", "ppe-mask"])
    report = []
    try:
        if "product-appearance" in only:
            report.append(build_classifier("product-appearance", "product", product_specs, 3, (64, 64), 12,
                                           args.out, work))
            print(json.dumps(report[-1]), flush=True)
        if "ppe-mask" in only:
            report.append(build_classifier("ppe-mask", "mask", mask_specs, 3, (128, 64), 12, args.out, work))
            print(json.dumps(report[-1]), flush=True)
        if "detector" in only:
            report.append(build_detector(args.out, work))
            print(json.dumps(report[-1]), flush=True)
    finally:
        if args.keep_data is None:
            shutil.rmtree(work, ignore_errors=True)
    report_file = args.out / "build-report.json"
    if report_file.exists():  # a partial build (--only) keeps the other models' entries
        built = {e["name"] for e in report}
        report = [e for e in json.loads(report_file.read_text()) if e["name"] not in built] + report
    report_file.write_text(json.dumps(sorted(report, key=lambda e: e["name"]), indent=2) + "\n")
    write_cards(report, args.out)


if __name__ == "__main__":
    main()
