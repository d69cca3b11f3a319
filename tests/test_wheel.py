"""The package as a user installs it: a wheel, not editable, in a fresh virtual environment.

The wheel is built from a copy of the sources and installed with ``--no-deps`` into a new venv
that sees this environment's dependencies through a ``.pth`` file holding their folder as a
plain path line (so torch is not installed again, and the editable install of this checkout,
whose finder only an ``import`` line of a ``.pth`` would run, is not seen). Then, from an empty
folder: ``resdet --help``, ``resdet configs``, a 2-iteration quick start, and the docs' own-data
config (its ``_base_`` found among the shipped configs).
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = ["setup.py", "setup.cfg", "pyproject.toml", "MANIFEST.in", "README.md", "backbones",
           "detection", "configs", "docs/results"]
TINY = ["data.synthetic.num_train=8", "data.synthetic.num_val=4", "data.synthetic.image_size=64",
        "data.input.min_size_train=[64]", "data.input.max_size_train=64",
        "data.input.min_size_test=64", "data.input.max_size_test=64", "solver.ims_per_batch=2",
        "data.num_workers=0", "test.vis_images=1", "solver.warmup_iters=1",
        "model.rpn.post_nms_topk_test=20"]


def _isolation() -> list[str]:
    """Build with this environment's setuptools when it can make wheels (offline, fast), else
    in pip's isolated build environment (which installs setuptools from the index)."""
    try:
        import setuptools
    except ImportError:
        return []
    major_minor = tuple(int(v) for v in setuptools.__version__.split(".")[:2])
    has_bdist_wheel = major_minor >= (70, 1) or importlib.util.find_spec("wheel") is not None
    return ["--no-build-isolation"] if has_bdist_wheel else []


def _run(args: list[str], cwd: Path, env: dict, timeout: float = 300) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{args}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> tuple[Path, dict]:
    """``(bin folder, environment)`` of a fresh venv holding the built wheel."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    for name in SOURCES:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy2
        kwargs = {"ignore": shutil.ignore_patterns("__pycache__", "_shipped")} if (
            REPO / name).is_dir() else {}
        copy(REPO / name, src / name, **kwargs)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS="1", TORCH_HOME=str(root / "torch"),
               NO_ALBUMENTATIONS_UPDATE="1")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    _run([*pip, "wheel", "--no-deps", *_isolation(), "-q", ".", "-w", str(root)], src, env)
    (wheel,) = root.glob("resdet-*.whl")
    _run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], root, env)
    python = root / "venv" / "bin" / "python"
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                    "['purelib'])"], root, env).strip()
    outer = sysconfig.get_paths()["purelib"]
    Path(purelib, "outer_site_packages.pth").write_text(outer + "\n")
    _run([*pip, "--python", str(python), "install", "--no-deps", "--ignore-installed", "-q",
          str(wheel)], root, env)
    env["PATH"] = f"{root / 'venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return root / "venv" / "bin", env


def test_the_installed_package_is_the_wheels(venv, tmp_path):
    bin_dir, env = venv
    where = _run([str(bin_dir / "python"), "-c", "import detection, detection.resources as r; "
                  "print(detection.__file__); print(r.configs_root())"], tmp_path, env)
    module, configs = where.split()
    assert module.startswith(str(bin_dir.parent)) and "_shipped" in configs


def test_resdet_help_and_configs_from_an_empty_folder(venv, tmp_path):
    bin_dir, env = venv
    out = _run([str(bin_dir / "resdet"), "--help"], tmp_path, env)
    assert "train" in out and "data {check,browse,synthetic}" in out
    out = _run([str(bin_dir / "resdet"), "configs"], tmp_path, env)
    assert re.search(r"coco/msra/faster_rcnn_R_50_FPN_1x\s+box AP 37\.9", out)
    assert re.search(r"quickstart\s+mAP@\.5 \d", out)
    assert list(tmp_path.iterdir()) == []  # listing writes nothing


def test_the_quick_start_trains_from_an_empty_folder(venv, tmp_path):
    bin_dir, env = venv
    out = _run([str(bin_dir / "resdet"), "train", "--config", "quickstart", "--set",
                "solver.max_iter=2", *TINY], tmp_path, env)
    assert "mAP@.5 = " in out
    assert (tmp_path / "output" / "quickstart" / "last.pth").is_file()
    assert (tmp_path / "datasets" / "shapes" / "annotations" / "train.json").is_file()


def test_the_docs_own_data_config_works_from_any_folder(venv, tmp_path):
    bin_dir, env = venv
    page = (REPO / "docs" / "own_data.md").read_text(encoding="utf-8")
    (config,) = re.findall(r"```yaml\n(.*?)```", page, flags=re.S)
    assert "_base_: configs/_base_/models/" in config
    (tmp_path / "my_data.yaml").write_text(config)
    _run([str(bin_dir / "resdet"), "data", "synthetic", "--root", "my_data", "--num-train",
          "4", "--num-val", "2", "--image-size", "64"], tmp_path, env)
    out = _run([str(bin_dir / "resdet"), "train", "--config", "my_data.yaml", "--set",
                "solver.max_iter=1", "model.backbone.weights=null", "model.backbone.norm=BN",
                "model.fpn.out_channels=32", "model.roi_heads.fc_dim=64", *TINY],
               tmp_path, env)
    assert "mAP@.5 = " in out and (tmp_path / "output" / "my_data" / "eval.json").is_file()
