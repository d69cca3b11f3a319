"""Box heads (pooled RoI features -> one vector per RoI) and the box predictor.

Shape shorthand: ``R`` RoIs, ``C`` channels, ``S`` pooled size, ``D`` head output size, ``K``
foreground classes.

- :class:`TwoFCHead` -- FPN's 2-FC head: flatten, fc6, ReLU, fc7, ReLU (``D = fc_dim``).
- :class:`Res5Head` -- the C4 design of He et al. 2016: the ResNet ``res5`` stage (taken from the
  backbone with ``split_head()``) on 14x14 pooled ``res4`` maps, then global average pooling
  (``D = 2048`` for ResNet-50/101/152).
- :class:`VGGFCHead` -- VGG-16's ``fc6``/``fc7`` (from ``split_head()``) on 7x7 RoIPool features,
  the Faster R-CNN paper's baseline (``D = 4096``).
- :class:`BoxPredictor` -- ``cls_score`` (K + 1 logits, 0 = background) and class-specific
  ``bbox_pred`` ((K + 1) * 4 deltas, class ``k`` at columns ``4k .. 4k + 3``: torchvision's layout).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["TwoFCHead", "Res5Head", "VGGFCHead", "BoxPredictor"]


class TwoFCHead(nn.Module):
    """(R, C, S, S) -> (R, fc_dim)."""

    def __init__(self, *, in_channels: int, resolution: int, fc_dim: int = 1024) -> None:
        super().__init__()
        self.fc6 = nn.Linear(in_channels * resolution * resolution, fc_dim)
        self.fc7 = nn.Linear(fc_dim, fc_dim)
        self.out_channels = fc_dim
        for fc in (self.fc6, self.fc7):  # Detectron2's c2_xavier_fill
            nn.init.kaiming_uniform_(fc.weight, a=1)
            nn.init.zeros_(fc.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)  # (R, C, S, S) -> (R, C*S*S)
        return F.relu(self.fc7(F.relu(self.fc6(x))))


class Res5Head(nn.Module):
    """(R, C4, 2h, 2w) -> res5 -> (R, C5, h, w) -> average pool -> (R, C5)."""

    def __init__(self, *, res5: nn.Module) -> None:
        super().__init__()
        if not hasattr(res5, "out_channels"):
            raise ValueError("the res5 module from backbone.split_head() must set out_channels")
        self.res5 = res5
        self.out_channels = int(res5.out_channels)

    def features(self, x: Tensor) -> Tensor:
        """(R, C4, 2h, 2w) -> the res5 maps (R, C5, h, w), before the pooling (the C4 mask
        head's input)."""
        x = x.contiguous(memory_format=torch.channels_last)  # faster convolutions (oneDNN)
        return self.res5(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x).mean(dim=(2, 3))


class VGGFCHead(nn.Module):
    """(R, 512, 7, 7) -> VGG-16 fc6/fc7 (flattening inside) -> (R, 4096)."""

    def __init__(self, *, fc: nn.Module) -> None:
        super().__init__()
        if not hasattr(fc, "out_channels"):
            raise ValueError("the fc module from backbone.split_head() must set out_channels")
        self.fc = fc
        self.out_channels = int(fc.out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x)


class BoxPredictor(nn.Module):
    """(R, D) -> class logits (R, K+1), class-specific deltas (R, (K+1)*4)."""

    def __init__(self, *, in_channels: int, num_classes: int) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes (foreground) must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.cls_score = nn.Linear(in_channels, num_classes + 1)
        self.bbox_pred = nn.Linear(in_channels, (num_classes + 1) * 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.cls_score(x), self.bbox_pred(x)
