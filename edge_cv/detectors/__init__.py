"""Detectors behind one interface (`edge_cv.types.Detector`) and crop classifiers, built from validated configs.

yolo: ONNX models in the Ultralytics YOLOv8/YOLO11 export format; hog: OpenCV's built-in people detector (no model
file); blob: background subtraction for fixed cameras. See base.py for the config models.
"""

from edge_cv.detectors.base import (
    BlobConfig,
    ClassifierConfig,
    DetectorConfig,
    DetectorError,
    HogConfig,
    YoloConfig,
    build_classifier,
    build_detector,
)

__all__ = [
    "BlobConfig",
    "ClassifierConfig",
    "DetectorConfig",
    "DetectorError",
    "HogConfig",
    "YoloConfig",
    "build_classifier",
    "build_detector",
]
