"""``resdet``: the subcommand table, its help, --version and errors; configs found by name
from any folder."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from detection.cli.main import COMMANDS, GROUPS, main, summary
from detection.config import ConfigError, load_config
from detection.resources import configs_root, find_config, list_configs

REPO = Path(__file__).resolve().parents[3]


def test_help_lists_every_subcommand_with_its_summary(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        if " " not in name:
            assert f"  {name} " in out and summary(name) in out
    for group in GROUPS:
        subs = ",".join(n.split()[1] for n in COMMANDS if n.startswith(group + " "))
        assert f"{group} {{{subs}}}" in out
    assert main(["data", "--help"]) == 0
    out = capsys.readouterr().out
    assert summary("data check") in out and "  browse " in out and "  synthetic " in out


def test_version_and_unknown_subcommands(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("resdet ")
    assert main(["trian"]) == 2
    assert capsys.readouterr().err == ("error: resdet: unknown subcommand 'trian'; did you mean "
                                       "'train'? (see --help)\n")
    assert main(["convert", "torchvison"]) == 2
    assert "did you mean 'torchvision'?" in capsys.readouterr().err
    assert main([]) == 2 and "usage: resdet" in capsys.readouterr().out


def test_a_subcommand_runs_with_its_prog_name(capsys):
    assert main(["configs", "quick"]) == 0
    out = capsys.readouterr().out
    assert "quickstart " in out and "quickstart_pretrained" in out and "coco/" not in out
    with pytest.raises(SystemExit) as info:
        main(["eval", "--weights", "w.pth", "--bogus"])
    assert info.value.code == 2
    assert capsys.readouterr().err == ("error: resdet eval: unrecognized arguments: --bogus "
                                       "(see --help)\n")


def test_configs_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ here
    by_path = load_config(configs_root() / "coco" / "faster_rcnn_R_50_FPN_1x.yaml")
    for name in ("coco/faster_rcnn_R_50_FPN_1x", "coco/faster_rcnn_R_50_FPN_1x.yaml",
                 "configs/coco/faster_rcnn_R_50_FPN_1x.yaml"):
        assert load_config(name) == by_path
    # a user's config naming shipped parts in _base_, as the docs write them
    (tmp_path / "mine.yaml").write_text(
        "_base_: configs/_base_/models/faster_rcnn_R_50_FPN.yaml\n"
        "model: {backbone: {name: resnet18}}\n")
    mine = load_config("mine")  # a local file wins, found without its .yaml too
    assert mine.model.backbone.name == "resnet18" and mine.model.fpn.enabled
    assert mine.model.backbone.weights == "imagenet"  # from the shipped base
    with pytest.raises(ConfigError, match="config file not found: nope .*resdet configs"):
        load_config("nope")
    (tmp_path / "bad.yaml").write_text("_base_: configs/_base_/models/none.yaml\n")
    with pytest.raises(ConfigError, match="_base_ file not found: .*among the shipped"):
        load_config("bad.yaml")


def test_a_local_file_wins_over_a_shipped_config_of_the_same_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "quickstart.yaml").write_text("seed: 7\n")
    assert load_config("quickstart").seed == 7
    assert load_config("configs/quickstart").seed == 0  # not a local path: the shipped one


def test_the_shipped_list_has_no_base_parts():
    names = list_configs()
    assert "quickstart" in names and "coco/msra/faster_rcnn_R_50_FPN_1x" in names
    assert not [n for n in names if "_base_" in n]
    assert find_config("_base_/models/faster_rcnn_R_50_C4") is not None


def test_the_subcommand_table_prints_without_importing_torch():
    """``resdet --help`` reads the summaries from source: a fraction of a second, not torch's
    import (seconds on a loaded machine)."""
    code = ("import sys; from detection.cli.main import main; main(['--help']); "
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert "convert {torchvision,msra,dataset}" in done.stdout
