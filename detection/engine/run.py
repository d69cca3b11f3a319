"""What every training run does alike, whatever it trains: its folder, a resume, the trainer.

A task's build layer (``detection.setup.build_trainer``, ``detection.pretrain.setup.
build_pretrainer``) reads its own config into a model, data and an evaluation, then calls
:func:`assemble_trainer`, which reads only the run keys every schema shares::

    solver.max_iter  solver.checkpoint_period  solver.clip_grad_norm  solver.early_stop
    test.eval_period  test.val_loss  log_period  tensorboard  trackers  hooks  seed  output_dir

so that seeding, the metrics writer, the ``Trainer(...)`` call and a resume are written once.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from . import distributed as du
from .checkpoint import load_checkpoint, seed_all
from .hooks import EarlyStop, HookBase, ValidationLoss, build_user_hooks, standard_hooks
from .runlog import LOGGER_NAME, MetricsWriter
from .trackers import build_trackers
from .trainer import Trainer

__all__ = ["RUN_FILES", "RUN_FOLDERS", "assemble_trainer", "build_hooks", "images_per_process",
           "prepare_output_dir", "read_resume"]

#: What a run writes into its folder (``--force`` deletes these and nothing else).
RUN_FILES = ("last.pth", "best.pth", "metrics.jsonl", "eval.json", "coco_results.json",
             "config.yaml", "log.txt")
RUN_FOLDERS = ("vis", "tensorboard", "wandb")


def prepare_output_dir(output_dir: str | os.PathLike, *, resume: bool, force: bool,
                       delete: bool = True) -> list[str]:
    """Refuse to train into a folder that holds a previous run (``last.pth`` or
    ``metrics.jsonl``) unless ``resume`` (continue it) or ``force`` (start over: the previous
    run's files, ``RUN_FILES`` and ``RUN_FOLDERS``, are deleted; nothing else in the folder).

    Raises ``FileExistsError`` naming the folder and both ways on. Under torchrun every process
    checks (so all stop alike) and only the main one deletes (``delete``). Returns the names
    deleted.
    """
    out = Path(output_dir)
    found = [name for name in ("last.pth", "metrics.jsonl") if (out / name).is_file()]
    if not found or resume:
        return []
    if not force:
        raise FileExistsError(
            f"{out} already holds a run ({', '.join(found)}): pass --resume to continue it, "
            "or --force to start over (its run files are deleted), or choose another --output")
    deleted = [name for name in (*RUN_FILES, *RUN_FOLDERS) if (out / name).exists()]
    if not delete:
        return []
    for name in deleted:
        if (out / name).is_dir():
            shutil.rmtree(out / name)
        else:
            (out / name).unlink()
    return deleted


def read_resume(output_dir: str | os.PathLike, *, resume: bool) -> Optional[dict]:
    """``<output_dir>/last.pth`` when ``resume`` and it exists (logged), else ``None``."""
    log = logging.getLogger(LOGGER_NAME)
    path = Path(output_dir) / "last.pth"
    if resume and path.is_file():
        ckpt = load_checkpoint(path)
        log.info("resuming from %s at iteration %d", path, ckpt["iteration"])
        return ckpt
    if resume:
        log.info("--resume: no %s yet, starting from iteration 0", path)
    return None


def images_per_process(total: int, key: str) -> int:
    """A global batch (config key ``key``) split evenly over the processes."""
    world = du.get_world_size()
    if total % world:
        raise ValueError(f"{key} {total} is not divisible by the {world} processes")
    return total // world


def build_hooks(cfg: Any, *, prepare_batch: Callable[[Any, torch.device], tuple],
                evaluates: bool, val_loader: Optional[Iterable] = None,
                best_metric: str = "mAP") -> tuple[list[HookBase], list]:
    """``(hooks, trackers)`` of a run from the keys every schema shares: today's loop
    (``standard_hooks``) with the validation loss (``test.val_loss``), early stopping
    (``solver.early_stop``) and the user's hooks (``hooks``, imported from this config), then
    TensorBoard and the experiment trackers (``tensorboard``, ``trackers``; main process only)
    last, so that their end of the run sees every file the others wrote. ``evaluates``: the
    run has an evaluation; ``val_loader``: the test batches, for the validation loss."""
    s, t = cfg.solver, cfg.test
    early = None
    if s.early_stop.patience > 0:
        if not evaluates or t.eval_period <= 0:
            raise ValueError("solver.early_stop.patience needs a periodic evaluation: set "
                             "test.eval_period (or test.eval_period_epochs) and a test set")
        early = EarlyStop(metric=s.early_stop.metric or best_metric,
                          patience=s.early_stop.patience, min_delta=s.early_stop.min_delta)
    validation = None
    if t.val_loss:
        if not evaluates or val_loader is None:
            raise ValueError("test.val_loss needs a test set to compute the loss on")
        validation = ValidationLoss(val_loader, prepare_batch=prepare_batch, seed=cfg.seed)
    hooks = standard_hooks(log_period=cfg.log_period, eval_period=t.eval_period,
                           checkpoint_period=s.checkpoint_period, best_metric=best_metric,
                           validation=validation, early_stop=early,
                           user=build_user_hooks(cfg.hooks))
    trackers = []
    if du.is_main_process():
        trackers = build_trackers(cfg.trackers, config=dataclasses.asdict(cfg),
                                  output_dir=cfg.output_dir, tensorboard=cfg.tensorboard)
    return hooks + trackers, trackers


def assemble_trainer(cfg: Any, *, model: nn.Module, optimizer: torch.optim.Optimizer,
                     scheduler: torch.optim.lr_scheduler.LRScheduler,
                     train_loader: Callable[[int], Iterable], device: torch.device,
                     evaluate: Optional[Callable[[nn.Module], Any]],
                     prepare_batch: Callable[[Any, torch.device], tuple],
                     ckpt: Optional[Mapping[str, Any]], extra_state: Mapping[str, Any],
                     amp: Mapping[str, Any], best_metric: str = "mAP",
                     data_stats: Optional[Mapping[str, Mapping[str, Any]]] = None,
                     val_loader: Optional[Iterable] = None) -> Trainer:
    """The :class:`Trainer` of a run whose parts are built: seeds this process's sampling
    noise (``seed + rank``), opens ``metrics.jsonl`` (main process; truncated after the resumed
    iteration), builds the hooks (:func:`build_hooks`) and the training loader
    ``train_loader(start_iter)``, continues from ``ckpt`` (:func:`read_resume`) if given (the
    hooks' states too), then writes one ``data`` record per split of ``data_stats``.
    ``amp``: the Trainer's ``amp`` and ``amp_dtype``, as the task resolved them from its config
    and the hardware (``detection.precision``)."""
    start = int(ckpt["iteration"]) if ckpt else 0
    hooks, trackers = build_hooks(cfg, prepare_batch=prepare_batch,
                                  evaluates=evaluate is not None, val_loader=val_loader,
                                  best_metric=best_metric)
    seed_all(cfg.seed + du.get_rank())  # each process's own sampling noise
    writer = MetricsWriter(cfg.output_dir, truncate_after=start) if du.is_main_process() \
        else None
    s = cfg.solver
    trainer = Trainer(
        model=model, optimizer=optimizer, scheduler=scheduler,
        data_loader=train_loader(start), max_iter=s.max_iter, output_dir=cfg.output_dir,
        device=device, evaluate=evaluate, hooks=hooks, **amp, clip_grad_norm=s.clip_grad_norm,
        writer=writer, extra_state=extra_state, prepare_batch=prepare_batch)
    if ckpt is not None:
        trainer.load_state_dict(ckpt)  # a tracker's run id among the hooks' states
    for tracker in trackers:
        tracker.attach(writer)
    if writer is not None:
        for split, stats in (data_stats or {}).items():
            writer.write({"type": "data", "iteration": start, "split": split, **stats})
    return trainer
