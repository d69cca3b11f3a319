"""The training loop, the same for every task.

:class:`Trainer` runs ``max_iter`` SGD iterations over an endless iterator of batches, with
optional mixed precision (CUDA), gradient clipping and DistributedDataParallel; every
``checkpoint_period`` iterations it writes ``last.pth``, every ``eval_period`` iterations (and
at the end) it evaluates and keeps ``best.pth`` by mAP.

Resuming is exact: a checkpoint holds model, optimizer, scheduler, grad scaler, iteration and
every process's RNG states, and the data order is a pure function of the seed and the
iteration (the sampler's ``start_iter``), so a run interrupted at iteration ``k`` and resumed
ends with the same weights as one that was never interrupted (bitwise on the CPU).

A non-finite loss stops the run before its backward pass, naming the iteration and the loss
term; nothing is saved after it, so ``last.pth`` stays the last good state.

The loop is the same for every task: ``prepare_batch(batch, device)`` turns a batch into the
model's positional arguments (detection: ``detection.data.move_batch``, images and targets;
pretraining: stacked images and labels), and the model returns a dict whose ``loss*`` terms
are summed and minimised; any other entry (say a classifier's training error) is a metric,
averaged over processes and logged, never back-propagated.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from . import distributed as du
from .checkpoint import get_rng_state, save_checkpoint, set_rng_state, unwrap_model
from .runlog import LOGGER_NAME, MetricsWriter, format_eta, memory_mb

__all__ = ["Trainer", "NonFiniteLossError", "AMP_DTYPES"]

logger = logging.getLogger(LOGGER_NAME)
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite; the message names the iteration and the term."""


class Trainer:
    """Iteration-based training; see the module docstring.

    ``evaluate(model) -> dict`` is called on every process (inference may be distributed)
    and returns the evaluator's result (on every process). ``extra_state`` (e.g.
    ``{"config": ..., "classes": ...}``) is stored in every checkpoint.
    """

    ESTIMATE_AFTER = 6  # iterations timed for the up-front estimate of the training time

    def __init__(self, *, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler,
                 data_loader: Iterable[list[dict]], max_iter: int, output_dir: str | Path,
                 device: torch.device, evaluate: Optional[Callable[[nn.Module], Any]] = None,
                 checkpoint_period: int = 5000, eval_period: int = 0, log_period: int = 20,
                 amp: bool = False, amp_dtype: str = "bf16",
                 clip_grad_norm: Optional[float] = None,
                 extra_state: Optional[Mapping[str, Any]] = None, best_metric: str = "mAP",
                 writer: Optional[MetricsWriter] = None,
                 prepare_batch: Callable[[Any, torch.device], tuple]):
        self.device = device
        self.prepare_batch = prepare_batch
        if du.get_world_size() > 1:
            model = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
        self.model = model
        self.optimizer, self.scheduler = optimizer, scheduler
        self.data_loader = data_loader
        self.max_iter, self.output_dir = int(max_iter), Path(output_dir)
        self.evaluate_fn = evaluate
        self.checkpoint_period, self.eval_period = checkpoint_period, eval_period
        self.log_period = max(1, log_period)
        self.amp_dtype = AMP_DTYPES[amp_dtype]
        # amp: autocast to amp_dtype, resolved by the caller (detection/precision.py); a CPU
        # autocasts to bf16 only
        self.amp = bool(amp) and (device.type == "cuda" or self.amp_dtype == torch.bfloat16)
        if amp and not self.amp:
            logger.info("fp16 autocast is for CUDA only; training in float32 on %s", device)
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=self.amp and self.amp_dtype == torch.float16)
        self.clip_grad_norm = clip_grad_norm
        self.extra_state = dict(extra_state or {})
        self.best_metric, self.best_value = best_metric, None
        self.writer = writer
        self.iteration = 0  # number of iterations done
        self.last_results: Optional[dict] = None

    # ----------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """What ``last.pth`` holds (``rng`` gathers every process's states; call on all)."""
        return self._state(rng=du.all_gather_object(get_rng_state()))

    def _state(self, *, rng: list[dict]) -> dict:
        return {"model": unwrap_model(self.model).state_dict(), **self.extra_state,
                "iteration": self.iteration, "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "rng": rng, "best": {"metric": self.best_metric, "value": self.best_value}}

    def load_state_dict(self, ckpt: Mapping[str, Any]) -> None:
        """Continue from ``ckpt`` (a :meth:`state_dict`); restores this process's RNG states."""
        unwrap_model(self.model).load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.iteration = int(ckpt["iteration"])
        self.best_value = (ckpt.get("best") or {}).get("value")
        rng = ckpt.get("rng") or []
        rank = du.get_rank()
        if rank >= len(rng):
            logger.warning("checkpoint has RNG states of %d processes; process %d reuses "
                           "process 0's (the run is no longer bitwise reproducible)",
                           len(rng), rank)
        if rng:
            set_rng_state(rng[rank] if rank < len(rng) else rng[0])

    def save(self, name: str) -> None:
        state = self.state_dict()  # every process takes part in gathering the RNG states
        if du.is_main_process():
            save_checkpoint(state, self.output_dir / name)

    # ----------------------------------------------------------------------------- loop
    def train(self) -> Optional[dict]:
        """Run from ``self.iteration`` to ``max_iter``; returns the final evaluation result."""
        start = self.iteration
        if start >= self.max_iter:
            logger.info("already at iteration %d of %d: evaluating only", start, self.max_iter)
            return self.run_evaluation()
        logger.info("training from iteration %d to %d", start, self.max_iter)
        rng = get_rng_state()
        data_iter = iter(self.data_loader)  # a DataLoader draws its workers' base seed here:
        set_rng_state(rng)  # keep that draw out of the training's RNG stream (exact resume)
        window: list[dict] = []
        first: list[float] = []  # times of the first iterations, for the up-front estimate
        t_start = time.perf_counter()
        self.model.train()
        for it in range(start, self.max_iter):
            t0 = time.perf_counter()
            batch = next(data_iter)
            t1 = time.perf_counter()
            losses = self.run_step(it, batch)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.iteration = it + 1
            window.append({**losses, "time": time.perf_counter() - t0, "data_time": t1 - t0})
            if len(first) < self.ESTIMATE_AFTER:
                first.append(window[-1]["time"])
                if len(first) == self.ESTIMATE_AFTER:
                    self._log_estimate(first)
            if self.iteration % self.log_period == 0 or self.iteration == self.max_iter:
                self._log(window, elapsed=time.perf_counter() - t_start)
                window = []
            self._after_step()
        return self.last_results

    def _log_estimate(self, times: list[float]) -> None:
        """How long the training will take, from the median of the first iterations (the very
        first, slowed by allocations and worker start, left out)."""
        per_it = sorted(times[1:])[len(times[1:]) // 2]
        left = self.max_iter - self.iteration
        logger.info("%.2f s/iteration over the first %d iterations: the %d left take about %s "
                    "(plus evaluation)", per_it, len(times), left, format_eta(left * per_it))

    def run_step(self, it: int, batch: list[dict]) -> dict[str, float]:
        """One SGD step on ``batch``; returns the loss terms (and metrics) averaged over
        processes."""
        inputs = self.prepare_batch(batch, self.device)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
            outputs = self.model(*inputs)
        names = list(outputs)
        losses = [n for n in names if n.startswith("loss")]
        total = sum(outputs[n] for n in losses)
        reduced = du.reduce_mean(torch.stack([outputs[n].detach().float() for n in names]))
        values = dict(zip(names, reduced.tolist()))
        self._check_finite(it, {n: values[n] for n in losses})
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if self.clip_grad_norm:
            self.scaler.unscale_(self.optimizer)
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return {"loss": sum(values[n] for n in losses), **values}

    @staticmethod
    def _check_finite(it: int, values: Mapping[str, float]) -> None:
        bad = {n: v for n, v in values.items() if not math.isfinite(v)}
        if bad:
            terms = ", ".join(f"{n}={v}" for n, v in bad.items())
            raise NonFiniteLossError(
                f"non-finite loss at iteration {it}: {terms}; stopped before the update, the "
                "last checkpoint is the last good state (lower solver.base_lr, add "
                "solver.clip_grad_norm or lengthen solver.warmup_iters)")

    def _after_step(self) -> None:
        done = self.iteration == self.max_iter
        if done or (self.eval_period > 0 and self.iteration % self.eval_period == 0):
            self.run_evaluation()
        if done or (self.checkpoint_period > 0 and self.iteration % self.checkpoint_period == 0):
            self.save("last.pth")

    def _log(self, window: list[dict], *, elapsed: float) -> None:
        keys = [k for k in window[-1] if k not in ("time", "data_time")]
        mean = {k: sum(w[k] for w in window) / len(window) for k in window[-1]}
        # the first iterations are slow (allocations, cuDNN tuning): ETA from the recent window
        eta = (self.max_iter - self.iteration) * mean["time"]
        record = {"type": "train", "iteration": self.iteration,
                  "lr": self.optimizer.param_groups[0]["lr"], **{k: mean[k] for k in keys},
                  "time": mean["time"], "data_time": mean["data_time"],
                  "memory_mb": memory_mb(self.device), "eta_s": eta}
        if self.writer is not None:
            self.writer.write(record)
        terms = "  ".join(f"{k.removeprefix('loss_')} {mean[k]:.3f}" for k in keys if k != "loss")
        logger.info("iter %d/%d  loss %.3f (%s)  lr %.5f  %.3f s/it  data %.3f s  mem %.0f MB  "
                    "eta %s  elapsed %s", self.iteration, self.max_iter, mean["loss"], terms,
                    record["lr"], mean["time"], mean["data_time"], record["memory_mb"],
                    format_eta(eta), format_eta(elapsed))

    # ----------------------------------------------------------------------------- evaluation
    def run_evaluation(self) -> Optional[dict]:
        """Evaluate now (RNG states untouched, so evaluating never changes the training)."""
        if self.evaluate_fn is None:
            return None
        rng = get_rng_state()
        try:
            results = self.evaluate_fn(unwrap_model(self.model))
        finally:
            set_rng_state(rng)
            self.model.train()
        self.last_results = dict(results)
        if self.writer is not None:
            self.writer.write({"type": "eval", "iteration": self.iteration, **results})
        value = results.get(self.best_metric)
        logger.info("evaluation at iteration %d: %s", self.iteration,
                    "  ".join(f"{k} {v:.2f}" for k, v in results.items()
                              if isinstance(v, float)))
        better = value is not None and math.isfinite(value) and (
            self.best_value is None or value > self.best_value)
        if better:
            self.best_value = float(value)
            if du.is_main_process():
                # this process's RNG state only: gathering here would need every process
                save_checkpoint(self._state(rng=[get_rng_state()]), self.output_dir / "best.pth")
        return self.last_results
