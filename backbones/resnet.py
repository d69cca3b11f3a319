"""ResNet-18/34/50/101/152 and their plain counterparts (He et al. 2016, "Deep Residual Learning").

Shape shorthand: `N` images, `R` RoIs, `H, W` the input size. The stem (conv1 7x7/2 + max-pool
3x3/2) gives stride 4; `res2..res5` (torchvision's `layer1..layer4`) have strides 4, 8, 16, 32 and
`C` channels: 64/128/256/512 (basic blocks, ResNet-18/34) or 256/512/1024/2048 (bottleneck).

    x     (N, 3, H, W)
    res2  (N, C2, H/4, W/4)      res3 (N, C3, H/8, W/8)
    res4  (N, C4, H/16, W/16)    res5 (N, C5, H/32, W/32)
    split_head(): res5 stage on pooled res4 maps, (R, C4, 14, 14) -> (R, C5, 7, 7)

Shortcut options (the paper's Table 3) and what they cost, computed by hand
(a conv without bias has k*k*c_in*c_out weights; a norm layer has 2*c: gamma and beta).
A projection shortcut is a 1x1 conv + norm: c_in*c_out + 2*c_out parameters.

* "A": parameter-free. Where the shape changes the identity is subsampled `x[:, :, ::2, ::2]`
  and zero-padded with extra channels.
* "B" (default, = torchvision): a projection only where the shape changes, i.e. the first block
  of a stage whose stride is 2 or whose input channels differ from its output channels.
  ResNet-18/34: res3, res4, res5 each start with one projection:
      (64*128 + 2*128) + (128*256 + 2*256) + (256*512 + 2*512) = 8448 + 33280 + 132096 = 173824.
  ResNet-50/101/152: res2 too (64 -> 256, stride 1):
      (64*256 + 512) + (256*512 + 1024) + (512*1024 + 2048) + (1024*2048 + 4096)
      = 16896 + 132096 + 526336 + 2101248 = 2776576.
* "C": a projection on every block. Beyond "B", each block that had an identity shortcut gets
  a c*c + 2c projection (c = the block's output channels):
  c = 64: 64*64 + 128 = 4224;  128: 16640;  256: 66048;  512: 263168;  1024: 1050624;
  2048: 2048*2048 + 4096 = 4198400.  Identity blocks per stage (res2..res5) under "B":
  ResNet-18 (2, 1, 1, 1), ResNet-34 (3, 3, 5, 2), ResNet-50 (2, 3, 5, 2) (its res2 starts with
  a projection 64 -> 256), so "C" adds
      ResNet-18: 2*4224 + 1*16640 + 1*66048 + 1*263168          = 354304
      ResNet-34: 3*4224 + 3*16640 + 5*66048 + 2*263168          = 919168
      ResNet-50: 2*66048 + 3*263168 + 5*1050624 + 2*4198400     = 14571520
* residual=False (plain net): no shortcuts at all, so the same count as "A".

Totals without the fc layer (conv + norm gamma/beta; torchvision's count for "B"):
      ResNet-18:  A = plain = 11176512 - 173824 = 11002688,  B = 11176512,  C = 11530816
      ResNet-34:  A = plain = 21284672 - 173824 = 21110848,  B = 21284672,  C = 22203840
      ResNet-50:  A = plain = 23508032 - 2776576 = 20731456, B = 23508032,  C = 38079552
where ResNet-18 "B" itself is, stage by stage:
      stem 7*7*3*64 + 2*64 = 9536;  res2 2*(2*(9*64*64) + 2*2*64) = 147968;
      res3 (9*64*128 + 9*128*128 + 4*128) + 8448 + (2*9*128*128 + 4*128) = 525568;
      res4 (9*128*256 + 9*256*256 + 4*256) + 33280 + (2*9*256*256 + 4*256) = 2099712;
      res5 (9*256*512 + 9*512*512 + 4*512) + 132096 + (2*9*512*512 + 4*512) = 8393728;
      total 9536 + 147968 + 525568 + 2099712 + 8393728 = 11176512.
Note that with norm="FrozenBN" gamma/beta are buffers, not parameters.
A FrozenBN is folded into the convolution before it on every call (`backbones.layers.conv_norm`:
the activations are never rescaled; parameters, buffers and state_dict stay unfolded).

`stride_in_1x1=True` puts a bottleneck's stride in its first 1x1 conv (the original MSRA models)
instead of the 3x3 conv (torchvision, "ResNet v1.5"); the parameters are the same.
`norm_eps` is the eps of every norm layer, `y = (x - mean) / sqrt(var + eps) * w + b`: 1e-5 by
default; torchvision's published COCO detectors need 0 (their builders call `overwrite_eps`).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d

from backbones.layers import Conv2d, conv_norm
from backbones.weights import IMAGENET_WEIGHTS, load_backbone_weights

__all__ = ["NORMS", "RESNET_SPECS", "BasicBlock", "Bottleneck", "PadIdentity", "ResNet",
           "Stage", "StemAndStages", "build_resnet", "make_norm"]

NORMS = ("FrozenBN", "BN", "GN", "SyncBN")
SHORTCUTS = ("A", "B", "C")
STAGE_NAMES = ("res2", "res3", "res4", "res5")
LAYER_NAMES = ("layer1", "layer2", "layer3", "layer4")  # torchvision's names for res2..res5
# depth -> (block type, blocks per stage), the paper's Table 1
RESNET_SPECS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


def make_norm(norm: str, channels: int) -> nn.Module:
    """The normalisation layer named `norm` for `channels` channels (GN uses 32 groups)."""
    if norm == "FrozenBN":
        return FrozenBatchNorm2d(channels)
    if norm == "BN":
        return nn.BatchNorm2d(channels)
    if norm == "GN":
        return nn.GroupNorm(32, channels)
    if norm == "SyncBN":
        return nn.SyncBatchNorm(channels)
    raise ValueError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")


class PadIdentity(nn.Module):
    """Option A shortcut: `x[:, :, ::s, ::s]` zero-padded from C_in to C_out channels."""

    def __init__(self, *, stride: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.stride = stride
        self.pad = out_channels - in_channels

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        # (N, C_in, H, W) -> (N, C_in + pad, H, W), new channels all zero
        return F.pad(x, (0, 0, 0, 0, 0, self.pad))


def _make_shortcut(
    shortcut: str | None, *, in_channels: int, out_channels: int, stride: int, norm: str
) -> nn.Module | None:
    """`None` means the identity (or no shortcut at all in a plain block)."""
    changes_shape = stride != 1 or in_channels != out_channels
    if shortcut == "C" or (shortcut == "B" and changes_shape):
        conv = Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
        return nn.Sequential(conv, make_norm(norm, out_channels))
    if shortcut == "A" and changes_shape:
        return PadIdentity(stride=stride, in_channels=in_channels, out_channels=out_channels)
    return None


def _shortcut(x: Tensor, downsample: nn.Module | None) -> Tensor:
    if isinstance(downsample, nn.Sequential):  # projection: conv + norm
        return conv_norm(x, downsample[0], downsample[1])
    return x if downsample is None else downsample(x)


class BasicBlock(nn.Module):
    """Two 3x3 convs: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))."""

    expansion = 1

    def __init__(self, *, in_channels: int, width: int, stride: int, norm: str,
                 shortcut: str | None, residual: bool, stride_in_1x1: bool = False) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = Conv2d(in_channels, width, 3, stride=stride, padding=1, bias=False)
        self.bn1 = make_norm(norm, width)
        self.conv2 = Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = make_norm(norm, width)
        self.residual = residual
        self.downsample = _make_shortcut(shortcut, in_channels=in_channels,
                                         out_channels=out_channels, stride=stride, norm=norm)

    def forward(self, x: Tensor) -> Tensor:
        out = conv_norm(x, self.conv1, self.bn1, relu=True)
        shortcut = _shortcut(x, self.downsample) if self.residual else None
        return conv_norm(out, self.conv2, self.bn2, relu=True, residual=shortcut)


class Bottleneck(nn.Module):
    """1x1 (reduce) -> 3x3 -> 1x1 (expand x4), plus the shortcut; stride in the 3x3 by default."""

    expansion = 4

    def __init__(self, *, in_channels: int, width: int, stride: int, norm: str,
                 shortcut: str | None, residual: bool, stride_in_1x1: bool = False) -> None:
        super().__init__()
        out_channels = width * self.expansion
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = Conv2d(in_channels, width, 1, stride=stride_1x1, bias=False)
        self.bn1 = make_norm(norm, width)
        self.conv2 = Conv2d(width, width, 3, stride=stride_3x3, padding=1, bias=False)
        self.bn2 = make_norm(norm, width)
        self.conv3 = Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = make_norm(norm, out_channels)
        self.residual = residual
        self.downsample = _make_shortcut(shortcut, in_channels=in_channels,
                                         out_channels=out_channels, stride=stride, norm=norm)

    def forward(self, x: Tensor) -> Tensor:
        out = conv_norm(x, self.conv1, self.bn1, relu=True)
        out = conv_norm(out, self.conv2, self.bn2, relu=True)
        shortcut = _shortcut(x, self.downsample) if self.residual else None
        return conv_norm(out, self.conv3, self.bn3, relu=True, residual=shortcut)


class Stage(nn.Sequential):
    """A sequence of blocks (`layer1..4`). When `frozen`, it stays in eval mode under `train()`,
    so its BN statistics never update, wherever the module goes (e.g. into a C4 RoI head)."""

    frozen: bool = False

    def freeze(self) -> None:
        self.frozen = True
        for p in self.parameters():
            p.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> Stage:
        return super().train(mode and not self.frozen)


class StemAndStages(nn.Module):
    """What every ResNet here shares: a stem (`conv1`, `bn1`) and stages (`Stage`s named in
    `layer_names`), frozen up to `freeze_at` (0 nothing, 1 the stem, k >= 2 the stem and the
    first k - 1 stages); frozen parts have requires_grad=False and stay in eval mode."""

    freeze_at: int = 0

    def _freeze(self, freeze_at: int, layer_names: tuple[str, ...]) -> None:
        self.freeze_at = freeze_at
        if freeze_at >= 1:
            for p in [*self.conv1.parameters(), *self.bn1.parameters()]:
                p.requires_grad_(False)
        for i, layer in enumerate(layer_names):
            if freeze_at >= i + 2:
                getattr(self, layer).freeze()
        self.train(self.training)

    def train(self, mode: bool = True) -> StemAndStages:
        super().train(mode)
        if self.freeze_at >= 1:
            self.bn1.train(False)  # the frozen stem's statistics never update
        return self


class ResNet(StemAndStages):
    """ResNet backbone returning `{"res2": ..., "res5": ...}` limited to `out_features`.

    Parameter names equal torchvision's (`conv1`, `bn1`, `layer1..4`, `.downsample.0/.1`), so its
    ImageNet state_dicts load directly (without `fc`). `freeze_at`: 0 nothing frozen, 1 the stem,
    k >= 2 the stem and res2..res(k); frozen parts have requires_grad=False and stay in eval mode.
    """

    def __init__(self, *, depth: int, residual: bool = True, shortcut: str | None = None,
                 stride_in_1x1: bool = False, norm: str = "FrozenBN", freeze_at: int = 2,
                 out_features: list[str] | None = None, norm_eps: float = 1e-5) -> None:
        super().__init__()
        block_kind, blocks = _check_options(depth, residual, shortcut, stride_in_1x1, norm,
                                            freeze_at)
        block_type = Bottleneck if block_kind == "bottleneck" else BasicBlock
        if residual and shortcut is None:
            shortcut = "B"
        self.depth, self.residual, self.shortcut = depth, residual, shortcut
        self.stride_in_1x1, self.norm = stride_in_1x1, norm

        self.conv1 = Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = make_norm(norm, 64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_channels, stage_channels, stage_strides = 64, {}, {}
        for i, (name, num_blocks) in enumerate(zip(STAGE_NAMES, blocks)):
            width, stride = 64 * 2**i, 1 if i == 0 else 2
            stage = Stage(*[
                block_type(in_channels=in_channels if b == 0 else width * block_type.expansion,
                           width=width, stride=stride if b == 0 else 1, norm=norm,
                           shortcut=shortcut, residual=residual, stride_in_1x1=stride_in_1x1)
                for b in range(num_blocks)
            ])
            self.add_module(LAYER_NAMES[i], stage)
            in_channels = width * block_type.expansion
            stage_channels[name], stage_strides[name] = in_channels, 4 * 2**i
        self.stage_channels = stage_channels
        self._init_weights()
        for m in self.modules():  # `norm_eps` in every norm layer (1e-5 is PyTorch's default)
            if isinstance(m, (FrozenBatchNorm2d, nn.modules.batchnorm._NormBase, nn.GroupNorm)):
                m.eps = float(norm_eps)

        self.out_features = check_out_features(out_features, STAGE_NAMES)
        self.out_channels = {f: stage_channels[f] for f in self.out_features}
        self.strides = {f: stage_strides[f] for f in self.out_features}
        # run the stages up to the last requested one, nothing past it
        self._num_stages = STAGE_NAMES.index(self.out_features[-1]) + 1
        self._freeze(freeze_at, LAYER_NAMES)

    def _init_weights(self) -> None:
        """He (fan_out) init for convs, gamma=1 and beta=0 for norms, as torchvision."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.SyncBatchNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"ResNet expects images (N, 3, H, W), got {tuple(x.shape)}")
        x = self.maxpool(conv_norm(x, self.conv1, self.bn1, relu=True))  # (N, 64, H/4, W/4)
        outputs: dict[str, Tensor] = {}
        for name, layer in zip(STAGE_NAMES[: self._num_stages], LAYER_NAMES):
            x = getattr(self, layer)(x)
            if name in self.out_channels:
                outputs[name] = x
        return outputs

    def split_head(self) -> Stage:
        """Remove res5 (`layer4`) and return it, for the C4 RoI head:
        (R, C4, 14, 14) -> (R, C5, 7, 7); `out_channels` = C5 (2048 bottleneck, 512 basic)."""
        if "res5" in self.out_features:
            raise ValueError("split_head() removes res5, but res5 is in out_features "
                             f"{self.out_features}; build the backbone with out_features=['res4']")
        head = self.layer4
        if head is None:
            raise RuntimeError("split_head() was already called: layer4 is gone")
        self.layer4 = None
        head.out_channels = self.stage_channels["res5"]
        return head


def _check_options(depth: int, residual: bool, shortcut: str | None, stride_in_1x1: bool,
                   norm: str, freeze_at: int) -> tuple[str, tuple[int, int, int, int]]:
    if depth not in RESNET_SPECS:
        raise ValueError(f"unsupported ResNet depth {depth}; valid: {sorted(RESNET_SPECS)}")
    block_kind, blocks = RESNET_SPECS[depth]
    if shortcut is not None and shortcut not in SHORTCUTS:
        raise ValueError(f"unknown shortcut {shortcut!r}; valid: {', '.join(SHORTCUTS)}")
    if not residual and shortcut is not None:
        raise ValueError("a plain net (residual=False) has no shortcuts; "
                         f"got shortcut={shortcut!r}")
    if stride_in_1x1 and block_kind == "basic":
        raise ValueError(f"stride_in_1x1 applies to bottleneck blocks (depth >= 50); "
                         f"ResNet-{depth} has basic blocks without a 1x1 conv")
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")
    if not 0 <= freeze_at <= 5:
        raise ValueError(f"freeze_at must be in 0..5 (0 nothing, 1 stem, k res2..resk), "
                         f"got {freeze_at}")
    return block_kind, blocks


def check_out_features(out_features: list[str] | None, valid: tuple[str, ...],
                        default: tuple[str, ...] | None = None) -> list[str]:
    """Validate `out_features`; `None` means `default` (all of `valid` if not given).
    Returns them in network order."""
    if out_features is None:
        return list(default or valid)
    if isinstance(out_features, str):
        raise TypeError(f"out_features must be a list of names, got the string {out_features!r}")
    unknown = [f for f in out_features if f not in valid]
    if unknown or not out_features or len(set(out_features)) != len(out_features):
        raise ValueError(f"out_features {list(out_features)} must be a non-empty list of "
                         f"distinct names from {list(valid)}")
    return [f for f in valid if f in out_features]


def build_resnet(*, depth: int, residual: bool = True, weights: str | None = None,
                 norm: str = "FrozenBN", freeze_at: int = 2, out_features: list[str] | None = None,
                 shortcut: str | None = None, stride_in_1x1: bool = False,
                 norm_eps: float = 1e-5) -> ResNet:
    """Build a ResNet (or plain net) and load `weights` (None, "imagenet", "imagenet_v2", a path).

    torchvision's ImageNet weights fit only residual nets with shortcut B and the stride in the
    3x3 conv; plain nets and shortcuts A/C have no pretrained weights there.
    """
    model = ResNet(depth=depth, residual=residual, shortcut=shortcut, stride_in_1x1=stride_in_1x1,
                   norm=norm, freeze_at=freeze_at, out_features=out_features, norm_eps=norm_eps)
    if weights is None:
        return model
    if weights in IMAGENET_WEIGHTS:
        reason = None
        if not residual:
            reason = f"plain{depth} is a plain net (no shortcuts)"
        elif model.shortcut != "B":
            reason = f"shortcut {model.shortcut!r} changes the parameters (torchvision uses 'B')"
        elif stride_in_1x1:
            reason = "torchvision's models put the stride in the 3x3 conv (stride_in_1x1=False)"
        if reason:
            raise ValueError(f"weights={weights!r}: torchvision's ImageNet weights do not fit this "
                             f"model: {reason}. Use weights=None (train from scratch) or a "
                             "checkpoint file trained for this architecture.")
    load_backbone_weights(model, weights, arch=f"resnet{depth}", ignore_prefixes=("fc.",))
    return model
