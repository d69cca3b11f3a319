"""Faster R-CNN: model (``FasterRCNN``, ``build_model``), data, evaluation and training engine."""
from .build import build_model
from .faster_rcnn import FasterRCNN

__all__ = ["FasterRCNN", "Predictor", "build_model"]


def __getattr__(name: str):
    # lazy: Predictor pulls in the data transforms (albumentations), which the model does not need
    if name == "Predictor":
        from .predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'detection' has no attribute {name!r}")
