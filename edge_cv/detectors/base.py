"""Detector and classifier configuration (validated at load) and the functions that build them.

A camera's `detector:` is a discriminated union on `type` (yolo | hog | blob); its `classifiers:` are a list of
`ClassifierConfig`. ONNX models are opened and checked during validation, so `plantbus cv check` reports a missing
file, a file that is not ONNX, or an output that does not fit the classes before any camera starts.

Relative model paths are looked up next to the YAML (pass `context={"base_dir": folder}` to `model_validate`), then
in the working directory, then in the shipped `edge_cv/models/` folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from hub.errors import PlantbusError

from edge_cv.detectors.onnx_model import (
    ModelInfo,
    inspect_model,
    parse_list,
    parse_names,
    parse_size,
    resolve_model_path,
)

if TYPE_CHECKING:
    from edge_cv.detectors.classifier import Classifier
    from edge_cv.types import Detector



class DetectorError(PlantbusError):
    """A model produced something its config does not describe (wrong output shape at run time)."""


Layout = Literal["channels_first", "transposed", "runtime"]
RoiScale = Literal["frame", "native"]


def _resolve(value: Any, info: ValidationInfo) -> Path:
    base_dir = info.context.get("base_dir") if isinstance(info.context, dict) else None
    return resolve_model_path(value, base_dir)


def _static(dim: int | None) -> bool:
    return isinstance(dim, int)


class YoloConfig(BaseModel):
    """An ONNX detector in the Ultralytics YOLOv8/YOLO11 export format: input [1,3,H,W] RGB/255 letterboxed,
    output [1, 4+C, N] (cx, cy, w, h in input pixels, then C sigmoid class scores); [1, N, 4+C] is accepted too."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["yolo"]
    model: Path = Field(description="the .onnx file (relative: next to the YAML, working dir, edge_cv/models/)")
    classes: list[str] | None = Field(
        default=None, min_length=1, description="class names in model order; default: the model's `names` metadata"
    )
    keep: list[str] | None = Field(default=None, min_length=1, description="report only these classes")
    confidence: float = Field(default=0.4, gt=0.0, le=1.0, description="minimum class score")
    iou: float = Field(default=0.45, gt=0.0, le=1.0, description="NMS overlap above which the weaker box goes")
    input_size: tuple[int, int] | None = Field(
        default=None, description="[width, height]; needed only for a model exported with dynamic height/width"
    )
    threads: int = Field(default=2, ge=1, le=64, description="onnxruntime CPU threads")
    providers: list[str] | None = Field(
        default=None, description="onnxruntime providers to try in order; default TensorRT, CUDA when present, CPU"
    )
    max_detections: int = Field(default=300, ge=1, le=10000)
    roi_padding: int = Field(default=32, ge=0, le=512, description="pixels added around each motion/track ROI")
    max_regions: int = Field(default=2, ge=1, le=16, description="more ROI crops than this: run the whole frame")
    roi_scale: RoiScale = Field(
        default="frame",
        description="frame: ROI crops reach the model at the scale of the letterboxed whole frame (what a model "
        "trained on whole frames knows); native: at full resolution (a model trained on native-resolution tiles)",
    )
    agnostic_nms: bool = Field(default=False, description="NMS across classes (one box per object)")

    _info: ModelInfo = PrivateAttr()
    _names: list[str] = PrivateAttr()
    _layout: Layout = PrivateAttr()
    _input_wh: tuple[int, int] = PrivateAttr()
    _dynamic_hw: bool = PrivateAttr()

    @field_validator("model", mode="before")
    @classmethod
    def _find_model(cls, value: Any, info: ValidationInfo) -> Path:
        return _resolve(value, info)

    @field_validator("input_size")
    @classmethod
    def _check_size(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and not all(32 <= v <= 4096 and v % 32 == 0 for v in value):
            raise ValueError(f"input_size {list(value)} must be two multiples of 32 between 32 and 4096")
        return value

    @model_validator(mode="after")
    def _check_model(self) -> YoloConfig:
        info = inspect_model(self.model)
        shape = info.input_shape
        if len(shape) != 4 or shape[1] not in (3, None):
            raise ValueError(f"{self.model.name}: input {info.input_name} is {list(shape)}, expected [1, 3, H, W]")
        if not info.input_type.startswith("tensor(float"):
            raise ValueError(f"{self.model.name}: input type {info.input_type}, expected float32 or float16")
        self._input_wh, self._dynamic_hw = _input_size(self.model.name, shape, self.input_size, info.metadata)
        if len(info.output_shapes) < 1 or len(info.output_shapes[0]) != 3:
            shapes = [list(s) for s in info.output_shapes]
            raise ValueError(
                f"{self.model.name}: output {shapes} is not the YOLOv8/YOLO11 detection format [1, 4+classes, N] "
                "(a segmentation/pose/classification model, or an export with NMS inside, is not a detector here)"
            )
        names = _names(self.model.name, self.classes, info.metadata)
        self._layout = _layout(self.model.name, info.output_shapes[0], len(names))
        if self.keep is not None and (unknown := sorted(set(self.keep) - set(names))):
            raise ValueError(f"keep lists {unknown}, which are not classes of {self.model.name}: {names}")
        self._info, self._names = info, names
        return self

    @property
    def names(self) -> list[str]:
        """Class names in model order."""
        return self._names


def _input_size(
    model: str, shape: tuple[int | None, ...], configured: tuple[int, int] | None, metadata: dict[str, str]
) -> tuple[tuple[int, int], bool]:
    height, width = shape[2], shape[3]
    if _static(height) and _static(width):
        if configured is not None and configured != (width, height):
            raise ValueError(f"input_size {list(configured)} contradicts the model's fixed input {width}x{height}")
        return (int(width), int(height)), False  # type: ignore[arg-type]
    if configured is not None:
        return configured, True
    if "imgsz" in metadata:
        return parse_size(metadata["imgsz"]), True
    raise ValueError(f"{model} has a dynamic input size and no 'imgsz' metadata: set input_size: [width, height]")


def _names(model: str, classes: list[str] | None, metadata: dict[str, str]) -> list[str]:
    from_model = parse_names(metadata["names"]) if "names" in metadata else None
    if classes is None:
        if from_model is None:
            raise ValueError(f"{model} carries no 'names' metadata: list its class names in `classes`")
        return from_model
    if from_model is not None and len(from_model) != len(classes):
        raise ValueError(
            f"classes lists {len(classes)} names but {model} was exported with {len(from_model)}: {from_model}"
        )
    if len(set(classes)) != len(classes):
        raise ValueError(f"classes has duplicates: {classes}")
    return classes


def _layout(model: str, shape: tuple[int | None, ...], num_classes: int) -> Layout:
    rows = 4 + num_classes
    a, b = shape[1], shape[2]
    if a == rows:
        return "channels_first"  # Ultralytics' own [1, 4+C, N], also when N happens to equal 4+C
    if b == rows:
        return "transposed"
    if a is None and b is None:
        return "runtime"
    if a is None:
        return "channels_first"
    if b is None:
        return "transposed"
    raise ValueError(
        f"{model}: output [1, {a}, {b}] does not fit {num_classes} classes: one axis must be 4+{num_classes}={rows}. "
        "Check `classes`; a [1, 300, 6] output means NMS was exported into the model (export with nms=False)"
    )


class HogConfig(BaseModel):
    """OpenCV's built-in HOG + linear SVM people detector (Dalal-Triggs, trained on INRIA): no model file needed.
    It finds upright people at least ~128 px tall (after `max_width` scaling); slower and weaker than a YOLO model."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["hog"]
    label: str = Field(default="person", min_length=1)
    confidence: float = Field(
        default=0.4, gt=0.0, le=1.0, description="minimum score; score = 1 - exp(-SVM margin), 0.4 ~ margin 0.5"
    )
    scale: float = Field(default=1.05, gt=1.0, le=1.5, description="image pyramid step; larger is faster, coarser")
    win_stride: Literal[8, 16, 24, 32] = Field(default=8, description="window step in pixels")
    padding: int = Field(default=8, ge=0, le=64)
    group_threshold: int = Field(default=2, ge=0, le=10, description="OpenCV groups ≥ this+1 nearby hits per person")
    max_width: int | None = Field(default=640, ge=128, description="frames wider than this are downscaled first")
    iou: float = Field(default=0.45, gt=0.0, le=1.0)
    tight: bool = Field(default=True, description="trim the detection window's margin to the person's outline")
    roi_padding: int = Field(default=48, ge=0, le=512)
    max_regions: int = Field(default=3, ge=1, le=16)


class BlobConfig(BaseModel):
    """Background subtraction for a fixed camera (a conveyor): moving foreground blobs become detections.
    Touching objects merge into one blob; use a YOLO model when products travel packed together. Objects lying
    in view during the warm-up frames become part of the background: when they move off, the bare belt where they
    lay shows as a still "ghost" blob until the model relearns it (~history frames with mog2, ~3/alpha with
    average). The mog2 defaults suit a busy belt (products over a pixel up to about half the time): background
    is only what a pixel shows 40 % of its recent history, so products passing are never learned; an object
    that stops in view is absorbed after ~history/2 frames."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["blob"]
    label: str = Field(default="product", min_length=1)
    method: Literal["mog2", "average"] = "mog2"
    scale: float = Field(default=0.5, gt=0.05, le=1.0, description="work at this fraction of the frame size")
    history: int = Field(default=100, ge=10, le=10000, description="frames the background model remembers (mog2)")
    var_threshold: float = Field(default=25.0, gt=0.0, description="mog2 squared Mahalanobis distance threshold")
    background_ratio: float = Field(
        default=0.4,
        gt=0.0,
        le=1.0,
        description="mog2: share of a pixel's recent history its background modes must cover; keep it below the "
        "share of time the bare belt shows (OpenCV's 0.9 takes products passing half the time for background)",
    )
    alpha: float = Field(default=0.02, gt=0.0, lt=1.0, description="background update rate (average)")
    threshold: int = Field(default=25, ge=1, le=254, description="grey-level difference that is foreground (average)")
    min_area: int = Field(default=400, ge=1, description="smallest blob in frame pixels²")
    max_area: int | None = Field(default=None, ge=1, description="largest blob in frame pixels²")
    kernel: int = Field(default=5, ge=1, le=31, description="morphology kernel size, working pixels")
    warmup_frames: int = Field(default=20, ge=0, description="frames that only train the background")

    @model_validator(mode="after")
    def _check_areas(self) -> BlobConfig:
        if self.max_area is not None and self.max_area <= self.min_area:
            raise ValueError(f"max_area {self.max_area} must be larger than min_area {self.min_area}")
        return self


DetectorConfig = Annotated[YoloConfig | HogConfig | BlobConfig, Field(discriminator="type")]

ColourOrder = Literal["rgb", "bgr"]
Resize = Literal["stretch", "letterbox", "center_crop"]
OutputKind = Literal["auto", "probabilities", "logits"]


class ClassifierConfig(BaseModel):
    """An ONNX crop classifier: input [B,3,H,W] (RGB/255 unless the model's metadata says otherwise), output [B,K]
    scores; its verdict goes to `Detection.attributes[attribute] = (label, score)` for detections in `apply_to`.

    Metadata keys read (config fields win): `names`, `imgsz`, `color` (rgb|bgr), `mean` and `std` (three numbers
    in 0..1 units, applied after /255), `resize` (stretch|letterbox|center_crop), `output` (probabilities|logits).
    """

    model_config = ConfigDict(extra="forbid")

    model: Path
    attribute: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="attribute name, e.g. mask, hairnet, quality")
    labels: list[str] | None = Field(default=None, min_length=2, description="default: the model's `names`")
    apply_to: list[str] = Field(min_length=1, description="detection labels whose crops are classified")
    crop: Literal["box", "head"] = Field(default="box", description="head: the top 30% of the box")
    min_score: float = Field(default=0.0, ge=0.0, lt=1.0, description="below this the attribute is not set")
    padding: float = Field(default=0.0, ge=0.0, le=0.5, description="crop grown by this fraction per side")
    input_size: tuple[int, int] | None = Field(default=None, description="[width, height] for dynamic models")
    color: ColourOrder | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    resize: Resize | None = None
    output: OutputKind | None = None
    threads: int = Field(default=1, ge=1, le=64)
    providers: list[str] | None = None
    max_batch: int = Field(default=32, ge=1, le=1024)

    _info: ModelInfo = PrivateAttr()
    _labels: list[str] = PrivateAttr()
    _input_wh: tuple[int, int] = PrivateAttr()
    _dynamic_batch: bool = PrivateAttr()
    _settings: dict[str, Any] = PrivateAttr()

    @field_validator("model", mode="before")
    @classmethod
    def _find_model(cls, value: Any, info: ValidationInfo) -> Path:
        return _resolve(value, info)

    @model_validator(mode="after")
    def _check_model(self) -> ClassifierConfig:
        info = inspect_model(self.model)
        name = self.model.name
        shape = info.input_shape
        if len(shape) != 4 or shape[1] not in (3, None):
            raise ValueError(f"{name}: input {info.input_name} is {list(shape)}, expected [batch, 3, H, W]")
        self._input_wh, _ = _input_size(name, shape, self.input_size, info.metadata)
        out = info.output_shapes[0]
        if len(out) != 2:
            raise ValueError(f"{name}: output {list(out)} is not [batch, classes] scores")
        labels = self.labels
        meta_labels = parse_names(info.metadata["names"]) if "names" in info.metadata else None
        if labels is None:
            if meta_labels is None:
                raise ValueError(f"{name} carries no 'names' metadata: list its labels in `labels`")
            labels = meta_labels
        if out[1] is not None and out[1] != len(labels):
            raise ValueError(f"{name} scores {out[1]} classes but {len(labels)} labels are given: {labels}")
        if meta_labels is not None and len(meta_labels) != len(labels):
            raise ValueError(f"labels lists {len(labels)} names but {name} was exported with {len(meta_labels)}")
        meta = info.metadata
        self._settings = {
            "color": self.color or _choice(name, meta, "color", ("rgb", "bgr"), "rgb"),
            "resize": self.resize or _choice(name, meta, "resize", ("stretch", "letterbox", "center_crop"), "stretch"),
            "output": self.output or _choice(name, meta, "output", ("auto", "probabilities", "logits"), "auto"),
            "mean": self.mean or _triple(name, meta, "mean", (0.0, 0.0, 0.0)),
            "std": self.std or _triple(name, meta, "std", (1.0, 1.0, 1.0)),
        }
        if any(s <= 0 for s in self._settings["std"]):
            raise ValueError(f"std {self._settings['std']} must be positive")
        self._info, self._labels, self._dynamic_batch = info, labels, shape[0] is None
        return self

    @property
    def names(self) -> list[str]:
        """Labels in model output order."""
        return self._labels


def _choice(model: str, meta: dict[str, str], key: str, allowed: tuple[str, ...], default: str) -> str:
    value = meta.get(key, default).strip().lower()
    if value not in allowed:
        raise ValueError(f"{model}: metadata {key}={value!r} is not one of {list(allowed)}")
    return value


def _triple(model: str, meta: dict[str, str], key: str, default: tuple[float, float, float]) -> tuple[float, ...]:
    if key not in meta:
        return default
    try:
        value = tuple(float(v) for v in parse_list(meta[key]))
    except ValueError as exc:
        raise ValueError(f"{model}: metadata {key}={meta[key]!r} is not three numbers") from exc
    if len(value) != 3:
        raise ValueError(f"{model}: metadata {key}={meta[key]!r} is not three numbers")
    return value


def build_detector(config: YoloConfig | HogConfig | BlobConfig) -> Detector:
    """The detector a validated config describes (each instance holds per-camera state: use one per camera)."""
    if isinstance(config, YoloConfig):
        from edge_cv.detectors.yolo import YoloDetector

        return YoloDetector(config)
    if isinstance(config, HogConfig):
        from edge_cv.detectors.hog import HogDetector

        return HogDetector(config)
    if isinstance(config, BlobConfig):
        from edge_cv.detectors.blob import BlobDetector

        return BlobDetector(config)
    raise TypeError(f"not a detector config: {type(config).__name__}")


def build_classifier(config: ClassifierConfig) -> Classifier:
    """The crop classifier a validated config describes."""
    from edge_cv.detectors.classifier import Classifier

    return Classifier(config)
