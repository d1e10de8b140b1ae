"""The edge_cv README's configuration example is a configuration Plantbus accepts, so the docs cannot drift."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from hub.config import parse_config

ROOT = Path(__file__).resolve().parent.parent


def test_the_readme_cv_example_validates_with_every_rule_type_it_documents() -> None:
    text = (ROOT / "edge_cv" / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```yaml\n(cv:.*?)```", text, re.S)
    assert block, "edge_cv/README.md lost its cv: example"
    config = parse_config(yaml.safe_load(block.group(1)), "edge_cv/README.md", base_dir=ROOT)
    assert config.cv is not None
    cameras = {(node, cam): c for node, n in config.cv.nodes.items() for cam, c in n.cameras.items()}
    assert set(cameras) == {("cv-oatbar", "verifier"), ("cv-salad", "floor")}
    types = {rule.type for camera in cameras.values() for rule in camera.rules.values()}
    documented = set(re.findall(r"^\| `(\w+)` \|", text, re.M))
    assert types == documented == {"personnel", "counting", "quality", "sanitation", "marking"}
