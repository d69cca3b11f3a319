"""Faster R-CNN: model (``FasterRCNN``, ``build_model``), data, evaluation and training engine."""
from .build import build_model
from .faster_rcnn import FasterRCNN

__all__ = ["FasterRCNN", "build_model"]
