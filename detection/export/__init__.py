"""Deployment: the detector as one ONNX graph (``exporter``), run by ONNX Runtime (``runtime``).

``onnx`` and ``onnxruntime`` come with the ``export`` extra (``pip install -e ".[export]"``, and
in ``.[dev]``); this package imports them only when a function needs them.
"""
from __future__ import annotations

from types import ModuleType

from .. import errors

__all__ = ["require"]


def require(module: str) -> ModuleType:
    """Import ``module`` (``onnx``, ``onnxruntime``), or raise ``MissingExtraError`` (an
    ``ImportError`` that tools print as one ``error:`` line) saying which extra installs it."""
    return errors.require(module, extra="export",
                          purpose="ONNX export and ONNX Runtime inference")
