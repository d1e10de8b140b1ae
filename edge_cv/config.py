"""The `cv:` section of the plantbus YAML: edge nodes, their cameras, and each camera's detector, zones and rules.

Validated once at load by pydantic (extra="forbid"), so every problem names its path, e.g.
`cv.nodes.cv-oatbar.cameras.verifier.rules.packed.line`. Nothing here imports OpenCV or onnxruntime: the hub
validates a file with a `cv:` section without loading the vision stack.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from edge_cv.detectors.base import BlobConfig, ClassifierConfig, DetectorConfig, HogConfig, YoloConfig
from edge_cv.motion import MotionConfig
from edge_cv.rules import RuleConfig, referenced_lines, referenced_zones
from edge_cv.tracking import TrackerConfig
from edge_cv.zones import CameraGeometry, LineConfig, Polygon, ZoneConfig, check_name
from hub.errors import ConfigError, TopicError
from hub.sparkplug.topic import validate_id

SourceKind = Literal["file", "stream", "usb", "synthetic"]

STREAM_SCHEMES = ("rtsp", "rtsps", "http", "https")
SCENE_KINDS = ("conveyor", "floor", "mixed")


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """A parsed camera source string: what to open and how."""

    kind: SourceKind
    target: str  # the path, URL, device index or scene kind
    options: dict[str, str] = field(default_factory=dict)

    @property
    def live(self) -> bool:
        """Live sources deliver frames at their own pace; files and synthetic scenes are played by Plantbus."""
        return self.kind in ("stream", "usb")

    def redacted(self) -> str:
        """The source as text safe for logs and the console: any password in a URL replaced by ***."""
        if self.kind != "stream":
            return f"{self.kind}:{self.target}"
        parts = urlsplit(self.target)
        if parts.password is None:
            return self.target
        netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return parts._replace(netloc=netloc).geturl()


def parse_source(text: str) -> SourceSpec:
    """Parse `file:…`, `rtsp(s)://…`, `http(s)://…`, `usb:N` or `synthetic:<kind>?seed=N&…`; ValueError says why."""
    text = text.strip()
    if not text:
        raise ValueError("is empty; give file:PATH, rtsp://HOST/PATH, http://HOST/PATH, usb:N or synthetic:KIND")
    scheme, sep, rest = text.partition(":")
    scheme = scheme.lower()
    if not sep:
        raise ValueError(
            f"{text!r} has no scheme; write file:{text} for a video file, or rtsp://, http://, usb:N, synthetic:KIND"
        )
    if scheme == "file":
        path = rest[2:] if rest.startswith("//") else rest
        if not path:
            raise ValueError("file: needs a path, e.g. file:/srv/video/line1.mp4")
        return SourceSpec("file", path)
    if scheme in STREAM_SCHEMES:
        parts = urlsplit(text)
        if not rest.startswith("//") or not parts.hostname:
            raise ValueError(f"{text!r} has no host; write {scheme}://HOST[:PORT]/PATH")
        try:
            parts.port  # noqa: B018 - raises on a port that is not a number or out of range
        except ValueError:
            raise ValueError(f"{text!r} has an invalid port") from None
        return SourceSpec("stream", text)
    if scheme == "usb":
        if not re.fullmatch(r"\d{1,3}", rest):
            raise ValueError("usb: takes a camera index, e.g. usb:0 for /dev/video0")
        return SourceSpec("usb", str(int(rest)))
    if scheme == "synthetic":
        kind, _, query = rest.partition("?")
        if kind not in SCENE_KINDS:
            raise ValueError(f"synthetic scene kind {kind!r} is not one of {', '.join(SCENE_KINDS)}")
        options: dict[str, str] = {}
        for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
            if key in options:
                raise ValueError(f"synthetic option {key!r} is given twice")
            options[key] = value
        return SourceSpec("synthetic", kind, options)
    raise ValueError(
        f"unknown source scheme {scheme!r}; use file:, rtsp://, rtsps://, http://, https:// (MJPEG or any stream "
        "FFmpeg reads), usb:N or synthetic:KIND"
    )


def _check_source(value: str) -> str:
    spec = parse_source(value)
    if spec.kind == "synthetic":
        # Checked against the scene generator's own model, so a misspelt option is caught at load. The import is
        # here, not at the top, because the generator pulls in OpenCV and zxing.
        from pydantic import ValidationError

        from edge_cv.scenes import SceneSpec

        try:
            SceneSpec.model_validate(synthetic_scene_fields(spec, fps=None))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'option'}: {e['msg']}" for e in exc.errors()
            )
            raise ValueError(f"synthetic scene options are not valid: {problems}") from None
    return value


def synthetic_scene_fields(spec: SourceSpec, fps: float | None) -> dict[str, Any]:
    """The SceneSpec fields a `synthetic:` source stands for; the camera's fps unless the source sets its own."""
    fields: dict[str, Any] = {"kind": spec.target, **spec.options}
    if fps is not None and "fps" not in fields:
        fields["fps"] = fps
    return fields


def _sparkplug_id(kind: str, value: str) -> str:
    try:
        return validate_id(kind, value)
    except TopicError as exc:
        raise ValueError(str(exc)) from None


def _env_name(value: str | None) -> str | None:
    if value is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        raise ValueError(f"{value!r} is not an environment variable name")
    return value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CameraConfig(Strict):
    """One camera: where its pictures come from, how often to look, what to look for, and what to decide."""

    source: Annotated[str, AfterValidator(_check_source)] = Field(
        description="file:PATH, rtsp://…, rtsps://…, http(s)://… (MJPEG or any FFmpeg stream), usb:N, "
        "or synthetic:conveyor|floor|mixed?seed=N&…"
    )
    password_env: Annotated[str | None, AfterValidator(_env_name)] = Field(
        None, description="environment variable holding the stream password; it replaces the one in the URL"
    )
    enabled: bool = Field(True, description="false keeps the camera in the file but does not open it")
    fps: float = Field(5.0, gt=0, le=120, description="detection frame rate; newer frames replace older ones")
    width: int | None = Field(None, ge=64, le=7680, description="resize frames to this width (keeps aspect)")
    stall_timeout_s: float = Field(10.0, gt=0, le=600, description="no frame for this long: offline, reconnect")
    open_timeout_s: float = Field(10.0, gt=0, le=120, description="how long opening a stream may take")
    loop: bool = Field(False, description="files and synthetic scenes: start again at the end")
    realtime: bool = Field(
        True, description="files and synthetic scenes: play at their own frame rate (false: as fast as processed)"
    )
    detector: DetectorConfig | None = Field(None, description="what finds objects; none for marking-only cameras")
    classifiers: list[ClassifierConfig] = Field(default_factory=list, description="crop classifiers (attributes)")
    motion: MotionConfig = Field(default_factory=MotionConfig, description="motion gating of the detector")
    tracker: TrackerConfig = Field(default_factory=TrackerConfig)
    zones: dict[str, ZoneConfig] = Field(default_factory=dict, description="named polygons rules judge tracks by")
    lines: dict[str, LineConfig] = Field(default_factory=dict, description="named count lines")
    masks: list[Polygon] = Field(default_factory=list, description="polygons where nothing is detected (no motion)")
    rules: dict[str, RuleConfig] = Field(default_factory=dict, description="rule name → rule (type: counting, …)")

    @property
    def spec(self) -> SourceSpec:
        """The parsed source."""
        return parse_source(self.source)

    def geometry(self) -> CameraGeometry:
        """The camera's named zones, count lines and masks, as rules and the pipeline use them."""
        return CameraGeometry.from_configs(self.zones, self.lines, masks=self.masks)

    def detector_labels(self) -> tuple[str, ...] | None:
        """The labels the configured detector can report; None without a detector."""
        return detector_labels(self.detector)

    @field_validator("zones", "lines")
    @classmethod
    def _names(cls, value: dict[str, Any], info: Any) -> dict[str, Any]:
        for name in value:
            try:
                check_name(info.field_name.rstrip("s"), name)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> CameraConfig:
        problems = camera_problems(self)
        if problems:
            # Raised as a ValidationError so each problem keeps its own path (…rules.packed.line), not the camera's.
            raise ValidationError.from_exception_data("CameraConfig", problems)
        return self


class NodeConfig(Strict):
    """One edge process's Sparkplug edge node; each camera is one of its devices."""

    cameras: dict[str, CameraConfig] = Field(description="camera id (the Sparkplug device id) → camera")

    @field_validator("cameras")
    @classmethod
    def _camera_ids(cls, value: dict[str, CameraConfig]) -> dict[str, CameraConfig]:
        if not value:
            raise ValueError("needs at least one camera")
        for camera_id in value:
            _sparkplug_id("device id", camera_id)
        return value


class SnapshotConfig(Strict):
    """Where event snapshots are kept on the edge computer, and for how long."""

    dir: Path = Field(Path("var/cv/snapshots"), description="folder for snapshot JPEGs (faces blurred)")
    retention_days: float = Field(7.0, gt=0, description="snapshots older than this are deleted")
    max_mb: int = Field(2048, ge=1, description="the oldest snapshots go first when the folder exceeds this")
    jpeg_quality: int = Field(85, ge=10, le=100)


class ReconnectConfig(Strict):
    """Backoff between attempts to reopen a camera that failed: jittered, doubling from initial to max."""

    initial_s: float = Field(1.0, gt=0, le=60)
    max_s: float = Field(30.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _ordered(self) -> ReconnectConfig:
        if self.max_s < self.initial_s:
            raise ValueError(f"max_s ({self.max_s:g}) must be at least initial_s ({self.initial_s:g})")
        return self


class CvConfig(Strict):
    """Edge computer vision: one Sparkplug edge node per entry of `nodes`, each with its cameras."""

    group: str = Field("plant1", description="Sparkplug group id of the cv edge nodes")
    nodes: dict[str, NodeConfig] = Field(default_factory=dict, description="edge node id → its cameras")
    snapshots: SnapshotConfig = Field(default_factory=SnapshotConfig)
    reconnect: ReconnectConfig = Field(default_factory=ReconnectConfig)
    health_interval_s: float = Field(5.0, gt=0, le=3600, description="how often camera health metrics are sent")

    @field_validator("group")
    @classmethod
    def _group_id(cls, value: str) -> str:
        return _sparkplug_id("group id", value)

    @field_validator("nodes")
    @classmethod
    def _node_ids(cls, value: dict[str, NodeConfig]) -> dict[str, NodeConfig]:
        for node_id in value:
            _sparkplug_id("edge node id", node_id)
        return value

    def cameras(self, node: str | None = None) -> list[tuple[str, str, CameraConfig]]:
        """(node id, camera id, camera) of every enabled camera, of one node or of all."""
        out = []
        for node_id, node_config in self.nodes.items():
            if node is not None and node_id != node:
                continue
            out.extend((node_id, cam_id, cam) for cam_id, cam in node_config.cameras.items() if cam.enabled)
        return out


def detector_labels(detector: YoloConfig | HogConfig | BlobConfig | None) -> tuple[str, ...] | None:
    """The labels a detector config can report; None for no detector."""
    if detector is None:
        return None
    if isinstance(detector, YoloConfig):
        return tuple(detector.keep or detector.names)
    return (detector.label,)


def _where(model: Any, value: str) -> tuple[str | int, ...]:
    """The path inside a config model of the field that holds `value` (a name), so an error points at it."""
    if isinstance(model, BaseModel):
        for name in type(model).model_fields:
            found = _where(getattr(model, name), value)
            if found != ():
                return (name, *found) if found != ("",) else (name,)
        return ()
    if isinstance(model, str):
        return ("",) if model == value else ()
    if isinstance(model, (list, tuple)):
        for i, item in enumerate(model):
            found = _where(item, value)
            if found != ():
                return (i,) if found == ("",) else (i, *found)
    if isinstance(model, dict):
        for key, item in model.items():
            if key == value:
                return (key,)
            found = _where(item, value)
            if found != ():
                return (key,) if found == ("",) else (key, *found)
    return ()


def _problem(loc: tuple[str | int, ...], message: str) -> InitErrorDetails:
    # No input: the message already names the offending value, and explain_errors would repeat it.
    return {"type": PydanticCustomError("camera_reference", message), "loc": loc, "input": None}


def camera_problems(camera: CameraConfig) -> list[InitErrorDetails]:
    """What the parts of one camera say about each other: rules naming zones, lines, labels and classifier
    attributes the camera does not have; classifiers for labels its detector never reports."""
    problems: list[InitErrorDetails] = []
    labels = camera.detector_labels()
    attributes = {c.attribute for c in camera.classifiers}
    for i, classifier in enumerate(camera.classifiers):
        if labels is None:
            message = "classifiers need a detector to find the objects they judge; add `detector:`"
            problems.append(_problem(("classifiers", i, "apply_to"), message))
            continue
        for j, label in enumerate(classifier.apply_to):
            if label not in labels:
                message = f"the detector never reports {label!r} (its labels: {', '.join(labels)})"
                problems.append(_problem(("classifiers", i, "apply_to", j), message))
    for rule_name, rule in camera.rules.items():
        for what, wanted, have in (
            ("zone", referenced_zones(rule), camera.zones),
            ("line", referenced_lines(rule), camera.lines),
        ):
            for missing in sorted(n for n in wanted if n not in have):
                known = ", ".join(sorted(have)) or "none"
                message = (f"names {what} {missing!r}, which this camera does not define (its {what}s: {known}); "
                           f"add it under the camera's `{what}s:` or fix the name")  # fmt: skip
                problems.append(_problem(("rules", rule_name, *_where(rule, missing)), message))
        wanted_labels = tuple(getattr(rule, "labels", ()) or ())
        if wanted_labels and labels is None:
            message = (f"this {rule.type} rule follows {', '.join(wanted_labels)} tracks, but the camera has no "
                       "detector; add `detector:`")  # fmt: skip
            problems.append(_problem(("rules", rule_name, "labels"), message))
        elif labels is not None:
            for j, label in enumerate(wanted_labels):
                if label not in labels:
                    message = f"the camera's detector never reports {label!r} (its labels: {', '.join(labels)})"
                    problems.append(_problem(("rules", rule_name, "labels", j), message))
        needed: list[tuple[tuple[str | int, ...], str]] = []
        attribute = getattr(rule, "attribute", None)
        if isinstance(attribute, str):
            needed.append((("attribute",), attribute))
        ppe = getattr(rule, "ppe", None)
        if ppe is not None:
            needed.extend((("ppe", "required", name), name) for name in ppe.required)
        for loc, name in needed:
            if name not in attributes:
                known = ", ".join(sorted(attributes)) or "none"
                message = (f"no classifier of this camera sets attribute {name!r} (attributes: {known}); add a "
                           f"classifier with `attribute: {name}` or fix the name")  # fmt: skip
                problems.append(_problem(("rules", rule_name, *loc), message))
    return problems
