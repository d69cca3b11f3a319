import json
import subprocess
import sys
from pathlib import Path

import pytest
from tool_loader import load_tool

ROOT = Path(__file__).resolve().parents[2]


compare = load_tool("compare")

VGG = {"mAP": 21.2, "mAP50": 41.5, "mAP75": 20.0, "mAP_s": 5.0, "mAP_m": 23.0, "mAP_l": 30.0,
       "AR100": 33.3, "per_category": {"person": 40.04, "car": 25.55, "zebra": -1.0},
       "backbone": "vgg16", "config": "configs/paper/vgg16.yaml", "weights": "w.pth",
       "iteration": 100}
R101 = {**VGG, "mAP": 27.2, "mAP50": 48.4, "per_category": {"person": 46.96, "car": 31.0,
                                                            "bus": 12.34},
        "backbone": "resnet101"}


@pytest.fixture()
def runs(tmp_path):
    (tmp_path / "vgg").mkdir()
    (tmp_path / "vgg" / "eval.json").write_text(json.dumps(VGG))
    (tmp_path / "r101.json").write_text(json.dumps(R101))
    return [str(tmp_path / "vgg"), str(tmp_path / "r101.json")]


def test_text_table_has_paper_numbers(runs, capsys):
    assert compare.main(runs) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["metric", "vgg16", "resnet101"]
    assert lines[2].split() == ["mAP@.5", "41.5", "48.4"]
    assert lines[3].split() == ["mAP@[.5,", ".95]", "21.2", "27.2"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[5:]}
    assert rows == {"person": ["40.0", "47.0"], "car": ["25.6", "31.0"],
                    "zebra": ["n/a", "-"], "bus": ["-", "12.3"]}


def test_markdown_table(runs, capsys):
    assert compare.main([*runs, "--markdown"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "| metric | vgg16 | resnet101 |"
    assert out[1] == "| :--- | ---: | ---: |"
    assert out[2] == "| mAP@.5 | 41.5 | 48.4 |"
    assert out[3] == "| mAP@[.5, .95] | 21.2 | 27.2 |"
    assert out[4] == "| person | 40.0 | 47.0 |"


def test_same_backbone_columns_named_by_run(tmp_path, capsys):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "eval.json").write_text(json.dumps(R101))
    assert compare.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert capsys.readouterr().out.splitlines()[0].split() == [
        "metric", "resnet101", "(a)", "resnet101", "(b)"]


def test_missing_and_bad_files_named(tmp_path, capsys):
    assert compare.main([str(tmp_path / "nope")]) == 2
    assert "no eval.json at" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"mAP": 1.0}))
    assert compare.main([str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.json" in err and "mAP50" in err


def test_runs_as_a_script(runs):
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "compare.py"), *runs],
                         capture_output=True, text=True, check=True).stdout
    assert "48.4" in out and "resnet101" in out
