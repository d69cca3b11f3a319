"""ONNX Runtime inference on an exported detector, called like ``FasterRCNN`` in eval mode.

:class:`OnnxDetector` pads ``(3, H, W)`` uint8 images into one batch (zeros to the next
multiple of ``size_divisibility``, as the model pads), runs the graph and splits its flat
outputs back into ``[{"boxes", "scores", "labels"}]`` per image, rescaled to ``original_sizes``
when given: the contract of ``FasterRCNN.forward``, so ``Predictor`` runs either backend.

:func:`compare_detections` is the equality measure of the export's tests and of
``tools/benchmark.py --onnx`` (for masks too: a Mask R-CNN's file has a ``masks`` output, split
per image into ``masks`` (Di, 1, M, M) like the model's).
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import box_iou

from ..faster_rcnn import rescale_boxes
from . import require
from .exporter import read_metadata
from .graph import INPUT_NAMES

__all__ = ["GraphDetector", "OnnxDetector", "compare_detections", "mask_iou", "pad_batch",
           "REDUCED_PRECISION_MATCH"]

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def pad_batch(images: Sequence[Union[Tensor, np.ndarray]], size_divisibility: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (3, h_i, w_i) images -> the graph's ``images`` (N, 3, H, W) and ``image_sizes``."""
    arrays = [np.asarray(im) for im in images]
    for i, a in enumerate(arrays):
        if a.ndim != 3 or a.shape[0] != 3 or a.dtype != np.uint8:
            raise ValueError(f"image {i} must be a uint8 (3, H, W) array, got {a.dtype} "
                             f"{tuple(a.shape)}")
    sizes = np.array([a.shape[1:] for a in arrays], dtype=np.int64)  # (N, 2)
    div = max(int(size_divisibility), 1)
    height, width = (int(math.ceil(s / div) * div) for s in sizes.max(0))
    batch = np.zeros((len(arrays), 3, height, width), dtype=np.uint8)
    for out, a in zip(batch, arrays):
        out[:, :a.shape[1], :a.shape[2]] = a
    return batch, sizes


class GraphDetector:
    """What every runtime of the exported graph shares: the metadata (``classes``, ``cfg``,
    ``min_size``, ``max_size``, ``size_divisibility``, the exported ``score_thresh``), the
    call of ``FasterRCNN`` in eval mode around :meth:`run` (whose outputs are named by
    ``output_names``: ``boxes, scores, labels, batch_index[, masks]``), and ``eval()`` /
    ``train()`` / ``training`` so that ``inference_on_dataset`` runs it as it runs the model."""

    training = False

    def _set_metadata(self, meta: dict[str, Any], path: str,
                      score_thresh: Optional[float]) -> None:
        self.path = path
        self.classes: list[dict] = meta["classes"]
        self.cfg = meta["config"]
        self.min_size, self.max_size = meta["min_size"], meta["max_size"]
        self.size_divisibility: int = meta["size_divisibility"]
        self.exported_score_thresh: float = meta["score_thresh"]
        if score_thresh is not None and score_thresh < self.exported_score_thresh:
            raise ValueError(f"score_thresh {score_thresh} is below the "
                             f"{self.exported_score_thresh} that {path} was exported with: "
                             "export again with "
                             f"tools/export.py --score-thresh {score_thresh}")
        self.score_thresh = score_thresh

    def eval(self) -> "GraphDetector":
        return self

    def train(self, mode: bool = True) -> "GraphDetector":
        if mode:
            raise ValueError(f"{self.path} is an exported inference graph: it cannot train")
        return self

    def run(self, images: np.ndarray, image_sizes: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError

    def describe(self) -> str:
        """The runtime and its arithmetic, for the log."""
        return "float32"

    def __call__(self, images: Sequence[Union[Tensor, np.ndarray]],
                 original_sizes: Optional[Sequence[tuple[int, int]]] = None
                 ) -> list[dict[str, Tensor]]:
        """Detections per image, as ``FasterRCNN.forward`` in eval mode returns them."""
        batch, sizes = pad_batch([im.cpu() if isinstance(im, Tensor) else im for im in images],
                                 self.size_divisibility)
        if original_sizes is not None and len(original_sizes) != len(batch):
            raise ValueError(f"got {len(original_sizes)} original_sizes for {len(batch)} images")
        flat = {name: torch.from_numpy(np.ascontiguousarray(a))
                for name, a in zip(self.output_names, self.run(batch, sizes))}
        for name in ("boxes", "scores", "masks"):  # a bf16 runtime may hand back other floats
            if name in flat:
                flat[name] = flat[name].float()
        if self.score_thresh is not None:
            # exact: NMS is per class and the top-k keeps the best, so what scores at least the
            # higher threshold is the same as with that threshold inside the graph
            keep = flat["scores"] >= self.score_thresh
            flat = {k: v[keep] for k, v in flat.items()}
        counts = torch.bincount(flat["batch_index"], minlength=len(batch)).tolist()
        parts = {k: v.split(counts) for k, v in flat.items() if k != "batch_index"}
        outputs = []
        for i in range(len(batch)):
            out = {k: v[i] for k, v in parts.items()}
            if original_sizes is not None:
                out["boxes"] = rescale_boxes(out["boxes"], tuple(sizes[i].tolist()),
                                             original_sizes[i])
            outputs.append(out)
        return outputs


class OnnxDetector(GraphDetector):
    """An ``.onnx`` file of ``tools/export.py`` in an ONNX Runtime session.

    Args:
        path: the exported file; its metadata gives ``classes``, ``min_size``, ``max_size``,
            ``size_divisibility``, ``score_thresh`` and ``config``.
        device: ``"cpu"`` (CPU execution provider), ``"cuda"`` (needs onnxruntime-gpu) or
            ``"auto"`` (CUDA when available).
        threads: intra-op threads (default: ONNX Runtime's choice, one per core).
        score_thresh: keep detections scoring at least this; it cannot be lower than the
            threshold baked into the graph (detections below it were never computed).
    """

    def __init__(self, path: Union[str, os.PathLike], *, device: str = "cpu",
                 threads: Optional[int] = None, score_thresh: Optional[float] = None) -> None:
        ort = require("onnxruntime")
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"ONNX file not found: {path}")
        available = ort.get_available_providers()
        if device == "auto":
            device = "cuda" if PROVIDERS["cuda"] in available else "cpu"
        kind = device.split(":")[0]
        if PROVIDERS.get(kind) not in available:
            raise ValueError(f"device {device!r}: ONNX Runtime here has only {available}")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        try:
            provider = (PROVIDERS[kind], {"device_id": int(device.split(":")[1])}
                        if ":" in device else {})
            self.session = ort.InferenceSession(path, options, providers=[provider])
        except Exception as e:  # onnxruntime's own error types: a file it cannot load
            raise ValueError(f"{path}: ONNX Runtime cannot load it: {e}") from None
        meta = read_metadata(self.session.get_modelmeta().custom_metadata_map, path)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._set_metadata(meta, path, score_thresh)

    def describe(self) -> str:
        return "ONNX Runtime float32"

    def run(self, images: np.ndarray, image_sizes: np.ndarray) -> list[np.ndarray]:
        """The graph itself: ``boxes, scores, labels, batch_index[, masks]`` (flat, by
        image)."""
        return self.session.run(None, dict(zip(INPUT_NAMES, (images, image_sizes))))


def _match_image(ref: dict[str, Tensor], other: dict[str, Tensor], iou: float,
                 score_tol: float) -> list[tuple[int, int]]:
    """Reference detections with a partner of the same label, IoU > ``iou`` and a score
    within ``score_tol`` (greedy, one partner each): the ``(ref, other)`` index pairs."""
    if len(ref["boxes"]) == 0 or len(other["boxes"]) == 0:
        return []
    ious = box_iou(ref["boxes"].double(), other["boxes"].double())
    fits = ((ious > iou) & (ref["labels"][:, None] == other["labels"][None, :])
            & ((ref["scores"][:, None].double() - other["scores"][None, :].double()).abs()
               <= score_tol))
    taken = torch.zeros(len(other["boxes"]), dtype=torch.bool)
    pairs = []
    for i, row in enumerate(fits):
        free = torch.nonzero(row & ~taken)
        if len(free):
            taken[free[0, 0]] = True
            pairs.append((i, int(free[0, 0])))
    return pairs


def mask_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of bool masks (n, ...) pairwise row by row -> (n,); two empty masks: 1."""
    a, b = a.flatten(1), b.flatten(1)
    inter, union = (a & b).sum(1), (a | b).sum(1)
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter,
                                                                            dtype=torch.float))


#: The rule for a reduced-precision path (bf16, OpenVINO's BF16 hint, INT8) against float32:
#: the reference's detections scoring above 0.3, matched at IoU > 0.9 and a score within 0.05.
REDUCED_PRECISION_MATCH = {"iou": 0.9, "score_tol": 0.05, "min_score": 0.3}


def compare_detections(ref: Sequence[dict[str, Any]], other: Sequence[dict[str, Any]], *,
                       iou: float = 0.99, score_tol: float = 1e-3, min_score: float = 0.0
                       ) -> dict[str, float]:
    """How well ``other`` reproduces ``ref`` (lists of per-image ``{"boxes", "scores",
    "labels"[, "masks"]}``, tensors or arrays): ``matched`` fraction of ``ref``'s detections
    scoring above ``min_score`` (all with the default 0) that find a partner in ``other`` (see
    :func:`_match_image`), ``max_count_diff`` over images (all detections), ``detections``
    counted in ``ref``; with masks (both sides, any resolution, thresholded at 0.5),
    ``mask_matched``: the fraction of the matched detections whose masks have an IoU > ``iou``,
    and ``mask_iou_min``."""
    if len(ref) != len(other):
        raise ValueError(f"{len(ref)} images against {len(other)}")
    total = matched = worst = 0
    ious = []
    for a, b in zip(ref, other):
        keys = ("boxes", "scores", "labels", "masks") if "masks" in a and "masks" in b else (
            "boxes", "scores", "labels")
        a, b = ({k: torch.as_tensor(d[k]) for k in keys} for d in (a, b))
        worst = max(worst, abs(len(a["boxes"]) - len(b["boxes"])))
        if min_score > 0:
            keep = a["scores"] > min_score
            a = {k: v[keep] for k, v in a.items()}
        total += len(a["boxes"])
        pairs = _match_image(a, b, iou, score_tol)
        matched += len(pairs)
        if "masks" in a and pairs:
            i, j = (torch.tensor(p) for p in zip(*pairs))
            ious.append(mask_iou(a["masks"][i] > 0.5, b["masks"][j] > 0.5))
    out = {"matched": matched / total if total else 1.0, "max_count_diff": worst,
           "detections": total}
    if ious:
        all_ious = torch.cat(ious)
        out["mask_matched"] = float((all_ious > iou).float().mean())
        out["mask_iou_min"] = float(all_ious.min())
    return out
