"""Deployment: the detector as one ONNX graph (``exporter``), run by ONNX Runtime (``runtime``)
or OpenVINO (``openvino``, IR files; INT8 by NNCF in ``quantize``).

``onnx`` and ``onnxruntime`` come with the ``export`` extra (``pip install -e ".[export]"``),
``openvino`` and ``nncf`` with the ``openvino`` extra; all in ``.[dev]``. This package imports
them only when a function needs them.
"""
from __future__ import annotations

from types import ModuleType

from .. import errors

__all__ = ["require"]


_EXTRAS = {"export": "ONNX export and ONNX Runtime inference",
           "openvino": "the OpenVINO backend and INT8 export"}


def require(module: str, *, extra: str = "export") -> ModuleType:
    """Import ``module`` (``onnx``, ``onnxruntime``, ``openvino``, ``nncf``), or raise
    ``MissingExtraError`` (an ``ImportError`` that tools print as one ``error:`` line) saying
    which extra installs it."""
    return errors.require(module, extra=extra, purpose=_EXTRAS[extra])
