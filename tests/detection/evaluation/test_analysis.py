"""The COCO error breakdown, error kinds and confusion matrix on detections computed by hand."""
from __future__ import annotations

import numpy as np
import pytest

from detection.evaluation.analysis import ERROR_TYPES, error_breakdown
from detection.evaluation.backends import coco_index, evaluate_boxes, results_index
from detection.evaluation.errors import confusion_matrix, find_errors

CATEGORIES = [{"id": 1, "name": "A", "supercategory": "animal"},
              {"id": 2, "name": "B", "supercategory": "animal"},
              {"id": 3, "name": "C", "supercategory": "vehicle"},
              {"id": 4, "name": "D", "supercategory": "vehicle"},
              {"id": 5, "name": "E", "supercategory": "vehicle"},
              {"id": 6, "name": "F", "supercategory": "animal"}]
BOX = [10, 10, 40, 40]
OBJECTS = [  # (image, category, xywh)
    (1, 1, BOX),                    # a1
    (2, 1, [100, 10, 40, 40]),      # a2
    (2, 2, BOX),                    # b1
    (2, 3, [100, 100, 40, 40]),     # c1
    (2, 4, [10, 100, 40, 40]),      # d1
    (3, 5, [10, 10, 60, 60]),       # e1: never detected
    (3, 6, [100, 100, 40, 40]),     # f1
]
DETECTIONS = [  # (image, category, xywh, score)
    (1, 1, [25, 10, 40, 40], 0.9),    # A on a1 at IoU 1000/2200 = 0.45: a localisation error
    (2, 1, [100, 10, 40, 40], 0.7),   # A on a2: right
    (2, 2, [100, 10, 40, 40], 0.95),  # B on a2: confused with a similar class (both animals)
    (2, 2, BOX, 0.8),                 # B on b1: right
    (2, 3, BOX, 0.9),                 # C on b1: confused with another class (animal)
    (2, 3, [100, 100, 40, 40], 0.6),  # C on c1: right
    (2, 4, [150, 150, 30, 30], 0.9),  # D on nothing: background
    (2, 4, [10, 100, 40, 40], 0.5),   # D on d1: right
    (3, 6, [110, 100, 40, 40], 0.8),  # F on f1 at IoU 0.6: right at .50, wrong at .75
    (3, 6, [110, 100, 40, 40], 0.3),  # F on f1 again: a duplicate
]
# Per category, AP as each error type is forgiven (C75, C50, Loc, Sim, Oth, BG, FN):
# one false positive ranked before one true positive gives precision 1/2 at every recall, so
# AP 0.5; A's two objects (FP at 0.9, TP at 0.7) give precision 1/2 up to recall 1/2 (51 of
# COCO's 101 recall points), so AP 25.5 / 101, until IoU .10 makes both true positives.
EXPECTED = {"A": [25.5 / 101, 25.5 / 101, 1, 1, 1, 1, 1],
            "B": [0.5, 0.5, 0.5, 1, 1, 1, 1],
            "C": [0.5, 0.5, 0.5, 0.5, 1, 1, 1],
            "D": [0.5, 0.5, 0.5, 0.5, 0.5, 1, 1],
            "E": [0, 0, 0, 0, 0, 0, 1],
            "F": [0, 1, 1, 1, 1, 1, 1]}


def _data():
    gt = {"images": [{"id": i, "file_name": f"{i}.jpg", "width": 200, "height": 200}
                     for i in (1, 2, 3)],
          "annotations": [{"id": k, "image_id": i, "category_id": c, "bbox": b,
                           "area": b[2] * b[3], "iscrowd": 0}
                          for k, (i, c, b) in enumerate(OBJECTS, start=1)],
          "categories": CATEGORIES}
    results = [{"image_id": i, "category_id": c, "bbox": b, "score": s}
               for i, c, b, s in DETECTIONS]
    return gt, results


@pytest.mark.parametrize("backend", ["faster", "pycocotools"])
def test_breakdown_per_category_by_hand(backend):
    out = error_breakdown(*_data(), backend=backend)
    assert out["types"] == list(ERROR_TYPES)
    for name, expected in EXPECTED.items():
        got = [out["per_category"][name][t] for t in ERROR_TYPES]
        assert got == pytest.approx(expected, abs=1e-12), name
    overall = out["ap"]["all"]
    for i, t in enumerate(ERROR_TYPES):
        assert overall[t] == pytest.approx(np.mean([e[i] for e in EXPECTED.values()]), abs=1e-12)


def test_each_error_moves_only_its_own_bar():
    """The steps between consecutive curves (what fixing each error type gains): A's single
    localisation error moves exactly the Loc bar, B's the Sim bar, C's Oth, D's BG, E's FN."""
    out = error_breakdown(*_data())
    steps = {name: np.diff([0.0] + [out["per_category"][name][t] for t in ERROR_TYPES])
             for name in EXPECTED}
    moved = {name: [t for t, s in zip(ERROR_TYPES, step) if abs(s) > 1e-12]
             for name, step in steps.items()}
    assert moved == {"A": ["C75", "Loc"], "B": ["C75", "Sim"], "C": ["C75", "Oth"],
                     "D": ["C75", "BG"], "E": ["FN"], "F": ["C50"]}
    assert steps["A"][ERROR_TYPES.index("Loc")] == pytest.approx(1 - 25.5 / 101)


def test_c75_and_c50_equal_cocoevals_summary():
    gt_data, results = _data()
    out = error_breakdown(gt_data, results)
    gt = coco_index(gt_data, "pycocotools")
    ev = evaluate_boxes(gt, results_index(gt, results, "pycocotools"), backend="pycocotools",
                        img_ids=[1, 2, 3])
    assert out["ap"]["all"]["C75"] == pytest.approx(ev.stats[2], abs=1e-12)
    assert out["ap"]["all"]["C50"] == pytest.approx(ev.stats[1], abs=1e-12)


def test_error_kinds_and_missed_objects():
    false_positives, missed = find_errors(*_data())
    kinds = {(f["category_id"], f["score"]): f["kind"] for f in false_positives}
    assert kinds == {(1, 0.9): "loc", (2, 0.95): "sim", (3, 0.9): "oth", (4, 0.9): "bg",
                     (6, 0.3): "dup"}
    assert [f["score"] for f in false_positives][0] == 0.95  # worst first
    assert next(f for f in false_positives if f["kind"] == "loc")["iou"] == pytest.approx(
        1000 / 2200)
    assert [(m["category_id"], m["score"]) for m in missed] == [(5, None), (1, 0.9)]  # largest
    assert missed[1]["iou"] == pytest.approx(1000 / 2200)


def test_confusion_matrix_by_hand():
    out = confusion_matrix(*_data(), score_thresh=0.5)
    assert out["labels"] == ["A", "B", "C", "D", "E", "F", "background"]
    assert out["columns"][-1] == "missed"
    m = np.array(out["matrix"])
    expected = np.zeros((7, 7), dtype=int)
    # the higher-scoring detection takes an object: B (0.95) takes a2, C (0.9) takes b1
    expected[0, 1] = expected[1, 2] = expected[2, 2] = expected[3, 3] = expected[5, 5] = 1
    expected[6, 0] = 2  # A at 0.9 (IoU 0.45) and A at 0.7 (a2 already taken)
    expected[6, 1] = expected[6, 3] = 1  # B at 0.8 (b1 taken); D on the background
    expected[0, 6] = expected[4, 6] = 1  # a1 and e1 missed
    np.testing.assert_array_equal(m, expected)
    assert confusion_matrix(*_data(), score_thresh=0.99)["matrix"][0][6] == 2  # a1, a2 missed
