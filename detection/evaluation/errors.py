"""Which detections are wrong and which objects are missed, and a confusion matrix of classes.

Boxes are COCO ``xywh`` here, as in the json files these functions read.

:func:`find_errors` matches as COCOeval does at one IoU threshold (per image and category,
detections by descending score, at most ``max_dets`` each; a detection takes the unmatched
ground truth of highest IoU >= the threshold, real objects before crowd regions; a match to a
crowd region makes it ignored). Each false positive gets the kind of error it is, in the order
of the COCO error analysis:

    dup  a same-class object it overlaps >= thresh was taken by a better detection
    loc  overlaps a same-class object with 0.1 <= IoU < thresh (localisation)
    sim  overlaps (IoU >= 0.1) an object of another class of the same supercategory
    oth  overlaps (IoU >= 0.1) an object of any other class
    bg   overlaps nothing (background)

:func:`confusion_matrix` pairs detections scoring >= ``score_thresh`` with objects of any class
(IoU >= ``iou_thresh``, one-to-one; highest IoU first, on equal IoU the higher score):
``matrix[true, predicted]``, with a last row "background" (false detections) and a last column
"missed" (objects without a detection).
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

__all__ = ["find_errors", "confusion_matrix", "supercategories"]


def supercategories(categories: Sequence[dict]) -> dict[int, str]:
    """Category id -> supercategory; a category without one is its own (a singleton)."""
    return {c["id"]: c.get("supercategory") or f"{c['name']} ({c['id']})" for c in categories}


def _by_image(items: Sequence[dict]) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = defaultdict(list)
    for item in items:
        out[item["image_id"]].append(item)
    return out


def _ious(dts: Sequence[dict], gts: Sequence[dict]) -> np.ndarray:
    """(D, G) IoU; a crowd region's is intersection over the detection's area (COCO)."""
    if not dts or not gts:
        return np.zeros((len(dts), len(gts)))
    return np.asarray(mask_utils.iou([d["bbox"] for d in dts], [g["bbox"] for g in gts],
                                     [int(g.get("iscrowd", 0)) for g in gts]))


def _greedy(ious: np.ndarray, crowd: np.ndarray, thresh: float) -> tuple[np.ndarray, np.ndarray]:
    """COCOeval's matching of score-sorted detections to objects (crowd regions last):
    returns each detection's matched object index (-1: none) and the objects' matched flags."""
    gt_taken = np.zeros(ious.shape[1], dtype=bool)
    match = np.full(ious.shape[0], -1)
    for d in range(ious.shape[0]):
        best, m = min(thresh, 1 - 1e-10), -1
        for g in range(ious.shape[1]):
            if gt_taken[g] and not crowd[g]:
                continue
            if m > -1 and not crowd[m] and crowd[g]:
                break
            if ious[d, g] >= best:
                best, m = ious[d, g], g
        if m > -1:
            match[d] = m
            gt_taken[m] = True
    return match, gt_taken


def _kind(d_iou: np.ndarray, gts: Sequence[dict], category: int, supers: dict[int, str],
          thresh: float) -> str:
    """The error kind of an unmatched detection from its IoU with every object of the image."""
    real = [g for g in range(len(gts)) if not gts[g].get("iscrowd", 0)]
    same = [d_iou[g] for g in real if gts[g]["category_id"] == category]
    if same and max(same) >= thresh:
        return "dup"
    if same and max(same) >= 0.1:
        return "loc"
    others = [g for g in real if gts[g]["category_id"] != category and d_iou[g] >= 0.1]
    if any(supers[gts[g]["category_id"]] == supers[category] for g in others):
        return "sim"
    return "oth" if others else "bg"


def find_errors(ground_truth: dict, results: Sequence[dict], *, iou_thresh: float = 0.5,
                max_dets: int = 100) -> tuple[list[dict], list[dict]]:
    """``(false_positives, missed)`` (see the module docstring).

    ``false_positives``: the result dicts that matched nothing, plus ``kind`` and ``iou`` (their
    highest IoU with a same-class object), best score first. ``missed``: the real (non-crowd)
    objects no detection matched, plus ``iou``, ``score`` and ``det_bbox`` of the same-class
    detection that overlaps them most (0 / None / None when none), largest first.
    """
    supers = supercategories(ground_truth["categories"])
    gts_of, dts_of = _by_image(ground_truth["annotations"]), _by_image(results)
    false_positives, missed = [], []
    for image_id in sorted(set(gts_of) | set(dts_of)):
        gts, dts = gts_of.get(image_id, []), dts_of.get(image_id, [])
        order = np.argsort([-d["score"] for d in dts], kind="mergesort")
        dts = [dts[i] for i in order]
        ious = _ious(dts, gts)
        for category in sorted({g["category_id"] for g in gts} | {d["category_id"] for d in dts}):
            g_idx = [g for g in range(len(gts)) if gts[g]["category_id"] == category]
            g_idx.sort(key=lambda g: gts[g].get("iscrowd", 0))  # real objects first
            d_idx = [d for d in range(len(dts)) if dts[d]["category_id"] == category][:max_dets]
            crowd = np.array([bool(gts[g].get("iscrowd", 0)) for g in g_idx], dtype=bool)
            sub = ious[np.ix_(d_idx, g_idx)] if g_idx and d_idx else np.zeros((len(d_idx),
                                                                             len(g_idx)))
            match, taken = _greedy(sub, crowd, iou_thresh)
            for j, d in enumerate(d_idx):
                if match[j] == -1:
                    best = float(sub[j][~crowd].max()) if (~crowd).any() else 0.0
                    false_positives.append({**dts[d], "iou": best, "kind": _kind(
                        ious[d], gts, category, supers, iou_thresh)})
            for i, g in enumerate(g_idx):
                if not taken[i] and not crowd[i]:
                    col = sub[:, i] if len(d_idx) else np.zeros(0)
                    j = int(col.argmax()) if col.size and col.max() > 0 else -1
                    best = dts[d_idx[j]] if j >= 0 else {"score": None, "bbox": None}
                    missed.append({**gts[g], "iou": float(col[j]) if j >= 0 else 0.0,
                                   "score": best["score"], "det_bbox": best["bbox"]})
    false_positives.sort(key=lambda d: -d["score"])
    missed.sort(key=lambda g: -g["bbox"][2] * g["bbox"][3])
    return false_positives, missed


def confusion_matrix(ground_truth: dict, results: Sequence[dict], *, score_thresh: float = 0.5,
                     iou_thresh: float = 0.5) -> dict[str, Any]:
    """``{"labels": [names..., "background"], "columns": [names..., "missed"], "matrix":
    (K+1) x (K+1) counts}``: rows true class, columns predicted class (see the module)."""
    cats = sorted(ground_truth["categories"], key=lambda c: c["id"])
    index = {c["id"]: k for k, c in enumerate(cats)}
    k_bg = len(cats)
    matrix = np.zeros((k_bg + 1, k_bg + 1), dtype=np.int64)
    gts_of = _by_image(ground_truth["annotations"])
    dts_of = _by_image([r for r in results if r["score"] >= score_thresh])
    for image_id in sorted(set(gts_of) | set(dts_of)):
        gts, dts = gts_of.get(image_id, []), dts_of.get(image_id, [])
        real = [g for g in gts if not g.get("iscrowd", 0)]
        crowd = [g for g in gts if g.get("iscrowd", 0)]
        ious = _ious(dts, real)
        pairs = sorted(((ious[d, g], d, g) for d in range(len(dts)) for g in range(len(real))
                        if ious[d, g] >= iou_thresh), key=lambda p: (-p[0], -dts[p[1]]["score"]))
        used_d, used_g = set(), set()
        for _, d, g in pairs:
            if d not in used_d and g not in used_g:
                used_d.add(d), used_g.add(g)
                matrix[index[real[g]["category_id"]], index[dts[d]["category_id"]]] += 1
        on_crowd = _ious(dts, crowd).max(axis=1) >= iou_thresh if crowd else \
            np.zeros(len(dts), dtype=bool)
        for d, det in enumerate(dts):
            if d not in used_d and not on_crowd[d]:
                matrix[k_bg, index[det["category_id"]]] += 1
        for g, obj in enumerate(real):
            if g not in used_g:
                matrix[index[obj["category_id"]], k_bg] += 1
    names = [c["name"] for c in cats]
    return {"labels": names + ["background"], "columns": names + ["missed"],
            "matrix": matrix.tolist(), "score_thresh": score_thresh, "iou_thresh": iou_thresh}
