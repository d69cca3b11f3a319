"""OpenVINO: the exported graph as IR files (``.xml`` + ``.bin``), run on the CPU plugin.

:func:`export_openvino` converts an ``.onnx`` file of :func:`~detection.export.exporter.
export_onnx` with ``openvino.convert_model`` and writes ``model.xml`` / ``model.bin`` with the
same metadata (``classes``, ``min_size``, ``max_size``, ``size_divisibility``, ``score_thresh``,
``config``) in the IR's runtime info under ``resdet``; :func:`read_openvino_metadata` reads it
back from an IR or, for an ``.onnx`` file, its ``metadata_props``.

:class:`OpenVINODetector` runs an ``.xml`` or ``.onnx`` file and is called like
``FasterRCNN`` in eval mode (``detection.export.runtime.GraphDetector``). Its arithmetic follows
the CPU (``detection.precision``): ``amp="auto"`` sets OpenVINO's ``INFERENCE_PRECISION_HINT``
to ``bf16`` where the CPU multiplies bf16 natively (AMX, AVX512-BF16) and to ``f32`` elsewhere;
``amp="off"`` forces ``f32``; ``amp="bf16"`` asks for ``bf16`` anywhere. The plugin keeps the
post-processing (NMS, TopK, NonZero, RoIAlign) in float32 whatever the hint. An INT8 IR
(:mod:`detection.export.quantize`) runs its quantized convolutions in INT8 under either hint.

``openvino`` (and ``nncf`` for INT8) come with the ``openvino`` extra:
``pip install -e ".[openvino]"``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ..engine.files import atomic_path
from ..precision import resolve_precision
from . import require
from .exporter import read_metadata
from .graph import INPUT_NAMES, OUTPUT_NAMES
from .runtime import GraphDetector

__all__ = ["export_openvino", "read_openvino_metadata", "save_ir", "OpenVINODetector",
           "openvino_precision", "OPENVINO_EXTRA"]

OPENVINO_EXTRA = 'pip install -e ".[openvino]"'
_SECTION = "resdet"  # the runtime-info section of the IR that holds the metadata
PathLike = Union[str, os.PathLike]


def _openvino():
    return require("openvino", extra="openvino")


def openvino_precision(amp: str) -> tuple[str, str]:
    """``(hint, why)``: OpenVINO's ``INFERENCE_PRECISION_HINT`` (``bf16`` / ``f32``) for
    ``amp`` (``auto``, ``off``, ``bf16``) on this CPU, chosen as the PyTorch path chooses."""
    p = resolve_precision(amp, "cpu")
    return ("bf16" if p.enabled else "f32"), p.reason


def export_openvino(onnx_path: PathLike, xml_path: PathLike, *,
                    model: Any = None) -> dict[str, str]:
    """Write the IR of ``onnx_path`` (or of the already converted / quantized ``model``, an
    ``openvino.Model``) to ``xml_path`` (+ ``.bin``), carrying the ``.onnx`` file's metadata;
    returns that metadata. Weights stay float32 (no FP16 compression), or INT8 where quantized.
    """
    ov = _openvino()
    onnx = require("onnx")
    proto = onnx.load(os.fspath(onnx_path), load_external_data=False)
    metadata = {p.key: p.value for p in proto.metadata_props}
    read_metadata(metadata, os.fspath(onnx_path))  # complete and readable, or a clear error
    if model is None:
        model = ov.convert_model(os.fspath(onnx_path))
    for key, value in metadata.items():
        model.set_rt_info(value, [_SECTION, key])
    save_ir(model, xml_path)
    return metadata


def save_ir(model: Any, xml_path: Union[str, os.PathLike]) -> None:
    """``openvino.save_model`` into ``xml_path`` and its ``.bin``, float32 weights, atomically
    (``engine/files.py``): the ``.bin`` replaced first, the ``.xml`` last; a full disk is one
    ``DiskFullError`` and leaves the previous pair and no temporary file."""
    ov = _openvino()
    xml_path = Path(xml_path)
    with atomic_path(xml_path) as tmp_xml, atomic_path(xml_path.with_suffix(".bin")):
        # the .bin goes beside the .xml: the second temporary name
        ov.save_model(model, os.fspath(tmp_xml), compress_to_fp16=False)


def read_openvino_metadata(model: Any, source: str) -> dict[str, Any]:
    """The parsed metadata of an IR (``openvino.Model`` read from ``.xml``) or, for an
    ``.onnx`` file, of its ``metadata_props``."""
    if source.lower().endswith(".onnx"):
        proto = require("onnx").load(source, load_external_data=False)
        return read_metadata({p.key: p.value for p in proto.metadata_props}, source)
    raw = {}
    if model.has_rt_info([_SECTION]):
        for key in ("classes", "min_size", "max_size", "size_divisibility", "score_thresh",
                    "config"):
            if model.has_rt_info([_SECTION, key]):
                raw[key] = str(model.get_rt_info([_SECTION, key]).value)
    return read_metadata(raw, source)


class OpenVINODetector(GraphDetector):
    """An ``.xml`` (IR) or ``.onnx`` file of ``tools/export.py`` on OpenVINO's CPU plugin.

    Args:
        path: the file; its metadata gives classes, resize, score threshold and config.
        threads: ``INFERENCE_NUM_THREADS`` (default: OpenVINO's choice, one per core).
        score_thresh: keep detections scoring at least this (not below the exported one).
        amp: ``auto`` (bf16 hint where the CPU has native bf16), ``off`` (``f32``) or
            ``bf16``; see the module docstring.
    """

    def __init__(self, path: PathLike, *, threads: Optional[int] = None,
                 score_thresh: Optional[float] = None, amp: str = "auto") -> None:
        ov = _openvino()
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"OpenVINO model file not found: {path}")
        core = ov.Core()
        try:
            model = core.read_model(path)
        except RuntimeError as e:
            raise ValueError(f"{path}: OpenVINO cannot read it: {e}") from None
        meta = read_openvino_metadata(model, path)
        self.precision, self.precision_reason = openvino_precision(amp)
        config = {"INFERENCE_PRECISION_HINT": self.precision, "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.compiled = core.compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.output_names = [name for name in (*OUTPUT_NAMES, "masks")
                             if any(name in out.get_names() for out in self.compiled.outputs)]
        self._outputs = [self.compiled.output(name) for name in self.output_names]
        self._set_metadata(meta, path, score_thresh)

    def describe(self) -> str:
        return f"OpenVINO {self.precision} ({self.precision_reason})"

    def run(self, images: np.ndarray, image_sizes: np.ndarray) -> list[np.ndarray]:
        """The graph itself: ``boxes, scores, labels, batch_index[, masks]`` (flat, by
        image)."""
        result = self.request.infer(dict(zip(INPUT_NAMES, (images, image_sizes))))
        return [np.array(result[out]) for out in self._outputs]

