"""Deployment: the detector as one ONNX graph (``exporter``), run by ONNX Runtime (``runtime``)
or OpenVINO (``openvino``, IR files; INT8 by NNCF in ``quantize``).

``onnx`` and ``onnxruntime`` come with the ``export`` extra (``pip install -e ".[export]"``),
``openvino`` and ``nncf`` with the ``openvino`` extra; all in ``.[dev]``. This package imports
them only when a function needs them.
"""
from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require"]


_EXTRAS = {"export": "ONNX export and ONNX Runtime inference need the export extra",
           "openvino": "the OpenVINO backend and INT8 export need the openvino extra"}


def require(module: str, *, extra: str = "export") -> ModuleType:
    """Import ``module`` (``onnx``, ``onnxruntime``, ``openvino``, ``nncf``), or raise
    ``MissingExtraError`` (an ``ImportError`` that tools print as one ``error:`` line) saying
    which extra installs it."""
    from ..cli import MissingExtraError

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(f"{module} is not installed: {_EXTRAS[extra]}: "
                                f'pip install -e ".[{extra}]"') from None
