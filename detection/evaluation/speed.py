"""Time the two COCOeval backends side by side on a COCO-val-sized synthetic result set.

    python -m detection.evaluation.speed [--images 5000] [--repeats 3] [--json out.json]

:func:`synthetic_coco` builds ground truth shaped like COCO val2017 (5,000 images of about
640x480, 80 categories in 12 supercategories, ~7.3 objects per image of every size, ~1% crowd
regions) and a detector-like result set (100 detections per image: jittered copies of the ground
truth, some with another class, and background boxes; scores rounded to 1e-5 as the evaluator
stores them, so ties occur). :func:`compare_backends` runs the work ``COCOEvaluator.evaluate``
does on each backend (results index, evaluate, accumulate, summarise) ``repeats`` times,
alternating the backends, and reports median times, their ratio and whether every summary number
and every per-category AP agreed.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any, Optional

import numpy as np

from ..engine.files import write_json
from .backends import BACKENDS, coco_index, evaluate_boxes, results_index

__all__ = ["synthetic_coco", "compare_backends", "format_comparison", "main"]


def _boxes(rng: np.random.Generator, n: int, width: np.ndarray, height: np.ndarray
           ) -> np.ndarray:
    """``n`` xywh boxes inside their images, sides log-uniform in 4..400 px (all COCO sizes)."""
    sides = np.exp(rng.uniform(np.log(4), np.log(400), size=(n, 2)))
    w, h = np.minimum(sides[:, 0], width - 1), np.minimum(sides[:, 1], height - 1)
    x, y = rng.uniform(0, 1, n) * (width - w), rng.uniform(0, 1, n) * (height - h)
    return np.stack([x, y, w, h], axis=1)


def synthetic_coco(*, num_images: int = 5000, num_categories: int = 80,
                   objects_per_image: float = 7.3, detections_per_image: int = 100,
                   crowd_fraction: float = 0.01, seed: int = 0) -> tuple[dict, list[dict]]:
    """``(ground_truth, results)``: a COCO json dict and a COCO results list (see module)."""
    rng = np.random.default_rng(seed)
    width = rng.choice([640, 500, 480, 427], num_images).astype(np.float64)
    height = rng.choice([480, 427, 375, 640], num_images).astype(np.float64)
    images = [{"id": i + 1, "file_name": f"{i + 1:012d}.jpg", "width": int(w), "height": int(h)}
              for i, (w, h) in enumerate(zip(width, height))]
    categories = [{"id": k + 1, "name": f"class{k + 1}", "supercategory": f"super{k % 12}"}
                  for k in range(num_categories)]
    counts = rng.poisson(objects_per_image, num_images)
    gt_image = np.repeat(np.arange(num_images), counts)
    gt_boxes = _boxes(rng, len(gt_image), width[gt_image], height[gt_image])
    gt_cat = rng.integers(1, num_categories + 1, len(gt_image))
    crowd = rng.random(len(gt_image)) < crowd_fraction
    annotations = [{"id": j + 1, "image_id": int(i) + 1, "category_id": int(c),
                    "bbox": [round(float(v), 2) for v in b], "area": float(b[2] * b[3]),
                    "iscrowd": int(z)}
                   for j, (i, c, b, z) in enumerate(zip(gt_image, gt_cat, gt_boxes, crowd))]

    # detections: up to 3 jittered copies per object (some with a random class), rest background
    copies = np.minimum(rng.poisson(1.5, len(gt_image)), 3)
    src = np.repeat(np.arange(len(gt_image)), copies)
    jitter = rng.normal(0.0, 0.12, (len(src), 4))
    b = gt_boxes[src]
    near = np.stack([b[:, 0] + jitter[:, 0] * b[:, 2], b[:, 1] + jitter[:, 1] * b[:, 3],
                     b[:, 2] * np.exp(jitter[:, 2]), b[:, 3] * np.exp(jitter[:, 3])], axis=1)
    near_cat = np.where(rng.random(len(src)) < 0.8, gt_cat[src],
                        rng.integers(1, num_categories + 1, len(src)))
    per_image = np.bincount(gt_image[src], minlength=num_images)
    background = np.maximum(detections_per_image - per_image, 0)
    bg_image = np.repeat(np.arange(num_images), background)
    det_image = np.concatenate([gt_image[src], bg_image])
    det_boxes = np.concatenate([near, _boxes(rng, len(bg_image), width[bg_image],
                                             height[bg_image])])
    det_cat = np.concatenate([near_cat, rng.integers(1, num_categories + 1, len(bg_image))])
    det_score = np.concatenate([rng.beta(4, 2, len(src)), rng.beta(1, 4, len(bg_image))])
    order = np.lexsort((-det_score, det_image))  # by image, best first
    first = np.searchsorted(det_image[order], det_image[order])  # each image's first position
    order = order[np.arange(len(order)) - first < detections_per_image]
    results = [{"image_id": int(det_image[j]) + 1, "category_id": int(det_cat[j]),
                "bbox": [round(float(v), 2) for v in det_boxes[j]],
                "score": round(float(det_score[j]), 5)} for j in order]
    return ({"images": images, "annotations": annotations, "categories": categories},
            results)


def _summary(ev: Any) -> np.ndarray:
    """The 12 summary numbers and every category's AP@[.5:.95] (all areas, 100 dets)."""
    precision = ev.eval["precision"][:, :, :, 0, -1]
    per_category = [float(p[p > -1].mean()) if (p > -1).any() else -1.0
                    for p in np.moveaxis(precision, 2, 0)]
    return np.concatenate([np.asarray(ev.stats[:12], dtype=np.float64), per_category])


def compare_backends(ground_truth: dict, results: list[dict], *, repeats: int = 1
                     ) -> dict[str, Any]:
    """Median seconds per backend, ``ratio`` (pycocotools / faster) and agreement (see module).

    The ground-truth indexes are built once, outside the timing, as ``COCOEvaluator`` keeps them.
    """
    img_ids = [im["id"] for im in ground_truth["images"]]
    gts = {b: coco_index(ground_truth, b) for b in BACKENDS}
    times: dict[str, list[float]] = {b: [] for b in BACKENDS}
    summaries: dict[str, np.ndarray] = {}
    for _ in range(max(1, repeats)):
        for backend in BACKENDS:
            t0 = time.perf_counter()
            ev = evaluate_boxes(gts[backend], results_index(gts[backend], results, backend),
                                backend=backend, img_ids=img_ids)
            times[backend].append(time.perf_counter() - t0)
            summaries[backend] = _summary(ev)
            del ev
    diff = float(np.abs(summaries["faster"] - summaries["pycocotools"]).max())
    median = {b: statistics.median(t) for b, t in times.items()}
    return {"num_images": len(img_ids), "num_boxes": len(ground_truth["annotations"]),
            "num_detections": len(results), "repeats": max(1, repeats),
            "pycocotools_s": median["pycocotools"], "faster_s": median["faster"],
            "ratio": median["pycocotools"] / median["faster"],
            "numbers_compared": int(summaries["faster"].size), "max_abs_diff": diff,
            "equal": diff <= 1e-9,
            "stats": [float(v) for v in summaries["faster"][:12]]}


def format_comparison(out: dict[str, Any]) -> str:
    """One line: both medians, the ratio and whether every number agreed."""
    return (f"pycocotools {out['pycocotools_s']:.2f} s   faster-coco-eval {out['faster_s']:.2f} s"
            f"   ratio {out['ratio']:.1f}x   {out['numbers_compared']} numbers "
            f"{'equal' if out['equal'] else 'DIFFER'} (max |diff| {out['max_abs_diff']:.1e})")


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=5000, help="images (COCO val2017: 5000)")
    p.add_argument("--detections", type=int, default=100, help="detections per image")
    p.add_argument("--repeats", type=int, default=1, help="timed runs per backend (median)")
    p.add_argument("--json", help="also write the result to this file")
    args = p.parse_args(argv)
    gt, results = synthetic_coco(num_images=args.images, detections_per_image=args.detections)
    print(f"{len(gt['images'])} images, {len(gt['annotations'])} boxes, {len(results)} "
          f"detections, {len(gt['categories'])} categories; {args.repeats} run(s) per backend",
          flush=True)
    out = compare_backends(gt, results, repeats=args.repeats)
    print(format_comparison(out))
    if args.json:
        write_json(args.json, out, indent=2)
    return 0 if out["equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
