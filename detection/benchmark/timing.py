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

    Returns per name ``{"times": [s, ...], "peak_mb": MB | None}``; ``peak_mb`` is the peak
    allocated CUDA memory over its calls (``None`` on the CPU, where one process cannot tell
    two models' memory apart).
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    out = {name: {"times": [], "peak_mb": 0.0 if device.type == "cuda" else None}
           for name in names}
    for i in range(iters):
        for name in (names if i % 2 == 0 else names[::-1]):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            _sync(device)
            start = time.perf_counter()
            fns[name]()
            _sync(device)
            out[name]["times"].append(time.perf_counter() - start)
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
