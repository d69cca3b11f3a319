"""Timing helpers shared by every benchmark task: alternating calls, medians, percentiles."""
from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["time_alternating", "summarize"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_alternating(fns: dict[str, Callable[[], Any]], *, iters: int, warmup: int,
                     device: torch.device) -> dict[str, dict[str, Any]]:
    """Call each function ``warmup`` times, then ``iters`` times in turn, the order reversed
    every other round, so a slower or busier machine affects every function alike.

    Returns per name ``{"times": [s, ...], "cpu_times": [s, ...], "peak_mb": MB | None}``:
    wall-clock seconds, the process's CPU seconds over the same calls (all its threads; on a CPU
    shared with other jobs, with one thread, the steadier of the two: time spent waiting for a
    core is not counted), and the peak allocated CUDA memory over the calls (``None`` on the CPU,
    where one process cannot tell two models' memory apart).
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    out = {name: {"times": [], "cpu_times": [], "peak_mb": 0.0 if device.type == "cuda" else None}
           for name in names}
    for i in range(iters):
        for name in (names if i % 2 == 0 else names[::-1]):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            _sync(device)
            start, cpu_start = time.perf_counter(), time.process_time()
            fns[name]()
            _sync(device)
            out[name]["times"].append(time.perf_counter() - start)
            out[name]["cpu_times"].append(time.process_time() - cpu_start)
            if device.type == "cuda":
                peak = torch.cuda.max_memory_allocated(device) / 2**20
                out[name]["peak_mb"] = max(out[name]["peak_mb"], peak)
    return out


def summarize(times: list[float]) -> dict[str, float]:
    """``{"median_ms", "p90_ms", "min_ms"}`` of seconds ``times`` (p90: nearest rank)."""
    ordered = sorted(times)
    p90 = ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)]
    return {"median_ms": 1000 * statistics.median(ordered), "p90_ms": 1000 * p90,
            "min_ms": 1000 * ordered[0]}
