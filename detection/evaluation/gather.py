"""What every evaluator does across processes: merge per-image results, compute once, share.

Each process evaluates its shard of the images (``InferenceSampler``); ``evaluate()`` is called
on every process. Both helpers degrade to the single-process answer without a process group.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from detection.engine import distributed as du

T = TypeVar("T")
R = TypeVar("R")

__all__ = ["gather_by_image", "on_main_process"]


def gather_by_image(local: dict[int, T]) -> dict[int, T]:
    """Every process's ``{image_id: result}`` merged, on every process (``all_gather_object``)."""
    if du.get_world_size() == 1:
        return local
    merged: dict[int, T] = {}
    for part in du.all_gather_object(local):
        merged.update(part)
    return merged


def on_main_process(compute: Callable[[], R]) -> R:
    """``compute()`` run on rank 0 only, its result broadcast to every process."""
    result = compute() if du.get_rank() == 0 else None
    return du.broadcast_object(result, src=0)
