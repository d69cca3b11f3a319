"""Export a detector to one ONNX file: graph, weights, class list and test-time resize.

The graph is :class:`~detection.export.graph.DetectorGraph` (normalisation, backbone, RPN, RoI
heads and NMS) with dynamic batch size, height and width, exported by the TorchScript-based
exporter (``torch.onnx.export(..., dynamo=False)``), opset 17 by default:

- inputs ``images`` uint8 ``(N, 3, H, W)`` RGB, ``H, W`` multiples of ``size_divisibility``;
  ``image_sizes`` int64 ``(N, 2)``, each image's ``(h, w)`` inside the batch;
- outputs ``boxes`` float32 ``(D, 4)`` xyxy in input pixels, ``scores`` ``(D,)``, ``labels``
  int64 ``(D,)`` in ``1..K``, ``batch_index`` int64 ``(D,)``, ordered by image, then score; a
  Mask R-CNN adds ``masks`` float32 ``(D, 1, M, M)`` (probabilities over each box; pasted into
  the image outside the graph), a plain output like the others, for any ONNX runtime.

Why not the dynamo exporter (``torch.export``, the default of ``torch.onnx.export``): with torch
2.14 it fails to translate the range checks it inserts for the data-dependent sizes of
``nonzero`` and NMS, and it turns Python-level decisions on sizes (``min(pre_nms_topk, number
of anchors)`` per level) into guards that restrict the input range (``H >= 65`` for R-18-FPN),
so the exported graph would not take every image size. The TorchScript trace keeps every size
symbolic (the equality tests run each export at several sizes and batch sizes) and gives a plain
graph of standard operators (``NonZero``, ``TopK``, ``NonMaxSuppression``, ``RoiAlign``,
``MaxRoiPool``) that ONNX Runtime optimises fully (constant folding, Conv+BN-as-Mul/Add fusion).

Metadata (``metadata_props``, strings; :func:`read_metadata` parses them):

===================  =========================================================================
key                  value
===================  =========================================================================
``classes``          JSON ``[{"id": category id, "name": str}, ...]``, entry ``label - 1``
``min_size``         test-time resize: shorter side (``data.input.min_size_test``)
``max_size``         test-time resize: longest side at most (``data.input.max_size_test``)
``size_divisibility`` the batch's height and width must be multiples of it
``score_thresh``     the RoI heads' score threshold baked into the graph
``config``           JSON of the resolved config the model was built from
===================  =========================================================================
"""
from __future__ import annotations

import io
import json
import os
import warnings
from typing import Any, Union

import torch

from ..config import Config, config_from_dict, config_to_dict
from ..engine.files import write_bytes
from ..faster_rcnn import FasterRCNN
from . import require
from .graph import INPUT_NAMES, DetectorGraph, output_names

__all__ = ["export_onnx", "read_metadata", "DEFAULT_OPSET"]

DEFAULT_OPSET = 17  # RoiAlign with coordinate_transformation_mode (torchvision's aligned=False)
PathLike = Union[str, os.PathLike]


def example_inputs(size_divisibility: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two random images of different sizes in one padded batch: the trace's input (any size
    gives the same graph; a small one traces fast)."""
    div = max(int(size_divisibility), 1)
    height, width = max(6 * div, 128), max(8 * div, 160)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, 3, height, width), generator=g, dtype=torch.uint8)
    sizes = torch.tensor([[height, width], [height - div + 3, width - 2 * div + 5]])
    return images, sizes


def export_onnx(model: FasterRCNN, path: PathLike, *, cfg: Config, classes: list[dict],
                opset: int = DEFAULT_OPSET) -> dict[str, str]:
    """Write ``model`` (eval mode is set) to ``path`` with the metadata above; returns it.

    ``cfg`` is the config the model was built from (its test-time resize and
    ``roi_heads.score_thresh`` are what the file records); ``classes`` the checkpoint's.
    """
    onnx = require("onnx")
    if opset < 16:
        raise ValueError(f"opset {opset} is too old: RoiAlign needs opset 16 or newer")
    m = cfg.model
    if len(classes) != model.roi_heads.box_predictor.num_classes:
        raise ValueError(f"{len(classes)} classes given for a model with "
                         f"{model.roi_heads.box_predictor.num_classes}")
    graph = DetectorGraph(model)
    images, sizes = example_inputs(model.size_divisibility)
    outputs = output_names(model)
    dynamic = {"images": {0: "N", 2: "H", 3: "W"}, "image_sizes": {0: "N"},
               **{name: {0: "D"} for name in outputs}}
    with warnings.catch_warnings():
        # the legacy-exporter notice, and tracer notes on torchvision's shape asserts and on
        # constants (eps, anchors): the equality tests at several sizes are the real check
        warnings.simplefilter("ignore")
        buffer = io.BytesIO()
        torch.onnx.export(graph, (images, sizes), buffer, dynamo=False,
                          opset_version=opset, input_names=list(INPUT_NAMES),
                          output_names=list(outputs), dynamic_axes=dynamic,
                          do_constant_folding=True)
    metadata = {
        "classes": json.dumps([{"id": int(c["id"]), "name": str(c["name"])} for c in classes]),
        "min_size": str(cfg.data.input.min_size_test),
        "max_size": str(cfg.data.input.max_size_test),
        "size_divisibility": str(model.size_divisibility),
        "score_thresh": repr(float(m.roi_heads.score_thresh)),
        "config": json.dumps(config_to_dict(cfg)),
    }
    proto = onnx.load_from_string(buffer.getvalue())
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = ("resdet Faster R-CNN: images uint8 (N, 3, H, W) RGB + image_sizes int64 "
                        "(N, 2) -> boxes xyxy, scores, labels 1..K, batch_index"
                        + (", masks (D, 1, M, M)" if "masks" in outputs else ""))
    onnx.checker.check_model(proto)
    # atomic: an interrupted export or a full disk leaves no half-written file
    write_bytes(path, proto.SerializeToString())
    return metadata


def read_metadata(metadata: dict[str, str], source: str) -> dict[str, Any]:
    """Parse :func:`export_onnx`'s metadata (``source`` names the file in errors)."""
    missing = [k for k in ("classes", "min_size", "max_size", "size_divisibility",
                           "score_thresh", "config") if k not in metadata]
    if missing:
        raise ValueError(f"{source} lacks the metadata {missing}: export it with "
                         "tools/export.py")
    try:
        classes = json.loads(metadata["classes"])
        parsed = {"classes": [{"id": int(c["id"]), "name": str(c["name"])} for c in classes],
                  "min_size": int(metadata["min_size"]), "max_size": int(metadata["max_size"]),
                  "size_divisibility": int(metadata["size_divisibility"]),
                  "score_thresh": float(metadata["score_thresh"])}
        parsed["config"] = config_from_dict(json.loads(metadata["config"]),
                                            source=f"{source} (config)")
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"{source}: unreadable metadata: {e}") from None
    return parsed
