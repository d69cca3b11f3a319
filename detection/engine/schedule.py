"""Learning-rate schedule (linear warm-up times multi-step or cosine decay) and SGD param groups.

The learning rate of iteration ``t`` (0-based; the ``t``-th optimizer step uses it) is
``base_lr * w(t) * d(t)`` with

- warm-up: ``w(t) = f + (1 - f) * t / T_w`` (``warmup_method="linear"``) or ``w(t) = f``
  (``"constant"``, as the paper's ResNet-110 on CIFAR-10) for ``t < T_w``, else ``1``
  (``f = warmup_factor``);
- multi-step decay: ``d(t) = gamma ** (number of steps s with s <= t)``;
- cosine decay: ``d(t) = (1 + cos(pi * t / T)) / 2``  (``T = max_iter``).
"""
from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["lr_factor", "WarmupLRScheduler", "param_groups"]

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def lr_factor(iteration: int, *, max_iter: int, schedule: str = "multistep",
              steps: Sequence[int] = (), gamma: float = 0.1, warmup_iters: int = 0,
              warmup_factor: float = 0.001, warmup_method: str = "linear") -> float:
    """The multiplier of ``base_lr`` at ``iteration`` (see the module docstring)."""
    if schedule == "multistep":
        decay = gamma ** bisect.bisect_right(sorted(steps), iteration)
    elif schedule == "cosine":
        decay = 0.5 * (1.0 + math.cos(math.pi * min(iteration, max_iter) / max_iter))
    else:
        raise ValueError(f"unknown lr schedule {schedule!r}; expected 'multistep' or 'cosine'")
    if warmup_method not in ("linear", "constant"):
        raise ValueError(f"unknown warmup method {warmup_method!r}; expected 'linear' or "
                         "'constant'")
    if iteration < warmup_iters and warmup_method == "constant":
        return decay * warmup_factor
    if iteration < warmup_iters:
        alpha = iteration / warmup_iters
        return decay * (warmup_factor * (1.0 - alpha) + alpha)
    return decay


class WarmupLRScheduler(torch.optim.lr_scheduler.LRScheduler):
    """Per-iteration scheduler: call ``step()`` once after every ``optimizer.step()``.

    Its ``state_dict`` holds plain values only (the schedule's parameters and the iteration), so
    a checkpoint with it loads under ``torch.load(weights_only=True)``.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, *, max_iter: int,
                 schedule: str = "multistep", steps: Sequence[int] = (), gamma: float = 0.1,
                 warmup_iters: int = 0, warmup_factor: float = 0.001,
                 warmup_method: str = "linear", last_epoch: int = -1):
        if max_iter <= 0:
            raise ValueError(f"max_iter must be positive, got {max_iter}")
        self.max_iter = int(max_iter)
        self.schedule = str(schedule)
        self.steps = [int(s) for s in steps]
        self.gamma = float(gamma)
        self.warmup_iters = int(warmup_iters)
        self.warmup_factor = float(warmup_factor)
        self.warmup_method = str(warmup_method)
        lr_factor(0, **self._params())  # fail here, not at the first step, on a bad schedule
        super().__init__(optimizer, last_epoch)

    def _params(self) -> dict:
        return {"max_iter": self.max_iter, "schedule": self.schedule, "steps": self.steps,
                "gamma": self.gamma, "warmup_iters": self.warmup_iters,
                "warmup_factor": self.warmup_factor, "warmup_method": self.warmup_method}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the position (iteration, last lr) but keep this scheduler's own schedule, so
        a run resumed with a changed schedule (say a longer ``max_iter``) follows the new one."""
        own = self._params()
        super().load_state_dict({k: v for k, v in state_dict.items() if k not in own})

    def get_lr(self) -> list[float]:
        factor = lr_factor(self.last_epoch, **self._params())
        return [base_lr * factor for base_lr in self.base_lrs]

    def _get_closed_form_lr(self) -> list[float]:
        return self.get_lr()


def param_groups(model: nn.Module, *, weight_decay: float,
                 weight_decay_norm: float) -> list[dict]:
    """Trainable parameters in two groups: normalisation layers' weights and biases (decay
    ``weight_decay_norm``) and everything else (``weight_decay``). Frozen parameters are left out;
    a parameter shared by several modules is counted once."""
    norm_params, other_params, seen = [], [], set()
    for module in model.modules():
        is_norm = isinstance(module, _NORM_TYPES)
        for param in module.parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            (norm_params if is_norm else other_params).append(param)
    groups = [{"params": other_params, "weight_decay": weight_decay}]
    if norm_params:
        groups.append({"params": norm_params, "weight_decay": weight_decay_norm})
    return [g for g in groups if g["params"]]
