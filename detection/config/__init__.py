"""Typed configuration: the detection schema (:mod:`.schema`) read by the generic loader
(:mod:`.loader`: YAML, ``_base_`` inheritance, ``--set`` overrides, errors naming the key).

The functions here are the loader's with the detection :class:`Config` as the default schema,
so ``load_config("configs/quickstart.yaml", ["solver.max_iter=10"])`` gives a ``Config``;
another task passes its own root dataclass (``schema=PretrainConfig``).
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

from ..engine.checkpoint import CheckpointError
from ..resources import find_config
from . import loader
from .loader import (ConfigError, choice_field, config_to_dict, dump_config, existing_path,
                     list_field, save_config)
from .schema import (INPUT_FORMAT_DEFAULTS, MASK_VARIANT_DEFAULTS, VARIANT_DEFAULTS,
                     AnchorGeneratorConfig, BackboneConfig, Config, DataConfig, DatasetConfig,
                     EarlyStopConfig, FPNConfig, InputConfig, MaskHeadConfig, ModelConfig,
                     RoIHeadsConfig, RPNConfig, SolverConfig, SyntheticConfig, TestConfig,
                     TrackersConfig)

__all__ = [
    "Config", "ConfigError", "load_config", "config_from_dict", "config_to_dict", "dump_config",
    "apply_overrides", "save_config", "existing_path", "checkpoint_config", "choice_field",
    "list_field", "INPUT_FORMAT_DEFAULTS", "MASK_VARIANT_DEFAULTS", "VARIANT_DEFAULTS",
    "AnchorGeneratorConfig", "BackboneConfig", "DataConfig", "DatasetConfig",
    "EarlyStopConfig", "FPNConfig", "InputConfig", "MaskHeadConfig", "ModelConfig",
    "RoIHeadsConfig", "RPNConfig", "SolverConfig", "SyntheticConfig", "TestConfig",
    "TrackersConfig",
]


def load_config(path: Union[str, os.PathLike, None] = None,
                overrides: Optional[list[str]] = None, *, schema: type = Config) -> Any:
    """Read a YAML file (with ``_base_``), apply ``overrides``, validate against ``schema``.

    ``path`` may name a shipped config (``quickstart``, ``coco/faster_rcnn_R_50_FPN_1x``) when no
    such file exists from the current directory; ``_base_`` entries may name shipped ones too
    (``detection.resources.find_config``)."""
    return loader.load_config(path, overrides, schema=schema, find=find_config)


def config_from_dict(tree: dict, source: str = "config", schema: type = Config) -> Any:
    """Validate a plain dict (e.g. from a checkpoint) into a :class:`Config` (or ``schema``)."""
    return loader.config_from_dict(tree, source, schema=schema)


def apply_overrides(tree: dict, overrides: list[str], schema: type = Config) -> dict:
    """Apply ``a.b.c=value`` strings to a plain config tree, each checked against ``schema``."""
    return loader.apply_overrides(tree, overrides, schema)


def checkpoint_config(ckpt: Mapping[str, Any], path: Union[str, os.PathLike],
                      overrides: Sequence[str] = ()) -> Config:
    """The config stored in a checkpoint (``ckpt["config"]``, the resolved config of the run
    that wrote it), with ``key=value`` ``overrides`` applied: what ``tools/eval.py`` and
    ``tools/infer.py`` use when no ``--config`` is given."""
    if not isinstance(ckpt.get("config"), dict):
        raise CheckpointError(f"checkpoint {path} holds no config: pass the config file the "
                              "model was trained with (--config)")
    # a stored config's hooks are never imported: a checkpoint is data, not code to run
    tree = apply_overrides({**ckpt["config"], "hooks": []}, list(overrides))
    return config_from_dict(tree, source=f"{path} (stored config)")
