"""Deployment: the detector as one ONNX graph (``exporter``), run by ONNX Runtime (``runtime``).

``onnx`` and ``onnxruntime`` come with the ``export`` extra (``pip install -e ".[export]"``, and
in ``.[dev]``); this package imports them only when a function needs them.
"""
from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require"]


def require(module: str) -> ModuleType:
    """Import ``module`` (``onnx``, ``onnxruntime``), or raise ``MissingExtraError`` (an
    ``ImportError`` that tools print as one ``error:`` line) saying which extra installs it."""
    from ..cli import MissingExtraError

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(f"{module} is not installed: ONNX export and ONNX Runtime "
                                'inference need the export extra: pip install -e ".[export]"'
                                ) from None
