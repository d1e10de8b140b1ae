"""Models shipped with Plantbus, trained by `python -m edge_cv.models.build` on the synthetic scenes; one card
(`<name>.md`) per model. `model_path(name)` finds a shipped model file."""

from __future__ import annotations

from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent
SHIPPED = ("plantbus-det-320", "ppe-mask", "product-appearance")


def model_path(name: str) -> Path:
    """Path of a shipped model by name (without .onnx)."""
    path = MODELS_DIR / f"{name}.onnx"
    if not path.exists():
        raise FileNotFoundError(f"no shipped model {name!r}; shipped: {', '.join(SHIPPED)}")
    return path
