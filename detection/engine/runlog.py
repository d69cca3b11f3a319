"""Run logs: the console logger, progress lines, ``metrics.jsonl``, ``eval.json``.

``metrics.jsonl`` holds one JSON object a line (``{"type": "train" | "eval", "iteration": ...}``,
see docs/ARCHITECTURE.md). :class:`MetricsWriter` writes it and hands each record to its
``sinks``: TensorBoard and the experiment trackers (``trackers.py``), which show the record's
numbers under the tags of :func:`scalar_tags`.
"""
from __future__ import annotations

import ctypes
import json
import logging
import math
import os
import resource
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Optional, Union

import torch

from .files import disk_full_error, is_disk_full, write_text

__all__ = [
    "setup_logger", "MetricsWriter", "Progress", "format_eta", "memory_mb", "peak_rss_mb",
    "read_metrics", "release_free_memory", "scalar_tags",
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


class Progress:
    """Progress lines of a loop over ``total`` steps, in the training log's style::

        inference 40/100  0.120 s/it  data 0.004 s  eta 0:00:07  elapsed 0:00:05

    ``step(data_time)`` after each step; a line at most every ``period_s`` seconds (``0``: every
    step) and after the last one. The ETA uses the mean time of the steps since the previous line
    (the first steps are slow). ``enabled=False`` (processes other than rank 0) prints nothing.
    """

    def __init__(self, name: str, total: Optional[int], *, period_s: float = 5.0,
                 enabled: bool = True):
        self.name, self.total, self.period_s, self.enabled = name, total, period_s, enabled
        self.done = 0
        self.start = self._last = time.perf_counter()
        self._window = (0, 0.0)  # (steps, data seconds) since the last line

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def step(self, data_time: float = 0.0) -> None:
        self.done += 1
        steps, data = self._window
        self._window = (steps + 1, data + data_time)
        now = time.perf_counter()
        if self.enabled and (now - self._last >= self.period_s or self.done == self.total):
            steps, data = self._window
            per_step = (now - self._last) / steps
            total = "?" if self.total is None else self.total
            eta = "" if self.total is None else \
                f"  eta {format_eta((self.total - self.done) * per_step)}"
            logging.getLogger(LOGGER_NAME).info(
                "%s %d/%s  %.3f s/it  data %.3f s%s  elapsed %s", self.name, self.done, total,
                per_step, data / steps, eta, format_eta(now - self.start))
            self._last, self._window = now, (0, 0.0)


def release_free_memory() -> bool:
    """Hand the C allocator's free pages back to the system (glibc's ``malloc_trim``): an
    evaluation's temporaries (COCO results as Python dicts, their index) leave tens of MB free
    but resident otherwise. Returns whether there was such a call (not on other C libraries)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):  # not glibc (musl, macOS), or Windows
        return False
    trim(0)
    return True


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


def scalar_tags(record: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of a metrics record by tag, as TensorBoard and the trackers show them:
    ``<type>/<key>`` (``train/loss_cls``), a nested dict's entries as ``<type>/<key>/<name>``
    (``eval/per_category/cat``), data lines as ``data/<split>/<key>``; ``iteration`` (the
    step), strings, booleans and non-finite numbers (strings in the JSON) left out."""
    kind = record.get("type", "train")
    if "split" in record:  # data lines, one per split: data/train/images, ...
        kind = f"{kind}/{record['split']}"
    out = {}
    for key, value in record.items():
        items = value.items() if isinstance(value, Mapping) else [(None, value)]
        for name, v in items:
            if isinstance(v, (int, float)) and not isinstance(v, bool) and key != "iteration" \
                    and math.isfinite(v):
                out[f"{kind}/{key}" if name is None else f"{kind}/{key}/{name}"] = v
    return out


class MetricsWriter:
    """Appends records to ``<output_dir>/metrics.jsonl`` (one JSON line each, flushed).

    ``truncate_after``: on resume, drop lines of iterations past the checkpoint so the log does
    not repeat the iterations the interrupted run did after its last save. ``sinks``: callables
    handed every record as written (experiment trackers); more with ``sinks.append``.
    """

    def __init__(self, output_dir: Union[str, os.PathLike], *,
                 truncate_after: Optional[int] = None):
        self.path = Path(output_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if truncate_after is not None and self.path.is_file():
            self._truncate(truncate_after)
        self._file = open(self.path, "a", encoding="utf-8")
        self.sinks: list[Callable[[Mapping[str, Any]], None]] = []

    def _truncate(self, iteration: int) -> None:
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("iteration", 0) <= iteration:
                    kept.append(line)
            except json.JSONDecodeError:  # a line cut by a crash
                continue
        write_text(self.path, "".join(f"{line}\n" for line in kept))

    def write(self, record: Mapping[str, Any]) -> None:
        """Append ``record`` as one JSON line (flushed), then hand it to every sink."""
        record = _jsonable(record)
        line = json.dumps(record) + "\n"
        try:
            self._file.write(line)
            self._file.flush()
        except OSError as e:  # a full disk: one clear line (a cut line is skipped on reading)
            if is_disk_full(e):
                raise disk_full_error(self.path, needed=len(line.encode())) from None
            raise
        for sink in self.sinks:  # TensorBoard, experiment trackers: the same records
            sink(record)

    def close(self) -> None:
        self._file.close()

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
    write_text(path, json.dumps(record, indent=2) + "\n")
    return record
