"""Hooks: behaviour added to the training loop without editing it.

A hook subclasses :class:`HookBase` and overrides what it needs; the :class:`~.trainer.Trainer`
calls every hook's method, in the order of its ``hooks`` list, at these points::

    before_train()                       once, before the first step (also after a resume)
    for each iteration:
        before_step()                    trainer.iteration = steps done so far
        (the SGD step)
        after_step()                     trainer.iteration = steps done, this one included
    after_evaluation(results)            after each evaluation, with its results
    after_train()                        once, at the end (also after an error or a stop)

``self.trainer`` is the trainer (set when the hook is registered): ``trainer.iteration``,
``trainer.max_iter``, ``trainer.model``, ``trainer.optimizer``, ``trainer.writer`` (the
metrics log, ``None`` on processes other than the first), ``trainer.last_results``, and
``trainer.request_stop(reason)`` to end the training after the current step. A stop signal
(SIGTERM / SIGUSR1, ``preemption.py``) sets ``trainer.stop_reason`` before the ``after_step``
of its iteration, so every hook sees that step as the last one (``PeriodicCheckpoint`` writes
``last.pth`` then).

A hook with state returns it from ``state_dict()`` (tensors and plain values only): it goes
into every checkpoint under ``hooks``, keyed by the hook's ``name``, and a resumed run hands it
back to ``load_state_dict`` before ``before_train``, so resuming stays exact.

Your own hooks come from the config (``hooks: [{class: my_package.MyHook, <keyword
arguments>}]``), imported by :func:`build_user_hooks` from the config a user runs, never from
one stored in a checkpoint (``resdet eval`` and ``infer`` read those, and import no hook).
"""
from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Optional

import torch

from .checkpoint import unwrap_model
from .early_stop import EarlyStopping, improves, metric_mode
from .runlog import LOGGER_NAME, format_eta, memory_mb
from .validation import validation_loss

if TYPE_CHECKING:
    from .trainer import Trainer

__all__ = ["BestCheckpoint", "EarlyStop", "HookBase", "MetricsLogger", "PeriodicCheckpoint",
           "PeriodicEvaluation", "ValidationLoss", "build_user_hooks", "standard_hooks"]

logger = logging.getLogger(LOGGER_NAME)


class HookBase:
    """The base of every hook (module docstring); each method does nothing by default."""

    trainer: "Trainer"

    @property
    def name(self) -> str:
        """The key of this hook's state in a checkpoint (its class name by default)."""
        return type(self).__name__

    def before_train(self) -> None:
        pass

    def after_train(self) -> None:
        pass

    def before_step(self) -> None:
        pass

    def after_step(self) -> None:
        pass

    def after_evaluation(self, results: Mapping[str, Any]) -> None:
        pass

    def state_dict(self) -> Optional[dict]:
        """This hook's state for a checkpoint, or ``None`` when it has none."""
        return None

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass


def _import_class(path: str, where: str) -> type:
    module_name, _, class_name = path.rpartition(".")
    if not module_name:
        raise ValueError(f"{where}: class must be an import path (my_package.module.MyHook), "
                         f"got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"{where}: cannot import {module_name} for {path}: {e} (is its "
                         "package installed or on PYTHONPATH?)") from None
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type) or not issubclass(cls, HookBase):
        found = "nothing" if cls is None else f"a {type(cls).__name__}"
        raise ValueError(f"{where}: {path} is {found}, not a subclass of "
                         "detection.engine.hooks.HookBase")
    return cls


def build_user_hooks(specs: Sequence[Any], *, key: str = "hooks") -> list[HookBase]:
    """The hooks ``specs`` name (``[{"class": "pkg.mod.Hook", **kwargs}, ...]``, the config's
    ``hooks``), imported and built in order; ``ValueError`` naming ``hooks[i]`` for a spec
    without a class, a class that cannot be imported or is no ``HookBase``, or arguments it
    refuses. Call it on a user's own config only (module docstring)."""
    hooks = []
    for i, spec in enumerate(specs):
        where = f"{key}[{i}]"
        if not isinstance(spec, Mapping) or not isinstance(spec.get("class"), str):
            raise ValueError(f"{where}: each hook is a mapping with its class, e.g. "
                             f"{{class: my_package.MyHook}}, got {spec!r}")
        cls = _import_class(spec["class"], where)
        kwargs = {k: v for k, v in spec.items() if k != "class"}
        try:
            hooks.append(cls(**kwargs))
        except TypeError as e:
            raise ValueError(f"{where} ({spec['class']}): {e}") from None
    names = [h.name for h in hooks]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"{key}: two hooks are named {twice[0]} (their state would share one "
                         "checkpoint entry): give each its own name property")
    return hooks


# ------------------------------------------------------------------------------- built-in hooks
def _due(period: int, iteration: int, last: int) -> bool:
    """Every ``period`` iterations (``0``: never) and at the last one."""
    return iteration == last or (period > 0 and iteration % period == 0)


class MetricsLogger(HookBase):
    """The progress line and ``metrics.jsonl``'s ``train`` record every ``period`` iterations
    (and at the last): each term averaged over the iterations since the previous line, the
    learning rate, step and data times, memory and ETA; after the first ``estimate_after``
    iterations, how long the whole training will take."""

    def __init__(self, period: int = 20, estimate_after: int = 6):
        self.period, self.estimate_after = max(1, period), estimate_after

    def before_train(self) -> None:
        self.window: list[dict] = []
        self.first: list[float] = []
        self.t_start = time.perf_counter()

    def after_step(self) -> None:
        t = self.trainer
        self.window.append(t.last_step)
        if len(self.first) < self.estimate_after:
            self.first.append(t.last_step["time"])
            if len(self.first) == self.estimate_after:
                self._estimate()
        if t.iteration % self.period == 0 or t.iteration == t.max_iter or t.stop_reason:
            self._log()
            self.window = []

    def _estimate(self) -> None:
        """From the median of the first iterations (the very first, slowed by allocations and
        worker start, left out)."""
        times = sorted(self.first[1:])
        per_it = times[len(times) // 2]
        left = self.trainer.max_iter - self.trainer.iteration
        logger.info("%.2f s/iteration over the first %d iterations: the %d left take about %s "
                    "(plus evaluation)", per_it, len(self.first), left,
                    format_eta(left * per_it))

    def _log(self) -> None:
        t, window = self.trainer, self.window
        keys = [k for k in window[-1] if k not in ("time", "data_time")]
        mean = {k: sum(w[k] for w in window) / len(window) for k in window[-1]}
        # the first iterations are slow (allocations, cuDNN tuning): ETA from the recent window
        eta = (t.max_iter - t.iteration) * mean["time"]
        record = {"type": "train", "iteration": t.iteration,
                  "lr": t.optimizer.param_groups[0]["lr"], **{k: mean[k] for k in keys},
                  "time": mean["time"], "data_time": mean["data_time"],
                  "memory_mb": memory_mb(t.device), "eta_s": eta}
        if t.writer is not None:
            t.writer.write(record)
        terms = "  ".join(f"{k.removeprefix('loss_')} {mean[k]:.3f}" for k in keys if k != "loss")
        logger.info("iter %d/%d  loss %.3f (%s)  lr %.5f  %.3f s/it  data %.3f s  mem %.0f MB  "
                    "eta %s  elapsed %s", t.iteration, t.max_iter, mean["loss"], terms,
                    record["lr"], mean["time"], mean["data_time"], record["memory_mb"],
                    format_eta(eta), format_eta(time.perf_counter() - self.t_start))


class PeriodicEvaluation(HookBase):
    """``trainer.run_evaluation()`` every ``period`` iterations (``0``: only at the end) and
    at the last one; each evaluation calls every hook's ``after_evaluation``."""

    def __init__(self, period: int = 0):
        self.period = period

    def after_step(self) -> None:
        if _due(self.period, self.trainer.iteration, self.trainer.max_iter):
            self.trainer.run_evaluation()


class ValidationLoss(HookBase):
    """Adds the validation loss (``val_loss``, ``val_<term>``; ``validation.py``) of
    ``data_loader`` to each evaluation's results, in the training's precision; put it before
    the hooks that read those keys (best checkpoint, early stopping)."""

    def __init__(self, data_loader: Iterable, *, prepare_batch: Callable[[Any, torch.device],
                                                                          tuple], seed: int = 0):
        self.data_loader, self.prepare_batch, self.seed = data_loader, prepare_batch, seed

    def after_evaluation(self, results: dict) -> None:
        t = self.trainer
        results.update(validation_loss(
            unwrap_model(t.model), self.data_loader, prepare_batch=self.prepare_batch,
            device=t.device, seed=self.seed, autocast_dtype=t.amp_dtype if t.amp else None))


class BestCheckpoint(HookBase):
    """``best.pth``: the weights of the evaluation with the best ``metric`` so far (higher is
    better, except for a loss or an error: ``early_stop.metric_mode``)."""

    name = "best"  # the checkpoint key of its state, as before hooks: {"metric", "value"}

    def __init__(self, metric: str = "mAP"):
        self.metric, self.mode, self.value = metric, metric_mode(metric), None

    def after_evaluation(self, results: dict) -> None:
        value = results.get(self.metric)
        if isinstance(value, (int, float)) and improves(float(value), self.value,
                                                        mode=self.mode):
            self.value = float(value)
            self.trainer.save("best.pth", all_processes=False)

    def state_dict(self) -> dict:
        return {"metric": self.metric, "value": self.value}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("metric", self.metric) == self.metric:  # else: a new metric starts afresh
            self.value = state.get("value")


class EarlyStop(HookBase):
    """Ends the training after ``patience`` evaluations in a row without improving ``metric``
    by more than ``min_delta`` (:class:`~.early_stop.EarlyStopping`); the log says why."""

    name = "early_stop"

    def __init__(self, *, metric: str = "mAP", patience: int, min_delta: float = 0.0):
        self.stopper = EarlyStopping(metric=metric, patience=patience, min_delta=min_delta)

    def before_train(self) -> None:
        if self.stopper.reason:  # a resumed run that had stopped early: nothing more to do
            self.trainer.request_stop(self.stopper.reason)

    def after_evaluation(self, results: dict) -> None:
        if self.stopper.update(results, self.trainer.iteration):
            self.trainer.request_stop(self.stopper.reason)

    def state_dict(self) -> dict:
        return {**self.stopper.state_dict(), "reason": self.stopper.reason}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.stopper.load_state_dict(state)
        self.stopper.reason = state.get("reason")


class PeriodicCheckpoint(HookBase):
    """``last.pth`` every ``period`` iterations (``0``: never in between), at the last
    iteration and when the training is asked to stop."""

    def __init__(self, period: int = 5000):
        self.period = period

    def after_step(self) -> None:
        t = self.trainer
        if _due(self.period, t.iteration, t.max_iter) or t.stop_reason:
            t.save("last.pth")


def standard_hooks(*, log_period: int, eval_period: int, checkpoint_period: int,
                   best_metric: str = "mAP", validation: Optional[ValidationLoss] = None,
                   early_stop: Optional[EarlyStop] = None,
                   user: Sequence[HookBase] = ()) -> list[HookBase]:
    """Today's loop as hooks, in their order: logging, evaluation (then, on its results, the
    validation loss, the best checkpoint, early stopping), the ``user``'s hooks, and the
    periodic checkpoint last, so that it holds every hook's state after the step."""
    hooks: list[HookBase] = [MetricsLogger(log_period), PeriodicEvaluation(eval_period)]
    hooks += [h for h in (validation,) if h is not None]
    hooks.append(BestCheckpoint(best_metric))
    hooks += [h for h in (early_stop,) if h is not None]
    return [*hooks, *user, PeriodicCheckpoint(checkpoint_period)]
