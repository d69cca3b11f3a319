"""The training loop, the same for every task, extended by hooks.

:class:`Trainer` runs ``max_iter`` SGD iterations over an endless iterator of batches, with
optional mixed precision, gradient clipping and DistributedDataParallel. Everything around the
steps is a hook (``hooks.py``): the progress lines and ``metrics.jsonl``, the periodic
evaluation and what follows it (validation loss, ``best.pth``, early stopping), the periodic
``last.pth``, TensorBoard and the experiment trackers, and a user's own hooks, each
called in the order of the ``hooks`` list (``standard_hooks`` gives today's loop).

Resuming is exact: a checkpoint holds model, optimizer, scheduler, grad scaler, iteration,
every process's RNG states and the hooks' states, and the data order is a pure function of the
seed and the iteration (the sampler's ``start_iter``), so a run interrupted at iteration ``k``
and resumed ends with the same weights as one that was never interrupted (bitwise on the CPU).

A non-finite loss stops the run before its backward pass, naming the iteration and the loss
term; nothing is saved after it, so ``last.pth`` stays the last good state. A hook may end the
training after the current step (``request_stop``, e.g. early stopping); ``last.pth`` is then
written at that iteration. SIGTERM or SIGUSR1 (a scheduler's pre-emption warning) are such a
stop, decided once per step on every process alike (``preemption.py``): the hooks' ``after_step``
write ``last.pth`` at that iteration through :meth:`save` as for any stop (their states
included, so the resume is exact), then :class:`~.preemption.Preempted` is raised (exit 75). A
full disk while any file of the run is written (a checkpoint, ``metrics.jsonl``) raises one
``DiskFullError`` saying which ``last.pth`` is kept.

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
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from . import distributed as du
from .checkpoint import get_rng_state, save_checkpoint, set_rng_state, unwrap_model
from .files import DiskFullError
from .hooks import HookBase
from .preemption import EXIT_PREEMPTED, Preempted, PreemptionWatcher
from .runlog import LOGGER_NAME, MetricsWriter, release_free_memory

__all__ = ["Trainer", "NonFiniteLossError", "AMP_DTYPES"]

logger = logging.getLogger(LOGGER_NAME)
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite; the message names the iteration and the term."""


class Trainer:
    """Iteration-based training; see the module docstring.

    ``evaluate(model) -> dict`` is called on every process (inference may be distributed)
    and returns the evaluator's result (on every process). ``extra_state`` (e.g.
    ``{"config": ..., "classes": ...}``) is stored in every checkpoint. ``hooks``: called in
    this order (``hooks.standard_hooks`` for checkpoints, evaluation and logging).
    """

    def __init__(self, *, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler,
                 data_loader: Iterable[list[dict]], max_iter: int, output_dir: str | Path,
                 device: torch.device, prepare_batch: Callable[[Any, torch.device], tuple],
                 evaluate: Optional[Callable[[nn.Module], Any]] = None,
                 hooks: Sequence[HookBase] = (), amp: bool = False, amp_dtype: str = "bf16",
                 clip_grad_norm: Optional[float] = None,
                 extra_state: Optional[Mapping[str, Any]] = None,
                 writer: Optional[MetricsWriter] = None):
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
        self.writer = writer
        self.iteration = 0  # number of iterations done
        self.last_results: Optional[dict] = None
        self.last_step: dict[str, float] = {}  # the last step's loss terms, time, data_time
        self.stop_reason: Optional[str] = None
        self._saved: dict[str, int] = {}  # checkpoint file -> the iteration it holds
        self.preemption = PreemptionWatcher(device=device)
        self.preempted = False  # the stop was a scheduler's signal
        self.hooks: list[HookBase] = []
        self.register_hooks(hooks)

    def register_hooks(self, hooks: Sequence[HookBase]) -> None:
        """Append ``hooks`` (called after those registered before); names must be unique."""
        for hook in hooks:
            if any(h.name == hook.name for h in self.hooks):
                raise ValueError(f"two hooks are named {hook.name!r}: their state would share "
                                 "one checkpoint entry")
            hook.trainer = self
            self.hooks.append(hook)

    def _call(self, method: str, *args: Any) -> None:
        for hook in self.hooks:
            getattr(hook, method)(*args)

    def request_stop(self, reason: str) -> None:
        """End the training after the current step (hooks' ``after_step`` still run, so
        ``last.pth`` is written at it); ``reason`` is logged."""
        if self.stop_reason is None:
            self.stop_reason = reason

    # ----------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """What ``last.pth`` holds (``rng`` gathers every process's states; call on all)."""
        return self._state(rng=du.all_gather_object(get_rng_state()))

    def _state(self, *, rng: list[dict]) -> dict:
        hooks = {h.name: s for h in self.hooks if (s := h.state_dict()) is not None}
        return {"model": unwrap_model(self.model).state_dict(), **self.extra_state,
                "iteration": self.iteration, "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "rng": rng, "hooks": hooks}

    def load_state_dict(self, ckpt: Mapping[str, Any]) -> None:
        """Continue from ``ckpt`` (a :meth:`state_dict`); restores this process's RNG states
        and each hook's state (by its name)."""
        unwrap_model(self.model).load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.iteration = int(ckpt["iteration"])
        self._saved["last.pth"] = self.iteration
        states = dict(ckpt.get("hooks") or {})
        if "best" in ckpt and "best" not in states:  # a checkpoint from before hooks
            states["best"] = ckpt["best"]
        for hook in self.hooks:
            if hook.name in states:
                hook.load_state_dict(states[hook.name])
        rng = ckpt.get("rng") or []
        rank = du.get_rank()
        if rank >= len(rng):
            logger.warning("checkpoint has RNG states of %d processes; process %d reuses "
                           "process 0's (the run is no longer bitwise reproducible)",
                           len(rng), rank)
        if rng:
            set_rng_state(rng[rank] if rank < len(rng) else rng[0])

    def save(self, name: str, *, all_processes: bool = True) -> None:
        """Write the checkpoint ``name`` into the output folder (main process). Called on every
        process (they gather their RNG states), or with ``all_processes=False`` from any: then
        it holds only this process's RNG states (``best.pth``)."""
        if all_processes:
            state = self.state_dict()  # every process takes part in gathering the RNG states
        elif du.is_main_process():
            state = self._state(rng=[get_rng_state()])
        if du.is_main_process():
            self._write(state, name)
        self._saved[name] = self.iteration  # on every process (the stop on a signal reads it)

    def saved_at(self, name: str) -> Optional[int]:
        """The iteration the checkpoint ``name`` of this run holds, if one was written."""
        return self._saved.get(name)

    def _write(self, state: dict, name: str) -> None:
        """``save_checkpoint`` into the output folder."""
        save_checkpoint(state, self.output_dir / name)

    # ----------------------------------------------------------------------------- loop
    def train(self) -> Optional[dict]:
        """Run from ``self.iteration`` to ``max_iter`` (or a stop); returns the last
        evaluation's results. The hooks' ``before_train`` come first, their ``after_train``
        last, also after an error.

        SIGTERM or SIGUSR1 stop it after the current step with ``last.pth`` written and raise
        ``Preempted``; a full disk raises ``DiskFullError`` saying which ``last.pth`` is kept
        (module docstring)."""
        with self.preemption:
            try:
                try:
                    self._call("before_train")
                    return self._train()
                finally:
                    self._call("after_train")
            except DiskFullError as e:  # a checkpoint, metrics.jsonl, ...: what is kept
                raise self._disk_full(e) from None

    def _disk_full(self, error: DiskFullError) -> DiskFullError:
        """``error`` (any file of the run) saying which checkpoint is kept and how to go on."""
        last, saved = self.output_dir / "last.pth", self.saved_at("last.pth")
        kept = (f"{'the previous ' if error.path == last else ''}{last}"
                f"{f' (iteration {saved})' if saved is not None else ''} is kept: free some "
                "space, then continue the run with --resume" if last.is_file() else
                "no checkpoint of this run was written yet: free some space and start again")
        return DiskFullError(f"{error}; {kept}", path=error.path, needed=error.needed,
                             free=error.free)

    def _train(self) -> Optional[dict]:
        start = self.iteration
        if self.stop_reason:
            logger.info("%s: nothing left to train", self.stop_reason)
            return self.last_results
        if start >= self.max_iter:
            logger.info("already at iteration %d of %d: evaluating only", start, self.max_iter)
            return self.run_evaluation()
        logger.info("training from iteration %d to %d", start, self.max_iter)
        rng = get_rng_state()
        data_iter = iter(self.data_loader)  # a DataLoader draws its workers' base seed here:
        set_rng_state(rng)  # keep that draw out of the training's RNG stream (exact resume)
        self.model.train()
        for it in range(start, self.max_iter):
            self._call("before_step")
            t0 = time.perf_counter()
            batch = next(data_iter)
            t1 = time.perf_counter()
            losses = self.run_step(it, batch)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.iteration = it + 1
            self.last_step = {**losses, "time": time.perf_counter() - t0, "data_time": t1 - t0}
            self._watch_signals()
            self._call("after_step")
            if self.stop_reason:
                if self.preempted:
                    self._stop_preempted()
                logger.info("%s", self.stop_reason)
                break
        return self.last_results

    def _watch_signals(self) -> None:
        """A stop signal to any process (one all-reduce per step, so every process stops at the
        same iteration) becomes a stop after this step, before the hooks' ``after_step``: they
        log and write ``last.pth`` as for any stop. The last step simply finishes the run."""
        if self.iteration < self.max_iter and self.preemption.stop_requested():
            self.preempted = True
            self.stop_reason = self.preemption.reason

    def _stop_preempted(self) -> None:
        """``last.pth`` at this iteration (unless a hook just wrote it), logged; raise
        ``Preempted``."""
        if self.saved_at("last.pth") != self.iteration:
            self.save("last.pth")
        du.synchronize()  # every process leaves once the file is whole
        message = (f"{self.preemption.reason}: stopped after iteration {self.iteration} of "
                   f"{self.max_iter}, {self.output_dir / 'last.pth'} holds it; continue the run "
                   f"with --resume (exit status {EXIT_PREEMPTED})")
        logger.warning("%s", message)
        raise Preempted(message)

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

    # ----------------------------------------------------------------------------- evaluation
    def run_evaluation(self) -> Optional[dict]:
        """Evaluate now (RNG states untouched, so evaluating never changes the training); every
        hook's ``after_evaluation`` may add to the results, which are then logged and written
        to ``metrics.jsonl``."""
        if self.evaluate_fn is None:
            return None
        rng = get_rng_state()
        try:
            results = dict(self.evaluate_fn(unwrap_model(self.model)))
        finally:
            set_rng_state(rng)
            self.model.train()
            release_free_memory()  # the evaluation's temporaries, freed but still resident
        try:  # the hooks see the training's RNG states (best.pth stores them) and keep them
            self._call("after_evaluation", results)
        finally:
            set_rng_state(rng)
        self.last_results = results
        if self.writer is not None:
            self.writer.write({"type": "eval", "iteration": self.iteration, **results})
        logger.info("evaluation at iteration %d: %s", self.iteration,
                    "  ".join(f"{k} {v:.2f}" for k, v in results.items()
                              if isinstance(v, float)))
        return self.last_results
