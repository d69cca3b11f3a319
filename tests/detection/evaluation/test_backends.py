"""faster-coco-eval against pycocotools (the reference): equal numbers on edge-case result sets."""
from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pycocotools.coco
import pycocotools.cocoeval
import pytest
import torch

from detection.evaluation import COCOEvaluator
from detection.evaluation.backends import (BACKENDS, check_backend, coco_index, evaluate_boxes,
                                           results_index)
from detection.evaluation.speed import compare_backends, synthetic_coco

CATEGORIES = [{"id": 1, "name": "a", "supercategory": "x"},
              {"id": 4, "name": "b", "supercategory": "x"},
              {"id": 9, "name": "no_gt", "supercategory": "y"}]


def _gt(annotations, num_images=6):
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 400, "height": 300}
              for i in range(1, num_images + 1)]
    anns = [{"id": k, "image_id": i, "category_id": c, "bbox": b, "area": b[2] * b[3],
             "iscrowd": z} for k, (i, c, b, z) in enumerate(annotations, start=1)]
    return {"images": images, "annotations": anns, "categories": CATEGORIES}


def _det(image_id, category_id, box, score):
    return {"image_id": image_id, "category_id": category_id, "bbox": box, "score": score}


def _crowd_and_empty():
    """Crowd regions (several detections inside one), an image with ground truth but no
    detection, an image with detections but no ground truth, an image with neither, a category
    with detections but no ground truth."""
    gt = _gt([(1, 1, [10, 10, 50, 40], 0), (1, 1, [100, 100, 200, 150], 1),
              (1, 4, [60, 60, 30, 30], 0), (2, 4, [5, 5, 20, 20], 0),
              (2, 1, [0, 0, 399, 299], 1), (3, 1, [30, 30, 100, 100], 0)])
    dts = [_det(1, 1, [12, 11, 48, 40], 0.9), _det(1, 1, [110, 110, 50, 50], 0.95),
           _det(1, 1, [150, 150, 60, 60], 0.8), _det(1, 4, [61, 59, 30, 31], 0.7),
           _det(2, 1, [50, 50, 30, 30], 0.99), _det(2, 4, [4, 6, 21, 19], 0.3),
           _det(4, 1, [10, 10, 10, 10], 0.6), _det(4, 9, [0, 0, 50, 50], 0.5),
           _det(1, 9, [10, 10, 50, 40], 0.4)]
    return gt, dts


def _max_dets_and_ties():
    """150 detections in one image and category (only the best 100 count), equal scores across
    the 100th place and across images, and objects whose best match is ranked 1st, 10th, 101st."""
    gt = _gt([(1, 1, [10 + 30 * k, 20, 25, 25], 0) for k in range(12)]
             + [(2, 1, [5, 5, 40, 40], 0), (3, 4, [50, 50, 10, 10], 0)])
    dts = [_det(1, 1, [300, 200, 20, 20], 0.5) for _ in range(150)]  # background, tied
    dts += [_det(1, 1, [10 + 30 * k, 20, 25, 25], 0.5 if k % 2 else 0.9) for k in range(12)]
    dts += [_det(2, 1, [6, 5, 40, 41], 0.5), _det(2, 1, [5, 5, 40, 40], 0.5)]
    dts += [_det(3, 4, [50 + k, 50, 10, 10], 0.2 + 0.01 * k) for k in range(12)]
    return gt, dts


def _sizes():
    """Objects exactly on and around the small/medium (32^2) and medium/large (96^2) limits."""
    sides = [(31.9, 32), (32, 32), (16, 64), (32.1, 32), (95.9, 96), (96, 96), (96.1, 96),
             (200, 150), (4, 3)]
    gt = _gt([(1 + k % 5, 1 + 3 * (k % 2), [20, 20, w, h], 0) for k, (w, h) in enumerate(sides)])
    rng = np.random.default_rng(0)
    dts = []
    for k, (w, h) in enumerate(sides):
        for j in range(3):
            s = rng.normal(0, 0.1, 4)
            dts.append(_det(1 + k % 5, 1 + 3 * ((k + j) % 2),
                            [round(20 + s[0] * w, 2), round(20 + s[1] * h, 2),
                             round(w * math.exp(s[2]), 2), round(h * math.exp(s[3]), 2)],
                            round(float(rng.random()), 5)))
    return gt, dts


def _random():
    return synthetic_coco(num_images=30, num_categories=6, detections_per_image=40, seed=3)


RESULT_SETS = {"crowd_and_empty": _crowd_and_empty, "max_dets_and_ties": _max_dets_and_ties,
               "sizes": _sizes, "random": _random}


def _run(gt, dts, backend, iou_type="bbox", **kwargs):
    index = coco_index(json.loads(json.dumps(gt)), backend)  # each backend its own copy
    return evaluate_boxes(index, results_index(index, dts, backend, iou_type), backend=backend,
                          img_ids=[im["id"] for im in gt["images"]], iou_type=iou_type,
                          **kwargs)


@pytest.mark.parametrize("name", sorted(RESULT_SETS))
def test_every_number_equals_pycocotools(name):
    gt, dts = RESULT_SETS[name]()
    ref, fast = (_run(gt, dts, b) for b in ("pycocotools", "faster"))
    assert len(ref.stats) == 12
    np.testing.assert_allclose(fast.stats[:12], ref.stats, rtol=0, atol=1e-9)
    assert np.any((ref.stats > 0) & (ref.stats < 1))  # a real result, not all 0 or 1
    if name != "random":  # COCOeval's "undefined" (-1) cases occur too
        assert (ref.eval["precision"] == -1).any()
    for key in ("precision", "recall"):  # every per-category, per-area, per-max-dets value
        assert fast.eval[key].shape == ref.eval[key].shape
        np.testing.assert_allclose(fast.eval[key], ref.eval[key], rtol=0, atol=1e-9)


def test_the_evaluators_results_are_equal_on_both_backends(tmp_path):
    gt, dts = _crowd_and_empty()
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    classes = [{"id": c["id"], "name": c["name"]} for c in CATEGORIES]
    out = {}
    for backend in BACKENDS:
        ev = COCOEvaluator(annotations=tmp_path / "gt.json", classes=classes, verbose=False,
                           backend=backend)
        for image in gt["images"]:
            mine = [d for d in dts if d["image_id"] == image["id"]]
            boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in
                                  (d["bbox"] for d in mine)], dtype=torch.float64)
            ev.process([{"image_id": image["id"]}], [{
                "boxes": boxes.reshape(-1, 4), "scores": torch.tensor([d["score"] for d in mine]),
                "labels": torch.tensor([[1, 4, 9].index(d["category_id"]) + 1 for d in mine],
                                       dtype=torch.int64)}])
        out[backend] = ev.evaluate()
    ref, fast = out["pycocotools"], out["faster"]
    assert math.isnan(ref["per_category"]["no_gt"]) and math.isnan(fast["per_category"]["no_gt"])
    assert 0 < ref["mAP"] < 100
    for key, value in ref.items():
        if key == "per_category":
            for name, ap in value.items():
                assert fast[key][name] == pytest.approx(ap, abs=1e-9, nan_ok=True), name
        else:
            assert fast[key] == pytest.approx(value, abs=1e-9, nan_ok=True), key


@pytest.mark.parametrize("kwargs", [dict(iou_thrs=[0.75, 0.5, 0.1], max_dets=[100]),
                                    dict(iou_thrs=[0.1], max_dets=[100], use_cats=False)])
def test_analysis_settings_and_ignore_ids_equal_pycocotools(kwargs):
    """The settings of the error analysis: other IoUs, one max-dets, class-agnostic matching
    and extra ignore regions (the ground truth of category 4)."""
    gt, dts = _random()
    ignore = [a["id"] for a in gt["annotations"] if a["category_id"] == 4]
    dts = [d for d in dts if d["category_id"] == 1]
    ref, fast = (_run(gt, dts, b, summarize=False, ignore_ids=ignore, **kwargs)
                 for b in ("pycocotools", "faster"))
    plain = _run(gt, dts, "pycocotools", summarize=False, **kwargs)
    np.testing.assert_allclose(fast.eval["precision"], ref.eval["precision"], rtol=0, atol=1e-9)
    if not kwargs.get("use_cats", True):  # ignoring class 4's objects changes the result
        assert not np.allclose(plain.eval["precision"], ref.eval["precision"])


def test_compare_backends_reports_times_and_agreement():
    gt, dts = synthetic_coco(num_images=20, num_categories=5, detections_per_image=30, seed=1)
    assert len(dts) == 20 * 30
    out = compare_backends(gt, dts, repeats=1)
    assert out["equal"] and out["max_abs_diff"] <= 1e-9 and out["numbers_compared"] == 12 + 5
    assert out["pycocotools_s"] > 0 and out["faster_s"] > 0
    assert out["ratio"] == pytest.approx(out["pycocotools_s"] / out["faster_s"])
    assert 0 < out["stats"][0] < 1


def test_unknown_backend():
    with pytest.raises(ValueError, match="one of \\['faster', 'pycocotools'\\], got 'fast'"):
        check_backend("fast")


def test_pycocotools_alone_when_faster_coco_eval_is_missing(tmp_path):
    """A bare image without faster-coco-eval: the default backend evaluates with pycocotools
    (the same numbers) after one warning, instead of failing at import."""
    import subprocess
    import sys

    gt, dts = _crowd_and_empty()
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(dts))
    script = f"""
import json, sys, warnings
sys.modules["faster_coco_eval"] = None  # import faster_coco_eval raises ImportError
from detection.evaluation.backends import check_backend, coco_index, evaluate_boxes, results_index
gt = json.load(open({str(tmp_path / "gt.json")!r}))
dts = json.load(open({str(tmp_path / "dt.json")!r}))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    stats = []
    for backend in ("faster", "faster", "pycocotools"):
        g = coco_index(gt, backend)
        ev = evaluate_boxes(g, results_index(g, dts, backend), backend=backend,
                            img_ids=[i["id"] for i in gt["images"]])
        stats.append(list(ev.stats))
print(json.dumps({{"stats": stats, "warnings": [str(w.message) for w in caught]}}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, cwd=str(Path(__file__).resolve().parents[3])).stdout
    result = json.loads(out.splitlines()[-1])
    assert result["stats"][0] == result["stats"][1] == result["stats"][2]
    assert len(result["warnings"]) == 1
    assert result["warnings"][0].startswith("faster-coco-eval is not installed: COCO evaluation "
                                            "runs on pycocotools")


def _rle(bitmap: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(bitmap.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _segm_set():
    """Masks: polygon objects (one in two parts) of two categories on 5 images of 80x100, a
    crowd region as compressed RLE; detections as RLE: shifted and eroded copies of the objects
    (IoU spread over .5 .. .95), blobs on the background, several on the crowd region, and an
    image with objects but no detection."""
    import cv2
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(4)
    h, w = 80, 100
    anns, dts = [], []
    for image_id in range(1, 6):
        for k in range(3):
            cx, cy, r = rng.uniform(20, 80), rng.uniform(20, 60), rng.uniform(6, 18)
            t = np.sort(rng.uniform(0, 2 * np.pi, 7))
            poly = np.stack([cx + r * np.cos(t) * rng.uniform(0.6, 1, 7),
                             cy + r * np.sin(t) * rng.uniform(0.6, 1, 7)], 1)
            parts = [poly.round(2).reshape(-1).tolist()]
            if k == 2:  # a second part
                parts.append([cx - r - 6, cy, cx - r - 2, cy - 4, cx - r - 2, cy + 4])
            rle = mask_utils.merge(mask_utils.frPyObjects(parts, h, w))
            category = 1 + 3 * (k % 2)
            anns.append((image_id, category, mask_utils.toBbox(rle).tolist(), 0, parts))
            if image_id == 5:
                continue
            bitmap = mask_utils.decode(rle)
            shifted = np.roll(bitmap, (int(rng.integers(-2, 3)), int(rng.integers(-3, 4))),
                              axis=(0, 1))
            if k == 1:
                shifted = cv2.erode(shifted, np.ones((3, 3), np.uint8))
            dts.append({"image_id": image_id, "category_id": category,
                        "segmentation": _rle(shifted), "score": round(float(rng.random()), 5)})
        blob = np.zeros((h, w), np.uint8)
        cv2.circle(blob, (int(rng.integers(10, 90)), 70), 6, 1, -1)
        dts.append({"image_id": image_id, "category_id": 1, "segmentation": _rle(blob),
                    "score": round(float(rng.random()), 5)})
    crowd = np.zeros((h, w), np.uint8)
    crowd[2:20, 60:98] = 1
    for j in range(3):
        piece = np.zeros((h, w), np.uint8)
        piece[4 + 5 * j:9 + 5 * j, 62:80] = 1
        dts.append({"image_id": 1, "category_id": 1, "segmentation": _rle(piece),
                    "score": 0.5 + 0.1 * j})
    gt = _gt([(i, c, b, z) for i, c, b, z, _ in anns] + [(1, 1, [60, 2, 38, 18], 1)])
    for a, (*_, parts) in zip(gt["annotations"], anns):
        a["segmentation"] = parts
    gt["annotations"][-1]["segmentation"] = _rle(crowd)
    gt["images"] = [dict(im, width=w, height=h) for im in gt["images"]][:5]
    return gt, dts


def test_segm_numbers_equal_pycocotools():
    """iouType segm: every summary number and every precision / recall value equal within
    1e-9 between the backends; and the same as pycocotools' own loadRes path."""
    gt, dts = _segm_set()
    ref, fast = (_run(gt, dts, b, iou_type="segm") for b in ("pycocotools", "faster"))
    np.testing.assert_allclose(fast.stats[:12], ref.stats, rtol=0, atol=1e-9)
    assert np.any((ref.stats > 0) & (ref.stats < 1))
    for key in ("precision", "recall"):
        np.testing.assert_allclose(fast.eval[key], ref.eval[key], rtol=0, atol=1e-9)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = pycocotools.coco.COCO()
        coco.dataset = json.loads(json.dumps(gt))
        coco.createIndex()
        direct = pycocotools.cocoeval.COCOeval(coco, coco.loadRes(json.loads(json.dumps(dts))),
                                               "segm")
        direct.evaluate(), direct.accumulate(), direct.summarize()
    np.testing.assert_allclose(ref.stats, direct.stats, rtol=0, atol=1e-12)
    boxes = _run(gt, [dict(d, bbox=mask_utils_bbox(d)) for d in dts], "pycocotools")
    assert not np.allclose(boxes.stats, ref.stats)  # masks, not their boxes, were compared


def mask_utils_bbox(result: dict) -> list[float]:
    from pycocotools import mask as mask_utils

    return mask_utils.toBbox({**result["segmentation"],
                              "counts": result["segmentation"]["counts"].encode()}).tolist()
