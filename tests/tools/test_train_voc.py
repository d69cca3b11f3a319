"""tools/train.py and tools/compare.py on a PASCAL VOC config (data.format: voc)."""
from __future__ import annotations

import json
import os

import pytest

from tool_loader import load_tool

CLASSES = ["cat", "dog"]
TRAIN = {"a": (64, 48, [{"name": "cat", "bbox": (5, 5, 40, 40), "difficult": 0}]),
         "b": (48, 64, [{"name": "dog", "bbox": (3, 8, 40, 60), "difficult": 0}])}
TEST = {"d": (64, 48, [{"name": "cat", "bbox": (8, 6, 44, 40), "difficult": 0}]),
        "e": (64, 64, [{"name": "dog", "bbox": (4, 4, 60, 60), "difficult": 1}])}


@pytest.fixture(scope="module")
def devkit(tmp_path_factory, write_voc):
    root = tmp_path_factory.mktemp("VOCdevkit") / "VOC2007"
    write_voc(root, "test", TEST)
    return str(write_voc(root, "trainval", TRAIN))


def test_voc_run_trains_evaluates_and_reports_voc_map(devkit, tmp_path, capsys,
                                                      tiny_model_config, one_thread, detection_log):
    """tools/train.py on a VOC config: the VOC evaluator's numbers, its headline, eval.json;
    tools/compare.py shows them under the VOC rows."""
    cfg = tmp_path / "voc.yaml"
    cfg.write_text(json.dumps({
        "model": tiny_model_config(),
        "data": {"input": {"min_size_train": [48], "max_size_train": 64, "min_size_test": 48,
                           "max_size_test": 64}, "num_workers": 0},
        "solver": {"max_iter": 1, "ims_per_batch": 2, "base_lr": 0.001, "warmup_iters": 1},
        "test": {"vis_images": 1}, "output_dir": str(tmp_path / "out"), "device": "cpu"}))
    train = load_tool("train")
    voc = ["data.format=voc", f"data.train.roots=[{devkit}]", "data.train.splits=[trainval]",
           f"data.test.roots=[{devkit}]", "data.test.splits=[test]", "data.class_names=[cat, dog]"]
    assert train.main(["--config", str(cfg), "--set", *voc]) == 0
    out = capsys.readouterr().out
    result = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert {"mAP", "mAP50", "mAP_11point", "mAP_allpoint", "per_category"} <= set(result)
    assert sorted(result["per_category"]) == CLASSES and result["mAP"] == result["mAP_11point"]
    assert f"VOC mAP@.5 = {result['mAP']:.1f}   (11-point {result['mAP_11point']:.1f}" in out
    assert f"{devkit} (test), iteration 1" in out
    assert sorted(os.listdir(tmp_path / "out" / "voc_results")) == [
        "comp4_det_test_cat.txt", "comp4_det_test_dog.txt"]
    assert load_tool("compare").main([str(tmp_path / "out")]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[2].startswith("VOC mAP@.5 (11-point)") and "mAP@[.5" not in "".join(rows)
