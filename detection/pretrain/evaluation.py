"""Top-1 / top-5 error over a dataset, single-crop or 10-crop, on one or several processes.

:class:`ClassificationEvaluator` has the evaluators' interface (``reset / process / evaluate ->
dict in percent``): ``process(samples, scores)`` keeps, per sample index, the rank of the true
class among ``scores`` (``model.label_ranks``: ties count as errors); ``evaluate`` merges every
process's ranks and returns ``top1_err``, ``top5_err`` (the paper's numbers), ``top1``, ``top5``
(accuracies, ``top1`` picks ``best.pth``) and ``num_images``. A top-k error needs more than k
classes; it is left out otherwise.

With 10 crops the class probabilities (softmax) of the crops are averaged, as Krizhevsky et al.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .model import label_ranks
from ..engine.trainer import AMP_DTYPES
from ..evaluation.common import gather_by_image, on_main_process

__all__ = ["ClassificationEvaluator", "ClassificationInference", "classify_batch",
           "classify_dataset"]


class ClassificationEvaluator:
    """See the module docstring; ``topk``: the k of the reported errors."""

    def __init__(self, *, num_classes: int, topk: Sequence[int] = (1, 5)) -> None:
        self.topk = [k for k in topk if k < num_classes]
        self.num_classes = num_classes
        self.reset()

    def reset(self) -> None:
        self._ranks: dict[int, int] = {}

    def process(self, samples: Sequence[dict], scores: torch.Tensor) -> None:
        """``scores`` (N, K): any increasing function of the class probabilities."""
        if scores.shape != (len(samples), self.num_classes):
            raise ValueError(f"scores of shape {tuple(scores.shape)} for {len(samples)} samples "
                             f"and {self.num_classes} classes")
        labels = torch.stack([torch.as_tensor(s["label"]) for s in samples])
        ranks = label_ranks(scores.detach().cpu(), labels.cpu())
        self._ranks.update({int(s["index"]): int(r) for s, r in zip(samples, ranks)})

    def evaluate(self) -> dict[str, Any]:
        ranks = gather_by_image(self._ranks)
        if not ranks:
            raise RuntimeError("ClassificationEvaluator.evaluate: no image was processed")

        def compute() -> dict[str, Any]:
            r = np.fromiter(ranks.values(), dtype=np.int64)
            out: dict[str, Any] = {}
            for k in self.topk:
                out[f"top{k}_err"] = 100.0 * float((r >= k).mean())
                out[f"top{k}"] = 100.0 - out[f"top{k}_err"]
            return {**out, "num_images": float(len(r))}
        return on_main_process(compute)


@torch.no_grad()
def classify_batch(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``(N, K)`` class probabilities of ``images`` (N, 3, H, W), or of ``(N, C, 3, H, W)``
    crops per image (averaged over the crops)."""
    crops = images.shape[1] if images.dim() == 5 else 1
    logits = model(images.flatten(0, 1) if crops > 1 else images)  # (N*C, K)
    probs = logits.float().softmax(dim=1)
    return probs.view(-1, crops, probs.shape[1]).mean(dim=1)  # (N*C, K) -> (N, C, K) -> (N, K)


@torch.no_grad()
def classify_dataset(model: nn.Module, data_loader: Iterable[list[dict]],
                     evaluator: ClassificationEvaluator, *, device: torch.device,
                     amp: bool = False, amp_dtype: str = "bf16") -> dict[str, Any]:
    """Run ``model`` over this process's shard of ``data_loader`` and evaluate."""
    was_training = model.training
    model.eval()
    evaluator.reset()
    use_amp = amp and device.type == "cuda"
    for batch in data_loader:
        if not batch:  # every image of the batch was bad and skipped
            continue
        images = torch.stack([s["image"] for s in batch]).to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=AMP_DTYPES[amp_dtype], enabled=use_amp):
            scores = classify_batch(model, images)
        evaluator.process(batch, scores.cpu())
    model.train(was_training)
    return evaluator.evaluate()


class ClassificationInference:
    """``evaluate`` for the trainer: :func:`classify_dataset` over a test loader."""

    def __init__(self, *, data_loader: Iterable[list[dict]],
                 evaluator: ClassificationEvaluator, device: torch.device, amp: bool = False,
                 amp_dtype: str = "bf16") -> None:
        self.data_loader, self.evaluator, self.device = data_loader, evaluator, device
        self.amp, self.amp_dtype = amp, amp_dtype

    def __call__(self, model: nn.Module) -> dict[str, Any]:
        return classify_dataset(model, self.data_loader, self.evaluator, device=self.device,
                                amp=self.amp, amp_dtype=self.amp_dtype)
