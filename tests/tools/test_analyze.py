"""tools/analyze.py on a real tiny run: the breakdown agrees with the run's own evaluation."""
from __future__ import annotations

import json

import cv2
import pytest
import yaml

from detection.evaluation.analysis import ERROR_TYPES
from tool_loader import load_tool


def test_analyze_a_finished_run(tiny_runs, tmp_path, capsys):
    run = tiny_runs[0]
    assert load_tool("analyze").main([str(run), "--output", str(tmp_path), "--score-thr",
                                      "0.0", "--top", "5"]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split() == ["area", *ERROR_TYPES]
    assert "confusion matrix" in printed and "missed" in printed
    analysis = json.loads((tmp_path / "analysis.json").read_text())
    evaluation = json.loads((run / "eval.json").read_text())
    overall = analysis["ap"]["all"]
    # the analysis re-evaluates the saved detections: its C75 / C50 are the run's mAP75 / mAP50
    assert 100 * overall["C75"] == pytest.approx(evaluation["mAP75"], abs=1e-9)
    assert 100 * overall["C50"] == pytest.approx(evaluation["mAP50"], abs=1e-9)
    for values in [overall, *analysis["per_category"].values()]:
        steps = [values[t] for t in ERROR_TYPES]
        assert steps == sorted(steps) and steps[-1] == 1.0  # each fix can only help
    assert set(analysis["pr"]) == set(evaluation["per_category"])
    assert all(len(c["iou50"]) == 101 for c in analysis["pr"].values())

    config = yaml.safe_load((run / "config.yaml").read_text())
    ground_truth = json.loads(open(config["data"]["test"]["annotations"]).read())
    real = [a for a in ground_truth["annotations"] if not a.get("iscrowd", 0)]
    matrix = analysis["confusion"]["matrix"]
    assert sum(map(sum, matrix[:-1])) == len(real)  # every object matched or missed, once
    results = json.loads((run / "coco_results.json").read_text())
    assert sum(map(sum, matrix)) - sum(row[-1] for row in matrix) == len(results)  # score >= 0
    kinds = analysis["false_positive_kinds"]  # each detection a true or a false positive:
    assert sum(kinds.values()) + len(real) - analysis["num_missed"] == len(results)

    fp = cv2.imread(str(tmp_path / "worst_false_positives.jpg"))
    assert fp.shape[1] == 6 * 128 and fp.shape[0] == 128 + 18  # 5 crops: one row of 6 tiles
    assert (tmp_path / "analysis.html").read_text().count("data:image/jpeg;base64,") >= 2


def test_analyze_errors_name_the_file(tiny_runs, tmp_path, capsys):
    analyze = load_tool("analyze")
    assert analyze.main([str(tmp_path / "nowhere")]) == 2
    assert "error: run folder not found" in capsys.readouterr().err
    (tmp_path / "eval.json").write_text(json.dumps({"mAP": 1.0}))
    assert analyze.main([str(tmp_path)]) == 2
    assert "coco_results.json" in capsys.readouterr().err
    (tmp_path / "coco_results.json").write_text("[")
    assert analyze.main([str(tmp_path)]) == 2
    assert "coco_results.json is not valid JSON" in capsys.readouterr().err


def test_analyze_a_mask_run_breaks_down_the_masks_too(tiny_mask_run, tmp_path, capsys):
    """A Mask R-CNN's run: the breakdown of the masks beside the boxes' (its C75 / C50 the
    run's segm_mAP75 / segm_mAP50), both printed."""
    run = tiny_mask_run
    assert load_tool("analyze").main([str(run), "--output", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split() == ["boxes", *ERROR_TYPES]
    assert ["masks", *ERROR_TYPES] in [line.split() for line in printed]
    analysis = json.loads((tmp_path / "analysis.json").read_text())
    evaluation = json.loads((run / "eval.json").read_text())
    masks = analysis["segm"]["ap"]["all"]
    assert 100 * masks["C75"] == pytest.approx(evaluation["segm_mAP75"], abs=1e-9)
    assert 100 * masks["C50"] == pytest.approx(evaluation["segm_mAP50"], abs=1e-9)
    assert 100 * analysis["ap"]["all"]["C50"] == pytest.approx(evaluation["mAP50"], abs=1e-9)
    assert set(analysis["segm"]["per_category"]) == set(evaluation["segm_per_category"])
