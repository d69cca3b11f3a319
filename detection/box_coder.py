"""Box <-> delta transform of R-CNN (Girshick et al. 2014), with per-coordinate weights.

Shape shorthand: ``M`` boxes, ``C`` boxes predicted per reference box (``C = K + 1`` in the
class-specific box head, ``1`` in the RPN).

Naming: ``boxes`` are absolute ``(x1, y1, x2, y2)`` pixels, ``deltas`` the encoded offsets
``(t_x, t_y, t_w, t_h)``.

Given a reference box (anchor or proposal) with centre ``(x_a, y_a)`` and size ``(w_a, h_a)``, where
``w_a = x2 - x1`` and ``x_a = x1 + w_a / 2``, and a target box ``(x, y, w, h)`` defined the same
way, with weights ``(w_x, w_y, w_w, w_h)``::

    t_x = w_x * (x - x_a) / w_a        t_y = w_y * (y - y_a) / h_a
    t_w = w_w * log(w / w_a)           t_h = w_h * log(h / h_a)

and decoding inverts it, clamping ``t_w / w_w`` and ``t_h / w_h`` at ``log(1000 / 16)`` so that
``exp`` never overflows (a box at most 62.5 times its reference)::

    x = t_x / w_x * w_a + x_a          w = exp(min(t_w / w_w, clip)) * w_a
    x1 = x - w / 2                     x2 = x + w / 2          (the same for y, h)

The arithmetic follows torchvision's ``BoxCoder`` operation for operation, so a converted
torchvision model gives the same numbers.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["BoxCoder"]

DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


class BoxCoder:
    """Encode target boxes as deltas relative to reference boxes, and decode them back."""

    def __init__(
        self,
        *,
        weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
        scale_clamp: float = DEFAULT_SCALE_CLAMP,
    ) -> None:
        if len(weights) != 4:
            raise ValueError(f"box coder weights must be 4 numbers (x, y, w, h), got {weights}")
        self.weights = tuple(float(w) for w in weights)
        self.scale_clamp = float(scale_clamp)

    def encode(self, gt_boxes: Tensor, boxes: Tensor) -> Tensor:
        """Deltas that move ``boxes`` (M, 4) onto ``gt_boxes`` (M, 4); returns (M, 4)."""
        wx, wy, ww, wh = self.weights
        widths = boxes[:, 2] - boxes[:, 0]
        heights = boxes[:, 3] - boxes[:, 1]
        ctr_x = boxes[:, 0] + 0.5 * widths
        ctr_y = boxes[:, 1] + 0.5 * heights

        gt_widths = gt_boxes[:, 2] - gt_boxes[:, 0]
        gt_heights = gt_boxes[:, 3] - gt_boxes[:, 1]
        gt_ctr_x = gt_boxes[:, 0] + 0.5 * gt_widths
        gt_ctr_y = gt_boxes[:, 1] + 0.5 * gt_heights

        dx = wx * (gt_ctr_x - ctr_x) / widths
        dy = wy * (gt_ctr_y - ctr_y) / heights
        dw = ww * torch.log(gt_widths / widths)
        dh = wh * torch.log(gt_heights / heights)
        return torch.stack((dx, dy, dw, dh), dim=1)

    def decode(self, deltas: Tensor, boxes: Tensor) -> Tensor:
        """Apply ``deltas`` (M, C*4) to ``boxes`` (M, 4); returns boxes (M, C*4) in at least
        float32 (deltas of a bf16/fp16 head would put pixel coordinates on a coarse grid)."""
        dtype = torch.promote_types(torch.promote_types(deltas.dtype, boxes.dtype), torch.float32)
        deltas, boxes = deltas.to(dtype), boxes.to(dtype)
        widths = boxes[:, 2:3] - boxes[:, 0:1]  # (M, 1)
        heights = boxes[:, 3:4] - boxes[:, 1:2]
        ctr_x = boxes[:, 0:1] + 0.5 * widths
        ctr_y = boxes[:, 1:2] + 0.5 * heights

        wx, wy, ww, wh = self.weights
        dx = deltas[:, 0::4] / wx  # (M, C)
        dy = deltas[:, 1::4] / wy
        dw = (deltas[:, 2::4] / ww).clamp(max=self.scale_clamp)
        dh = (deltas[:, 3::4] / wh).clamp(max=self.scale_clamp)

        pred_ctr_x = dx * widths + ctr_x
        pred_ctr_y = dy * heights + ctr_y
        half_w = 0.5 * (torch.exp(dw) * widths)
        half_h = 0.5 * (torch.exp(dh) * heights)
        pred = torch.stack(
            (pred_ctr_x - half_w, pred_ctr_y - half_h, pred_ctr_x + half_w, pred_ctr_y + half_h),
            dim=2,
        )  # (M, C, 4)
        return pred.flatten(1)  # (M, C, 4) -> (M, C*4)
