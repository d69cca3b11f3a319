"""detection/setup.py: data.format voc, data.test optional, the relative-path rule, checks
before the data, bad boxes through a whole run."""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import pytest
import torch

from backbones.weights import WeightsError
from detection.config import load_config
from detection.data.base import DatasetError
from detection.data import COCODataset, VOCDataset
from detection.evaluation import VOCEvaluator
from detection.setup import (build_evaluator, build_optimizer, build_test_dataset,
                             build_train_dataset, build_trainer, check_before_data,
                             check_data_paths, dataset_source, has_test_data)

CLASSES = ["cat", "dog"]
TRAIN = {"a": (64, 48, [{"name": "cat", "bbox": (5, 5, 40, 40), "difficult": 0},
                        {"name": "dog", "bbox": (30, 10, 60, 45), "difficult": 1}]),
         "b": (48, 64, [{"name": "dog", "bbox": (3, 8, 40, 60), "difficult": 0}]),
         "c": (64, 64, [{"name": "dog", "bbox": (10, 10, 50, 50), "difficult": 1}])}
TEST = {"d": (64, 48, [{"name": "cat", "bbox": (8, 6, 44, 40), "difficult": 0}]),
        "e": (64, 64, [{"name": "dog", "bbox": (4, 4, 60, 60), "difficult": 0}])}


@pytest.fixture(scope="module")
def devkit(tmp_path_factory, write_voc):
    base = tmp_path_factory.mktemp("VOCdevkit")
    write_voc(base / "VOC2007", "test", TEST)
    return (str(write_voc(base / "VOC2007", "trainval", TRAIN)),
            str(write_voc(base / "VOC2012", "trainval", {"f": TRAIN["a"]})))


def _voc(devkit, *more: str) -> list[str]:
    return ["data.format=voc", f"data.train.roots=[{devkit[0]}, {devkit[1]}]",
            "data.train.splits=[trainval]", f"data.test.roots=[{devkit[0]}]",
            "data.test.splits=[test]", "data.class_names=[cat, dog]", *more]


def test_voc_config_builds_voc_datasets_and_evaluator(devkit):
    cfg = load_config(None, _voc(devkit, "test.use_07_metric=false"))
    train = build_train_dataset(cfg)
    assert isinstance(train, VOCDataset)
    assert train.pairs == [(devkit[0], "trainval"), (devkit[1], "trainval")]  # one split: all
    assert train.classes == [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    assert train.image_ids.tolist() == [1, 2, 4]  # "c" holds only a difficult dog
    assert [len(train[i]["boxes"]) for i in range(3)] == [1, 1, 1]
    kept = build_train_dataset(load_config(None, _voc(devkit, "data.keep_difficult=true")))
    assert [len(kept[i]["boxes"]) for i in range(len(kept))] == [2, 1, 1, 2]
    test = build_test_dataset(cfg)
    assert test.pairs == [(devkit[0], "test")] and len(test) == 2
    evaluator = build_evaluator(cfg, train.classes)
    assert isinstance(evaluator, VOCEvaluator) and evaluator.use_07_metric is False
    assert evaluator.pairs == test.pairs
    assert dataset_source(cfg, train=True) == f"{devkit[0]} (trainval), {devkit[1]} (trainval)"
    assert has_test_data(cfg) and not has_test_data(load_config(None, _voc(devkit)[:3]))


@pytest.mark.parametrize("extra, message", [
    (["data.train.images=x"], "data.train.images set but data.format is 'voc'"),
    (["data.train.splits=[a, b, c]"], "data.train.splits: need one split for all roots or one "
                                      "per root, got 3 for 2 roots"),
    (["data.synthetic.enabled=true"], "data.synthetic generates a COCO-format set"),
    (["data.train.roots=[]"], "data.train.roots is empty"),
])
def test_voc_config_errors_name_the_key(devkit, extra, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_train_dataset(load_config(None, _voc(devkit, *extra)))


def test_coco_keys_and_relative_paths_resolve_from_the_working_directory(
        synthetic_coco, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="data.class_names is for data.format voc"):
        build_train_dataset(load_config(None, ["data.class_names=[a]"]))
    with pytest.raises(ValueError, match="data.test.roots set but data.format is 'coco'"):
        build_test_dataset(load_config(None, ["data.test.roots=[x]"]))
    # a config in a sub-folder naming data relative to the folder the command runs in
    (tmp_path / "configs").mkdir()
    config = tmp_path / "configs" / "mine.yaml"
    config.write_text("data:\n  train: {images: my_data/train, annotations: "
                      "my_data/train.json}\n")
    os.symlink(synthetic_coco.train_images, tmp_path / "train")
    (tmp_path / "my_data").mkdir()
    os.symlink(synthetic_coco.train_images, tmp_path / "my_data" / "train")
    os.symlink(synthetic_coco.train_annotations, tmp_path / "my_data" / "train.json")
    monkeypatch.chdir(tmp_path)
    cfg = load_config(config)
    assert isinstance(build_train_dataset(cfg), COCODataset) and not has_test_data(cfg)
    monkeypatch.chdir(tmp_path / "configs")  # the config's folder is not where paths start
    with pytest.raises(FileNotFoundError) as error:
        build_train_dataset(cfg)
    assert str(error.value) == (
        "data.train.images: folder not found: my_data/train (relative paths resolve from the "
        f"current directory, {tmp_path / 'configs'})")


pytestmark = pytest.mark.usefixtures("one_thread")


def _digest(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- before the data
def test_missing_data_paths_name_the_config_key(tmp_path):
    cfg = load_config(None, [f"data.train.images={tmp_path}",
                             f"data.train.annotations={tmp_path / 'train.json'}"])
    with pytest.raises(FileNotFoundError, match=r"^data\.train\.annotations: file not found: "
                                                r".*train\.json"):
        check_data_paths(cfg, "train")
    cfg = load_config(None, ["data.train.images=datasets/coco/train2017",
                             f"data.train.annotations={tmp_path / 'train.json'}"])
    with pytest.raises(FileNotFoundError, match="^data.train.images: folder not found: "
                                                "datasets/coco/train2017 "):
        check_data_paths(cfg, "train")
    with pytest.raises(ValueError, match="^data.test.images is empty"):
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


# ---------------------------------------------------------------------------- bad boxes, end to end
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


@pytest.mark.parametrize("name", ["SGD", "AdamW"])
def test_solver_optimizer_builds_that_optimizer_with_norm_layers_apart(name):
    cfg = load_config(None, [f"solver.optimizer={name}", "solver.base_lr=0.003",
                             "solver.weight_decay=0.05", "solver.betas=[0.8, 0.99]"])
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    opt = build_optimizer(cfg, model)
    assert type(opt).__name__ == name
    assert [(len(g["params"]), g["weight_decay"], g["lr"]) for g in opt.param_groups] == [
        (2, 0.05, 0.003), (2, 0.0, 0.003)]
    if name == "AdamW":  # decoupled decay: one step from zero gradients shrinks the weights
        assert opt.param_groups[0]["betas"] == (0.8, 0.99)
        assert opt.defaults["fused"]  # the fused kernel on the CPU
        before = model[0].weight.detach().clone()
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        opt.step()
        torch.testing.assert_close(model[0].weight, before * (1 - 0.003 * 0.05))
    else:
        assert opt.param_groups[0]["momentum"] == 0.9


def test_fused_adamw_steps_as_the_per_tensor_loop():
    cfg = load_config(None, ["solver.optimizer=AdamW", "solver.base_lr=0.01"])
    torch.manual_seed(0)
    models = [torch.nn.Linear(8, 4) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    fused = build_optimizer(cfg, models[0])
    loop = torch.optim.AdamW(models[1].parameters(), lr=0.01, weight_decay=1e-4, fused=False)
    for _ in range(3):
        x = torch.randn(5, 8)
        for model, opt in zip(models, (fused, loop)):
            opt.zero_grad()
            model(x).square().sum().backward()
            opt.step()
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_an_unknown_optimizer_names_the_key_and_the_choices():
    with pytest.raises(Exception, match="solver.optimizer.*(SGD|AdamW)"):
        load_config(None, ["solver.optimizer=Adam"])


def test_truncated_images_are_named_and_skipped_in_training_and_evaluation(
        synthetic_coco, tiny_config, tmp_path, caplog):
    """Half of the training JPEGs and one test JPEG cut to 2,000 bytes (OpenCV decodes them
    with grey rows): a run names and skips each, and evaluates the other 7 test images."""
    import logging
    import shutil

    root = Path(shutil.copytree(synthetic_coco.root, tmp_path / "data"))
    cut = sorted((root / "train").iterdir())[1::2] + [root / "val" / "000003.jpg"]
    for path in cut:
        path.write_bytes(path.read_bytes()[:2000])
    config = tiny_config(tmp_path, synthetic_coco, solver={"max_iter": 2, "steps": [1]},
                         test={"eval_period": 0, "vis_images": 0})
    cfg = load_config(config, [f"data.train.images={root / 'train'}",
                               f"data.test.images={root / 'val'}"])
    with caplog.at_level(logging.WARNING, logger="detection.data"):
        trainer, _ = build_trainer(cfg, device=torch.device("cpu"))
        trainer.train()
    trainer.writer.close()
    skipped = [r.getMessage() for r in caplog.records if "skipping bad image" in r.getMessage()]
    assert any(m.startswith("skipping bad image (training): truncated image (JPEG without its "
                            "end-of-image marker FF D9; the file stops after 2,000 bytes): "
                            f"{root / 'train'}/") for m in skipped), skipped
    assert (f"skipping bad image (left out of evaluation): truncated image (JPEG without its "
            f"end-of-image marker FF D9; the file stops after 2,000 bytes): "
            f"{root / 'val' / '000003.jpg'}") in skipped
    evaluated = {d["image_id"] for d in json.loads(
        (tmp_path / "out" / "coco_results.json").read_text())}
    assert evaluated == {1, 2, 3, 5, 6, 7, 8}  # image id 4 is 000003.jpg
