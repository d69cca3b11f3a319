"""One call for COCO box (or mask) evaluation on either backend: ``faster`` or ``pycocotools``.

``faster`` is faster-coco-eval's ``COCOeval_faster`` (per-image matching and accumulation in
C++); ``pycocotools`` is the reference implementation. Both take the same parameters and fill the
same arrays (``eval["precision"]`` of shape ``(T IoUs, R recalls, K, A areas, M max dets)``,
``stats``: the 12 summary numbers), and the tests hold them equal within 1e-9.

Every evaluation also honours ``ignore_ids``: ground-truth annotation ids treated as "ignore"
regions (a detection matched to one is neither a true nor a false positive; unmatched, it is no
miss). Both backends overwrite the json's own ``ignore`` field with ``iscrowd`` when they
prepare an evaluation, so the ids are re-applied right after that step; the COCO error analysis
(``analysis.py``) needs it, as the original MATLAB ``CocoEval.analyze`` does.
"""
from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterable, Sequence
from typing import Any, Optional

import pycocotools.coco
import pycocotools.cocoeval

try:  # optional at run time: a bare image may lack it; pycocotools gives the same numbers
    import faster_coco_eval
except ImportError:
    faster_coco_eval = None

__all__ = ["BACKENDS", "check_backend", "coco_index", "results_index", "evaluate_boxes"]

BACKENDS = ("faster", "pycocotools")


def check_backend(backend: str) -> str:
    """``backend``, or ``pycocotools`` for ``faster`` where faster-coco-eval is not installed
    (one warning per process: the numbers are the same, the evaluation slower)."""
    if backend not in BACKENDS:
        raise ValueError(f"evaluator backend must be one of {list(BACKENDS)}, got {backend!r}")
    if backend == "faster" and faster_coco_eval is None:
        global _WARNED
        if not _WARNED:
            warnings.warn("faster-coco-eval is not installed: COCO evaluation runs on "
                          "pycocotools (the same numbers, slower); pip install faster-coco-eval",
                          stacklevel=2)
            _WARNED = True
        return "pycocotools"
    return backend


_WARNED = False


class _IgnoreMixin:
    """Marks the annotations in ``ignore_ids`` as ignore regions after ``_prepare``."""

    ignore_ids: frozenset = frozenset()

    def _prepare(self) -> None:
        super()._prepare()
        anns = self.cocoGt.anns
        for ann_id in self.ignore_ids:
            anns[ann_id]["ignore"] = 1


class _PycocoEval(_IgnoreMixin, pycocotools.cocoeval.COCOeval):
    pass


_COCO = {"pycocotools": pycocotools.coco.COCO}
if faster_coco_eval is not None:
    class _FasterEval(_IgnoreMixin, faster_coco_eval.COCOeval_faster):
        pass

    _COCO["faster"] = faster_coco_eval.COCO


def coco_index(dataset: dict, backend: str) -> Any:
    """A ``COCO`` object of ``backend`` over ``dataset`` (a parsed COCO json; not copied)."""
    coco = _COCO[check_backend(backend)]()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints "creating index..."
        coco.createIndex()
    return coco


def results_index(gt: Any, results: Sequence[dict], backend: str, iou_type: str = "bbox"
                  ) -> Any:
    """What ``COCO.loadRes`` builds for box results (ids 1.., ``area`` = w*h, not crowd), also
    for an empty list, and without copying ``results``' polygons (boxes only).

    ``iou_type="segm"``: mask results (RLE ``segmentation``), ``area`` the mask's and ``bbox``
    its extent, as ``loadRes`` makes them for results without a ``bbox`` (Detectron2 drops the
    boxes for this reason: with them, ``loadRes`` would take the box area for the size ranges).
    """
    if iou_type == "segm":
        from pycocotools import mask as mask_utils

        annotations = [dict(r, id=i, iscrowd=0, area=float(mask_utils.area(r["segmentation"])),
                            bbox=mask_utils.toBbox(r["segmentation"]).tolist())
                       for i, r in enumerate(results, start=1)]
    else:
        annotations = [dict(r, id=i, area=r["bbox"][2] * r["bbox"][3], iscrowd=0)
                       for i, r in enumerate(results, start=1)]
    return coco_index({"images": gt.dataset["images"], "categories": gt.dataset["categories"],
                       "annotations": annotations}, backend)


def evaluate_boxes(gt: Any, dt: Any, *, backend: str, img_ids: Iterable[int],
                   cat_ids: Optional[Iterable[int]] = None, iou_thrs: Optional[Sequence] = None,
                   max_dets: Optional[Sequence[int]] = None, use_cats: bool = True,
                   ignore_ids: Iterable[int] = (), summarize: bool = True,
                   verbose: bool = False, iou_type: str = "bbox") -> Any:
    """Run COCOeval (``iouType="bbox"``, or ``"segm"`` for masks) of ``dt`` against ``gt``
    (indexes of ``backend``) and return it, evaluated and accumulated (and summarised:
    ``stats``).

    ``None`` keeps COCO's defaults (all categories, IoU .50:.05:.95, max dets 1/10/100);
    ``verbose`` prints the backend's progress and summary lines.
    """
    import numpy as np

    backend = check_backend(backend)
    say = print if verbose else (lambda *args, **kwargs: None)
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    if backend == "faster":
        ev = _FasterEval(gt, dt, iou_type, print_function=say)
    else:
        ev = _PycocoEval(gt, dt, iou_type)
    ev.ignore_ids = frozenset(ignore_ids)
    p = ev.params
    p.imgIds = sorted(int(i) for i in img_ids)
    if cat_ids is not None:
        p.catIds = sorted(int(c) for c in cat_ids)
    if iou_thrs is not None:
        p.iouThrs = np.asarray(iou_thrs, dtype=np.float64)
    if max_dets is not None:
        p.maxDets = list(max_dets)
    p.useCats = int(use_cats)
    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with quiet:
        ev.evaluate()
        ev.accumulate()
        if summarize:
            ev.summarize()
    return ev
