"""engine/setup.py: checks before the data, the run folder, bad boxes through a whole run."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch

from backbones.weights import WeightsError
from detection.config import load_config
from detection.data.base import DatasetError
from detection.engine.setup import (RUN_FILES, build_trainer, check_before_data,
                                    check_data_paths, prepare_output_dir)


pytestmark = pytest.mark.usefixtures("one_thread")


def _digest(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- run folder
def test_a_folder_holding_a_run_is_refused_naming_both_ways_on(tmp_path):
    prepare_output_dir(tmp_path / "new", resume=False, force=False)  # nothing there: fine
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(FileExistsError) as info:
        prepare_output_dir(tmp_path, resume=False, force=False)
    message = str(info.value)
    assert str(tmp_path) in message and "--resume" in message and "--force" in message
    prepare_output_dir(tmp_path, resume=True, force=False)
    assert (tmp_path / "metrics.jsonl").is_file()


def test_force_deletes_the_previous_runs_files_and_nothing_else(tmp_path):
    for name in RUN_FILES:
        (tmp_path / name).write_text("old")
    for name in ("vis", "tensorboard"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x").write_text("old")
    (tmp_path / "notes.txt").write_text("mine")
    assert prepare_output_dir(tmp_path, resume=False, force=True, delete=False) == []  # rank 1
    assert (tmp_path / "last.pth").is_file()
    deleted = prepare_output_dir(tmp_path, resume=False, force=True)
    assert deleted == [*RUN_FILES, "vis", "tensorboard"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


# ----------------------------------------------------------------------------- before the data
def test_missing_data_paths_name_the_config_key(tmp_path):
    cfg = load_config(None, [f"data.train.images={tmp_path}",
                             f"data.train.annotations={tmp_path / 'train.json'}"])
    with pytest.raises(DatasetError, match=r"^data\.train\.annotations: file not found: .*"
                                           r"train\.json$"):
        check_data_paths(cfg, "train")
    cfg = load_config(None, ["data.train.images=datasets/coco/train2017"])
    with pytest.raises(DatasetError, match="^data.train.images: folder not found: "
                                           "datasets/coco/train2017$"):
        check_data_paths(cfg, "train")
    with pytest.raises(DatasetError, match="^data.test.images is empty"):
        check_data_paths(cfg, "test")


def test_weights_and_norm_are_checked_before_any_data(tmp_path):
    missing = tmp_path / "r18.pth"
    cfg = load_config(None, ["model.backbone.name=resnet18", f"model.backbone.weights={missing}",
                             "data.train.images=nowhere"])
    with pytest.raises(FileNotFoundError, match="r18.pth"):
        check_before_data(cfg)
    missing.write_bytes(b"not a checkpoint")
    check_before_data(cfg)  # found; reading it is the backbone's business (WeightsError)
    from backbones import build_backbone
    with pytest.raises(WeightsError):
        build_backbone("resnet18", weights=str(missing))
    scratch = load_config(None, ["model.backbone.weights=null"])  # norm: FrozenBN by default
    with pytest.raises(ValueError, match="FrozenBN .* model.backbone.weights is null.*BN, GN or "
                                         "SyncBN"):
        check_before_data(scratch)
    check_before_data(load_config(None, ["model.backbone.weights=null",
                                         "model.backbone.norm=GN"]))
    check_before_data(load_config(None, ["model.backbone.name=vgg16",
                                         "model.backbone.weights=null"]))  # VGG has no norm


# ----------------------------------------------------------------------------- bad boxes, end to end
BAD = [[1, 1, -4, 5], [1, 1, 4, 0], [float("nan"), 1, 4, 4], [1, 1, float("inf"), 4],
       [500, 500, 10, 10]]


def _with_bad_boxes(src: str, dst: Path) -> Path:
    data = json.loads(Path(src).read_text())
    next_id = max(a["id"] for a in data["annotations"]) + 1
    for k, bbox in enumerate(BAD):
        data["annotations"].append({"id": next_id + k, "image_id": data["images"][k]["id"],
                                    "category_id": 3, "bbox": bbox, "iscrowd": 0})
    dst.write_text(json.dumps(data))
    return dst


def test_a_json_with_every_kind_of_bad_box_trains_and_evaluates(synthetic_coco, tiny_config,
                                                                tmp_path):
    train = _with_bad_boxes(synthetic_coco.train_annotations, tmp_path / "train.json")
    val = _with_bad_boxes(synthetic_coco.val_annotations, tmp_path / "val.json")
    before = {p: _digest(p) for p in (train, val)}
    config = tiny_config(tmp_path, synthetic_coco, solver={"max_iter": 2, "steps": [1]},
                         test={"eval_period": 0, "vis_images": 0})
    cfg = load_config(config, [f"data.train.annotations={train}",
                               f"data.test.annotations={val}"])
    trainer, _ = build_trainer(cfg, device=torch.device("cpu"))
    results = trainer.train()
    trainer.writer.close()
    assert math.isfinite(results["mAP"]) and trainer.iteration == 2
    lines = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    data = {r["split"]: r for r in lines if r["type"] == "data"}
    assert data["train"]["bad_boxes"] == data["test"]["bad_boxes"] == len(BAD)
    assert data["test"]["images"] == 8  # evaluation keeps every image
    assert {p: _digest(p) for p in (train, val)} == before
    with pytest.raises(DatasetError, match=r"train\.json: annotation id \d+: bbox \[1, 1, -4, 5\]"
                                           " has a negative width or height"):
        build_trainer(load_config(config, [f"data.train.annotations={train}",
                                           "data.on_bad_annotation=error"]),
                      device=torch.device("cpu"))
