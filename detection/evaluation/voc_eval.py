"""PASCAL VOC box AP at IoU 0.5, as the VOC devkit's ``VOCevaldet.m`` computes it.

For each class, over the images processed:

1. Detections of the class from every image are sorted by descending score (a stable sort:
   ties keep image-id order, then the model's output order, as the devkit's ``sort`` keeps
   its results file's order).
2. Each detection is compared with every ground-truth box of its class in its image
   (difficult ones included); ``j* = argmax_j IoU`` (the first on ties), ``o = IoU_j*``.
   If ``o >= 0.5``: a difficult ``j*`` makes the detection neither TP nor FP; otherwise it is a
   TP when ``j*`` is not yet matched (``j*`` becomes matched) and a FP (duplicate) when it is.
   If ``o < 0.5`` (or no box of the class): FP. A detection never falls back to its
   second-best box, so the matching is the devkit's greedy one.
3. ``rec_d = TP_d / npos`` and ``prec_d = TP_d / max(TP_d + FP_d, eps)`` with cumulative
   counts ``TP_d, FP_d`` over the first ``d`` detections; ``npos`` counts the non-difficult
   boxes of the class.
4. VOC2007 11-point AP: ``(1/11) * sum_{t in {0, 0.1, ..., 1}} max{prec_d : rec_d >= t}``
   (0 when no ``rec_d >= t``). VOC2010+ all-point AP: the area under the precision envelope
   ``p(r) = max{prec_d : rec_d >= r}``, summed where recall changes.

Conventions checked against the references:

- **IoU and "+1".** The devkit computes areas as ``(xmax - xmin + 1) * (ymax - ymin + 1)`` on
  its 1-based inclusive pixel indices; Detectron2's ``voc_eval`` keeps that "+1" and feeds it
  detections converted back to 1-based (``xmin + 1``). Our boxes are continuous 0-based
  (``x0 = xmin - 1``, ``x1 = xmax``, see ``detection/data/voc.py``), where the same areas and
  intersections are plain ``(x1 - x0) * (y1 - y0)``; so ``torchvision.ops.box_iou`` on our
  boxes is the devkit's overlap, with no "+1".
- **Threshold.** The devkit takes ``ovmax >= minoverlap`` (0.5); py-faster-rcnn and
  Detectron2 take ``ovmax > 0.5``. We follow the devkit: IoU exactly 0.5 is a match.
- **11 points.** The thresholds are the decimals ``k / 10``, as the devkit documentation
  defines them; Python ports build them with ``np.arange(0, 1.1, 0.1)``, whose 0.3, 0.6 and 0.7
  are a hair above, which differs only when a recall equals exactly 3/10, 6/10 or 7/10.
- ``prec`` is 0 where no detection counts yet (the first ones matched difficult boxes), as
  Detectron2 does; the devkit's NaN there is skipped by MATLAB's ``max`` to the same AP.

A class without non-difficult ground truth in the processed images has AP ``nan`` and is left
out of the mean (pycocotools treats such a category the same way). Results are stored with
boxes rounded to 0.01 px and scores to 1e-5 (as ``COCOEvaluator``), and with ``output_dir`` the
devkit's results files ``voc_results/comp4_det_<split>_<class>.txt`` (``name score xmin ymin
xmax ymax``, 1-based) are written with exactly those values.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_iou

from detection.data.base import DatasetError, bad_box_reasons, ignored_regions
from detection.data.voc import PathLike, read_voc, voc_pairs
from detection.engine.files import write_text

from .coco_eval import format_table
from .common import PerImageEvaluator

__all__ = ["VOCEvaluator", "average_precision", "best_ground_truth"]

_SUMMARY = ("mAP", "mAP_11point", "mAP_allpoint")


class VOCEvaluator(PerImageEvaluator):
    """Accumulates detections over a pass, then computes VOC AP at IoU 0.5 per class.

    Args:
        roots, splits: the ``VOCdevkit/VOCyyyy`` folder(s) and split(s) evaluated, as for
            ``VOCDataset`` (same pairs, same image ids).
        classes: ``[{"id", "name"}, ...]`` ordered by label (``dataset.classes`` or the
            checkpoint's); the names are the XML class names.
        use_07_metric: ``mAP`` is the VOC2007 11-point AP (the VOC2007 test benchmark's) or,
            when False, the VOC2010+ all-point AP. Both are always reported.
        output_dir: where the devkit results files go (rank 0); ``None``: not written.
        verbose: print the summary and the per-category table.

    ``evaluate()`` returns, in percent: ``mAP`` (the chosen metric), ``mAP50`` (the same
    number: VOC AP is AP at IoU .5), ``mAP_11point``, ``mAP_allpoint`` and
    ``per_category: {name: AP}`` (chosen metric).
    """

    def __init__(self, *, roots: PathLike | Sequence[PathLike], splits: str | Sequence[str],
                 classes: Sequence[dict], use_07_metric: bool = True,
                 output_dir: PathLike | None = None, verbose: bool = True) -> None:
        self.pairs = voc_pairs(roots, splits)
        self.ground_truth = read_voc(*zip(*self.pairs),
                                     class_names=[str(c["name"]) for c in classes])
        gt = self.ground_truth
        rows = np.repeat(np.arange(len(gt.names)), np.diff(gt.offsets))
        bad = bad_box_reasons(gt.boxes, gt.sizes[rows]) != ""
        # a bad box (skipped in training) is an ignored region, as a difficult one
        self._gt_boxes = np.where(bad[:, None], ignored_regions(gt.boxes), gt.boxes)
        self._gt_ignored = gt.difficult | bad
        self.use_07_metric = use_07_metric
        super().__init__(classes=classes, output_dir=output_dir, verbose=verbose)

    def _rows(self, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor
              ) -> torch.Tensor:
        """(n, 6) rows ``[x0, y0, x1, y1, score, label]``."""
        return torch.cat([boxes.round(decimals=2), scores.round(decimals=5)[:, None],
                          labels[:, None].double()], dim=1)

    def _evaluate(self, predictions: dict[int, np.ndarray]) -> dict[str, Any]:
        gt = self.ground_truth
        image_ids = sorted(predictions)
        unknown = [i for i in image_ids if not 1 <= i <= len(gt.names)]
        if unknown:
            raise DatasetError(f"processed image ids {unknown[:10]} are not among the "
                               f"{len(gt.names)} images of {self.pairs}")
        if self.output_dir is not None:
            self._write_results(predictions, image_ids)
        ground_truth = {}
        for i in image_ids:
            lo, hi = gt.offsets[i - 1], gt.offsets[i]
            ground_truth[i] = (self._gt_boxes[lo:hi], gt.labels[lo:hi], self._gt_ignored[lo:hi])
        ap11, ap_all = average_precision(predictions, ground_truth, len(self.classes))
        chosen = ap11 if self.use_07_metric else ap_all
        result = {"mAP": _mean(chosen), "mAP50": _mean(chosen), "mAP_11point": _mean(ap11),
                  "mAP_allpoint": _mean(ap_all),
                  "per_category": {c["name"]: 100.0 * float(ap)
                                   for c, ap in zip(self.classes, chosen)}}
        if self.verbose:
            print(format_table(result, keys=_SUMMARY))
        return result

    def _write_results(self, predictions: dict[int, np.ndarray], image_ids: list[int]) -> None:
        """The devkit's ``comp4_det_<split>_<class>.txt`` files, 1-based ``xmin ymin``."""
        folder = os.path.join(self.output_dir, "voc_results")
        os.makedirs(folder, exist_ok=True)
        split = "+".join(dict.fromkeys(split for _, split in self.pairs))
        lines: list[list[str]] = [[] for _ in self.classes]
        for i in image_ids:
            name = self.ground_truth.names[i - 1]
            for x0, y0, x1, y1, score, label in predictions[i].tolist():
                lines[int(label) - 1].append(
                    f"{name} {score:.5f} {x0 + 1:.2f} {y0 + 1:.2f} {x1:.2f} {y1:.2f}\n")
        for c, rows in zip(self.classes, lines):
            write_text(os.path.join(folder, f"comp4_det_{split}_{c['name']}.txt"), "".join(rows))


def _mean(aps: np.ndarray) -> float:
    defined = aps[~np.isnan(aps)]
    return 100.0 * float(defined.mean()) if defined.size else math.nan


def best_ground_truth(boxes: np.ndarray, labels: np.ndarray, gt_boxes: np.ndarray,
                      gt_labels: np.ndarray, iou_threshold: float = 0.5
                      ) -> tuple[np.ndarray, np.ndarray]:
    """For the detections of one image: the best box of the same class and whether it counts.

    Args: ``boxes`` (D, 4) and ``gt_boxes`` (G, 4) xyxy; ``labels`` (D,), ``gt_labels`` (G,).
    Returns ``best`` (D,) int64, the index of the ground-truth box of the detection's class
    with the highest IoU (the first on ties; -1 without one), and ``hit`` (D,) bool,
    ``IoU >= iou_threshold`` with it.
    """
    if len(gt_boxes) == 0 or len(boxes) == 0:
        return np.full(len(boxes), -1, dtype=np.int64), np.zeros(len(boxes), dtype=bool)
    iou = box_iou(torch.from_numpy(np.asarray(boxes, np.float64)),
                  torch.from_numpy(np.asarray(gt_boxes, np.float64))).numpy()  # (D, G)
    iou[labels[:, None] != gt_labels[None, :]] = -np.inf
    best = iou.argmax(axis=1)
    overlap = iou[np.arange(len(boxes)), best]
    return np.where(overlap > -np.inf, best, -1), overlap >= iou_threshold


def average_precision(predictions: dict[int, np.ndarray],
                      ground_truth: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]],
                      num_classes: int, iou_threshold: float = 0.5
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Per-class VOC AP (fractions, ``nan`` without positives): 11-point and all-point.

    Args:
        predictions: image id -> (n, 6) rows ``[x0, y0, x1, y1, score, label]``.
        ground_truth: image id -> (boxes (G, 4), labels (G,) in ``1..K``, difficult (G,)),
            for every image of ``predictions``.
        num_classes: ``K``.
    Returns ``ap11`` (K,) and ``ap_all`` (K,).
    """
    labels, scores, status = [], [], []  # status: 1 TP candidate, 0 ignored, -1 FP; + gt id
    matched, npos = [], np.zeros(num_classes, dtype=np.int64)
    offset = 0
    for image_id in sorted(predictions):
        det = predictions[image_id]
        gt_boxes, gt_labels, gt_difficult = ground_truth[image_id]
        npos += np.bincount(gt_labels[~gt_difficult] - 1, minlength=num_classes)
        det_labels = det[:, 5].astype(np.int64)
        best, hit = best_ground_truth(det[:, :4], det_labels, gt_boxes, gt_labels, iou_threshold)
        difficult = hit & gt_difficult[np.maximum(best, 0)] if len(gt_boxes) else hit
        status.append(np.where(hit, np.where(difficult, 0, 1), -1))
        matched.append(offset + best)
        labels.append(det_labels)
        scores.append(det[:, 4])
        offset += len(gt_boxes)
    labels, scores, status, matched = (np.concatenate(a) for a in (labels, scores, status,
                                                                    matched))
    ap11, ap_all = np.full(num_classes, np.nan), np.full(num_classes, np.nan)
    for k in range(num_classes):
        if npos[k] == 0:
            continue
        idx = np.flatnonzero(labels == k + 1)
        order = idx[np.argsort(-scores[idx], kind="stable")]
        tp, fp = _true_false_positives(status[order], matched[order])
        ap11[k], ap_all[k] = _ap_from_counts(np.cumsum(tp), np.cumsum(fp), npos[k])
    return ap11, ap_all


def _true_false_positives(status: np.ndarray, matched: np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching in score order: the first detection of a box is TP, later ones FP."""
    candidates = np.flatnonzero(status == 1)
    tp = np.zeros(len(status), dtype=np.int64)
    _, first = np.unique(matched[candidates], return_index=True)  # first in score order
    tp[candidates[first]] = 1
    fp = ((status == -1) | ((status == 1) & (tp == 0))).astype(np.int64)
    return tp, fp


def _ap_from_counts(tp: np.ndarray, fp: np.ndarray, npos: int) -> tuple[float, float]:
    """11-point and all-point AP from cumulative TP / FP counts (see the module docstring)."""
    recall = tp / npos
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    # envelope[d] = max(precision[d:]); recall is non-decreasing
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    first = np.searchsorted(recall, np.arange(11) / 10, side="left")  # first d: rec_d >= t
    padded = np.concatenate([envelope, [0.0]])
    ap11 = float(padded[first].sum() / 11)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.maximum.accumulate(np.concatenate([[0.0], precision, [0.0]])[::-1])[::-1]
    changes = np.flatnonzero(mrec[1:] != mrec[:-1])
    ap_all = float(((mrec[changes + 1] - mrec[changes]) * mpre[changes + 1]).sum())
    return ap11, ap_all
