"""COCO box evaluation over the images actually processed, on faster-coco-eval or pycocotools.

``process`` takes model outputs (labels ``1..K``, xyxy boxes in ORIGINAL image pixels) and keeps
them as COCO results (category id, xywh box, score). ``evaluate`` gathers them from every process
(``all_gather_object`` when ``torch.distributed`` is initialised), writes
``<output_dir>/coco_results.json``, runs COCOeval (iouType ``bbox``) on rank 0 and returns,
on every rank, percentages::

    mAP  = AP@[.50:.05:.95]       mAP50, mAP75 = AP at IoU .50 / .75
    mAP_s, mAP_m, mAP_l = AP for areas < 32^2, 32^2..96^2, > 96^2
    AR100 = recall with 100 detections per image, averaged over IoU .50:.95
    per_category[name] = AP@[.50:.95] of that category

``backend="faster"`` (default) runs faster-coco-eval's C++ matching and accumulation;
``"pycocotools"`` runs the reference implementation. Both give the same numbers (tests hold every
summary number and per-category AP equal within 1e-9); see ``backends.py``.

With ``masks`` (a Mask R-CNN) the outputs' ``masks`` (D, 1, M, M) are pasted into each original
image (``detection.masks.paste_masks``), stored as RLE ``segmentation`` beside each detection's
``bbox`` in ``coco_results.json``, and evaluated a second time with iouType ``segm`` (areas from
the masks, ``results_index``); the result gains the same numbers prefixed ``segm_``
(``segm_mAP``, ``segm_mAP50``, ..., ``segm_per_category``), the box numbers keeping their names.

A value COCOeval cannot define (its -1: no ground truth in that area range, or a category
without ground truth in the evaluated images) is reported as ``nan``. Images without detections
count (their ground truth is missed); no detections at all gives zeros where ground truth exists.
Crowd ground truth (``iscrowd=1``) is read from the json and handled by COCOeval (matches to
it are neither true nor false positives). Results are stored with boxes rounded to 0.01 px and
scores to 1e-5, and the json written is exactly what is evaluated.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from detection.data.coco import DatasetError, load_coco
from detection.data.masks import encode_masks
from detection.engine.files import write_json
from detection.masks import paste_masks

from .backends import check_backend, coco_index, evaluate_boxes, results_index
from .common import PerImageEvaluator, gather_by_image

__all__ = ["COCOEvaluator", "format_table", "headline", "is_voc_result"]

_SUMMARY = (("mAP", 0), ("mAP50", 1), ("mAP75", 2), ("mAP_s", 3), ("mAP_m", 4), ("mAP_l", 5),
            ("AR100", 8))  # result key, index into COCOeval.stats


def _percent(value: float) -> float:
    return float("nan") if value < 0 else 100.0 * float(value)


class COCOEvaluator(PerImageEvaluator):
    """Accumulates detections over a pass, then computes COCO box AP.

    Args:
        annotations: the COCO ground-truth json of the evaluated images.
        classes: ``[{"id", "name"}, ...]`` ordered by label (``dataset.classes`` or the
            checkpoint's); every id must be a category of ``annotations``.
        output_dir: where ``coco_results.json`` is written (rank 0); ``None``: not written.
        verbose: print COCOeval's summary and the per-category table.
        backend: ``"faster"`` (faster-coco-eval) or ``"pycocotools"``; the same numbers.
        masks: evaluate the outputs' ``masks`` too (iouType ``segm``; module docstring).
    """

    def __init__(self, *, annotations: str | os.PathLike, classes: Sequence[dict],
                 output_dir: str | os.PathLike | None = None, verbose: bool = True,
                 backend: str = "faster", masks: bool = False) -> None:
        self.annotations = os.fspath(annotations)
        self.backend = check_backend(backend)
        self.masks = masks
        self.coco_gt = load_coco(self.annotations, masks=masks)  # validated; pycocotools' index
        self._gt_index = {"pycocotools": self.coco_gt}
        known = set(self.coco_gt.getCatIds())
        missing = [c["id"] for c in classes if c["id"] not in known]
        if missing:
            raise DatasetError(f"{self.annotations}: category ids {missing} of the given classes "
                               f"are not among its categories {sorted(known)}")
        super().__init__(classes=classes, output_dir=output_dir, verbose=verbose)
        self._category_ids = torch.tensor([c["id"] for c in self.classes], dtype=torch.float64)

    def reset(self) -> None:
        super().reset()
        self._segmentations: dict[int, list[dict]] = {}

    def process(self, samples: Sequence[dict], outputs: Sequence[dict]) -> None:
        """As ``PerImageEvaluator.process``; with ``masks``, each output's ``masks`` (D, 1, M,
        M) are pasted into the sample's ``original_size`` and kept as RLE."""
        super().process(samples, outputs)
        if not self.masks:
            return
        for sample, output in zip(samples, outputs):
            if "masks" not in output:
                raise ValueError(f"image id {sample['image_id']}: the output has no 'masks' "
                                 "(mask evaluation needs a model with a mask head)")
            self._segmentations[int(sample["image_id"])] = encode_masks(paste_masks(
                output["masks"].detach().cpu(), output["boxes"].detach().cpu(),
                tuple(sample["original_size"])))

    def evaluate(self) -> dict[str, Any]:
        self._all_segmentations = gather_by_image(self._segmentations) if self.masks else {}
        return super().evaluate()

    def _rows(self, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor
              ) -> torch.Tensor:
        """(n, 6) rows ``[x, y, w, h, score, category_id]``."""
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1)
        return torch.cat([xywh.round(decimals=2), scores.round(decimals=5)[:, None],
                          self._category_ids[labels - 1][:, None]], dim=1)

    def _evaluate(self, predictions: dict[int, np.ndarray]) -> dict[str, Any]:
        unknown = sorted(set(predictions) - set(self.coco_gt.getImgIds()))
        if unknown:
            raise DatasetError(f"{self.annotations}: processed image ids {unknown[:10]} are not "
                               "in this file")
        results = self._coco_results(predictions, self._all_segmentations)
        if self.output_dir is not None:
            write_json(os.path.join(self.output_dir, "coco_results.json"), results)
        result: dict[str, Any] = {}
        for iou_type, prefix in (("bbox", ""), ("segm", "segm_"))[:2 if self.masks else 1]:
            gt = self._gt(self.backend)
            coco_eval = evaluate_boxes(gt, results_index(gt, results, self.backend, iou_type),
                                       backend=self.backend, img_ids=predictions,
                                       cat_ids=[c["id"] for c in self.classes],
                                       verbose=self.verbose, iou_type=iou_type)
            result.update({prefix + key: _percent(coco_eval.stats[i]) for key, i in _SUMMARY})
            result[prefix + "per_category"] = self._per_category(coco_eval)
        if self.verbose:
            print(format_table(result))
        return result

    @staticmethod
    def _coco_results(predictions: dict[int, np.ndarray],
                      segmentations: dict[int, list[dict]]) -> list[dict]:
        """``[{"image_id", "category_id", "bbox" xywh, "score"[, "segmentation" RLE]}]`` in
        image id order."""
        results = []
        for image_id in sorted(predictions):
            masks = segmentations.get(image_id)
            for k, (x, y, w, h, score, category_id) in enumerate(
                    predictions[image_id].tolist()):
                results.append({"image_id": image_id, "category_id": int(category_id),
                                "bbox": [x, y, w, h], "score": score})
                if masks is not None:
                    results[-1]["segmentation"] = masks[k]
        return results

    def _gt(self, backend: str) -> Any:
        """The ground-truth index of ``backend`` (built once, sharing the parsed json)."""
        if backend not in self._gt_index:
            self._gt_index[backend] = coco_index(self.coco_gt.dataset, backend)
        return self._gt_index[backend]

    def _per_category(self, coco_eval: Any) -> dict[str, float]:
        """AP@[.50:.95] per category: mean precision over IoUs and recall points (all areas,
        100 detections), ignoring COCOeval's -1 entries; nan when it has none."""
        precision = coco_eval.eval["precision"]  # (T IoUs, R recalls, K, A areas, M max dets)
        cat_ids = list(coco_eval.params.catIds)
        out = {}
        for c in self.classes:
            p = precision[:, :, cat_ids.index(c["id"]), 0, -1]
            p = p[p > -1]
            out[c["name"]] = 100.0 * float(p.mean()) if p.size else float("nan")
        return out


_VOC_KEYS = ("mAP", "mAP_11point", "mAP_allpoint")


def is_voc_result(result: dict[str, Any]) -> bool:
    """Whether ``result`` is ``VOCEvaluator``'s (AP at IoU .5 only) rather than COCO's."""
    return "mAP_11point" in result


def headline(result: dict[str, Any]) -> str:
    """The one line the tools print: COCO's mAP@.5 and mAP@[.5,.95] (of boxes, and of masks
    for a Mask R-CNN), or VOC's mAP@.5 with both of its AP variants (``mAP`` is the one
    ``test.use_07_metric`` chose)."""
    if is_voc_result(result):
        return (f"VOC mAP@.5 = {result['mAP']:.1f}   (11-point {result['mAP_11point']:.1f}, "
                f"all-point {result['mAP_allpoint']:.1f})")
    line = f"mAP@.5 = {result['mAP50']:.1f}   mAP@[.5,.95] = {result['mAP']:.1f}"
    if "segm_mAP" in result:
        line = (f"box {line}   mask mAP@.5 = {result['segm_mAP50']:.1f}   "
                f"mAP@[.5,.95] = {result['segm_mAP']:.1f}")
    return line


def format_table(result: dict[str, Any], columns: int = 3,
                 keys: Sequence[str] | None = None) -> str:
    """The summary line (``keys``; default COCO's, or VOC's for a VOC result) and a
    per-category AP table, as text."""
    def fmt(v: float) -> str:
        return "  nan" if math.isnan(v) else f"{v:5.2f}"

    lines = []
    prefixes = ("", "segm_") if "segm_mAP" in result and keys is None else ("",)
    for prefix in prefixes:
        summary = keys if keys is not None else (
            _VOC_KEYS if is_voc_result(result) else [key for key, _ in _SUMMARY])
        what = {"": "box  " if len(prefixes) > 1 else "", "segm_": "mask "}[prefix]
        lines.append(what + "  ".join(f"{key} {fmt(result[prefix + key])}" for key in summary))
        items = list(result.get(prefix + "per_category", {}).items())
        if items:
            width = max(8, *(len(name) for name, _ in items))
            ap = f"{what.strip()} AP" if what else "AP"
            col = max(6, len(ap))
            header = " | ".join(f"{'category':<{width}} {ap:>{col}}"
                                for _ in range(min(columns, len(items))))
            lines += [header, "-" * len(header)]
            for start in range(0, len(items), columns):
                lines.append(" | ".join(f"{name:<{width}} {fmt(v):>{col}}"
                                        for name, v in items[start:start + columns]))
    return "\n".join(lines)
