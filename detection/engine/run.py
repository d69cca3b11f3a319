"""What every training run does alike, whatever it trains: its folder, a resume, the trainer.

A task's build layer (``detection.setup.build_trainer``, ``detection.pretrain.setup.
build_pretrainer``) reads its own config into a model, data and an evaluation, then calls
:func:`assemble_trainer`, which reads only the run keys every schema shares::

    solver.max_iter  solver.checkpoint_period  solver.clip_grad_norm  test.eval_period
    log_period  tensorboard  seed  output_dir

so that seeding, the metrics writer, the ``Trainer(...)`` call and a resume are written once.
"""
from __future__ import annotations

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
from .runlog import LOGGER_NAME, MetricsWriter
from .trainer import Trainer

__all__ = ["RUN_FILES", "RUN_FOLDERS", "assemble_trainer", "images_per_process",
           "prepare_output_dir", "read_resume"]

#: What a run writes into its folder (``--force`` deletes these and nothing else).
RUN_FILES = ("last.pth", "best.pth", "metrics.jsonl", "eval.json", "coco_results.json",
             "config.yaml", "log.txt")
RUN_FOLDERS = ("vis", "tensorboard")


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


def assemble_trainer(cfg: Any, *, model: nn.Module, optimizer: torch.optim.Optimizer,
                     scheduler: torch.optim.lr_scheduler.LRScheduler,
                     train_loader: Callable[[int], Iterable], device: torch.device,
                     evaluate: Optional[Callable[[nn.Module], Any]],
                     prepare_batch: Callable[[Any, torch.device], tuple],
                     ckpt: Optional[Mapping[str, Any]], extra_state: Mapping[str, Any],
                     amp: Mapping[str, Any], best_metric: str = "mAP",
                     data_stats: Optional[Mapping[str, Mapping[str, Any]]] = None) -> Trainer:
    """The :class:`Trainer` of a run whose parts are built: seeds this process's sampling
    noise (``seed + rank``), opens ``metrics.jsonl`` (main process; truncated after the resumed
    iteration, one ``data`` record per split of ``data_stats``), builds the training loader
    ``train_loader(start_iter)`` and continues from ``ckpt`` (:func:`read_resume`) if given.
    ``amp``: the Trainer's ``amp`` and ``amp_dtype``, as the task resolved them from its config
    and the hardware (``detection.precision``)."""
    start = int(ckpt["iteration"]) if ckpt else 0
    seed_all(cfg.seed + du.get_rank())  # each process's own sampling noise
    writer = None
    if du.is_main_process():
        writer = MetricsWriter(cfg.output_dir, truncate_after=start,
                               tensorboard=cfg.tensorboard)
        for split, stats in (data_stats or {}).items():
            writer.write({"type": "data", "iteration": start, "split": split, **stats})
    s = cfg.solver
    trainer = Trainer(
        model=model, optimizer=optimizer, scheduler=scheduler,
        data_loader=train_loader(start), max_iter=s.max_iter, output_dir=cfg.output_dir,
        device=device, evaluate=evaluate, checkpoint_period=s.checkpoint_period,
        eval_period=cfg.test.eval_period, log_period=cfg.log_period, **amp,
        clip_grad_norm=s.clip_grad_norm, writer=writer, best_metric=best_metric,
        extra_state=extra_state, prepare_batch=prepare_batch)
    if ckpt is not None:
        trainer.load_state_dict(ckpt)
    return trainer
