"""The rule registry: every rule type, its config model and its class, and how a camera's rules are built.

The contract each rule module follows:
  - `XConfig(RuleSettings)` with `type: Literal["x"]`, validated once at load (extra keys refused), and
    `referenced_zones()` / `referenced_lines()` naming the camera zones and lines it needs;
  - `XRule(name: str, config: XConfig, geometry: CameraGeometry)` with
    `process(frame, detections, tracks) -> RuleResult`, taking time only from `frame.time_ms`.

`RuleConfig` is the discriminated union on `type` the camera config uses (`cameras.<camera>.rules.<name>`), so a
wrong rule names its path and type. `build_rule` checks the references against the camera's geometry and builds.
"""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import BaseModel, Field

from edge_cv.rules.base import RuleSettings, check_references, referenced_lines, referenced_zones
from edge_cv.rules.counting import CountingConfig, CountingRule
from edge_cv.rules.marking import MarkingConfig, MarkingRule
from edge_cv.rules.personnel import PersonnelConfig, PersonnelRule
from edge_cv.rules.quality import QualityConfig, QualityRule
from edge_cv.rules.sanitation import SanitationConfig, SanitationRule
from edge_cv.types import Rule
from edge_cv.zones import CameraGeometry
from hub.errors import ConfigError

RULES: dict[str, tuple[type[BaseModel], type]] = {
    "personnel": (PersonnelConfig, PersonnelRule),
    "counting": (CountingConfig, CountingRule),
    "quality": (QualityConfig, QualityRule),
    "sanitation": (SanitationConfig, SanitationRule),
    "marking": (MarkingConfig, MarkingRule),
}
"""type name -> (config model, rule class)."""

RuleConfig = Annotated[
    Union[tuple(model for model, _ in RULES.values())],  # noqa: UP007  (a Union built from the registry)
    Field(discriminator="type"),
]
"""Any rule's config, chosen by its `type`."""


def build_rule(name: str, config: BaseModel, geometry: CameraGeometry) -> Rule:
    """Build one rule of a camera from its validated config and the camera's geometry."""
    type_name = getattr(config, "type", None)
    entry = RULES.get(type_name)  # type: ignore[arg-type]
    if entry is None:
        raise ConfigError(f"rule {name!r}: unknown type {type_name!r}; known types: {', '.join(sorted(RULES))}")
    model, cls = entry
    if not isinstance(config, model):
        raise ConfigError(f"rule {name!r}: config is a {type(config).__name__}, expected {model.__name__}")
    check_references(name, config, geometry.zones, geometry.lines)
    return cls(name, config, geometry)


__all__ = [
    "RULES",
    "RuleConfig",
    "RuleSettings",
    "build_rule",
    "check_references",
    "referenced_lines",
    "referenced_zones",
]
