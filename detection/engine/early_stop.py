"""Which evaluation is best, and when to stop because the metric no longer improves.

A metric is better higher, except one whose name says it is a loss or an error (``val_loss``,
``top1_err``), which is better lower (:func:`metric_mode`). An evaluation *improves* on the
best so far when it is better by more than ``min_delta``; the first evaluation always does.

:class:`EarlyStopping` counts the evaluations in a row that did not improve and asks to stop
when they reach ``patience``; it is a small pure object (results in, a decision out) whose
state (best value, its iteration, the count) goes into the checkpoint, so a resumed run stops
where the uninterrupted one would have.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Optional

__all__ = ["EarlyStopping", "improves", "metric_mode", "metric_value"]


def metric_mode(name: str) -> str:
    """``"min"`` for a loss or an error (the name holds ``loss`` or ``err``), else ``"max"``."""
    lowered = name.lower()
    return "min" if "loss" in lowered or "err" in lowered else "max"


def improves(value: Optional[float], best: Optional[float], *, mode: str,
             min_delta: float = 0.0) -> bool:
    """Whether ``value`` is better than ``best`` by more than ``min_delta`` (any finite value
    improves on no best; a missing or non-finite value never improves)."""
    if value is None or not math.isfinite(value):
        return False
    if best is None:
        return True
    return value > best + min_delta if mode == "max" else value < best - min_delta


def metric_value(results: Mapping[str, Any], metric: str) -> Optional[float]:
    """``results[metric]`` as a float; ``KeyError`` naming the metric and the keys there are
    when the results lack it."""
    if metric not in results:
        numeric = sorted(k for k, v in results.items() if isinstance(v, (int, float)))
        raise KeyError(f"the evaluation has no {metric!r} to choose the best or stop on; it "
                       f"has {', '.join(numeric)}")
    value = results[metric]
    return None if value is None else float(value)


class EarlyStopping:
    """Stop after ``patience`` evaluations in a row that did not improve ``metric`` by more than
    ``min_delta`` (module docstring). ``update`` once per evaluation; ``reason`` says why it
    stopped."""

    def __init__(self, *, metric: str, patience: int, min_delta: float = 0.0,
                 mode: Optional[str] = None):
        if patience < 1:
            raise ValueError(f"early stopping needs a patience of at least 1, got {patience}")
        if min_delta < 0:
            raise ValueError(f"early stopping's min_delta must not be negative, got {min_delta}")
        self.metric, self.patience, self.min_delta = metric, int(patience), float(min_delta)
        self.mode = mode or metric_mode(metric)
        self.best: Optional[float] = None
        self.best_iteration: Optional[int] = None
        self.bad_evaluations = 0
        self.reason: Optional[str] = None

    def update(self, results: Mapping[str, Any], iteration: int) -> bool:
        """Record the evaluation at ``iteration``; ``True`` when training should stop."""
        value = metric_value(results, self.metric)
        if improves(value, self.best, mode=self.mode, min_delta=self.min_delta):
            self.best, self.best_iteration, self.bad_evaluations = value, iteration, 0
            return False
        self.bad_evaluations += 1
        if self.bad_evaluations < self.patience:
            return False
        direction = "risen" if self.mode == "max" else "fallen"
        by = f" by more than {self.min_delta:g}" if self.min_delta else ""
        self.reason = (f"early stop at iteration {iteration}: {self.metric} has not {direction}"
                       f"{by} for {self.bad_evaluations} evaluation(s) in a row (best "
                       f"{self.best if self.best is None else f'{self.best:.4g}'} at iteration "
                       f"{self.best_iteration}; solver.early_stop.patience {self.patience})")
        return True

    def state_dict(self) -> dict:
        return {"best": self.best, "best_iteration": self.best_iteration,
                "bad_evaluations": self.bad_evaluations}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best, self.best_iteration = state["best"], state["best_iteration"]
        self.bad_evaluations = int(state["bad_evaluations"])
