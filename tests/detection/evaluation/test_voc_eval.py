"""VOCEvaluator: AP by hand (duplicates, difficult boxes, IoU exactly 0.5, 11-point vs
all-point), and equal to a line-by-line transliteration of the devkit's VOCevaldet.m."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from detection.data import DatasetError, VOCDataset
from detection.evaluation import VOCEvaluator
from detection.evaluation.voc_eval import average_precision

CLASSES = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "bird"}]
CAT, DOG, BIRD = 1, 2, 3

# 1-based inclusive XML boxes. 0-based: G1 [0, 0, 10, 10], G2 (difficult) [50, 50, 70, 70];
# G3 [0, 0, 20, 20], G4 [30, 0, 50, 20]; D1 [0, 0, 40, 40]
IMAGES = {
    "img1": (100, 100, [{"name": "cat", "bbox": (1, 1, 10, 10), "difficult": 0},
                        {"name": "cat", "bbox": (51, 51, 70, 70), "difficult": 1}]),
    "img2": (100, 100, [{"name": "cat", "bbox": (1, 1, 20, 20), "difficult": 0},
                        {"name": "cat", "bbox": (31, 1, 50, 20), "difficult": 0}]),
    "img3": (100, 100, [{"name": "dog", "bbox": (1, 1, 40, 40), "difficult": 0}]),
}
# image id -> [(box, score, label)]; image ids are 1..3 in split order
DETECTIONS = {
    1: [([0, 0, 10, 10], 0.9, CAT),     # d1: G1, TP
        ([0, 0, 10, 10], 0.8, CAT),     # d2: G1 again, duplicate -> FP
        ([50, 50, 70, 70], 0.7, CAT),   # d3: the difficult G2 -> neither TP nor FP
        ([0, 0, 10, 10], 0.95, DOG)],   # e2: no dog in img1 -> FP
    2: [([0, 0, 20, 10], 0.6, CAT),     # d4: IoU with G3 = 200 / 400 = 0.5 exactly -> TP (>=)
        ([30, 0, 50, 20], 0.4, CAT)],   # d6: G4, TP
    3: [([0, 0, 10, 10], 0.5, CAT),     # d5: no cat in img3 -> FP
        ([0, 0, 40, 40], 0.3, DOG),     # e1: D1, TP
        ([5, 5, 9, 9], 0.2, BIRD)],     # no bird anywhere: bird AP undefined (nan)
}
# cat, npos = 3 (G1, G3, G4). Score order d1 TP, d2 FP, d3 -, d4 TP, d5 FP, d6 TP:
#   cumulative TP 1 1 1 2 2 3, FP 0 1 1 1 2 2
#   recall    1/3 1/3 1/3 2/3 2/3 1;  precision 1 1/2 1/2 2/3 1/2 3/5
#   envelope max(prec[d:]) = 1 2/3 2/3 2/3 3/5 3/5
#   11-point: t = 0, .1, .2, .3 -> 1 (recall 1/3 >= t); t = .4, .5, .6 -> 2/3; t = .7 .. 1 -> 3/5
#             AP = (4 * 1 + 3 * 2/3 + 4 * 3/5) / 11 = 8.4 / 11 = 42/55
#   all-point: recall steps of 1/3 at envelope 1, 2/3, 3/5: AP = (1 + 2/3 + 3/5) / 3 = 34/45
# dog, npos = 1. e2 FP then e1 TP: recall 0 1, precision 0 1/2, envelope 1/2 1/2
#   11-point: every t -> 1/2, AP = 1/2;  all-point: 1 * 1/2 = 1/2
CAT_11, CAT_ALL, DOG_AP = 42 / 55, 34 / 45, 1 / 2


@pytest.fixture(scope="module")
def root(tmp_path_factory, write_voc):
    return write_voc(tmp_path_factory.mktemp("VOCdevkit") / "VOC2007", "test", IMAGES,
                     jpeg=False)


def _outputs(detections):
    samples, outputs = [], []
    for image_id, dets in detections.items():
        samples.append({"image_id": image_id})
        outputs.append({"boxes": torch.tensor([d[0] for d in dets], dtype=torch.float32)
                        .reshape(-1, 4),
                        "scores": torch.tensor([d[1] for d in dets]),
                        "labels": torch.tensor([d[2] for d in dets], dtype=torch.int64)})
    return samples, outputs


@pytest.mark.parametrize("use_07_metric", [True, False])
def test_ap_equals_the_hand_computation(root, use_07_metric, tmp_path):
    evaluator = VOCEvaluator(roots=root, splits="test", classes=CLASSES,
                             use_07_metric=use_07_metric, output_dir=tmp_path, verbose=False)
    samples, outputs = _outputs(DETECTIONS)
    evaluator.process(samples[:2], outputs[:2])
    evaluator.process(samples[2:], outputs[2:])
    result = evaluator.evaluate()
    assert result["mAP_11point"] == pytest.approx(100 * (CAT_11 + DOG_AP) / 2, abs=1e-9)
    assert result["mAP_allpoint"] == pytest.approx(100 * (CAT_ALL + DOG_AP) / 2, abs=1e-9)
    cat = CAT_11 if use_07_metric else CAT_ALL
    assert result["mAP"] == result["mAP50"] == pytest.approx(100 * (cat + DOG_AP) / 2, abs=1e-9)
    per = result["per_category"]
    assert per["cat"] == pytest.approx(100 * cat, abs=1e-9) and per["dog"] == 50.0
    assert math.isnan(per["bird"])  # no ground truth: left out of the mean
    # the devkit's results files: 1-based xmin/ymin, every detection of the class
    lines = (tmp_path / "voc_results" / "comp4_det_test_cat.txt").read_text().splitlines()
    assert lines[0] == "img1 0.90000 1.00 1.00 10.00 10.00" and len(lines) == 6


def _evaluate_part(rank, root):
    evaluator = VOCEvaluator(roots=root, splits="test", classes=CLASSES, verbose=False)
    samples, outputs = _outputs(DETECTIONS)
    part = slice(0, 2) if rank == 0 else slice(2, 3)  # images 1, 2 | image 3
    evaluator.process(samples[part], outputs[part])
    return evaluator.evaluate()


def test_two_processes_gather_to_the_hand_computation(root, two_processes):
    results = two_processes(_evaluate_part, root)
    for rank in (0, 1):
        assert results[rank]["mAP"] == pytest.approx(100 * (CAT_11 + DOG_AP) / 2, abs=1e-9)
        assert results[rank]["mAP_allpoint"] == pytest.approx(100 * (CAT_ALL + DOG_AP) / 2,
                                                               abs=1e-9)


def test_recall_exactly_three_tenths_counts_at_the_0_3_point(tmp_path, write_voc):
    # 10 cats; 3 found (scores .9 .8 .7), then a miss (.6): recall .1 .2 .3 .3, precision 1 1 1 .75.
    # 11-point: t = 0, .1, .2, .3 -> 1, later t -> 0: AP = 4/11 (np.arange(0, 1.1, 0.1)'s
    # 0.30000000000000004 would exclude recall 3/10 and give 3/11); all-point: 0.3 * 1.
    cats = [{"name": "cat", "bbox": (10 * i + 1, 1, 10 * i + 5, 5), "difficult": 0}
            for i in range(10)]
    root = write_voc(tmp_path / "VOC", "test", {"x": (100, 10, cats)}, jpeg=False)
    dets = [([10 * i, 0, 10 * i + 5, 5], s, CAT) for i, s in enumerate((0.9, 0.8, 0.7))]
    dets.append(([0, 0, 3, 3], 0.6, CAT))  # IoU 9/25 with the first cat: a miss
    evaluator = VOCEvaluator(roots=root, splits="test", classes=CLASSES[:1], verbose=False)
    evaluator.process(*_outputs({1: dets}))
    result = evaluator.evaluate()
    assert result["mAP_11point"] == pytest.approx(100 * 4 / 11, abs=1e-9)
    assert result["mAP_allpoint"] == pytest.approx(30.0, abs=1e-9)


def test_perfect_detections_of_the_dataset_give_100(root):
    dataset = VOCDataset(roots=root, splits="test", class_names=["cat", "dog", "bird"],
                         train=False)
    evaluator = VOCEvaluator(roots=root, splits="test", classes=dataset.classes, verbose=False)
    ann = dataset.annotations
    for i, image_id in enumerate(dataset.image_ids):
        lo, hi = ann.offsets[i], ann.offsets[i + 1]
        evaluator.process([{"image_id": int(image_id)}],
                          [{"boxes": torch.from_numpy(ann.boxes[lo:hi]),
                            "scores": torch.ones(hi - lo), "labels": torch.from_numpy(
                                ann.labels[lo:hi])}])
    result = evaluator.evaluate()
    assert result["mAP"] == result["mAP_allpoint"] == 100.0
    assert result["per_category"]["cat"] == 100.0 and math.isnan(result["per_category"]["bird"])


def test_bad_calls_are_named(root):
    evaluator = VOCEvaluator(roots=root, splits="test", classes=CLASSES, verbose=False)
    with pytest.raises(RuntimeError, match="no image was processed"):
        evaluator.evaluate()
    with pytest.raises(ValueError, match=r"image id 1: labels must be in 1\.\.3, got \[4\]"):
        evaluator.process(*_outputs({1: [([0, 0, 5, 5], 0.5, 4)]}))
    evaluator.process(*_outputs({7: [([0, 0, 5, 5], 0.5, CAT)]}))
    with pytest.raises(DatasetError, match=r"processed image ids \[7\]"):
        evaluator.evaluate()
    with pytest.raises(DatasetError, match="unknown class 'cat'"):
        VOCEvaluator(roots=root, splits="test", classes=[{"id": 1, "name": "dog"}])


# ----------------------------------------------------------------------------- the devkit
def _devkit_ap(predictions, ground_truth, k, use_07_metric, outcomes=None):
    """VOCevaldet.m for class ``k``, loop for loop, on 1-based boxes with its "+1" areas
    (ground truth back to 1-based as read from the XML, detections as Detectron2 writes them)."""
    gt = {i: (b[l == k] + [1, 1, 0, 0], d[l == k], np.zeros((l == k).sum(), bool))
          for i, (b, l, d) in ground_truth.items()}
    npos = sum(int((~diff).sum()) for _, diff, _ in gt.values())
    dets = [(i, row[:4] + [1, 1, 0, 0], row[4]) for i in sorted(predictions)
            for row in predictions[i] if row[5] == k]
    order = sorted(range(len(dets)), key=lambda d: -dets[d][2])  # Python's sort is stable
    tp, fp = np.zeros(len(dets)), np.zeros(len(dets))
    for d, idx in enumerate(order):
        image, bb, _ = dets[idx]
        boxes, diff, detected = gt[image]
        ovmax, jmax = -np.inf, None
        for j, bbgt in enumerate(boxes):
            iw = min(bb[2], bbgt[2]) - max(bb[0], bbgt[0]) + 1
            ih = min(bb[3], bbgt[3]) - max(bb[1], bbgt[1]) + 1
            if iw > 0 and ih > 0:
                ua = ((bb[2] - bb[0] + 1) * (bb[3] - bb[1] + 1)
                      + (bbgt[2] - bbgt[0] + 1) * (bbgt[3] - bbgt[1] + 1) - iw * ih)
                if iw * ih / ua > ovmax:
                    ovmax, jmax = iw * ih / ua, j
        if ovmax >= 0.5:
            if not diff[jmax]:
                if not detected[jmax]:
                    tp[d], detected[jmax] = 1, True
                else:
                    fp[d] = 1
            outcome = "difficult" if diff[jmax] else "tp" if tp[d] else "duplicate"
        else:
            fp[d], outcome = 1, "miss"
        if outcomes is not None:
            outcomes.append(outcome)
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    rec, prec = tp / npos, tp / np.maximum(tp + fp, np.finfo(float).eps)
    if use_07_metric:
        return sum(max(prec[rec >= t / 10], default=0) for t in range(11)) / 11
    mrec, mpre = np.r_[0, rec, 1], np.r_[0, prec, 0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    i = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(((mrec[i] - mrec[i - 1]) * mpre[i]).sum())


def test_vectorised_matching_equals_the_devkit_loop_on_random_data():
    rng = np.random.default_rng(0)
    predictions, ground_truth = {}, {}
    for image_id in range(1, 41):
        g = int(rng.integers(0, 6))
        xy = rng.integers(0, 80, (g, 2))
        boxes = np.concatenate([xy, xy + rng.integers(10, 50, (g, 2))], axis=1).astype(float)
        labels = rng.integers(1, 4, g)
        ground_truth[image_id] = (boxes, labels, rng.random(g) < 0.2)
        # detections: jittered (and repeated) ground truth, mostly with its label; plus noise
        src = rng.integers(0, max(g, 1), int(rng.integers(0, 8))) if g else np.zeros(0, int)
        det = boxes[src] + rng.integers(-4, 5, (len(src), 4)) if g else np.zeros((0, 4))
        det_labels = np.where(rng.random(len(src)) < 0.8, labels[src] if g else 0,
                              rng.integers(1, 4, len(src)))
        noise = rng.integers(0, 100, (2, 2))
        det = np.concatenate([det, np.c_[noise, noise + 10]])
        det_labels = np.concatenate([det_labels, rng.integers(1, 4, 2)])
        scores = rng.random(len(det)).round(2)  # ties included
        predictions[image_id] = np.c_[det, scores, det_labels].astype(float)
    ap11, ap_all = average_precision(predictions, ground_truth, num_classes=3)
    outcomes = []
    for k in (1, 2, 3):
        assert ap11[k - 1] == pytest.approx(_devkit_ap(predictions, ground_truth, k, True,
                                                       outcomes), abs=1e-12)
        assert ap_all[k - 1] == pytest.approx(_devkit_ap(predictions, ground_truth, k, False),
                                              abs=1e-12)
    counts = {o: outcomes.count(o) for o in ("tp", "duplicate", "difficult", "miss")}
    assert min(counts.values()) >= 10, counts  # every case of the devkit's loop, many times


def test_a_bad_box_is_an_ignored_region_like_a_difficult_one(tmp_path, write_voc):
    # cat G [0, 0, 10, 10] and a cat written with xmax < xmin (training skips it), spanning
    # x 11..20 once turned around. A detection there scores highest: ignored, AP stays 1
    # (as a false positive it would halve the precision at full recall: AP 1/2).
    cats = [{"name": "cat", "bbox": (1, 1, 10, 10), "difficult": 0},
            {"name": "cat", "bbox": (21, 1, 11, 10), "difficult": 0}]
    root = write_voc(tmp_path / "VOC", "test", {"x": (100, 50, cats)}, jpeg=False)
    dets = [([11, 0, 20, 10], 0.95, CAT), ([0, 0, 10, 10], 0.9, CAT)]
    evaluator = VOCEvaluator(roots=root, splits="test", classes=CLASSES[:1], verbose=False)
    evaluator.process(*_outputs({1: dets}))
    assert evaluator.evaluate()["mAP_allpoint"] == pytest.approx(100.0, abs=1e-9)
