"""Feature Pyramid Network (Lin et al. 2017) on a bottom-up backbone: res2..res5 -> p2..p6.

Shape shorthand: ``N`` images, ``Ci`` channels of bottom-up map ``i``, ``F`` FPN channels,
``Hi, Wi`` a level's map size.

``p_l = 3x3 conv(lateral_l + upsample_nearest(top-down from p_{l+1}))`` with ``lateral_l`` a 1x1
conv of ``res_l`` (torchvision's ``FeaturePyramidNetwork``), and ``p6 = p5`` subsampled by 2
(``LastLevelMaxPool``, for the RPN only). Levels are named by ``log2(stride)``: a stride 4 map is
``p2``. Parameter names equal torchvision's ``BackboneWithFPN`` (``fpn.inner_blocks``,
``fpn.layer_blocks``) with ``bottom_up`` in place of ``body``.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from backbones.layers import adopt_conv2d

__all__ = ["FPN"]


class FPN(nn.Module):
    """Backbone + FPN: (N, 3, H, W) -> ``{"p2": (N, F, H/4, W/4), ..., "p6": (N, F, H/64, W/64)}``
    (for inputs whose sides are multiples of 64)."""

    def __init__(
        self, *, bottom_up: nn.Module, in_features: Sequence[str], out_channels: int = 256
    ) -> None:
        super().__init__()
        missing = [f for f in in_features if f not in bottom_up.out_channels]
        if missing:
            raise ValueError(
                f"FPN in_features {missing} are not produced by the backbone "
                f"(it gives {list(bottom_up.out_channels)})"
            )
        self.bottom_up = bottom_up
        self.in_features = list(in_features)
        in_strides = [int(bottom_up.strides[f]) for f in self.in_features]
        self.fpn = adopt_conv2d(FeaturePyramidNetwork(  # its convs: backbones.layers.Conv2d
            [int(bottom_up.out_channels[f]) for f in self.in_features], out_channels,
            extra_blocks=LastLevelMaxPool(),
        ))
        strides = in_strides + [in_strides[-1] * 2]
        self.out_features = [f"p{int(math.log2(s))}" for s in strides]
        self.out_channels = {f: out_channels for f in self.out_features}
        self.strides = dict(zip(self.out_features, strides))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        bottom = self.bottom_up(x)
        pyramid = self.fpn(OrderedDict((f, bottom[f]) for f in self.in_features))
        return dict(zip(self.out_features, pyramid.values()))
