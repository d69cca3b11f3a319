"""The mask head of Mask R-CNN (He et al., ICCV 2017): RoI features -> a mask per class.

Shape shorthand: ``R`` RoIs, ``C`` input channels, ``S`` pooled size, ``M = 2 S`` the mask size,
``K`` foreground classes, ``P`` predicted masks per RoI (``K + 1`` class-specific, channel ``k``
for label ``k`` and 0 unused, as torchvision lays them out; ``1`` class-agnostic).

Naming: ``mask_logits`` (R, P, M, M) before the sigmoid, ``gt_labels`` the class of each
foreground RoI, ``mask_targets`` (R, M, M) its ground-truth mask read inside the RoI
(``InstanceMasks.crop_and_resize``).

Layers (torchvision's ``MaskRCNNHeads`` + ``MaskRCNNPredictor`` names)::

    mask_fcn1 .. mask_fcnN   N x (3x3 conv, conv_dim channels, ReLU)       (R, C, S, S) -> ...
    conv5_mask               2x2 transposed conv, stride 2, ReLU            -> (R, conv_dim, M, M)
    mask_fcn_logits          1x1 conv                                       -> (R, P, M, M)

The FPN variant runs 4 convolutions on 14x14 RoIAlign features of its own (28x28 masks); the C4
variant none, on the 7x7 output maps of the box head's ``res5`` stage (14x14 masks), as
Detectron2's R50-C4. Loss, as torchvision's ``maskrcnn_loss`` and Detectron2's::

    loss_mask = mean over foreground RoIs and M x M cells of
                BCE(sigmoid(mask_logits[gt class]), mask_targets)

Inference: ``sigmoid`` of the channel of each detection's label -> (D, 1, M, M).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from backbones.layers import Conv2d

__all__ = ["MaskHead"]


class MaskHead(nn.Module):
    """(R, C, S, S) -> mask logits (R, P, 2S, 2S); owns ``loss_mask``."""

    def __init__(self, *, in_channels: int, num_classes: int, conv_dim: int = 256,
                 num_convs: int = 4, class_agnostic: bool = False) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes (foreground) must be >= 1, got {num_classes}")
        if num_convs < 0 or conv_dim < 1:
            raise ValueError(f"need num_convs >= 0 and conv_dim >= 1, got {num_convs}, "
                             f"{conv_dim}")
        self.num_classes = num_classes
        self.class_agnostic = class_agnostic
        channels = in_channels
        self.num_convs = num_convs
        for i in range(1, num_convs + 1):
            self.add_module(f"mask_fcn{i}", Conv2d(channels, conv_dim, kernel_size=3, padding=1))
            channels = conv_dim
        self.conv5_mask = nn.ConvTranspose2d(channels, conv_dim, kernel_size=2, stride=2)
        self.mask_fcn_logits = nn.Conv2d(conv_dim, 1 if class_agnostic else num_classes + 1,
                                         kernel_size=1)
        for i in range(1, num_convs + 1):  # Detectron2's c2_msra_fill, as torchvision
            self._msra_fill(getattr(self, f"mask_fcn{i}"))
        self._msra_fill(self.conv5_mask)
        nn.init.normal_(self.mask_fcn_logits.weight, std=0.001)
        nn.init.zeros_(self.mask_fcn_logits.bias)

    @staticmethod
    def _msra_fill(layer: nn.Module) -> None:
        nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(layer.bias)

    @property
    def num_masks(self) -> int:
        """``P``: masks predicted per RoI."""
        return self.mask_fcn_logits.out_channels

    def features(self, x: Tensor) -> Tensor:
        """(R, C, S, S) -> the upsampled maps (R, conv_dim, M, M) the predictor reads."""
        for i in range(1, self.num_convs + 1):
            x = F.relu(getattr(self, f"mask_fcn{i}")(x))  # (R, conv_dim, S, S)
        return F.relu(self.conv5_mask(x))  # (R, conv_dim, S, S) -> (R, conv_dim, 2S, 2S)

    def forward(self, x: Tensor) -> Tensor:
        return self.mask_fcn_logits(self.features(x))  # (R, P, M, M)

    def _of_class(self, mask_logits: Tensor, labels: Tensor) -> Tensor:
        """(R, P, M, M) -> the channel of each RoI's class (R, M, M)."""
        if self.class_agnostic:
            return mask_logits[:, 0]
        rows = torch.arange(labels.shape[0], device=labels.device)  # symbolic when traced
        return mask_logits[rows, labels]

    def losses(self, mask_logits: Tensor, gt_labels: Tensor, mask_targets: Tensor
               ) -> dict[str, Tensor]:
        """``loss_mask``: BCE of the ground-truth class's channel; exactly 0 (with the graph
        kept) without foreground RoIs."""
        if len(gt_labels) == 0:
            return {"loss_mask": mask_logits.sum() * 0.0}
        logits = self._of_class(mask_logits, gt_labels)
        return {"loss_mask": F.binary_cross_entropy_with_logits(
            logits, mask_targets.to(logits.dtype))}

    def probabilities(self, mask_logits: Tensor, labels: Tensor) -> Tensor:
        """(D, P, M, M) logits of detections labelled ``labels`` (D,) -> (D, 1, M, M)."""
        return self._of_class(mask_logits, labels).float().sigmoid()[:, None]
