"""What every evaluator shares: the interface over per-image results, the cross-process steps.

Each process evaluates its shard of the images (``InferenceSampler``) and ``evaluate()`` is
called on every process: per-image results are merged on every process
(:func:`gather_by_image`), the metric is computed once (:func:`on_main_process`) and shared.
Both degrade to the single-process answer without a process group.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import torch

from detection.engine import distributed as du

T = TypeVar("T")
R = TypeVar("R")

__all__ = ["PerImageEvaluator", "gather_by_image", "on_main_process"]


class PerImageEvaluator:
    """The evaluator interface (``reset / process / evaluate -> dict``) over per-image arrays.

    ``process`` keeps, per image id, the array a subclass's ``_rows(boxes, scores, labels)``
    makes of the model's output (boxes (n, 4) xyxy float64 in original pixels, scores (n,)
    float64, labels (n,) int64 in ``1..K``, checked); ``evaluate`` gathers them from every
    process and returns ``_evaluate(predictions)``, computed on rank 0, on every rank.

    Args:
        classes: ``[{"id", "name"}, ...]`` ordered by label.
        output_dir: where a subclass writes its results files (rank 0); ``None``: not written.
        verbose: print a summary.
    """

    def __init__(self, *, classes: Sequence[dict], output_dir: str | os.PathLike | None,
                 verbose: bool) -> None:
        self.classes = [{"id": int(c["id"]), "name": str(c["name"])} for c in classes]
        self.output_dir = None if output_dir is None else os.fspath(output_dir)
        self.verbose = verbose
        self.reset()

    def reset(self) -> None:
        """Forget everything processed so far."""
        self._predictions: dict[int, np.ndarray] = {}

    def process(self, samples: Sequence[dict], outputs: Sequence[dict]) -> None:
        """Record one batch: ``samples`` give ``image_id``; ``outputs`` hold ``boxes`` (n, 4)
        xyxy in original pixels, ``scores`` (n,), ``labels`` (n,) in ``1..K``."""
        if len(samples) != len(outputs):
            raise ValueError(f"{len(samples)} samples but {len(outputs)} outputs")
        num_classes = len(self.classes)
        for sample, output in zip(samples, outputs):
            labels = output["labels"].detach().cpu().long()
            if len(labels) and not (1 <= int(labels.min()) and int(labels.max()) <= num_classes):
                raise ValueError(f"image id {sample['image_id']}: labels must be in "
                                 f"1..{num_classes}, got {labels.unique().tolist()}")
            rows = self._rows(output["boxes"].detach().to("cpu", torch.float64),
                              output["scores"].detach().to("cpu", torch.float64), labels)
            self._predictions[int(sample["image_id"])] = rows.numpy()

    def evaluate(self) -> dict[str, Any]:
        """Gather every process's images, compute on rank 0; the same dict on every rank."""
        predictions = gather_by_image(self._predictions)
        if not predictions:  # the same on every rank: all raise, none waits
            raise RuntimeError(f"{type(self).__name__}.evaluate: no image was processed")
        return on_main_process(lambda: self._evaluate(predictions))

    def _rows(self, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor
              ) -> torch.Tensor:
        raise NotImplementedError

    def _evaluate(self, predictions: dict[int, np.ndarray]) -> dict[str, Any]:
        raise NotImplementedError


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
