"""Faster R-CNN: model (``FasterRCNN``, ``build_model``), data, evaluation and training engine.

The names below are imported on first use, so that importing a subpackage (the command line's
``--help``, say) does not pull in torch and the data stack.
"""
import importlib

__all__ = ["FasterRCNN", "Predictor", "build_model"]
_HOMES = {"FasterRCNN": ".faster_rcnn", "Predictor": ".predictor", "build_model": ".build"}


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name], __name__), name)
    raise AttributeError(f"module 'detection' has no attribute {name!r}")
