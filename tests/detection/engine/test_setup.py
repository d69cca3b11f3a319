"""engine/setup.py: data.format voc, data.test optional, the relative-path rule."""
from __future__ import annotations

import os

import pytest

from detection.config import load_config
from detection.data import COCODataset, VOCDataset
from detection.engine.setup import (build_evaluator, build_test_dataset, build_train_dataset,
                                    dataset_source, has_test_data)
from detection.evaluation import VOCEvaluator

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
