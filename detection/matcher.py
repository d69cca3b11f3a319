"""Assign each predicted box (anchor or proposal) to at most one ground-truth box by IoU.

Shape shorthand: ``G`` ground-truth boxes, ``M`` predicted boxes.

Given the IoU matrix ``iou`` (G, M), prediction ``j`` is matched to ``g* = argmax_g iou[g, j]``
and labelled::

    g*                    if iou[g*, j] >= high_threshold
    BETWEEN_THRESHOLDS    if low_threshold <= iou[g*, j] < high_threshold     (-2, ignored)
    BELOW_LOW_THRESHOLD   if iou[g*, j] < low_threshold                       (-1, background)

With ``allow_low_quality_matches`` (the RPN), every prediction that attains some ground truth's
highest IoU (ties included) gets its ``g*`` back even below ``high_threshold``, so that each
ground-truth box has at least one positive anchor (Faster R-CNN, section 3.1.2). As in
torchvision's ``Matcher``, such a prediction keeps its own ``argmax`` ground truth, which need not
be the one whose maximum it attains.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["Matcher"]


class Matcher:
    """IoU matcher with two thresholds; labels are ``>= 0`` (a gt index), ``-1`` or ``-2``."""

    BELOW_LOW_THRESHOLD = -1
    BETWEEN_THRESHOLDS = -2

    def __init__(
        self, *, high_threshold: float, low_threshold: float, allow_low_quality_matches: bool
    ) -> None:
        if not 0.0 <= low_threshold <= high_threshold <= 1.0:
            raise ValueError(
                f"matcher thresholds need 0 <= low ({low_threshold}) <= high "
                f"({high_threshold}) <= 1"
            )
        self.high_threshold = float(high_threshold)
        self.low_threshold = float(low_threshold)
        self.allow_low_quality_matches = bool(allow_low_quality_matches)

    def __call__(self, iou: Tensor) -> Tensor:
        """``iou`` (G, M) -> matched gt index or negative label per prediction, int64 (M,).

        With no ground truth (``G == 0``) every prediction is background (-1).
        """
        if iou.dim() != 2:
            raise ValueError(f"matcher expects a (G, M) IoU matrix, got shape {tuple(iou.shape)}")
        num_gt, num_pred = iou.shape
        if num_gt == 0 or num_pred == 0:
            return torch.full(
                (num_pred,), self.BELOW_LOW_THRESHOLD, dtype=torch.int64, device=iou.device
            )

        matched_vals, matches = iou.max(dim=0)  # (M,), (M,)
        all_matches = matches.clone() if self.allow_low_quality_matches else None

        matches[matched_vals < self.low_threshold] = self.BELOW_LOW_THRESHOLD
        between = (matched_vals >= self.low_threshold) & (matched_vals < self.high_threshold)
        matches[between] = self.BETWEEN_THRESHOLDS

        if all_matches is not None:
            # predictions that reach some ground truth's best IoU, ties included
            best_per_gt = iou.max(dim=1).values  # (G,)
            pred_inds = torch.nonzero(iou == best_per_gt[:, None])[:, 1]
            matches[pred_inds] = all_matches[pred_inds]
        return matches
