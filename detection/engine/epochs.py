"""Schedules in epochs: the keys in epochs of a config, converted to iterations.

Every schema's solver has a twin in epochs for each length it counts in iterations; a twin that
is set replaces its iteration key::

    solver.max_epochs                -> solver.max_iter
    solver.step_epochs               -> solver.steps
    solver.warmup_epochs             -> solver.warmup_iters
    solver.checkpoint_period_epochs  -> solver.checkpoint_period
    test.eval_period_epochs          -> test.eval_period

An epoch is one pass over the training set: ``images`` (the training set as loaded, after
``data.filter_empty``) at ``solver.ims_per_batch`` images a step (the global batch, over every
process), so ``images / ims_per_batch`` iterations, a fraction when the batch does not divide the
set. ``e`` epochs are ``ceil(e * images / ims_per_batch)`` iterations, computed exactly (the
epochs as the decimal fraction they are written as): ``max_epochs: 1`` sees every image at least
once. The run prints the conversion when it starts (:func:`describe`).
"""
from __future__ import annotations

import dataclasses
import math
from fractions import Fraction
from typing import Any, Optional

__all__ = ["EPOCH_KEYS", "epochs_to_iterations", "convert_epochs", "describe"]

#: ``(section, key in epochs, key in iterations)``, every twin this module converts.
EPOCH_KEYS = (("solver", "max_epochs", "max_iter"), ("solver", "step_epochs", "steps"),
              ("solver", "warmup_epochs", "warmup_iters"),
              ("solver", "checkpoint_period_epochs", "checkpoint_period"),
              ("test", "eval_period_epochs", "eval_period"))


def epochs_to_iterations(epochs: float, *, images: int, batch: int) -> int:
    """``ceil(epochs * images / batch)``, exact for epochs written as decimals (``0.1``)."""
    if images <= 0 or batch <= 0:
        raise ValueError(f"an epoch needs images and a batch, got {images} images at {batch} "
                         "a step")
    return math.ceil(Fraction(str(epochs)) * images / batch)


def _check(key: str, value: Any) -> None:
    values = value if isinstance(value, list) else [value]
    if key.endswith("max_epochs") and not values[0] > 0:
        raise ValueError(f"solver.max_epochs must be positive, got {value}")
    if any(v < 0 for v in values):
        raise ValueError(f"{key} must not be negative, got {value}")


def convert_epochs(cfg: Any, *, images: int) -> Any:
    """``cfg`` with every iteration key whose epoch twin is set replaced by the converted value
    (``images`` training images, ``cfg.solver.ims_per_batch`` a step); the epoch keys are kept,
    so a saved config converts again to the same iterations. A config without any epoch key set
    comes back unchanged."""
    batch = cfg.solver.ims_per_batch
    sections: dict[str, dict[str, Any]] = {}
    for section, epoch_key, iter_key in EPOCH_KEYS:
        node = getattr(cfg, section)
        value = getattr(node, epoch_key, None)
        if value is None:
            continue
        _check(f"{section}.{epoch_key}", value)
        convert = lambda e: epochs_to_iterations(e, images=images, batch=batch)  # noqa: E731
        new = [convert(e) for e in value] if isinstance(value, list) else convert(value)
        sections.setdefault(section, {})[iter_key] = new
    if not sections:
        return cfg
    return dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **kw)
                                       for section, kw in sections.items()})


def describe(cfg: Any, *, images: int) -> Optional[str]:
    """One line saying what the epoch keys of ``cfg`` (already converted) became, or ``None``
    when it has none."""
    batch = cfg.solver.ims_per_batch
    parts = []
    for section, epoch_key, iter_key in EPOCH_KEYS:
        value = getattr(getattr(cfg, section), epoch_key, None)
        if value is not None:
            parts.append(f"{section}.{epoch_key} {value} -> {section}.{iter_key} "
                         f"{getattr(getattr(cfg, section), iter_key)}")
    if not parts:
        return None
    per_epoch = Fraction(images, batch)
    per = f"{float(per_epoch):.4g}" if per_epoch.denominator != 1 else str(per_epoch)
    return (f"epochs: {images} training images at {batch} a step = {per} iterations an "
            f"epoch: {'; '.join(parts)}")
