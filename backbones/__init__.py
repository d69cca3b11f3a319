"""Backbones: ResNet-18..152 and their plain counterparts (He et al. 2016), the paper's CIFAR-10
nets (6n+2 layers), VGG-16 (Faster R-CNN).

`build_backbone(name, ...)` is the one entry point; `BACKBONES` maps each name to its builder.
Every backbone has `forward(x) -> dict[str, Tensor]` (only `out_features`), `out_features`,
`out_channels: dict`, `strides: dict` and `split_head()` (see docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import os
from functools import partial
from typing import Callable

from torch import nn

from backbones.cifar_resnet import CIFAR_DEPTHS, CifarResNet, build_cifar_resnet
from backbones.resnet import RESNET_SPECS, ResNet, build_resnet
from backbones.vgg import VGG16, build_vgg16
from backbones.weights import WeightsError

__all__ = ["BACKBONES", "CifarResNet", "ResNet", "VGG16", "WeightsError", "build_backbone"]

BACKBONES: dict[str, Callable[..., nn.Module]] = {
    **{f"resnet{d}": partial(build_resnet, depth=d, residual=True) for d in RESNET_SPECS},
    **{f"plain{d}": partial(build_resnet, depth=d, residual=False) for d in RESNET_SPECS},
    "vgg16": build_vgg16,
    **{f"cifar_resnet{d}": partial(build_cifar_resnet, depth=d, residual=True)
       for d in CIFAR_DEPTHS},
    **{f"cifar_plain{d}": partial(build_cifar_resnet, depth=d, residual=False)
       for d in CIFAR_DEPTHS},
}


def build_backbone(name: str, *, weights: str | os.PathLike | None = None, norm: str = "FrozenBN",
                   freeze_at: int = 2, out_features: list[str] | None = None,
                   **options) -> nn.Module:
    """Build the backbone `name` (`resnet18..152`, `plain18..152`, `vgg16`, the CIFAR nets
    `cifar_resnet20..1202` and `cifar_plain20..1202`).

    weights: None, "imagenet" (torchvision IMAGENET1K_V1), "imagenet_v2" (IMAGENET1K_V2,
        ResNet-50/101/152) or a checkpoint path; see `backbones.weights`.
    norm: "FrozenBN" | "BN" | "GN" | "SyncBN" (ResNet; VGG-16 has no norm layers).
    freeze_at: 0 nothing, 1 the stem (VGG: conv1), k the stem and res2..res(k) (VGG: conv1..k).
    out_features: ResNet `res2..res5` (default all), VGG `conv1..conv5` (default conv5).
    options: ResNet `shortcut` ("A" | "B" | "C"), `stride_in_1x1`, `norm_eps`; CIFAR nets
        `shortcut`; VGG `head_dropout`.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid names: {', '.join(BACKBONES)}")
    return BACKBONES[name](weights=weights, norm=norm, freeze_at=freeze_at,
                           out_features=out_features, **options)
