"""INT8 after training: NNCF's post-training quantization of the OpenVINO IR, and its cost.

:func:`quantize_openvino` takes images of the training set (``data.train``) at the test scale
(the resize of ``data.input.min_size_test`` / ``max_size_test``, one image per batch, as
``Predictor`` feeds them: :func:`calibration_inputs` of ``detection.setup.build_split_for_test``),
collects activation ranges on them with ``nncf.quantize`` (the
``performance`` preset: symmetric INT8 weights and activations of the convolutions and fully
connected layers; post-processing stays as it is) and writes the IR with the ``.onnx`` file's
metadata plus ``int8`` (calibration count and the measured accuracy change).

:func:`accuracy_change` is what the export prints: the float32 graph (OpenVINO, ``f32``) and the
INT8 IR over a loader of ``data.test``, their COCO mAP (or VOC AP) and how many of the float32
detections above score 0.3 the INT8 ones reproduce (IoU > 0.9, score within 0.05).
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from typing import Any, Union

import numpy as np

from . import require
from .openvino import OpenVINODetector, export_openvino, save_ir
from .runtime import REDUCED_PRECISION_MATCH, compare_detections, pad_batch

__all__ = ["calibration_inputs", "quantize_openvino", "evaluate_graph", "accuracy_change"]

PathLike = Union[str, os.PathLike]
logger = logging.getLogger("detection")


def calibration_inputs(dataset: Any, count: int, *, size_divisibility: int, seed: int = 0
                       ) -> list[dict[str, np.ndarray]]:
    """``count`` images of ``dataset`` (drawn without replacement by ``seed``), each as the
    graph's inputs ``{"images": uint8 (1, 3, H, W), "image_sizes": int64 (1, 2)}``."""
    if count < 1:
        raise ValueError(f"--calib must be at least 1, got {count}")
    rng = np.random.default_rng(seed)
    picks = rng.permutation(len(dataset))[:count]
    inputs = []
    for i in picks:
        images, sizes = pad_batch([dataset[int(i)]["image"].numpy()], size_divisibility)
        inputs.append({"images": images, "image_sizes": sizes})
    return inputs


def quantize_openvino(onnx_path: PathLike, xml_path: PathLike, *,
                      inputs: list[dict[str, np.ndarray]]) -> dict[str, str]:
    """Write the INT8 IR of ``onnx_path`` to ``xml_path``, calibrated on ``inputs``
    (:func:`calibration_inputs`); returns its metadata."""
    ov = require("openvino", extra="openvino")
    nncf = require("nncf", extra="openvino")
    model = ov.convert_model(os.fspath(onnx_path))
    quantized = nncf.quantize(model, nncf.Dataset(inputs), subset_size=len(inputs),
                              preset=nncf.QuantizationPreset.PERFORMANCE)
    return export_openvino(onnx_path, xml_path, model=quantized)


def evaluate_graph(detector: Any, loader: Iterable[list[dict]], evaluator: Any
                   ) -> tuple[dict, list[dict]]:
    """``(results, outputs)``: ``evaluator``'s result (percent) of ``detector`` (an exported
    graph's runtime, or anything called like the model in eval mode) over ``loader``, and its
    detections per image (original pixels)."""
    evaluator.reset()
    outputs: list[dict] = []
    for batch in loader:
        preds = detector([s["image"] for s in batch],
                         original_sizes=[tuple(s["original_size"]) for s in batch])
        evaluator.process([{k: v for k, v in s.items() if k != "image"} for s in batch], preds)
        outputs.extend(preds)
    return evaluator.evaluate(), outputs


def accuracy_change(reference: PathLike, quantized: PathLike, *, loader: Iterable[list[dict]],
                    evaluator: Any, threads: Any = None) -> dict[str, Any]:
    """The float32 graph ``reference`` (OpenVINO ``f32``) against ``quantized`` (the CPU's
    hint) over ``loader``: both results, the change in points and the matched fraction."""
    ref_results, ref_out = evaluate_graph(
        OpenVINODetector(reference, threads=threads, amp="off"), loader, evaluator)
    q_results, q_out = evaluate_graph(OpenVINODetector(quantized, threads=threads), loader,
                                      evaluator)
    match = compare_detections(ref_out, q_out, **REDUCED_PRECISION_MATCH)
    keys = [k for k in ("mAP", "mAP50") if k in ref_results]
    change = {k: q_results[k] - ref_results[k] for k in keys}
    return {"float32": {k: ref_results[k] for k in keys}, "int8": {k: q_results[k] for k in keys},
            "change": change, "matched": match["matched"], "detections": match["detections"]}


def record_accuracy(xml_path: PathLike, report: dict[str, Any], calib: int) -> None:
    """Store the calibration count and :func:`accuracy_change`'s report in the IR's metadata
    (``int8``)."""
    ov = require("openvino", extra="openvino")
    core = ov.Core()
    model = core.read_model(os.fspath(xml_path))
    model.set_rt_info(json.dumps({"calibration_images": calib, **report}), ["resdet", "int8"])
    save_ir(model, xml_path)
