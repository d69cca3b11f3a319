"""The paper's CIFAR-10 networks (He et al. 2016, Section 4.2): 6n+2 layers on 32x32 images.

Shape shorthand: `N` images, `R` RoIs, `H, W` the input size (32x32 on CIFAR-10). A 3x3 conv
with 16 filters (no max-pool), then three stages of `n` basic blocks (two 3x3 convs each) with
16, 32 and 64 filters on maps of 32, 16 and 8 pixels; the classifier (global average pool,
10-way fc) is `detection.pretrain`'s. Stages are named as the ImageNet ResNets' (the stem
is conv1, the first stage res2):

    x     (N, 3, H, W)
    res2  (N, 16, H, W)      res3 (N, 32, H/2, W/2)      res4 (N, 64, H/4, W/4)
    split_head(): res4 on pooled res3 maps, (R, 32, h, w) -> (R, 64, h/2, w/2)

Depths 6n+2: 20, 32, 44, 56, 110, 1202 (n = 3, 5, 7, 9, 18, 200); `residual=False` gives the
paper's plain nets. Shortcuts: "A" (the paper's choice here; the identity, subsampled and
zero-padded where the shape changes, `resnet.PadIdentity`), so a ResNet has exactly the
parameters of its plain net; "B" / "C" work as in `backbones.resnet`.

Parameters by hand (3x3 conv without bias: 9 * c_in * c_out; a norm: 2c; the fc: 64 * 10 + 10):

    conv1 9*3*16 + 2*16                                        = 464
    res2  n * (2*9*16*16 + 4*16)                               = 4672 n
    res3  (9*16*32 + 9*32*32 + 4*32) + (n - 1) (2*9*32*32 + 4*32) = 13952 + 18560 (n - 1)
    res4  (9*32*64 + 9*64*64 + 4*64) + (n - 1) (2*9*64*64 + 4*64) = 55552 + 73984 (n - 1)

ResNet-20 (n = 3): 464 + 14016 + 51072 + 203520 = 269072, with the fc 269722: the paper's 0.27M;
ResNet-32/44/56/110: 464154, 658586, 853018, 1727962 with the fc (0.46M, 0.66M, 0.85M, 1.7M).
"""

from __future__ import annotations

from torch import Tensor, nn

from backbones.resnet import (NORMS, SHORTCUTS, BasicBlock, Stage, StemAndStages,
                              check_out_features, make_norm)
from backbones.weights import load_backbone_weights

__all__ = ["CIFAR_DEPTHS", "CifarResNet", "build_cifar_resnet"]

CIFAR_DEPTHS = (20, 32, 44, 56, 110, 1202)
STAGE_NAMES = ("res2", "res3", "res4")
LAYER_NAMES = ("layer1", "layer2", "layer3")
WIDTHS = (16, 32, 64)


class CifarResNet(StemAndStages):
    """A 6n+2-layer CIFAR ResNet (or plain net) returning `{"res2", "res3", "res4"}` limited to
    `out_features`. `freeze_at`: 0 nothing, 1 the stem, k >= 2 the stem and res2..res(k)."""

    def __init__(self, *, depth: int, residual: bool = True, shortcut: str | None = None,
                 norm: str = "BN", freeze_at: int = 0,
                 out_features: list[str] | None = None) -> None:
        super().__init__()
        if (depth - 2) % 6 or depth < 8:
            raise ValueError(f"a CIFAR ResNet has 6n+2 layers (20, 32, 44, 56, 110, ...), "
                             f"got depth {depth}")
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")
        if not residual and shortcut is not None:
            raise ValueError(f"a plain net has no shortcuts; got shortcut={shortcut!r}")
        if shortcut is not None and shortcut not in SHORTCUTS:
            raise ValueError(f"unknown shortcut {shortcut!r}; valid: {', '.join(SHORTCUTS)}")
        if not 0 <= freeze_at <= 4:
            raise ValueError(f"freeze_at must be in 0..4 (0 nothing, 1 stem, k res2..resk), "
                             f"got {freeze_at}")
        if residual and shortcut is None:
            shortcut = "A"
        self.depth, self.residual, self.shortcut, self.norm = depth, residual, shortcut, norm
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = make_norm(norm, 16)
        self.relu = nn.ReLU(inplace=True)
        in_channels = 16
        for i, width in enumerate(WIDTHS):
            stage = Stage(*[
                BasicBlock(in_channels=in_channels if b == 0 else width, width=width,
                           stride=2 if i > 0 and b == 0 else 1, norm=norm, shortcut=shortcut,
                           residual=residual)
                for b in range(n)])
            self.add_module(LAYER_NAMES[i], stage)
            in_channels = width
        for m in self.modules():  # He et al. 2015 initialisation, as the paper
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        self.out_features = check_out_features(out_features, STAGE_NAMES)
        self.out_channels = {f: WIDTHS[STAGE_NAMES.index(f)] for f in self.out_features}
        self.strides = {f: 2 ** STAGE_NAMES.index(f) for f in self.out_features}
        self._num_stages = STAGE_NAMES.index(self.out_features[-1]) + 1
        self._freeze(freeze_at, LAYER_NAMES)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"CifarResNet expects images (N, 3, H, W), got {tuple(x.shape)}")
        x = self.relu(self.bn1(self.conv1(x)))  # (N, 16, H, W)
        outputs: dict[str, Tensor] = {}
        for name, layer in zip(STAGE_NAMES[: self._num_stages], LAYER_NAMES):
            x = getattr(self, layer)(x)
            if name in self.out_channels:
                outputs[name] = x
        return outputs

    def split_head(self) -> Stage:
        """Remove res4 (`layer3`) and return it: (R, 32, h, w) -> (R, 64, h/2, w/2)."""
        if "res4" in self.out_features:
            raise ValueError("split_head() removes res4, but res4 is in out_features "
                             f"{self.out_features}; build with out_features=['res3']")
        head = self.layer3
        if head is None:
            raise RuntimeError("split_head() was already called: layer3 is gone")
        self.layer3 = None
        head.out_channels = WIDTHS[-1]
        return head


def build_cifar_resnet(*, depth: int, residual: bool = True, weights: str | None = None,
                       norm: str = "BN", freeze_at: int = 0,
                       out_features: list[str] | None = None,
                       shortcut: str | None = None) -> CifarResNet:
    """Build a CIFAR ResNet (or plain net) and load `weights` (None or a checkpoint path, e.g.
    the `backbone.pth` of a `tools/pretrain.py` run; its classifier `fc.` is ignored)."""
    model = CifarResNet(depth=depth, residual=residual, shortcut=shortcut, norm=norm,
                        freeze_at=freeze_at, out_features=out_features)
    if weights is not None:
        kind = "resnet" if residual else "plain"
        load_backbone_weights(model, weights, arch=f"cifar_{kind}{depth}",
                              ignore_prefixes=("fc.",))
    return model
