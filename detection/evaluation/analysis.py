"""Error analysis of a finished run from what it saved (never re-running the model).

:func:`error_breakdown` is the COCO detection challenge's analysis (``CocoEval.analyze`` of the
COCO MATLAB API, after Hoiem et al.): per category, the precision-recall curve (max 100
detections per image) as each kind of error is forgiven in turn, and its area (AP)::

    C75  PR at IoU .75                     C50  PR at IoU .50
    Loc  PR at IoU .10 (localisation errors forgiven, duplicates still count)
    Sim  + detections on objects of another class of the same supercategory forgiven
    Oth  + detections on objects of any other class forgiven
    BG   + every remaining false positive forgiven: precision 1 up to the recall reached
    FN   + every missed object found: precision 1 at every recall (AP 1)

Sim and Oth evaluate the category's detections class-agnostically at IoU .10 against its own
objects and the other (same-supercategory, resp. all) objects marked "ignore": a detection on
one is neither a true nor a false positive. As in COCO's ``analyze``, a precision COCOeval cannot
define (-1) counts 0 and BG is 1 where the Oth curve is above 0. The overall numbers average the
categories that have ground truth (in that area range), as COCOeval's summary does, so the C75
and C50 overall values equal the run's mAP75 and mAP50 (as fractions).

:func:`analyze_run` adds per-class PR curves at IoU .5 and .75 (the C50 and C75 curves), a
confusion matrix and the worst false positives / missed objects (``errors.py``). For a Mask
R-CNN's results (RLE ``segmentation``) the same breakdown of the masks (iouType ``segm``, COCO's
``analyze`` takes it alike) is under ``"segm"``: ``{"ap", "per_category"}``.
"""
from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np
import yaml

from .backends import coco_index, evaluate_boxes, results_index
from .errors import confusion_matrix, find_errors, supercategories

__all__ = ["ERROR_TYPES", "AREAS", "error_breakdown", "read_run", "analyze_run"]

ERROR_TYPES = ("C75", "C50", "Loc", "Sim", "Oth", "BG", "FN")
AREAS = ("all", "small", "medium", "large")
_COCO_IOUS = np.linspace(0.5, 0.95, 10)  # COCOeval's own values of .50 and .75


def _curves(gt: Any, dt: Any, img_ids: list[int], backend: str, **kwargs) -> np.ndarray:
    """Precision ``(T, R, K, A)`` at max 100 detections per image."""
    ev = evaluate_boxes(gt, dt, backend=backend, img_ids=img_ids, max_dets=[100],
                        summarize=False, **kwargs)
    return ev.eval["precision"][..., 0]


def error_breakdown(ground_truth: dict, results: Sequence[dict], *, backend: str = "faster",
                    img_ids: Optional[Sequence[int]] = None, iou_type: str = "bbox"
                    ) -> dict[str, Any]:
    """The COCO error analysis of ``results`` on ``ground_truth`` (see the module docstring),
    of the boxes or (``iou_type="segm"``) of the masks.

    Returns ``{"types", "areas", "recall": (R,), "categories": [{"id", "name"}],
    "precision": (7, R, K, A) array, "has_gt": (K, A) bool array, "ap": {area: {type: AP}},
    "per_category": {name: {type: AP}} (area all; None without ground truth)}``.
    """
    annotations = [dict(a) for a in ground_truth["annotations"]]  # "ignore" is set on these
    data = {**ground_truth, "annotations": annotations}
    gt = coco_index(data, backend)
    img_ids = sorted(gt.getImgIds() if img_ids is None else img_ids)
    cats = sorted(ground_truth["categories"], key=lambda c: c["id"])
    cat_ids = [c["id"] for c in cats]
    base = _curves(gt, results_index(gt, results, backend, iou_type), img_ids, backend,
                   cat_ids=cat_ids, iou_thrs=[_COCO_IOUS[5], _COCO_IOUS[0], 0.1],
                   iou_type=iou_type)
    has_gt = base[0, 0] > -1  # (K, A)
    ps = np.zeros((len(ERROR_TYPES), *base.shape[1:]))
    ps[:3] = base

    supers = supercategories(cats)
    wanted = set(img_ids)
    anns_of, dets_of = defaultdict(list), defaultdict(list)
    for a in annotations:
        if a["image_id"] in wanted:
            anns_of[a["category_id"]].append(a)
    for r in results:
        dets_of[r["category_id"]].append(r)
    sim_gt = {s: coco_index({**data, "annotations": [a for a in annotations
                                                     if supers[a["category_id"]] == s]}, backend)
              for s in set(supers.values())}
    for k, cat in enumerate(cat_ids):
        if not has_gt[k, 0]:
            continue
        dt = results_index(gt, dets_of[cat], backend, iou_type)
        # only images with this class's objects or detections can change its curve
        imgs = sorted({a["image_id"] for a in anns_of[cat]} |
                      {r["image_id"] for r in dets_of[cat] if r["image_id"] in wanted})
        others = [c for c in cat_ids if c != cat]
        similar = [c for c in others if supers[c] == supers[cat]]
        for row, index, ignore in ((3, sim_gt[supers[cat]], similar), (4, gt, others)):
            ps[row, :, k, :] = _curves(
                index, dt, imgs, backend, iou_thrs=[0.1], use_cats=False, iou_type=iou_type,
                ignore_ids=[a["id"] for c in ignore for a in anns_of[c]])[0, :, 0, :]
    ps[ps == -1] = 0
    ps[5] = ps[4] > 0
    ps[6] = 1.0
    ap = ps.mean(axis=1)  # (7, K, A)
    overall = {area: {t: float(ap[i, has_gt[:, a], a].mean()) if has_gt[:, a].any() else None
                      for i, t in enumerate(ERROR_TYPES)} for a, area in enumerate(AREAS)}
    per_category = {c["name"]: {t: float(ap[i, k, 0]) if has_gt[k, 0] else None
                                for i, t in enumerate(ERROR_TYPES)} for k, c in enumerate(cats)}
    return {"types": list(ERROR_TYPES), "areas": list(AREAS),
            "recall": np.linspace(0, 1, 101).tolist(),
            "categories": [{"id": c["id"], "name": c["name"]} for c in cats],
            "precision": ps, "has_gt": has_gt, "ap": overall, "per_category": per_category}


# ----------------------------------------------------------------------------- a run's files
def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"no {what} at {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None


def _test_data(run: Path, evaluation: dict) -> tuple[str, str]:
    """``data.test.annotations`` and ``.images`` of the run's ``config.yaml`` (else of the
    config file its ``eval.json`` names)."""
    config = run / "config.yaml"
    if not config.is_file() and evaluation.get("config"):
        config = Path(evaluation["config"])
    if not config.is_file():
        raise FileNotFoundError(f"{run}: no config.yaml (nor the config named by eval.json) to "
                                "find the test annotations; pass them explicitly")
    with open(config, encoding="utf-8") as f:
        test = ((yaml.safe_load(f) or {}).get("data") or {}).get("test") or {}
    if not test.get("annotations"):
        raise ValueError(f"{config}: data.test.annotations is empty; pass the annotations "
                         "explicitly")
    return test["annotations"], test.get("images", "")


def read_run(run: str | Path, *, annotations: Optional[str] = None,
             images: Optional[str] = None) -> dict[str, Any]:
    """What a run folder holds: ``{"name", "dir", "eval", "results", "ground_truth",
    "annotations", "images", "metrics": [records]}`` (``metrics`` empty without
    metrics.jsonl; e.g. a folder of tools/eval.py)."""
    from detection.data.coco import load_coco

    run = Path(run)
    if not run.is_dir():
        raise FileNotFoundError(f"run folder not found: {run}")
    evaluation = _read_json(run / "eval.json", "eval.json")
    results = _read_json(run / "coco_results.json", "coco_results.json (the evaluator's "
                                                    "detections)")
    if annotations is None:
        annotations, config_images = _test_data(run, evaluation)
        images = images if images is not None else config_images
    masks = bool(results) and "segmentation" in results[0]  # a Mask R-CNN's results
    ground_truth = load_coco(annotations, masks=masks).dataset
    known = {im["id"] for im in ground_truth["images"]}
    unknown = sorted({r["image_id"] for r in results} - known)
    if unknown:
        raise ValueError(f"{run / 'coco_results.json'}: image ids {unknown[:10]} are not in "
                         f"{annotations}")
    metrics = []
    if (run / "metrics.jsonl").is_file():
        for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
            try:
                metrics.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a crash
                continue
    return {"name": run.name, "dir": run, "eval": evaluation, "results": results,
            "ground_truth": ground_truth, "annotations": str(annotations),
            "images": str(images or ""), "metrics": metrics}


def analyze_run(run: dict[str, Any], *, backend: str = "faster", score_thresh: float = 0.5,
                top: int = 12) -> dict[str, Any]:
    """Breakdown, PR curves at IoU .5 / .75 per class, confusion matrix and the ``top`` worst
    false positives and missed objects of a :func:`read_run` result (JSON-ready)."""
    gt, results = run["ground_truth"], run["results"]
    breakdown = error_breakdown(gt, results, backend=backend)
    ps, has_gt = breakdown.pop("precision"), breakdown.pop("has_gt")
    breakdown["pr"] = {c["name"]: {"iou50": ps[1, :, k, 0].tolist() if has_gt[k, 0] else None,
                                   "iou75": ps[0, :, k, 0].tolist() if has_gt[k, 0] else None}
                       for k, c in enumerate(breakdown["categories"])}
    breakdown["curves"] = {t: ps[i, :, has_gt[:, 0], 0].mean(axis=0).tolist()
                           if has_gt[:, 0].any() else None for i, t in enumerate(ERROR_TYPES)}
    false_positives, missed = find_errors(gt, results)
    kinds = {k: sum(f["kind"] == k for f in false_positives)
             for k in ("dup", "loc", "sim", "oth", "bg")}
    names = {c["id"]: c["name"] for c in gt["categories"]}
    if results and "segmentation" in results[0]:
        segm = error_breakdown(gt, results, backend=backend, iou_type="segm")
        breakdown["segm"] = {"ap": segm["ap"], "per_category": segm["per_category"]}
    return {**breakdown, "backend": backend,
            "confusion": confusion_matrix(gt, results, score_thresh=score_thresh),
            "false_positive_kinds": kinds, "num_missed": len(missed),
            "worst_false_positives": [dict(f, category=names[f["category_id"]])
                                      for f in false_positives[:top]],
            "missed": [{k: m[k] for k in ("id", "image_id", "category_id", "bbox", "iou",
                                          "score", "det_bbox")}
                       | {"category": names[m["category_id"]]} for m in missed[:top]]}


# ----------------------------------------------------------------------------- drawn crops
_GT_COLOR, _DET_COLOR = (40, 200, 40), (230, 25, 75)  # RGB


def _crop(image: np.ndarray, box: Sequence[float], size: int) -> tuple[np.ndarray, Any]:
    """A ``size`` x ``size`` view centred on ``box`` (xywh) with half its size as context;
    returns it and the map from image to crop pixels."""
    import cv2

    x, y, w, h = box
    side = max(w, h, 16.0) * 2.0
    x0, y0 = x + w / 2 - side / 2, y + h / 2 - side / 2
    scale = size / side
    affine = np.array([[scale, 0, -x0 * scale], [0, scale, -y0 * scale]])
    view = cv2.warpAffine(image, affine, (size, size), flags=cv2.INTER_LINEAR,
                          borderValue=(255, 255, 255))
    return view, lambda b: [int(round(v)) for v in ((b[0] - x0) * scale, (b[1] - y0) * scale,
                                                    (b[0] + b[2] - x0) * scale,
                                                    (b[1] + b[3] - y0) * scale)]


def draw_crops(items: Sequence[dict], run: dict[str, Any], *, size: int = 128,
               columns: int = 6) -> Optional[np.ndarray]:
    """A grid (RGB uint8) of crops around ``items`` (entries of ``worst_false_positives`` or
    ``missed``): every object in green, the item's detection (or, for a missed object, the
    detection overlapping it most) in red, and a caption. ``None`` without items or images."""
    import cv2

    from detection.data.coco import decode_image

    if not items or not run["images"]:
        return None
    gt = run["ground_truth"]
    files = {im["id"]: im["file_name"] for im in gt["images"]}
    objects = defaultdict(list)
    for a in gt["annotations"]:
        objects[a["image_id"]].append(a["bbox"])
    tiles = []
    for item in items:
        image = decode_image(str(Path(run["images"]) / files[item["image_id"]]))
        view, to_crop = _crop(image, item["bbox"], size)
        rect = lambda box, color: cv2.rectangle(  # noqa: E731
            view, tuple(to_crop(box)[:2]), tuple(to_crop(box)[2:]), color, 2)
        for box in objects[item["image_id"]]:
            rect(box, _GT_COLOR)
        if "kind" in item:  # a false positive
            rect(item["bbox"], _DET_COLOR)
            text = f"{item['category']} {item['score']:.2f} {item['kind']}"
        else:
            if item.get("det_bbox"):
                rect(item["det_bbox"], _DET_COLOR)
            text = f"{item['category']} missed" + (
                f" IoU {item['iou']:.2f}" if item["score"] is not None else "")
        caption = np.full((18, size, 3), 255, dtype=np.uint8)
        cv2.putText(caption, text, (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1,
                    cv2.LINE_AA)
        tiles.append(np.concatenate([view, caption]))
    blank = np.full_like(tiles[0], 255)
    tiles += [blank] * (-len(tiles) % columns)
    rows = [np.concatenate(tiles[i:i + columns], axis=1) for i in range(0, len(tiles), columns)]
    return np.concatenate(rows)
