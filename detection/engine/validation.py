"""The validation loss: the training loss terms of a model on held-out data, the model unchanged.

A model computes its losses on its training path (``model.training``: a detector samples
anchors and RoIs against the targets), but training mode also means what inference must not do
here: batch norm normalising with the batch's statistics and updating its running ones, and
dropout. So :func:`validation_loss` puts the model in training mode with every normalisation
layer (``_BatchNorm``: BatchNorm, SyncBatchNorm, ...) and dropout layer in inference mode, runs
it under ``torch.no_grad()`` over the loader, and restores every module's mode as it found it.
No parameter, buffer or RNG state changes: the random draws of the training path (RoI
sampling) come from a generator seeded alike at every evaluation (``seed``), inside a copy of
the RNG states that is thrown away, so the loss is a function of the weights only and the
training that follows is the same as without it.

The result is ``{"val_loss": sum of the terms, "val_<term>": ...}`` for every ``loss*`` term of
the model's output, each the mean over images (a batch's value weighted by its size), over every
process's shard when distributed.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from . import distributed as du
from .checkpoint import get_rng_state, set_rng_state

__all__ = ["validation_loss", "loss_mode"]

_INFERENCE_MODE_TYPES = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd,
                         nn.AlphaDropout, nn.FeatureAlphaDropout)


class loss_mode:
    """Inside the block, ``model`` takes its training path with norm layers and dropout in
    inference mode; every module's ``training`` flag is restored after."""

    def __init__(self, model: nn.Module):
        self.model = model
        self._modes: list[tuple[nn.Module, bool]] = []

    def __enter__(self) -> nn.Module:
        self._modes = [(m, m.training) for m in self.model.modules()]
        self.model.train()
        for m in self.model.modules():
            if isinstance(m, _INFERENCE_MODE_TYPES):
                m.training = False
        return self.model

    def __exit__(self, *exc: Any) -> None:
        for m, mode in self._modes:
            m.training = mode


@torch.no_grad()
def validation_loss(model: nn.Module, data_loader: Iterable, *,
                    prepare_batch: Callable[[Any, torch.device], tuple],
                    device: torch.device, seed: int = 0,
                    autocast_dtype: torch.dtype | None = None) -> dict[str, float]:
    """The mean loss terms of ``model`` over ``data_loader`` (module docstring).

    ``prepare_batch(batch, device)`` gives the model's positional arguments with targets (the
    training loop's); ``autocast_dtype``: run under autocast to it (as evaluation does), else
    float32. Returns ``{}`` for a loader without batches.
    """
    rng = get_rng_state()
    sums: dict[str, torch.Tensor] = {}
    count = torch.zeros((), dtype=torch.float64)
    try:
        torch.manual_seed(seed)  # every evaluation samples alike
        with loss_mode(model):
            for batch in data_loader:
                if not batch:  # every image of it skipped as bad
                    continue
                with torch.autocast(device.type, dtype=autocast_dtype or torch.float32,
                                    enabled=autocast_dtype is not None):
                    out = model(*prepare_batch(batch, device))
                n = len(batch)
                for name, value in out.items():
                    if name.startswith("loss"):
                        sums[name] = sums.get(name, 0.0) + value.detach().double().cpu() * n
                count += n
    finally:
        set_rng_state(rng)
    names = sorted(sums)
    if du.get_world_size() > 1:  # a process whose shard is empty knows no names: gather them
        names = sorted(set().union(*du.all_gather_object(names)))
        zero = torch.zeros((), dtype=torch.float64)
        totals = torch.stack([count, *[sums.get(n, zero) for n in names]]).to(device)
        torch.distributed.all_reduce(totals)
        count, values = totals[0].cpu(), totals[1:].cpu()
    else:
        values = torch.stack([sums[n] for n in names]) if names else torch.zeros(0)
    if not names or float(count) == 0:
        return {}
    means = {f"val_{n}": float(v / count) for n, v in zip(names, values)}
    return {"val_loss": sum(means.values()), **means}
