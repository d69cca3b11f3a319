"""The docs' "Your own data" (docs/own_data.md), run as written on a generated dataset.

The config block and the commands are taken from the page (the test fails when they change
there); they run in-process through ``resdet``'s entry point, from a scratch folder that holds
only ``my_data/`` (the synthetic shapes in the layout the page shows) and ImageNet-named
ResNet-50 weights in its own torch hub cache, so every relative path resolves as it would for a
user, and the config's ``_base_`` is found among the shipped configs (no ``configs/`` there).
Only the run's size is scaled down, by ``--set`` options appended to every command (``SMALL``):
one iteration on 64 px images with narrower FPN and box head instead of 3000 on 512 px. The
fine-tuning command runs on the config without its ``test:`` line (the page's next step), which
saves a run.
"""
from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest
import torch
import torchvision
import yaml

from detection.cli.main import main as resdet

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "own_data.md"
SMALL = ["solver.max_iter=1", "solver.ims_per_batch=2", "solver.warmup_iters=1",
         "data.input.min_size_train=[64]", "data.input.max_size_train=96",
         "data.input.min_size_test=64", "data.input.max_size_test=96", "data.num_workers=0",
         "model.fpn.out_channels=32", "model.roi_heads.fc_dim=64",
         "model.roi_heads.batch_size_per_image=32", "model.rpn.post_nms_topk_test=50",
         "test.vis_images=1"]


def _section() -> str:
    """The walkthrough: from the data to training and evaluating (the page's first part)."""
    text = PAGE.read_text(encoding="utf-8")
    start = text.index("## 1. The data")
    return text[start:text.index("\n## COCO format", start)]


def _commands(section: str) -> list[list[str]]:
    """The ``resdet ...`` lines of the bash blocks (continuations joined), split."""
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [shlex.split(line) for line in lines if line.startswith("resdet ")]


def _run(args: list[str], extra: list[str] = ()) -> int:
    """``resdet ARGS`` in-process, with ``SMALL`` (and ``extra``) appended."""
    assert args[0] == "resdet"
    return resdet([*args[1:], "--set", *SMALL, *extra])


@pytest.fixture
def scratch(tmp_path, monkeypatch, synthetic_coco):
    """A folder like the user's: my_data/ (train/, val/, annotations/) and the ResNet-50
    ImageNet file where torchvision would download it; no configs/ (the shipped ones are
    found by name)."""
    os.symlink(synthetic_coco.root, tmp_path / "my_data")
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet50().state_dict(), hub / "resnet50-0676ba61.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_walkthrough_runs_as_written(scratch, capsys, detection_log, one_thread):
    section = _section()
    (config,) = re.findall(r"```yaml\n(.*?)```", section, flags=re.S)
    (scratch / "my_data.yaml").write_text(config)
    commands = _commands(section)
    train, evaluate, finetune = (shlex.split(c) for c in (
        "resdet train --config my_data.yaml",
        "resdet eval --config my_data.yaml --weights output/my_data/last.pth",
        "resdet train --config my_data.yaml --set model.weights=output/my_data/last.pth"
        " output_dir=output/my_data_finetuned"))
    assert train in commands and evaluate in commands and finetune in commands

    assert _run(train) == 0
    out = capsys.readouterr().out
    run = scratch / "output" / "my_data"
    assert "mAP@.5 = " in out and {"eval.json", "best.pth", "last.pth"} <= set(os.listdir(run))
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["num_classes"] == 5

    assert _run(evaluate) == 0
    assert "mAP@.5 = " in capsys.readouterr().out

    # fine-tuning from that run, and (saving a run) as the page's "leave out the `test:` line":
    # training without evaluation, and a message saying so
    assert "leave out the `test:` line" in section
    (scratch / "my_data.yaml").write_text("".join(
        line for line in config.splitlines(keepends=True) if not line.startswith("  test:")))
    assert _run(finetune) == 0
    assert "without evaluation (no data.test)" in capsys.readouterr().out
    assert any("no data.test in the config" in m for m in detection_log)
    loaded = [m for m in detection_log if m.startswith("model.weights output/my_data/last.pth")]
    assert loaded and "loaded" in loaded[0] and "re-initialised" not in "\n".join(detection_log)
    written = set(os.listdir(scratch / "output" / "my_data_finetuned"))
    assert {"config.yaml", "last.pth"} <= written and not {"eval.json", "best.pth"} & written


def test_every_backbone_choice_of_the_table_loads(tmp_path):
    """Each ``_base_`` / ``model.backbone.name`` pair of "Choosing a backbone" is a valid
    config (resolved, not built: that needs the ImageNet files)."""
    from detection.config import load_config

    rows = re.findall(r"^\| `(faster_rcnn_\w+\.yaml)` \| (.*?) \|", _section(), flags=re.M)
    assert len(rows) == 4
    for base, names in rows:
        for name in re.findall(r"`(\w+)`", names):
            (tmp_path / "choice.yaml").write_text(f"_base_: configs/_base_/models/{base}"
                                                  f"\nmodel:\n  backbone: {{name: {name}}}\n")
            assert load_config(tmp_path / "choice.yaml").model.backbone.name == name
