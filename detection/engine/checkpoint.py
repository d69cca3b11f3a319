"""Checkpoints: atomic writes, ``weights_only`` reads, and the RNG states a bitwise resume needs.

A checkpoint is a dict of tensors and plain Python values only::

    {"model": state_dict, "config": dict, "classes": [{"id", "name"}, ...], "iteration": int,
     "optimizer": ..., "scheduler": ..., "scaler": ..., "rng": [per-rank RNG state], ...}

so that ``torch.load(path, weights_only=True)`` reads it. :func:`save_checkpoint` checks that
before writing, and writes to a temporary file in the same folder, flushes and fsyncs it, then
``os.replace``-s it over the target (``files.atomic_write``): a crash or a full disk at any point
leaves either the old file or the new one, never a broken one.
"""
from __future__ import annotations

import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import nn

from .files import atomic_write

__all__ = [
    "CheckpointError", "checkpoint_nbytes", "save_checkpoint", "load_checkpoint",
    "load_model_weights", "get_rng_state", "set_rng_state", "seed_all", "unwrap_model",
]

PathLike = Union[str, os.PathLike]
_PLAIN = (str, int, float, bool, type(None), torch.Tensor, torch.Size, torch.dtype,
          torch.device)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read, holds no dict or does not fit the model; the message
    names the file."""


def _check_plain(obj: Any, where: str) -> None:
    """Raise ``TypeError`` naming the first value that ``weights_only`` loading would refuse."""
    if isinstance(obj, _PLAIN):
        return
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"checkpoint key {where}[{key!r}] is a {type(key).__name__}")
            _check_plain(value, f"{where}[{key!r}]")
        return
    if isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            _check_plain(value, f"{where}[{i}]")
        return
    raise TypeError(f"checkpoint value {where} is a {type(obj).__name__}; only tensors and "
                    "plain Python values load with torch.load(weights_only=True)")


def checkpoint_nbytes(state: Any) -> int:
    """The bytes of the tensor storages in ``state`` (each counted once): a lower bound of the
    file's size, the rest being a few kB of pickle and zip headers."""
    storages: dict[tuple, int] = {}

    def walk(obj: Any) -> None:
        if isinstance(obj, torch.Tensor):
            storage = obj.untyped_storage()
            storages[(obj.device.type, storage.data_ptr())] = storage.nbytes()
        elif isinstance(obj, Mapping):
            for value in obj.values():
                walk(value)
        elif isinstance(obj, (list, tuple)):
            for value in obj:
                walk(value)

    walk(state)
    return sum(storages.values())


def save_checkpoint(state: Mapping[str, Any], path: PathLike) -> None:
    """Write ``state`` to ``path`` atomically (temp file in the same folder, fsync, replace).

    A full disk raises ``files.DiskFullError`` naming the file, the bytes needed and free
    (checked against the tensors' bytes before writing); the previous file is untouched and no
    temporary file is left.
    """
    _check_plain(state, "checkpoint")
    with atomic_write(path, size=checkpoint_nbytes(state), approximate=True) as f:
        torch.save(dict(state), f)


def load_checkpoint(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> dict:
    """Read a checkpoint with ``torch.load(weights_only=True)``; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # a truncated file, a pickle of arbitrary objects, ...
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(data).__name__}, not a dict")
    return data


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` wrapper (or ``model`` itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def load_model_weights(model: nn.Module, path: PathLike,
                       ckpt: Optional[Mapping[str, Any]] = None) -> dict:
    """Load a checkpoint's ``"model"`` (or a bare state_dict file) strictly into ``model``.

    ``ckpt``: the already loaded contents of ``path``, if any. Returns the checkpoint dict (for
    its ``classes``, ``iteration``, ...).
    """
    ckpt = dict(load_checkpoint(path) if ckpt is None else ckpt)
    state = ckpt["model"] if isinstance(ckpt.get("model"), Mapping) else ckpt
    try:
        unwrap_model(model).load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"weights {path} do not fit the model built from the config: "
                              f"{e}") from None
    return ckpt


# ------------------------------------------------------------------------------------------- RNG
def seed_all(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def get_rng_state() -> dict:
    """This process's RNG states as tensors and plain values (``weights_only``-loadable)."""
    version, mt_state, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": {"version": version, "state": torch.tensor(mt_state, dtype=torch.int64),
                   "gauss": gauss},
        "numpy": {"name": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)),
                  "pos": int(np_pos), "has_gauss": int(np_has_gauss),
                  "cached_gaussian": float(np_gauss)},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    torch.set_rng_state(state["torch"].cpu())
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npst = state["numpy"]
    np.random.set_state((npst["name"], npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = [s.cpu() for s in state["cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
