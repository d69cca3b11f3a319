"""COCOEvaluator against hand-made ground truth with known AP, and against pycocotools itself."""

from __future__ import annotations

import contextlib
import io
import json
import math

import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detection.data import DatasetError
from detection.evaluation import COCOEvaluator, format_table
from detection.evaluation.backends import BACKENDS

CLASSES = [{"id": 2, "name": "cat"}, {"id": 5, "name": "dog"}]
# image id -> [(category id, xywh)]: areas 1600 (medium), 900 and 400 (small)
GT = {1: [(2, [10, 10, 40, 40]), (5, [60, 60, 30, 30])], 2: [(2, [0, 0, 20, 20])]}


def _write_gt(tmp_path, extra_anns=(), categories=CLASSES):
    anns = [{"id": k, "image_id": i, "category_id": c, "bbox": b, "area": b[2] * b[3],
             "iscrowd": 0}
            for k, (i, c, b) in enumerate(((i, c, b) for i in GT for c, b in GT[i]), 1)]
    anns += list(extra_anns)
    data = {"images": [{"id": i, "file_name": f"{i}.jpg", "height": 100, "width": 100}
                       for i in (1, 2)],
            "annotations": anns, "categories": list(categories)}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(data))
    return str(path)


def _outputs(shift=0.0, extra=()):
    """Per image a model output: every GT box (x shifted by ``shift`` * its width), label =
    position of its category in CLASSES + 1, plus ``extra`` (image id, label, xyxy, score)."""
    samples, outputs = [], []
    for image_id, objects in GT.items():
        boxes, labels = [], []
        for category_id, (x, y, w, h) in objects:
            boxes.append([x + shift * w, y, x + shift * w + w, y + h])
            labels.append([c["id"] for c in CLASSES].index(category_id) + 1)
        scores = [0.9] * len(boxes)
        for e_image, e_label, e_box, e_score in extra:
            if e_image == image_id:
                boxes.append(e_box), labels.append(e_label), scores.append(e_score)
        samples.append({"image_id": image_id})
        outputs.append({"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                        "scores": torch.tensor(scores), "labels": torch.tensor(labels)})
    return samples, outputs


def _evaluate(gt_path, samples, outputs, **kwargs):
    evaluator = COCOEvaluator(annotations=gt_path, classes=CLASSES, verbose=False, **kwargs)
    evaluator.process(samples, outputs)
    return evaluator.evaluate()


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


def test_perfect_detections_give_100(tmp_path, backend):
    result = _evaluate(_write_gt(tmp_path), *_outputs(), backend=backend)
    for key in ("mAP", "mAP50", "mAP75", "mAP_s", "mAP_m", "AR100"):
        assert result[key] == pytest.approx(100.0), key
    assert math.isnan(result["mAP_l"])  # no large ground truth: pycocotools' -1 -> nan
    assert result["per_category"] == {"cat": pytest.approx(100.0), "dog": pytest.approx(100.0)}


def test_iou_exactly_0_6(tmp_path, backend):
    # shifting a w x h box by w/4 in x: IoU = (3w/4) h / ((5w/4) h) = 0.6 exactly; true
    # positives at IoU thresholds .50, .55, .60 (pycocotools matches iou >= t), not above
    result = _evaluate(_write_gt(tmp_path), *_outputs(shift=0.25), backend=backend)
    assert result["mAP50"] == pytest.approx(100.0)
    assert result["mAP75"] == pytest.approx(0.0)
    assert result["mAP"] == pytest.approx(30.0)  # 3 of 10 thresholds at AP 100
    assert result["AR100"] == pytest.approx(30.0)


def test_agrees_with_a_direct_pycocotools_call(tmp_path):
    gt_path = _write_gt(tmp_path)
    extra = [(1, 1, [60, 10, 90, 40], 0.95), (2, 2, [5, 5, 25, 25], 0.5),
             (2, 1, [1, 0, 21, 19], 0.3)]
    samples, outputs = _outputs(shift=0.1, extra=extra)
    result = _evaluate(gt_path, samples, outputs, output_dir=tmp_path / "out")
    results = json.loads((tmp_path / "out" / "coco_results.json").read_text())
    assert len(results) == 6
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_path)
        reference = COCOeval(gt, gt.loadRes(results), "bbox")
        reference.evaluate(), reference.accumulate(), reference.summarize()
    for key, i in (("mAP", 0), ("mAP50", 1), ("mAP75", 2), ("mAP_s", 3), ("mAP_m", 4),
                   ("AR100", 8)):
        assert result[key] == pytest.approx(100 * reference.stats[i]), key
    assert 0 < result["mAP"] < 100


def test_labels_map_to_category_ids_and_boxes_to_xywh(tmp_path):
    samples = [{"image_id": 2}]
    outputs = [{"boxes": torch.tensor([[1.0, 2.0, 11.5, 22.25]]), "scores": torch.tensor([0.5]),
                "labels": torch.tensor([2])}]
    _evaluate(_write_gt(tmp_path), samples, outputs, output_dir=tmp_path)
    results = json.loads((tmp_path / "coco_results.json").read_text())
    assert results == [{"image_id": 2, "category_id": 5, "bbox": [1.0, 2.0, 10.5, 20.25],
                        "score": 0.5}]


def test_no_detections_at_all(tmp_path, backend):
    empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0),
             "labels": torch.zeros(0, dtype=torch.int64)}
    result = _evaluate(_write_gt(tmp_path), [{"image_id": 1}, {"image_id": 2}], [empty] * 2,
                       output_dir=tmp_path, backend=backend)
    for key in ("mAP", "mAP50", "mAP75", "mAP_s", "mAP_m", "AR100"):
        assert result[key] == 0.0, key
    assert result["per_category"] == {"cat": 0.0, "dog": 0.0}
    assert json.loads((tmp_path / "coco_results.json").read_text()) == []


def test_category_without_ground_truth_or_without_detections(tmp_path, backend):
    classes = CLASSES + [{"id": 9, "name": "bird"}]
    gt_path = _write_gt(tmp_path, categories=classes)
    samples, outputs = _outputs()
    for o in outputs:  # drop every "dog" detection
        keep = o["labels"] == 1
        o.update(boxes=o["boxes"][keep], scores=o["scores"][keep], labels=o["labels"][keep])
    evaluator = COCOEvaluator(annotations=gt_path, classes=classes, verbose=False,
                              backend=backend)
    evaluator.process(samples, outputs)
    result = evaluator.evaluate()
    assert result["per_category"]["cat"] == pytest.approx(100.0)
    assert result["per_category"]["dog"] == 0.0
    assert math.isnan(result["per_category"]["bird"])  # no ground truth: nan, not averaged
    assert result["mAP"] == pytest.approx(50.0)


def test_detection_on_a_crowd_region_is_not_a_false_positive(tmp_path, backend):
    crowd = {"id": 99, "image_id": 2, "category_id": 2, "bbox": [50, 50, 40, 40],
             "area": 1600, "iscrowd": 1}
    on_crowd = [(2, 1, [52, 52, 88, 88], 0.99)]  # inside the crowd box, highest score
    assert _evaluate(_write_gt(tmp_path, [crowd]), *_outputs(extra=on_crowd),
                     backend=backend)["mAP50"] == pytest.approx(100.0)
    # the same detection without the crowd region is a false positive ranked first
    assert _evaluate(_write_gt(tmp_path), *_outputs(extra=on_crowd),
                     backend=backend)["mAP50"] < 90


def test_only_processed_images_are_evaluated(tmp_path):
    samples, outputs = _outputs()
    result = _evaluate(_write_gt(tmp_path), samples[:1], outputs[:1])
    assert result["mAP"] == pytest.approx(100.0)  # image 2's ground truth is not counted


def test_reset_and_errors(tmp_path):
    gt_path = _write_gt(tmp_path)
    evaluator = COCOEvaluator(annotations=gt_path, classes=CLASSES, verbose=False)
    evaluator.process(*_outputs())
    evaluator.reset()
    with pytest.raises(RuntimeError, match="no image was processed"):
        evaluator.evaluate()
    with pytest.raises(ValueError, match="labels must be in 1..2"):
        evaluator.process([{"image_id": 1}], [{"boxes": torch.zeros(1, 4),
                                               "scores": torch.ones(1),
                                               "labels": torch.tensor([3])}])
    evaluator.process([{"image_id": 77}], [{"boxes": torch.zeros(0, 4), "scores": torch.ones(0),
                                            "labels": torch.zeros(0, dtype=torch.int64)}])
    with pytest.raises(DatasetError, match="image ids \\[77\\]"):
        evaluator.evaluate()
    with pytest.raises(DatasetError, match="category ids \\[4\\]"):
        COCOEvaluator(annotations=gt_path, classes=[{"id": 4, "name": "x"}])
    with pytest.raises(ValueError, match="backend must be one of"):
        COCOEvaluator(annotations=gt_path, classes=CLASSES, backend="fast")


def test_format_table_and_printing(tmp_path, capsys, backend):
    evaluator = COCOEvaluator(annotations=_write_gt(tmp_path), classes=CLASSES, backend=backend)
    evaluator.process(*_outputs(shift=0.25))
    result = evaluator.evaluate()
    printed = capsys.readouterr().out
    assert "Average Precision" in printed  # COCOeval's own summary
    table = format_table(result)
    assert table in printed
    assert "mAP 30.00" in table and "mAP50 100.00" in table and "mAP_l   nan" in table
    assert "cat" in table and "dog" in table


def _mixed():
    """Image 1 detected perfectly, image 2 with IoU 0.6."""
    (s_exact, o_exact), (s_shift, o_shift) = _outputs(), _outputs(shift=0.25)
    return [s_exact[0], s_shift[1]], [o_exact[0], o_shift[1]]


def _evaluate_one_image_per_rank(rank, gt_path):
    samples, outputs = _mixed()
    evaluator = COCOEvaluator(annotations=gt_path, classes=CLASSES, verbose=False)
    evaluator.process(samples[rank:rank + 1], outputs[rank:rank + 1])  # one image per rank
    return evaluator.evaluate()


def test_distributed_gather_over_two_processes(tmp_path, two_processes):
    gt_path = _write_gt(tmp_path)
    results = two_processes(_evaluate_one_image_per_rank, gt_path)
    single = _evaluate(gt_path, *_mixed())  # both images in one process
    rank0_alone = _evaluate(gt_path, *(x[:1] for x in _mixed()))
    assert single["mAP"] != pytest.approx(rank0_alone["mAP"])
    for rank in (0, 1):  # every rank gets rank 0's result over both images
        for key in ("mAP", "mAP50", "mAP75", "AR100"):
            assert results[rank][key] == pytest.approx(single[key]), key
        assert results[rank]["per_category"] == pytest.approx(single["per_category"])


def _mask_outputs(samples, outputs, seed=0):
    """Each detection gets (D, 1, 28, 28) mask probabilities: an ellipse inside its box, a
    little noise."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 28), torch.linspace(-1, 1, 28), indexing="ij")
    ellipse = (1.2 - (xx ** 2 + yy ** 2)).clamp(0, 1)
    for out in outputs:
        n = len(out["boxes"])
        out["masks"] = (ellipse + 0.3 * torch.rand(n, 1, 28, 28, generator=g)).clamp(0, 1)
    return samples, outputs


def _write_mask_gt(tmp_path):
    """``_write_gt``'s objects with masks: each the ellipse inscribed in its box."""
    gt_path = _write_gt(tmp_path)
    data = json.loads(open(gt_path).read())
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        t = [2 * math.pi * k / 24 for k in range(24)]
        a["segmentation"] = [[v for k in t for v in (x + w / 2 + w / 2 * math.cos(k),
                                                      y + h / 2 + h / 2 * math.sin(k))]]
    (tmp_path / "gt.json").write_text(json.dumps(data))
    return gt_path


def _mask_samples(samples, outputs):
    for s in samples:
        s["original_size"] = (100, 100)
    return _mask_outputs(samples, outputs)


def _evaluate_masks_one_image_per_rank(rank, gt_path):
    samples, outputs = _mask_samples(*_mixed())
    evaluator = COCOEvaluator(annotations=gt_path, classes=CLASSES, verbose=False, masks=True)
    evaluator.process(samples[rank:rank + 1], outputs[rank:rank + 1])
    return evaluator.evaluate()


def test_masks_are_gathered_over_two_processes(tmp_path, two_processes):
    gt_path = _write_mask_gt(tmp_path)
    results = two_processes(_evaluate_masks_one_image_per_rank, gt_path)
    single = _evaluate(gt_path, *_mask_samples(*_mixed()), masks=True)
    assert 0 < single["segm_mAP"] < 100
    for rank in (0, 1):
        for key in ("mAP", "segm_mAP", "segm_mAP50", "segm_AR100"):
            assert results[rank][key] == pytest.approx(single[key]), key


def test_relabelled_evaluation_keeps_the_masks(tmp_path):
    """tools/eval.py's mapping of a checkpoint's classes keeps each kept detection's mask."""
    from detection.evaluation import Relabelled

    gt_path = _write_mask_gt(tmp_path)
    model_classes = [CLASSES[1], {"id": 77, "name": "other"}, CLASSES[0]]  # labels 3 <-> 1
    direct = _evaluate(gt_path, *_mask_samples(*_outputs(shift=0.05)), masks=True)
    samples, outputs = _mask_samples(*_outputs(shift=0.05))
    for out in outputs:
        out["labels"] = torch.tensor([[2, 0, 1][k - 1] + 1 for k in out["labels"].tolist()])
    evaluator = Relabelled(COCOEvaluator(annotations=gt_path, classes=CLASSES, verbose=False,
                                         masks=True),
                           model_classes=model_classes, data_classes=CLASSES)
    evaluator.process(samples, outputs)
    assert direct["segm_mAP"] > 0
    assert evaluator.evaluate()["segm_mAP"] == pytest.approx(direct["segm_mAP"])


def test_masks_are_evaluated_as_pycocotools_segm(tmp_path):
    """With masks: the box numbers unchanged, segm_* numbers those of pycocotools' own segm
    evaluation of the written results (pasted masks as RLE, the boxes dropped so that areas
    are the masks', as Detectron2 does), on both backends within 1e-9."""
    gt_path = _write_mask_gt(tmp_path)
    extra = [(1, 1, [60, 10, 90, 40], 0.95), (2, 2, [5, 5, 25, 25], 0.5)]
    results = {}
    for backend in BACKENDS:
        samples, outputs = _mask_samples(*_outputs(shift=0.05, extra=extra))
        results[backend] = _evaluate(gt_path, samples, outputs, backend=backend, masks=True,
                                     output_dir=tmp_path / backend)
    boxes_only = _evaluate(gt_path, *_outputs(shift=0.05, extra=extra), backend="pycocotools")
    ref, fast = results["pycocotools"], results["faster"]
    for key, value in boxes_only.items():  # the box numbers keep their names and values
        assert ref[key] == pytest.approx(value, abs=0, nan_ok=True), key
    written = json.loads((tmp_path / "faster" / "coco_results.json").read_text())
    assert len(written) == 5 and all(set(r["segmentation"]) == {"size", "counts"}
                                     for r in written)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_path)
        segm = [{k: v for k, v in r.items() if k != "bbox"} for r in written]
        reference = COCOeval(gt, gt.loadRes(segm), "segm")
        reference.evaluate(), reference.accumulate(), reference.summarize()
    for key, i in (("mAP", 0), ("mAP50", 1), ("mAP75", 2), ("mAP_s", 3), ("mAP_m", 4),
                   ("AR100", 8)):
        assert ref[f"segm_{key}"] == pytest.approx(100 * reference.stats[i]), key
    assert 0 < ref["segm_mAP"] < ref["segm_mAP50"] <= 100 and ref["segm_mAP"] != ref["mAP"]
    for key, value in ref.items():
        if key.endswith("per_category"):
            for name, ap in value.items():
                assert fast[key][name] == pytest.approx(ap, abs=1e-9, nan_ok=True), name
        else:
            assert fast[key] == pytest.approx(value, abs=1e-9, nan_ok=True), key
    assert set(ref["segm_per_category"]) == {"cat", "dog"}
    table = format_table(ref)
    assert "mask mAP" in table and "mask AP" in table and table.startswith("box  mAP")


def test_mask_evaluation_needs_masks(tmp_path):
    gt_path = _write_gt(tmp_path)
    with pytest.raises(DatasetError, match="annotation id 1 has no segmentation"):
        COCOEvaluator(annotations=gt_path, classes=CLASSES, masks=True)
