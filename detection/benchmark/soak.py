"""The soak task of ``resdet benchmark``: host memory over a long training run and a long
evaluation, main process and DataLoader workers apart.

The training part trains the config's detector for ``iters`` iterations with ``num_workers``
loader workers (the schedule's steps stretched in proportion) and records, every ``period``
iterations (a hook, :class:`MemorySampling`), the memory of the main process and of each of its
child processes (the workers).
The evaluation part runs the trained model over a synthetic val set of ``images`` images (the
quick start's shapes at the config's ``data.synthetic.image_size``) with the same workers and
records the same every ``period`` images, then after the evaluator has computed mAP, and once
more after the freed memory went back to the system.

Memory per process, from ``/proc/<pid>/smaps_rollup`` (Linux >= 4.14; else ``status``'s
``VmRSS`` only), in MiB:

- ``rss``: resident pages, shared ones included (what ``top`` shows);
- ``pss``: each shared page divided by the number of processes sharing it (the sum over the
  processes is the memory they use together);
- ``uss``: private pages only (what the process would free on exit). A forked worker starts
  sharing the main process's pages; each page either of them writes later becomes private,
  so a worker's ``uss`` grows while the main process changes memory it had at the fork.
"""
from __future__ import annotations

import dataclasses
import gc
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Optional

from ..config import Config
from ..engine.hooks import HookBase
from ..engine.runlog import release_free_memory
from .runtimes import cpu_header

__all__ = ["MemorySampler", "MemorySampling", "child_pids", "format_soak", "growth",
           "process_memory", "run_soak", "soak_eval", "soak_train"]

_FIELDS = {"Rss": "rss", "Pss": "pss", "Private_Clean": "uss", "Private_Dirty": "uss"}


def process_memory(pid: int) -> Optional[dict[str, float]]:
    """``{"rss", "pss", "uss"}`` in MiB of process ``pid`` (``pss`` and ``uss`` None where
    ``smaps_rollup`` cannot be read), or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as f:
            text = f.read()
    except OSError:
        return _status_rss(pid)
    out = {"rss": 0.0, "pss": 0.0, "uss": 0.0}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in _FIELDS:
            out[_FIELDS[key]] += int(rest.split()[0]) / 1024  # kB -> MiB
    return out


def _status_rss(pid: int) -> Optional[dict[str, float]]:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return {"rss": int(line.split()[1]) / 1024, "pss": None, "uss": None}
    except OSError:
        return None
    return None


def child_pids(pid: int) -> list[int]:
    """The live child processes of ``pid`` (DataLoader workers), in increasing pid order."""
    found: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as f:
                found.update(int(p) for p in f.read().split())
        except OSError:  # a kernel without CONFIG_PROC_CHILDREN: scan every process
            return _scan_children(pid)
    return sorted(found)


def _scan_children(pid: int) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", encoding="ascii", errors="replace") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                out.append(int(name))
    return sorted(out)


class MemorySampler:
    """``sample(phase, step)`` appends ``{"phase", "step", "time_s", "main", "workers"}`` to
    ``records``: this process's memory and that of each child process started since the
    sampler was made (``{"pid", "rss", "pss", "uss"}``)."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.start = time.perf_counter()
        self._older = set(child_pids(os.getpid()))

    def sample(self, phase: str, step: int) -> dict[str, Any]:
        workers = []
        for pid in child_pids(os.getpid()):
            if pid in self._older:
                continue
            mem = process_memory(pid)
            if mem is not None:
                workers.append({"pid": pid, **mem})
        record = {"phase": phase, "step": int(step),
                  "time_s": round(time.perf_counter() - self.start, 1),
                  "main": process_memory(os.getpid()), "workers": workers}
        self.records.append(record)
        return record


class MemorySampling(HookBase):
    """A training hook: samples memory after every ``period``-th iteration."""

    name = "soak_memory"

    def __init__(self, sampler: MemorySampler, period: int,
                 on_sample: Callable[[dict], None]) -> None:
        self.sampler, self.period, self.on_sample = sampler, period, on_sample

    def after_step(self) -> None:
        if self.trainer.iteration % self.period == 0:
            self.on_sample(self.sampler.sample("train", self.trainer.iteration))


class _SampledLoader:
    """Iterates ``loader``; samples memory each time ``period`` more images have passed."""

    def __init__(self, loader: Any, sampler: MemorySampler, period: int,
                 on_sample: Callable[[dict], None]) -> None:
        self.loader, self.sampler, self.period, self.on_sample = loader, sampler, period, on_sample

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[list[dict]]:
        seen = 0
        for batch in self.loader:
            yield batch
            before, seen = seen, seen + len(batch)
            if seen // self.period > before // self.period:
                self.on_sample(self.sampler.sample("eval", seen))


def _soak_config(cfg: Config, *, iters: int, num_workers: int, period: int,
                 folder: Path) -> Config:
    """``cfg`` trained ``iters`` iterations (steps and warm-up stretched in proportion) with
    ``num_workers`` workers into ``folder / "run"``, evaluated every ``test.eval_period``
    iterations of the config (0: at the end only)."""
    s = cfg.solver
    scale = iters / s.max_iter
    solver = dataclasses.replace(
        s, max_iter=iters, steps=[max(1, round(v * scale)) for v in s.steps],
        warmup_iters=min(iters, round(s.warmup_iters * scale)), checkpoint_period=100)
    data = dataclasses.replace(cfg.data, num_workers=num_workers)
    if data.synthetic.enabled:
        data = dataclasses.replace(data, synthetic=dataclasses.replace(
            data.synthetic, root=str(folder / "shapes")))
    return dataclasses.replace(cfg, solver=solver, data=data, output_dir=str(folder / "run"),
                               log_period=math.gcd(cfg.log_period, period), tensorboard=False)


def soak_train(cfg: Config, *, iters: int, num_workers: int, period: int, folder: Path,
               sampler: MemorySampler, on_sample: Callable[[dict], None]) -> Any:
    """Train ``cfg`` for ``iters`` iterations sampling memory every ``period``; returns the
    trained model (the one evaluated next). The training loader's workers end with the
    trainer, before the evaluation, as when a run ends."""
    from ..setup import build_trainer

    cfg = _soak_config(cfg, iters=iters, num_workers=num_workers, period=period,
                       folder=folder)
    trainer, _ = build_trainer(cfg, device=_device(cfg))
    trainer.register_hooks([MemorySampling(sampler, period, on_sample)])
    try:
        trainer.train()
    finally:
        if trainer.writer is not None:
            trainer.writer.close()
    model = trainer.model
    del trainer
    gc.collect()  # the trainer and its hooks refer to each other: it goes with a collection
    return model


def soak_eval(cfg: Config, model: Optional[Any], *, images: int, num_workers: int, period: int,
              folder: Path, sampler: MemorySampler, on_sample: Callable[[dict], None],
              weights: Optional[str] = None) -> dict[str, Any]:
    """Evaluate ``model`` over a synthetic val set of ``images`` images, sampling memory every
    ``period`` images, after the evaluator and once its freed pages went back to the system
    (``release_free_memory``, as after each evaluation in training); returns the evaluator's
    result. ``model``
    None: the config's detector with the checkpoint ``weights`` (random weights without)."""
    from ..data.synthetic import ensure_synthetic
    from ..evaluation.inference import inference_on_dataset
    from ..setup import build_evaluator, build_test_dataset, build_test_loader

    syn = cfg.data.synthetic
    paths = ensure_synthetic(folder / f"val{images}", num_train=0, num_val=images,
                             image_size=syn.image_size, seed=syn.seed,
                             max_objects=syn.max_objects, empty_fraction=syn.empty_fraction)
    test = dataclasses.replace(cfg.data.test, images=paths.val_images,
                               annotations=paths.val_annotations)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(
        cfg.data, test=test, num_workers=num_workers, synthetic=dataclasses.replace(
            syn, enabled=False)), output_dir=str(folder / "eval"))
    dataset = build_test_dataset(cfg)
    if model is None:
        from ..build import build_model
        from ..engine.checkpoint import load_model_weights

        model = build_model(cfg, num_classes=len(dataset.classes))
        if weights:
            load_model_weights(model, weights)
    loader = _SampledLoader(build_test_loader(cfg, dataset), sampler, period, on_sample)
    results, _ = inference_on_dataset(model, loader, build_evaluator(cfg, dataset.classes),
                                      device=_device(cfg), keep=cfg.test.vis_images)
    on_sample(sampler.sample("evaluated", len(dataset)))
    release_free_memory()  # as the trainer does after each evaluation
    on_sample(sampler.sample("released", len(dataset)))
    return results


def _device(cfg: Config):
    from ..engine import distributed as du

    return du.resolve_device(cfg.device)


def growth(records: list[dict], phases: tuple[str, ...]) -> dict[str, Any]:
    """The first and the last sample of ``phases``: main process and workers (summed), MiB."""
    rows = [r for r in records if r["phase"] in phases]
    if not rows:
        return {}
    first, last = rows[0], rows[-1]

    def summed(record: dict, key: str) -> Optional[float]:
        values = [w[key] for w in record["workers"]]
        return None if any(v is None for v in values) else sum(values)

    out: dict[str, Any] = {"first_step": first["step"], "last_step": last["step"],
                           "workers": [len(first["workers"]), len(last["workers"])]}
    for key in ("rss", "pss", "uss"):
        a, b = first["main"][key], last["main"][key]
        out[f"main_{key}"] = [a, b]
        wa, wb = summed(first, key), summed(last, key)
        out[f"workers_{key}"] = [wa, wb]
    return out


def run_soak(cfg: Config, *, iters: int = 3000, images: int = 5000, num_workers: int = 2,
             period: int = 100, folder: Optional[str] = None, weights: Optional[str] = None,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Both soak parts (``iters`` 0 or ``images`` 0 leaves one out); a JSON-ready dict with
    every sample and the growth per part. ``weights``: a checkpoint evaluated when there is no
    training part (say the ``last.pth`` of an earlier soak)."""
    import platform

    import torch

    root = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="resdet_soak_"))
    sampler = MemorySampler()

    def show(record: dict) -> None:
        log(format_sample(record))

    model = None
    if iters:
        model = soak_train(cfg, iters=iters, num_workers=num_workers, period=period,
                           folder=root, sampler=sampler, on_sample=show)
    if images:
        soak_eval(cfg, model, images=images, num_workers=num_workers, period=period,
                  folder=root, sampler=sampler, on_sample=show, weights=weights)
    return {"iters": iters, "images": images, "num_workers": num_workers, "period": period,
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "cpu": cpu_header()["cpu"], "machine": platform.machine(), "folder": str(root),
            "growth": {"train": growth(sampler.records, ("train",)),
                       "eval": growth(sampler.records, ("eval", "evaluated"))},
            "samples": sampler.records}


def _mb(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.0f}"


def format_sample(record: dict) -> str:
    """``soak train 100: main rss 812 pss 640 uss 590 MB | workers rss 420+418 ...``."""
    m = record["main"]
    workers = record["workers"]
    parts = [f"{key} " + "+".join(_mb(w[key]) for w in workers) for key in ("rss", "pss", "uss")]
    return (f"soak {record['phase']} {record['step']}: main rss {_mb(m['rss'])} pss "
            f"{_mb(m['pss'])} uss {_mb(m['uss'])} MB | {len(workers)} workers "
            + " ".join(parts) + f" MB  ({record['time_s']:.0f} s)")


def format_soak(result: dict[str, Any]) -> str:
    """The growth of each part as text."""
    lines = [f"soak on {result['cpu']}, {result['threads']} thread(s), "
             f"{result['num_workers']} workers"]
    for phase, unit in (("train", "iteration"), ("eval", "image")):
        g = result["growth"].get(phase)
        if not g:
            continue
        cells = [f"{who} {key} {_mb(g[f'{who}_{key}'][0])} -> {_mb(g[f'{who}_{key}'][1])} MB"
                 for who in ("main", "workers") for key in ("rss", "pss", "uss")]
        lines.append(f"{phase}: {unit} {g['first_step']} -> {g['last_step']}: "
                     + ", ".join(cells))
    return "\n".join(lines)
