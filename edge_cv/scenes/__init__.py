"""Deterministic synthetic camera scenes with ground truth: a conveyor with coded products, a floor with workers
and a spill, or both. `generate(SceneSpec(kind="conveyor", seed=3))` yields `SceneFrame`s."""

from edge_cv.scenes.scene import Scene, generate, scene_layout, write_video
from edge_cv.scenes.skus import SKUS
from edge_cv.scenes.spec import SceneSpec
from edge_cv.scenes.truth import FrameTruth, PersonTruth, ProductTruth, SceneFrame, SceneLayout, SpillTruth

__all__ = [
    "SKUS", "FrameTruth", "PersonTruth", "ProductTruth", "Scene", "SceneFrame", "SceneLayout", "SceneSpec",
    "SpillTruth", "generate", "scene_layout", "write_video",
]
