"""`plantbus cv train` logic (needs the optional torch) and the shipped models (need only onnxruntime)."""

from __future__ import annotations

import ast
import importlib.util
import json

import numpy as np
import onnxruntime as ort
import pytest

from edge_cv.models import SHIPPED, model_path
from edge_cv.scenes import Scene, SceneSpec
from edge_cv.train import (
    TrainError,
    decode_yolo,
    evaluate_classifier,
    export_scene_dataset,
    letterbox,
    preprocess_crop,
)

HAS_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="torch is the optional `plantbus[train]` extra; not installed")

# Held-out seeds for the shipped models: training used seeds 0..3 (edge_cv/models/build.py), these are never used.
HELD_OUT = 2024


def _session(name: str) -> ort.InferenceSession:
    return ort.InferenceSession(str(model_path(name)), providers=["CPUExecutionProvider"])


@needs_torch
def test_classifier_trained_on_scene_crops_beats_chance_on_a_held_out_seed(tmp_path) -> None:
    from edge_cv.train import train_classifier

    def spec(seed: int) -> SceneSpec:
        return SceneSpec(kind="conveyor", seed=seed, duration_s=24, defect_rate=0.5, product_rate=60,
                         defects=("torn", "crushed"))

    n_train = export_scene_dataset(spec(1), tmp_path / "train", "product", every=2)
    n_held = export_scene_dataset(spec(77), tmp_path / "held", "product", every=4)
    assert n_train > 100 and n_held > 30
    result = train_classifier(tmp_path / "train", tmp_path / "m.onnx", input_size=(48, 48), epochs=6, seed=0)
    assert result.classes == ("defective", "ok")
    held = evaluate_classifier(result.out, tmp_path / "held")
    # Chance is about 0.5 (balanced classes); a working trainer + export gets far above it in six epochs.
    assert held["accuracy"] > 0.75, held
    s = ort.InferenceSession(str(result.out), providers=["CPUExecutionProvider"])
    assert [i.shape for i in s.get_inputs()] == [["batch", 3, 48, 48]]
    assert json.loads(s.get_modelmeta().custom_metadata_map["names"]) == ["defective", "ok"]
    # Same data and seed → the same model: the shipped models are reproducible.
    again = train_classifier(tmp_path / "train", tmp_path / "m2.onnx", input_size=(48, 48), epochs=6, seed=0)
    s2 = ort.InferenceSession(str(again.out), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((4, 3, 48, 48), dtype=np.float32)
    assert np.array_equal(s.run(None, {"images": x})[0], s2.run(None, {"images": x})[0])


@needs_torch
def test_detector_training_exports_the_yolov8_layout_that_a_generic_decoder_reads(tmp_path) -> None:
    from edge_cv.train import train_detector

    for kind in ("conveyor", "floor"):
        export_scene_dataset(SceneSpec(kind=kind, seed=3, duration_s=6), tmp_path / "det", "detect", every=3)
    result = train_detector(tmp_path / "det", tmp_path / "det.onnx", imgsz=320, epochs=1, batch=8, seed=0)
    s = ort.InferenceSession(str(result.out), providers=["CPUExecutionProvider"])
    assert s.get_inputs()[0].name == "images" and s.get_inputs()[0].shape == [1, 3, 320, 320]
    out = s.run(None, {"images": np.zeros((1, 3, 320, 320), np.float32)})[0]
    assert out.shape == (1, 6, 20 * 20 + 10 * 10)  # 4 box + 2 classes; cells of strides 16 and 32
    assert np.all((out[0, 4:] >= 0) & (out[0, 4:] <= 1))  # scores are already sigmoid
    meta = s.get_modelmeta().custom_metadata_map
    assert ast.literal_eval(meta["names"]) == {0: "person", 1: "product"}


@needs_torch
def test_training_on_a_folder_without_classes_says_what_is_missing(tmp_path) -> None:
    from edge_cv.train import train_classifier, train_detector

    (tmp_path / "only").mkdir()
    with pytest.raises(TrainError, match="one sub-folder of images per class"):
        train_classifier(tmp_path, tmp_path / "x.onnx")
    with pytest.raises(TrainError, match="classes.txt"):
        train_detector(tmp_path, tmp_path / "x.onnx")


def test_shipped_models_load_with_the_documented_inputs_and_outputs() -> None:
    expected = {
        "plantbus-det-320": ([1, 3, 320, 320], [1, 6, 500], {0: "person", 1: "product"}),
        "ppe-mask": (["batch", 3, 128, 64], ["batch", 2], ["mask", "no_mask"]),
        "product-appearance": (["batch", 3, 64, 64], ["batch", 2], ["defective", "ok"]),
    }
    assert set(expected) == set(SHIPPED)
    for name, (inp, out, names) in expected.items():
        s = _session(name)
        assert s.get_inputs()[0].name == "images" and s.get_inputs()[0].shape == inp
        assert s.get_outputs()[0].shape == out
        meta = s.get_modelmeta().custom_metadata_map["names"]
        assert (ast.literal_eval(meta) if name.startswith("plantbus-det") else json.loads(meta)) == names
        assert model_path(name).stat().st_size < 2_000_000
        assert model_path(name).with_suffix(".md").exists()


def test_shipped_product_classifier_judges_held_out_scene_crops() -> None:
    spec = SceneSpec(kind="conveyor", line="salad", seed=HELD_OUT, duration_s=40, defect_rate=0.4, product_rate=60)
    s = _session("product-appearance")
    right = total = 0
    for f in Scene(spec):
        if f.index % 5:
            continue
        for p in f.truth.products:
            if p.visible < 1:
                continue
            x0, y0, x1, y1 = (int(v) for v in p.box)
            probs = s.run(None, {"images": preprocess_crop(f.image[y0:y1, x0:x1], (64, 64))})[0][0]
            assert abs(float(probs.sum()) - 1) < 1e-4
            right += int((probs[0] > 0.5) == p.defective)
            total += 1
    assert total > 40 and right / total >= 0.9, f"{right}/{total}"


def test_shipped_mask_classifier_judges_held_out_people() -> None:
    spec = SceneSpec(kind="floor", seed=HELD_OUT, duration_s=40, people=4, mask_off_rate=0.5, fps=2)
    s = _session("ppe-mask")
    right = total = 0
    for f in Scene(spec):
        for p in f.truth.people:
            if p.visible < 1:
                continue
            x0, y0, x1, y1 = (int(v) for v in p.box)
            probs = s.run(None, {"images": preprocess_crop(f.image[y0:y1, x0:x1], (128, 64))})[0][0]
            right += int((probs[0] > 0.5) == p.mask)
            total += 1
    # Occluded people are included here (they are excluded from training), so allow a few misses.
    assert total > 30 and right / total >= 0.85, f"{right}/{total}"


def test_shipped_detector_finds_held_out_products_and_people() -> None:
    s = _session("plantbus-det-320")
    found = {"person": [0, 0], "product": [0, 0]}
    for kind in ("conveyor", "floor"):
        scene = Scene(SceneSpec(kind=kind, seed=HELD_OUT, duration_s=20, people=3))
        for i in range(0, scene.spec.frame_count, 10):
            f = scene.frame(i)
            img, k, (px, py) = letterbox(f.image, 320)
            x = (img[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32) / 255.0).copy()
            dets = decode_yolo(s.run(None, {"images": x})[0], conf=0.4)
            boxes = [(c, (b - [px, py, px, py]) / k) for c, _, b in dets]
            for label, cls, objs in (("person", 0, f.truth.people), ("product", 1, f.truth.products)):
                for o in objs:
                    if o.visible < 1:
                        continue
                    found[label][1] += 1
                    found[label][0] += any(c == cls and _iou(b, o.box) >= 0.5 for c, b in boxes)
    for label, (hit, n) in found.items():
        assert n > 10 and hit / n >= 0.9, f"{label}: {hit}/{n}"


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_exported_scene_dataset_is_in_yolo_and_class_folder_form(tmp_path) -> None:
    spec = SceneSpec(kind="mixed", seed=6, duration_s=10, people=3)
    n = export_scene_dataset(spec, tmp_path / "det", "detect", every=25)
    assert n == 4
    assert (tmp_path / "det" / "classes.txt").read_text().split() == ["person", "product"]
    labels = sorted((tmp_path / "det" / "labels").glob("*.txt"))
    assert len(labels) == 4 and len(list((tmp_path / "det" / "images").glob("*.jpg"))) == 4
    rows = [line.split() for f in labels for line in f.read_text().splitlines()]
    assert {r[0] for r in rows} == {"0", "1"}
    assert all(len(r) == 5 and all(0 <= float(v) <= 1 for v in r[1:]) for r in rows)
    with pytest.raises(TrainError, match="prefix"):
        export_scene_dataset(spec, tmp_path / "det", "detect", every=25)
    assert export_scene_dataset(spec, tmp_path / "det", "detect", every=25, prefix="again") == 4
    crops = export_scene_dataset(spec.model_copy(update={"mask_off_rate": 0.5}), tmp_path / "mask", "mask", every=2)
    assert crops > 0 and {p.name for p in (tmp_path / "mask").iterdir()} <= {"mask", "no_mask"}


def test_training_without_torch_says_how_to_install_it(tmp_path, monkeypatch) -> None:
    import sys

    from edge_cv.train import train_classifier, train_detector

    monkeypatch.setitem(sys.modules, "torch", None)  # what an installation without the extra looks like
    for train in (train_classifier, train_detector):
        with pytest.raises(TrainError, match=r"plantbus\[train\]"):
            train(tmp_path, tmp_path / "x.onnx")


@needs_torch
def test_the_cv_train_command_writes_a_classifier_a_camera_configuration_accepts(tmp_path) -> None:
    import yaml
    from click.testing import CliRunner

    from hub.cli import main
    from hub.config import load_config

    spec = SceneSpec(kind="conveyor", seed=5, duration_s=12, defect_rate=0.5, product_rate=60)
    assert export_scene_dataset(spec, tmp_path / "crops", "product", every=3) > 20
    out = tmp_path / "looks.onnx"
    result = CliRunner().invoke(main, ["cv", "train", "classifier", str(tmp_path / "crops"), "-o", str(out),
                                       "--size", "32", "--epochs", "2"])
    assert result.exit_code == 0, result.output
    assert out.is_file()
    config = tmp_path / "plantbus.yaml"
    config.write_text(yaml.safe_dump({"cv": {"nodes": {"cv-test": {"cameras": {"belt": {
        "source": "synthetic:conveyor?seed=5", "detector": {"type": "blob"},
        "classifiers": [{"model": "looks.onnx", "attribute": "appearance", "apply_to": ["product"]}],
        "rules": {"looks": {"type": "quality", "attribute": "appearance", "defect_labels": ["defective"],
                            "labels": ["product"]}}}}}}}}))
    camera = load_config(config).cv.nodes["cv-test"].cameras["belt"]  # the model path resolves next to the YAML
    assert camera.classifiers[0].attribute == "appearance"
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert json.loads(session.get_modelmeta().custom_metadata_map["names"]) == ["defective", "ok"]
