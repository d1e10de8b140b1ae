"""The `cv:` section of the plantbus YAML: every misconfiguration is refused at load with an error naming its path."""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from edge_cv.config import CvConfig, parse_source
from hub.config import load_config, parse_config
from hub.errors import ConfigError
from _cv_support import colour_classifier

CAMERA = "cv.nodes.cv-oatbar.cameras.verifier"


def base_camera() -> dict[str, Any]:
    """A valid conveyor camera: blob detector, a belt zone, a count line, a counting and a marking rule."""
    return {
        "source": "synthetic:conveyor?seed=3&width=640&height=360",
        "fps": 10,
        "width": 640,
        "detector": {"type": "blob"},
        "zones": {"belt": {"polygon": [[0, 64], [640, 64], [640, 295], [0, 295]], "kind": "conveyor"}},
        "lines": {"exit": {"points": [[320, 64], [320, 295]]}},
        "rules": {
            "packed": {"type": "counting", "line": "exit", "labels": ["product"]},
            "codes": {"type": "marking", "zone": "belt"},
        },
    }


def config_with(camera: dict[str, Any], **cv: Any) -> dict[str, Any]:
    return {"cv": {"nodes": {"cv-oatbar": {"cameras": {"verifier": camera}}}, **cv}}


def errors_of(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    return str(caught.value)


def test_a_valid_camera_loads_with_parsed_source_and_geometry() -> None:
    config = parse_config(config_with(base_camera()))
    assert isinstance(config.cv, CvConfig)
    assert config.cv.group == "plant1"
    [(node, camera_id, camera)] = config.cv.cameras()
    assert (node, camera_id) == ("cv-oatbar", "verifier")
    assert camera.spec.kind == "synthetic" and camera.spec.options == {"seed": "3", "width": "640", "height": "360"}
    geometry = camera.geometry()
    assert set(geometry.zones) == {"belt"} and set(geometry.lines) == {"exit"}
    assert camera.detector_labels() == ("product",)


def test_no_cv_section_means_none_and_an_empty_one_too() -> None:
    assert parse_config({}).cv is None
    assert parse_config({"cv": None}).cv is None


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ("ftp://cam/1", "unknown source scheme 'ftp'"),
        ("/srv/line1.mp4", "has no scheme; write file:/srv/line1.mp4"),
        ("file:", "file: needs a path"),
        ("rtsp://", "has no host"),
        ("http://cam:99999/x", "invalid port"),
        ("usb:front", "usb: takes a camera index"),
        ("synthetic:kitchen", "synthetic scene kind 'kitchen'"),
        ("synthetic:conveyor?sede=3", "sede: Extra inputs are not permitted"),
        ("synthetic:conveyor?seed=-1", "seed: Input should be greater than or equal to 0"),
        ("", "is empty"),
    ],
)
def test_a_bad_source_names_the_source_path_and_why(source: str, says: str) -> None:
    camera = base_camera()
    camera["source"] = source
    message = errors_of(config_with(camera))
    assert f"{CAMERA}.source: " in message
    assert says in message


def test_every_accepted_source_form_parses_to_its_kind() -> None:
    assert parse_source("file:/v/a.mp4").kind == "file"
    assert parse_source("file:///v/a.mp4").target == "/v/a.mp4"
    assert parse_source("rtsp://user:pw@10.0.0.5:554/stream1").kind == "stream"
    assert parse_source("rtsps://10.0.0.5/s").live
    assert parse_source("https://cam/video.mjpg").kind == "stream"
    assert parse_source("usb:2").target == "2"
    spec = parse_source("synthetic:floor?seed=7&spill_at_s=3")
    assert (spec.kind, spec.target, spec.options) == ("synthetic", "floor", {"seed": "7", "spill_at_s": "3"})
    # A password in a URL never reaches logs or the console.
    assert parse_source("rtsp://admin:secret@cam:554/s").redacted() == "rtsp://admin:***@cam:554/s"


@pytest.mark.parametrize(
    ("change", "path", "says"),
    [
        ({"fps": 0}, "fps", "greater than 0"),
        ({"fps": 500}, "fps", "less than or equal to 120"),
        ({"width": 10}, "width", "greater than or equal to 64"),
        ({"stall_timeout_s": -1}, "stall_timeout_s", "greater than 0"),
        ({"colour": "red"}, "colour", "unknown key"),
        ({"password_env": "not a name"}, "password_env", "is not an environment variable name"),
        ({"detector": {"type": "ssd"}}, "detector", "'ssd'"),
        ({"zones": {"a b": {"polygon": [[0, 0], [100, 0], [0, 100]]}}}, "zones", "zone name 'a b'"),
        ({"lines": {"exit": {"points": [[1, 1], [1, 1]]}}}, "lines.exit", "degenerate"),
        ({"masks": [[[0, 0], [10, 10]]]}, "masks[0]", "at least 3 points"),
    ],
)
def test_a_bad_camera_setting_names_its_path(change: dict[str, Any], path: str, says: str) -> None:
    camera = {**base_camera(), **change}
    if "lines" in change:
        camera["rules"] = {}
    message = errors_of(config_with(camera))
    assert f"{CAMERA}.{path}" in message, message
    assert says in message, message


def test_a_rule_naming_a_line_the_camera_lacks_names_the_rule_field() -> None:
    camera = base_camera()
    camera["rules"]["packed"]["line"] = "exti"
    message = errors_of(config_with(camera))
    expected = f"{CAMERA}.rules.packed.line: names line 'exti', which this camera does not define (its lines: exit)"
    assert expected in message


def test_a_rule_naming_a_missing_zone_names_the_list_item() -> None:
    camera = base_camera()
    camera["detector"] = {"type": "hog"}
    camera["rules"] = {"people": {"type": "personnel", "zones": ["belt", "floor"]}}
    message = errors_of(config_with(camera))
    assert f"{CAMERA}.rules.people.zones[1]: names zone 'floor'" in message
    assert "zones[0]" not in message


def test_a_rule_for_labels_the_detector_never_reports_is_refused() -> None:
    camera = base_camera()
    camera["rules"]["packed"]["labels"] = ["product", "case"]
    message = errors_of(config_with(camera))
    assert f"{CAMERA}.rules.packed.labels[1]: the camera's detector never reports 'case'" in message


def test_a_tracking_rule_without_a_detector_is_refused() -> None:
    camera = base_camera()
    camera["detector"] = None
    message = errors_of(config_with(camera))
    expected = (f"{CAMERA}.rules.packed.labels: this counting rule follows product tracks, "
                "but the camera has no detector")
    assert expected in message
    # The marking rule reads codes itself: it does not need a detector.
    assert "rules.codes" not in message


def test_a_rule_reading_an_attribute_no_classifier_sets_is_refused() -> None:
    camera = base_camera()
    camera["rules"]["look"] = {"type": "quality", "attribute": "appearance"}
    message = errors_of(config_with(camera))
    assert f"{CAMERA}.rules.look.attribute: no classifier of this camera sets attribute 'appearance'" in message

    floor = {**base_camera(), "detector": {"type": "hog"},
             "rules": {"ppe": {"type": "personnel", "ppe": {"required": {"mask": "mask"}}}}}  # fmt: skip
    message = errors_of(config_with(floor))
    assert f"{CAMERA}.rules.ppe.ppe.required.mask: no classifier of this camera sets attribute 'mask'" in message


def test_classifier_checks_name_the_classifier(tmp_path: Path) -> None:
    model = colour_classifier(tmp_path / "look.onnx")
    good = {**base_camera(), "classifiers": [{"model": str(model), "attribute": "appearance", "apply_to": ["product"]}]}
    good["rules"]["look"] = {"type": "quality", "attribute": "appearance"}
    assert parse_config(config_with(good)).cv is not None

    wrong_label = copy.deepcopy(good)
    wrong_label["classifiers"][0]["apply_to"] = ["person"]
    message = errors_of(config_with(wrong_label))
    assert f"{CAMERA}.classifiers[0].apply_to[0]: the detector never reports 'person'" in message

    no_detector = copy.deepcopy(good)
    no_detector["detector"] = None
    no_detector["rules"] = {}
    message = errors_of(config_with(no_detector))
    assert f"{CAMERA}.classifiers[0].apply_to: classifiers need a detector" in message

    missing = copy.deepcopy(good)
    missing["classifiers"][0]["model"] = str(tmp_path / "gone.onnx")
    assert f"{CAMERA}.classifiers[0].model" in errors_of(config_with(missing))


def test_an_unknown_rule_type_names_the_rule() -> None:
    camera = base_camera()
    camera["rules"]["odd"] = {"type": "smell"}
    message = errors_of(config_with(camera))
    assert f"{CAMERA}.rules.odd: " in message and "'smell'" in message


@pytest.mark.parametrize(
    ("data", "path", "says"),
    [
        ({"cv": {"group": "plant/1"}}, "cv.group", "reserved character"),
        ({"cv": {"nodes": {"cv+oatbar": {"cameras": {"verifier": base_camera()}}}}}, "cv.nodes", "reserved character"),
        ({"cv": {"nodes": {"cv-oatbar": {"cameras": {"ver#ifier": base_camera()}}}}}, "cv.nodes.cv-oatbar.cameras",
         "reserved character"),
        ({"cv": {"nodes": {"cv-oatbar": {"cameras": {}}}}}, "cv.nodes.cv-oatbar.cameras", "at least one camera"),
        ({"cv": {"nodes": {"cv-oatbar": {}}}}, "cv.nodes.cv-oatbar.cameras", "required"),
        ({"cv": {"reconnect": {"initial_s": 10, "max_s": 1}}}, "cv.reconnect", "max_s (1) must be at least initial_s"),
        ({"cv": {"snapshots": {"retention_days": 0}}}, "cv.snapshots.retention_days", "greater than 0"),
        ({"cv": {"cameras": {}}}, "cv.cameras", "unknown key"),
    ],
)
def test_node_and_section_errors_name_their_path(data: dict[str, Any], path: str, says: str) -> None:
    message = errors_of(data)
    assert f"{path}: " in message, message
    assert says in message, message


def test_every_problem_of_a_file_is_listed_at_once(tmp_path: Path) -> None:
    file = tmp_path / "plantbus.yaml"
    file.write_text(textwrap.dedent("""
        cv:
          nodes:
            cv-oatbar:
              cameras:
                verifier:
                  source: "ftp://nope"
                  fps: 0
            cv-salad:
              cameras:
                verifier:
                  source: "usb:0"
                  detector: {type: blob}
                  rules:
                    packed: {type: counting, line: exit}
    """))
    with pytest.raises(ConfigError) as caught:
        load_config(file)
    message = str(caught.value)
    assert "cv.nodes.cv-oatbar.cameras.verifier.source" in message
    assert "cv.nodes.cv-oatbar.cameras.verifier.fps" in message
    assert "cv.nodes.cv-salad.cameras.verifier.rules.packed.line" in message


def test_relative_model_paths_are_found_next_to_the_yaml(tmp_path: Path) -> None:
    colour_classifier(tmp_path / "look.onnx")
    file = tmp_path / "plantbus.yaml"
    file.write_text(textwrap.dedent("""
        cv:
          nodes:
            cv-oatbar:
              cameras:
                verifier:
                  source: "synthetic:conveyor?seed=1"
                  detector: {type: blob}
                  classifiers: [{model: look.onnx, attribute: appearance, apply_to: [product]}]
    """))
    config = load_config(file)
    assert config.cv is not None
    classifier = config.cv.nodes["cv-oatbar"].cameras["verifier"].classifiers[0]
    assert classifier.model == tmp_path / "look.onnx"


def test_the_hub_loads_its_configuration_without_the_vision_stack() -> None:
    # The hub and every command without cameras must not pay for OpenCV, onnxruntime and the models.
    code = (
        "import sys; from hub.config import parse_config; parse_config({'broker': {'url': 'mqtt://127.0.0.1:1883'}}); "
        "print(sorted(m for m in ('cv2', 'onnxruntime', 'edge_cv.config') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
