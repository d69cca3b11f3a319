"""tools/pretrain.py end to end on files written in each published format: CIFAR-10's binary
archive and python batches, ILSVRC-2012's folders with a flat val and label file; bitwise
resume; the exported backbone in build_backbone and in a detection config."""
from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

from backbones import build_backbone
from detection.pretrain.config import load_pretrain_config
from detection.pretrain.setup import build_classifier
from detection.build import build_model
from detection.config import load_config
from tool_loader import load_tool

pretrain = load_tool("pretrain")
REPO = Path(__file__).resolve().parents[2]
WNIDS = ["n01440764", "n01443537", "n01484850"]


def _config(folder: Path, **sections) -> Path:
    cfg = {"model": {"backbone": {"name": "cifar_resnet20", "shortcut": "A"}},
           "data": {"format": "cifar10", "num_workers": 0,
                    "input": {"scale": [], "crop": 32, "pad": 4, "lighting_std": 0.0,
                              "test_size": 0}},
           "solver": {"max_iter": 4, "base_lr": 0.05, "ims_per_batch": 8, "steps": [3],
                      "checkpoint_period": 2},
           "test": {"ims_per_batch": 16},
           "output_dir": str(folder / "out"), "device": "cpu", "log_period": 1}
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _lines(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_cifar10_binary_archive_with_a_held_out_split(tmp_path, write_cifar10, one_thread):
    archive, _ = write_cifar10(tmp_path, "bin", per_batch=4)
    config = _config(tmp_path, data={"train": str(archive), "holdout": 6},
                     test={"eval_period": 2})
    assert pretrain.main(["--config", str(config)]) == 0
    out = tmp_path / "out"
    assert {"backbone.pth", "best.pth", "config.yaml", "eval.json", "last.pth",
            "metrics.jsonl"} <= {p.name for p in out.iterdir()}
    result = json.loads((out / "eval.json").read_text())
    assert result["num_images"] == 6 and result["crops"] == 1 and result["iteration"] == 4
    assert 0 <= result["top1_err"] <= 100 and "top5_err" in result
    lines = _lines(out)
    train = [r for r in lines if r["type"] == "train"]
    assert [r["iteration"] for r in train] == [1, 2, 3, 4]
    assert all({"loss", "loss_cls", "top1_err", "lr", "eta_s"} <= set(r) for r in train)
    assert train[0]["loss"] == train[0]["loss_cls"]  # the error is a metric, not a loss term
    assert [r["iteration"] for r in lines if r["type"] == "eval"] == [2, 4]
    assert load_pretrain_config(out / "config.yaml").model.num_classes == 10


def _final_state(out: Path) -> dict:
    return torch.load(out / "last.pth", weights_only=True)


def test_cifar10_python_batches_resume_bitwise(tmp_path, write_cifar10, one_thread):
    folder, _ = write_cifar10(tmp_path, "py", archive=False, per_batch=4)
    full = _config(tmp_path / "full", data={"train": str(folder)})
    assert pretrain.main(["--config", str(full)]) == 0
    part = _config(tmp_path / "part", data={"train": str(folder)})
    assert pretrain.main(["--config", str(part), "--set", "solver.max_iter=2"]) == 0
    assert pretrain.main(["--config", str(part), "--resume"]) == 0
    a, b = _final_state(tmp_path / "full" / "out"), _final_state(tmp_path / "part" / "out")
    assert a["iteration"] == b["iteration"] == 4
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    momenta = [(s["momentum_buffer"], b["optimizer"]["state"][i]["momentum_buffer"])
               for i, s in a["optimizer"]["state"].items()]
    assert momenta and all(torch.equal(x, y) for x, y in momenta)
    assert [r["loss"] for r in _lines(tmp_path / "full" / "out") if r["type"] == "train"] == \
        [r["loss"] for r in _lines(tmp_path / "part" / "out") if r["type"] == "train"]


def test_imagenet_layout_to_a_detection_backbone(tmp_path, write_image_folder, one_thread):
    files = write_image_folder(tmp_path / "train", WNIDS, per_class=3)
    val = tmp_path / "val"
    val.mkdir()
    for i, rel in enumerate(sorted(files)[::2]):  # a flat val folder and Caffe's val.txt
        (tmp_path / "train" / rel).rename(val / f"ILSVRC2012_val_{i + 1:08d}.JPEG")
    (tmp_path / "val.txt").write_text("".join(
        f"ILSVRC2012_val_{i + 1:08d}.JPEG {WNIDS[files[rel]]}\n"
        for i, rel in enumerate(sorted(files)[::2])))
    config = _config(tmp_path, model={"backbone": {"name": "resnet18"}},
                     data={"format": "folder", "train": str(tmp_path / "train"),
                           "val": str(val), "val_labels": str(tmp_path / "val.txt"),
                           "input": {"scale": [36, 44], "crop": 32, "lighting_std": 0.1,
                                     "test_size": 36, "test_crops": 10}},
                     solver={"max_iter": 2, "ims_per_batch": 4})
    assert pretrain.main(["--config", str(config)]) == 0
    out = tmp_path / "out"
    result = json.loads((out / "eval.json").read_text())
    assert result["crops"] == 10 and result["num_images"] == 5 and "top1_err" in result
    assert "center_crop_top1_err" in result and "top5_err" not in result  # 3 classes only
    # the exported backbone is the trained classifier's
    cfg = load_pretrain_config(out / "config.yaml")
    classifier = build_classifier(cfg, num_classes=3)
    classifier.load_state_dict(_final_state(out)["model"])
    loaded = build_backbone("resnet18", weights=out / "backbone.pth", norm="BN").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(classifier.backbone.eval()(x)["res5"], loaded(x)["res5"])
    # and a detection config starts from it (configs/quickstart_pretrained.yaml's key)
    det_cfg = load_config(REPO / "configs" / "quickstart_pretrained.yaml",
                          [f"model.backbone.weights={out / 'backbone.pth'}"])
    detector = build_model(det_cfg, num_classes=5)
    assert torch.equal(detector.backbone.bottom_up.layer4[1].conv2.weight,
                       classifier.backbone.layer4[1].conv2.weight)


def test_bad_config_and_missing_data(tmp_path, capsys):
    config = _config(tmp_path, data={"train": str(tmp_path / "nowhere")})
    assert pretrain.main(["--config", str(config), "--set", "solver.base_lr=fast"]) == 2
    assert "'solver.base_lr' must be of type float" in capsys.readouterr().err
    assert pretrain.main(["--config", str(config), "--set", "data.fromat=folder"]) == 2
    assert "did you mean 'data.format'" in capsys.readouterr().err
    assert pretrain.main(["--config", str(config)]) == 2  # a user error: one line, exit 2
    err = capsys.readouterr().err
    assert err.startswith("error: no CIFAR-10 data at") and "nowhere" in err
    assert err.count("\n") == 1
