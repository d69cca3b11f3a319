"""The pretraining config: the detection loader's machinery on its own schema, and every shipped
configs/pretrain/ recipe, whose header names the paper's number to expect."""
import re
from pathlib import Path

import pytest

from detection.pretrain.config import PretrainConfig, load_pretrain_config
from detection.config import ConfigError, dump_config

CONFIGS = Path(__file__).resolve().parents[3] / "configs" / "pretrain"
# the paper's top-1 error (ImageNet 10-crop, Tables 2 and 3; CIFAR-10 test, Table 6)
PAPER = {"imagenet_plain18": 27.94, "imagenet_plain34": 28.54, "imagenet_resnet18": 27.88,
         "imagenet_resnet34_A": 25.03, "imagenet_resnet34_B": 24.52,
         "imagenet_resnet34_C": 24.19, "imagenet_resnet50": 22.85, "imagenet_resnet101": 21.75,
         "imagenet_resnet152": 21.43, "cifar10_resnet20": 8.75, "cifar10_resnet32": 7.51,
         "cifar10_resnet44": 7.17, "cifar10_resnet56": 6.97, "cifar10_resnet110": 6.43}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_recipes_load_and_name_the_papers_number(name):
    path = CONFIGS / f"{name}.yaml"
    header = "".join(line for line in path.read_text().splitlines(True) if line.startswith("#"))
    assert re.search(rf"\b{PAPER[name]:.2f} %", header), header
    cfg = load_pretrain_config(path)
    s, inp = cfg.solver, cfg.data.input
    assert (s.momentum, s.weight_decay, s.base_lr) == (0.9, 1e-4, 0.1)
    if name.startswith("imagenet"):
        assert (s.ims_per_batch, inp.scale, inp.crop) == (256, [256, 480], 224)
        assert inp.test_crops == 10
        assert inp.lighting_std == 0.1 and inp.test_size == 256
    else:
        assert (s.ims_per_batch, s.max_iter, s.steps) == (128, 64000, [32000, 48000])
        assert (inp.pad, inp.crop, inp.scale, cfg.model.backbone.shortcut) == (4, 32, [], "A")
    assert cfg.output_dir == f"output/pretrain/{name}"


@pytest.mark.parametrize("path", sorted(p for p in CONFIGS.rglob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_pretrain_config_loads(path):
    cfg = load_pretrain_config(path)
    assert "/_base_/" in path.as_posix() or cfg.output_dir.startswith("output/pretrain/")


def test_shortcut_options_and_resnet110_warm_up():
    shortcuts = {x: load_pretrain_config(CONFIGS / f"imagenet_resnet34_{x}.yaml")
                 .model.backbone.shortcut for x in "ABC"}
    assert shortcuts == {"A": "A", "B": "B", "C": "C"}
    s = load_pretrain_config(CONFIGS / "cifar10_resnet110.yaml").solver
    assert (s.warmup_iters, s.warmup_factor, s.warmup_method) == (400, 0.1, "constant")
    for depth in (20, 32, 44, 56):
        cfg = load_pretrain_config(CONFIGS / f"cifar10_plain{depth}.yaml")
        assert cfg.model.backbone.name == f"cifar_plain{depth}"


def test_pretraining_defaults_errors_and_round_trip(tmp_path):
    cfg = load_pretrain_config(None, ["model.backbone.name=plain34"])
    b = cfg.model.backbone
    assert (b.weights, b.norm, b.freeze_at) == (None, "BN", 0)  # not detection's defaults
    s = cfg.solver
    assert (s.base_lr, s.ims_per_batch, s.warmup_iters, s.weight_decay_norm) == (0.1, 256, 0,
                                                                                 1e-4)
    with pytest.raises(ConfigError, match=r"unknown config key 'data.inptu.crop'; did you mean "
                                          r"'data.input.crop'"):
        load_pretrain_config(None, ["data.inptu.crop=3"])
    with pytest.raises(ConfigError, match=r"'data.input.test_crops' must be one of \[1, 10\]"):
        load_pretrain_config(None, ["data.input.test_crops=5"])
    (tmp_path / "a.yaml").write_text(dump_config(cfg))
    assert load_pretrain_config(tmp_path / "a.yaml") == cfg
    assert isinstance(cfg, PretrainConfig)
