"""Balanced sampling of positive and negative training examples (anchors or proposals).

Shape shorthand: ``N`` images, ``M`` candidates per image (padded with ``-1`` where images have
fewer).

Per image, from labels ``>= 1`` (positive), ``0`` (negative) and ``-1`` (ignored), draw uniformly
without replacement::

    num_pos = min(#positives, floor(batch_size_per_image * positive_fraction))
    num_neg = min(#negatives, batch_size_per_image - num_pos)

so a shortage of positives is filled with negatives (torchvision's and Detectron2's rule). All
images are sampled at once: a uniform random key per candidate, then the ``num_pos`` (``num_neg``)
largest keys among the positives (negatives) of each image.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["BalancedSampler"]


class BalancedSampler:
    """Pick at most ``batch_size_per_image`` candidates per image, a fixed fraction positive."""

    def __init__(self, *, batch_size_per_image: int, positive_fraction: float) -> None:
        if batch_size_per_image < 1:
            raise ValueError(f"batch_size_per_image must be >= 1, got {batch_size_per_image}")
        if not 0.0 <= positive_fraction <= 1.0:
            raise ValueError(f"positive_fraction must be in [0, 1], got {positive_fraction}")
        self.batch_size_per_image = int(batch_size_per_image)
        self.positive_fraction = float(positive_fraction)

    def __call__(self, labels: Tensor) -> tuple[Tensor, Tensor]:
        """``labels`` (N, M) -> boolean masks ``(positive, negative)``, each (N, M)."""
        if labels.dim() != 2:
            raise ValueError(f"sampler expects (N, M) labels, got shape {tuple(labels.shape)}")
        positive = labels >= 1
        negative = labels == 0
        max_pos = int(self.batch_size_per_image * self.positive_fraction)
        num_pos = positive.sum(dim=1).clamp(max=max_pos)  # (N,)
        num_neg = negative.sum(dim=1).clamp(max=self.batch_size_per_image - num_pos)  # (N,)
        keys = torch.rand(labels.shape, device=labels.device)
        return _take_largest(keys, positive, num_pos), _take_largest(keys, negative, num_neg)


def _take_largest(keys: Tensor, candidates: Tensor, count: Tensor) -> Tensor:
    """Mask of the ``count[i]`` candidates with the largest ``keys`` in row ``i``."""
    mask = torch.zeros_like(candidates)
    k = int(count.max()) if count.numel() else 0
    if k == 0:
        return mask
    masked_keys = torch.where(candidates, keys, torch.full_like(keys, -1.0))
    top_idx = masked_keys.topk(k, dim=1, sorted=True).indices  # (N, k), largest first
    take = torch.arange(k, device=keys.device)[None, :] < count[:, None]  # (N, k)
    mask.scatter_(1, top_idx, take)
    return mask
