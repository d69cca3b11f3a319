"""Run logs: the console logger, ``metrics.jsonl``, optional TensorBoard scalars, ``eval.json``.

``metrics.jsonl`` holds one JSON object a line (``{"type": "train" | "eval", "iteration": ...}``,
see docs/ARCHITECTURE.md); TensorBoard events are written next to it when the ``tensorboard``
package is importable, and silently skipped when it is not.
"""
from __future__ import annotations

import json
import logging
import math
import os
import resource
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional, Union

import torch

__all__ = [
    "setup_logger", "MetricsWriter", "format_eta", "memory_mb", "peak_rss_mb", "read_metrics",
    "write_eval_json",
]

LOGGER_NAME = "detection"


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is at the time (so a run's ``log.txt`` copy of it,
    ``detection.cli.tee_output``, installed after the logger, still gets every line)."""

    def __init__(self) -> None:
        super().__init__()

    @property  # type: ignore[override]
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it
        pass


def setup_logger(rank: int = 0, level: int = logging.INFO) -> logging.Logger:
    """The ``detection`` logger printing ``[time] message`` to stdout; ranks > 0 only warn."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(level if rank == 0 else logging.WARNING)
    logger.propagate = False
    if not logger.handlers:
        handler = _StdoutHandler()
        prefix = "" if rank == 0 else f"[rank {rank}] "
        handler.setFormatter(logging.Formatter(f"[%(asctime)s] {prefix}%(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
    return logger


def format_eta(seconds: float) -> str:
    """``3725.4`` -> ``"1:02:05"``."""
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def memory_mb(device: torch.device) -> float:
    """Peak memory in MiB: allocated tensors on a GPU, the process's peak RSS on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return peak_rss_mb()


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep them visible as strings
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


class MetricsWriter:
    """Appends records to ``<output_dir>/metrics.jsonl`` (and TensorBoard when available).

    ``truncate_after``: on resume, drop lines of iterations past the checkpoint so the log does
    not repeat the iterations the interrupted run did after its last save.
    """

    def __init__(self, output_dir: Union[str, os.PathLike], *, truncate_after: Optional[int] = None,
                 tensorboard: bool = True):
        self.path = Path(output_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if truncate_after is not None and self.path.is_file():
            self._truncate(truncate_after)
        self._file = open(self.path, "a", encoding="utf-8")
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self._tb = SummaryWriter(log_dir=str(Path(output_dir) / "tensorboard"))
            except ImportError:  # tensorboard is optional
                self._tb = None

    def _truncate(self, iteration: int) -> None:
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("iteration", 0) <= iteration:
                    kept.append(line)
            except json.JSONDecodeError:  # a line cut by a crash
                continue
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
        os.replace(tmp, self.path)

    def write(self, record: Mapping[str, Any]) -> None:
        """Append ``record`` as one JSON line (flushed); numbers also go to TensorBoard."""
        record = _jsonable(record)
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            step = int(record.get("iteration", 0))
            kind = record.get("type", "train")
            for key, value in record.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) \
                        and key != "iteration":
                    self._tb.add_scalar(f"{kind}/{key}", value, step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()

    def __enter__(self) -> "MetricsWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_metrics(run: Union[str, os.PathLike]) -> dict[str, list[dict]]:
    """``{"train": [...], "eval": [...]}`` from ``run/metrics.jsonl`` (or the file itself).

    A line that is not JSON (say, the half-written last line of a running job) is skipped with
    a warning naming the file and line.
    """
    path = Path(run)
    file = path / "metrics.jsonl" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"no metrics.jsonl at {file}")
    out: dict[str, list[dict]] = {"train": [], "eval": []}
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            print(f"warning: skipping {file}:{number}: not a JSON line", file=sys.stderr)
            continue
        if isinstance(record, dict) and record.get("type") in out and "iteration" in record:
            out[record["type"]].append(record)
    if not out["train"] and not out["eval"]:
        raise ValueError(f"{file} holds no train or eval lines")
    return out


def write_eval_json(path: Union[str, os.PathLike], results: Mapping[str, Any], *, backbone: str,
                    config: Optional[str], weights: Optional[str],
                    iteration: Optional[int]) -> dict:
    """Write ``eval.json``: the evaluator's result plus where it came from. Returns the record."""
    record = dict(_jsonable(results))
    record.update(backbone=backbone, config=config, weights=weights, iteration=iteration)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return record
