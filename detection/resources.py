"""Files that ship with the package: the configs and the figures kept as data.

In a checkout (and an editable install) they are read where they live: ``configs/`` and
``docs/results/`` at the repository root. A built wheel carries copies of both under
``detection/_shipped/`` (``setup.py``'s build step copies them, as Detectron2 ships its configs
inside ``detectron2/model_zoo``), so ``--config coco/faster_rcnn_R_50_FPN_1x`` and ``resdet
configs`` work from any folder. The copies are made at build time only: each file has one home
in the repository.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Union

import yaml

__all__ = ["CONFIG_SUFFIX", "configs_root", "find_config", "list_configs", "read_results",
           "results_root", "shipped_candidates"]

PACKAGE = Path(__file__).resolve().parent
SHIPPED = PACKAGE / "_shipped"  # in a wheel: configs/ and results/ (setup.py copies them)
CONFIG_SUFFIX = ".yaml"


def configs_root() -> Path:
    """The folder of the shipped configs (the repository's ``configs/`` in a checkout)."""
    packaged = SHIPPED / "configs"
    return packaged if packaged.is_dir() else PACKAGE.parent / "configs"


def results_root() -> Path:
    """The folder of the figures kept as data (the repository's ``docs/results/``)."""
    packaged = SHIPPED / "results"
    return packaged if packaged.is_dir() else PACKAGE.parent / "docs" / "results"


def shipped_candidates(name: Union[str, os.PathLike]) -> list[Path]:
    """Where a config named ``name`` would lie among the shipped ones: ``name`` under
    :func:`configs_root`, with and without ``.yaml``, and without a leading ``configs/`` (so the
    repository-relative paths the docs use work from any folder)."""
    parts = Path(name).as_posix().lstrip("./").split("/")
    tails = [parts[1:]] if parts[0] == "configs" and len(parts) > 1 else []
    root = configs_root()
    out = []
    for tail in [parts, *tails]:
        rel = "/".join(tail)
        out.append(root / rel)
        if not rel.endswith(CONFIG_SUFFIX):
            out.append(root / (rel + CONFIG_SUFFIX))
    return out


def find_config(name: Union[str, os.PathLike]) -> Path | None:
    """The shipped config file named ``name`` (``quickstart``, ``coco/faster_rcnn_R_50_FPN_1x``,
    ``configs/quickstart.yaml``, ``_base_/models/faster_rcnn_R_50_FPN.yaml``), or ``None``."""
    return next((p for p in shipped_candidates(name) if p.is_file()), None)


def list_configs() -> list[str]:
    """The names of the shipped configs a run can start from (no ``_base_`` parts), sorted."""
    root = configs_root()
    return sorted(p.relative_to(root).with_suffix("").as_posix()
                  for p in root.rglob(f"*{CONFIG_SUFFIX}") if "_base_" not in p.parts)


@functools.lru_cache(maxsize=None)
def read_results(name: str) -> dict:
    """One file of the figures kept as data (``references.yaml``, ``quickstart.yaml``)."""
    path = results_root() / name
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)
