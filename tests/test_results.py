"""docs/results/*.yaml, the one home of the measured and reference figures, held to the configs.

A figure lives once, as data; a config names its entry in its header and carries no figure of its
own, and the quick start's results carry the recipe they were measured with, so a config change
that would make them stale fails here.
"""
import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from detection.config import load_config

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results"


def _data(name: str) -> dict:
    return yaml.safe_load((RESULTS / name).read_text(encoding="utf-8"))


def _header(path: Path) -> str:
    """A config file's leading comment block as one line of text."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("# "))
    return " ".join(lines)


def _dotted(cfg, key: str):
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


# ---------------------------------------------------------------------------------- references
REFERENCES = _data("references.yaml")
REFERENCED = sorted(p.relative_to(REPO / "configs").with_suffix("").as_posix()
                    for folder in ("coco", "paper")
                    for p in (REPO / "configs" / folder).rglob("*.yaml"))


def test_every_coco_and_paper_config_has_one_reference_entry():
    assert sorted(REFERENCES["configs"]) == REFERENCED


@pytest.mark.parametrize("key", REFERENCED)
def test_a_config_names_its_entry_and_copies_no_figure_of_it(key):
    entry = REFERENCES["configs"][key]
    header = _header(REPO / "configs" / f"{key}.yaml")
    assert f"`{key}` in docs/results/references.yaml" in header
    target = REFERENCES["configs"].get(entry.get("as"), entry)
    for metric in ("box_ap", "mask_ap", "mAP50", "mAP", "voc07_mAP"):
        if target.get(metric) is not None:
            assert str(target[metric]) not in header, (key, metric)
    assert set(entry.get("deviations", [])) <= set(REFERENCES["deviations"])
    assert target.get("source") in (None, *REFERENCES["sources"])


def test_an_entry_is_a_number_or_says_why_there_is_none():
    for key, entry in REFERENCES["configs"].items():
        if "as" in entry:  # the same recipe with other ImageNet weights: its twin's number
            twin = REFERENCES["configs"][entry["as"]]
            assert twin["box_ap"] > 0 and "as" not in twin, key
            assert load_config(REPO / f"configs/{entry['as']}.yaml").solver == load_config(
                REPO / f"configs/{key}.yaml").solver, key
        elif entry.get("box_ap", 0) is None:
            assert entry["note"].startswith("none published"), key
        else:
            numbers = [entry.get(m) for m in ("box_ap", "mask_ap", "mAP50", "mAP", "voc07_mAP")]
            assert all(n is None or 0 < n < 100 for n in numbers) and any(numbers), key


def test_the_papers_table_8_pair_differs_in_the_backbone_only():
    vgg, r101 = (REFERENCES["configs"][f"paper/faster_rcnn_{b}_table8"]
                 for b in ("VGG16", "R_101_C4"))
    assert (vgg["mAP50"], vgg["mAP"]) < (r101["mAP50"], r101["mAP"])  # the paper's finding
    one, other = (load_config(REPO / f"configs/paper/faster_rcnn_{b}_table8.yaml")
                  for b in ("VGG16", "R_101_C4"))
    assert one.data == other.data and one.solver.max_iter == other.solver.max_iter


# ---------------------------------------------------------------------------------- quick start
QUICKSTART = _data("quickstart.yaml")


def test_the_quick_start_results_were_measured_with_todays_config():
    """Change configs/quickstart.yaml and this fails: measure again, then update `recipe`."""
    cfg = load_config(REPO / QUICKSTART["config"])
    for key, value in QUICKSTART["recipe"].items():
        assert _dotted(cfg, key) == value, key


def test_the_quick_start_header_points_to_its_results_and_copies_none():
    header = _header(REPO / QUICKSTART["config"])
    assert "docs/results/quickstart.yaml" in header
    runs = QUICKSTART["seeds"]["runs"]
    figures = {QUICKSTART["fresh_run"]["mAP50"], QUICKSTART["fresh_run"]["mAP"],
               *(r["mAP50"] for r in runs), *(r["mAP"] for r in runs)}
    assert not [f for f in figures if str(f) in header]


def test_the_quick_start_seeds_clear_90_and_70_and_each_uses_its_own_data():
    runs = QUICKSTART["seeds"]["runs"]
    assert [r["seed"] for r in runs] == [0, 1, 2, 3, 4]
    assert min(r["mAP50"] for r in runs) >= 90 and min(r["mAP"] for r in runs) >= 70
    default = load_config(REPO / QUICKSTART["config"])
    command = QUICKSTART["seeds"]["command"].format(seed=1)
    output = re.search(r"--output (\S+)", command)[1]
    other = load_config(REPO / QUICKSTART["config"], command.split("--set ")[1].split())
    assert other.seed == other.data.synthetic.seed != default.data.synthetic.seed == default.seed
    assert other.data.synthetic.root != default.data.synthetic.root  # never the same folder
    assert output != default.output_dir


def test_the_quick_start_is_under_40_percent_of_the_sgd_recipes_work():
    work = QUICKSTART["work"]
    new, old = (load_config(REPO / p) for p in (QUICKSTART["config"], work["baseline"]))
    assert old.solver.max_iter == work["baseline_max_iter"]
    assert (new.solver.optimizer, old.solver.optimizer) == ("AdamW", "SGD")
    # the same data and test size; the quick start trains on 96-128 px, never above the old 128
    scales = new.data.input.min_size_train
    assert [max(scales)] == old.data.input.min_size_train == [128] and len(scales) > 1
    same_scales = dataclasses.replace(new.data.input, min_size_train=[128])
    assert dataclasses.replace(new.data, input=same_scales) == old.data
    assert new.model.backbone == old.model.backbone
    assert new.model.fpn == old.model.fpn and new.output_dir != old.output_dir
    share = (new.solver.max_iter * work["step_s"]) / (
        old.solver.max_iter * work["baseline_step_s"])
    assert share <= 0.40  # the budget the quick start was tuned to (issue 9)
