"""Loading ONNX models with onnxruntime: finding the file, reading its shapes and metadata, choosing providers.

Only onnxruntime is used at run time (the `onnx` package is a test/train extra), so model inspection goes through
an `InferenceSession` with graph optimisation switched off, which opens a YOLOv8n-sized file in a few ms.
"""

from __future__ import annotations

import ast
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnxruntime as ort

log = logging.getLogger(__name__)

# Shipped models (edge_cv/models/, one card per model) are found by bare file name.
MODELS_DIR = Path(__file__).resolve().parent.parent / "models"

# Fastest first. TensorRT compiles an engine for the model when a session starts (minutes the first time); the
# engine cache below makes later starts quick.
_ACCELERATED = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
CPU = "CPUExecutionProvider"


def resolve_model_path(value: str | Path, base_dir: str | Path | None = None) -> Path:
    """The model file a config names: absolute as is; relative against `base_dir` (the YAML's folder), then the
    working directory, then the shipped models folder. Raises ValueError naming every place it looked."""
    path = Path(value).expanduser()
    if path.is_absolute():
        candidates = [path]
    else:
        candidates = [Path(base_dir) / path] if base_dir is not None else []
        candidates += [Path.cwd() / path, MODELS_DIR / path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    looked = ", ".join(str(c) for c in candidates)
    raise ValueError(f"model file {str(value)!r} not found (looked in: {looked})")


Dim = int | None


@dataclass(frozen=True)
class ModelInfo:
    """What a model file says about itself: one input, its outputs, and its metadata (string key -> value)."""

    path: Path
    input_name: str
    input_shape: tuple[Dim, ...]
    input_type: str
    output_names: tuple[str, ...]
    output_shapes: tuple[tuple[Dim, ...], ...]
    metadata: dict[str, str] = field(default_factory=dict)


def _dims(shape: list[Any]) -> tuple[Dim, ...]:
    # onnxruntime reports symbolic dimensions as strings ('batch', 'height') or None.
    return tuple(d if isinstance(d, int) and d > 0 else None for d in shape)


def _session_options(threads: int, optimise: bool = True) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: ORT warns about unused initialisers in many exports
    if not optimise:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return options


def inspect_model(path: Path) -> ModelInfo:
    """Open a model on the CPU and read its input, outputs and metadata; ValueError when it is not loadable ONNX."""
    try:
        session = ort.InferenceSession(str(path), _session_options(1, optimise=False), providers=[CPU])
    except Exception as exc:  # onnxruntime raises its own pybind exception types (InvalidProtobuf, Fail, …)
        raise ValueError(f"{path} is not an ONNX model onnxruntime can load: {exc}") from exc
    inputs = session.get_inputs()
    if len(inputs) != 1:
        names = [i.name for i in inputs]
        raise ValueError(f"{path}: expected one image input, the model has {len(inputs)}: {names}")
    outputs = session.get_outputs()
    return ModelInfo(
        path=path,
        input_name=inputs[0].name,
        input_shape=_dims(inputs[0].shape),
        input_type=inputs[0].type,
        output_names=tuple(o.name for o in outputs),
        output_shapes=tuple(_dims(o.shape) for o in outputs),
        metadata=dict(session.get_modelmeta().custom_metadata_map),
    )


def parse_names(raw: str) -> list[str]:
    """Class names from model metadata: Ultralytics writes `str(dict)` ("{0: 'person', 1: 'car'}"); a JSON list or
    object works too. ValueError when the text is none of these or the indices are not 0..K-1."""
    value: Any
    try:
        value = json.loads(raw)
    except ValueError:
        try:
            value = ast.literal_eval(raw)  # literal_eval evaluates literals only, never code
        except (ValueError, SyntaxError) as exc:
            raise ValueError(f"metadata 'names' is neither JSON nor a Python literal: {raw[:80]!r}") from exc
    if isinstance(value, dict):
        try:
            indexed = {int(k): str(v) for k, v in value.items()}
        except (TypeError, ValueError) as exc:
            raise ValueError(f"metadata 'names' keys must be class indices: {raw[:80]!r}") from exc
        if sorted(indexed) != list(range(len(indexed))):
            raise ValueError(f"metadata 'names' indices must be 0..{len(indexed) - 1}: {raw[:80]!r}")
        return [indexed[i] for i in range(len(indexed))]
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ValueError(f"metadata 'names' must be a list or an index->name mapping: {raw[:80]!r}")


def parse_size(raw: str) -> tuple[int, int]:
    """(width, height) from metadata `imgsz`, which Ultralytics writes as "[height, width]" (or one number)."""
    value = ast.literal_eval(raw)
    if isinstance(value, int):
        return value, value
    if isinstance(value, list | tuple) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return int(value[1]), int(value[0])
    raise ValueError(f"metadata 'imgsz' is not a size: {raw!r}")


def parse_list(raw: str) -> list[Any]:
    """A list from metadata text: JSON "[0.5, 0.5, 0.5]" or "0.5,0.5,0.5"."""
    try:
        value = json.loads(raw)
    except ValueError:
        value = [v.strip() for v in raw.split(",")]
    if not isinstance(value, list):
        raise ValueError(f"not a list: {raw!r}")
    return value


def select_providers(
    available: list[str], requested: list[str] | None = None, cache_dir: str | Path | None = None
) -> list[str | tuple[str, dict[str, Any]]]:
    """The execution providers to ask onnxruntime for, best first, always ending with the CPU.

    With nothing requested: TensorRT and CUDA when this onnxruntime build lists them, then the CPU. A requested
    provider that is not available is skipped with a warning (the same config runs on a GPU box and a CPU box).
    """
    wanted = list(requested) if requested else [p for p in _ACCELERATED if p in available]
    chosen: list[str | tuple[str, dict[str, Any]]] = []
    for name in wanted:
        if name == CPU:
            continue
        if name not in available:
            log.warning("onnxruntime here has no %s (available: %s); using the next provider", name, available)
            continue
        if name == "TensorrtExecutionProvider":
            default = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "plantbus/trt"
            cache = Path(cache_dir) if cache_dir else default
            chosen.append((name, {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache.expanduser())}))
        else:
            chosen.append(name)
    chosen.append(CPU)
    return chosen


def open_session(
    path: Path, threads: int, requested: list[str] | None = None, cache_dir: str | Path | None = None
) -> ort.InferenceSession:
    """An inference session on the best available providers with `threads` CPU threads."""
    providers = select_providers(ort.get_available_providers(), requested, cache_dir)
    session = ort.InferenceSession(str(path), _session_options(threads), providers=providers)
    log.info("model %s runs on %s", path.name, session.get_providers())
    return session
