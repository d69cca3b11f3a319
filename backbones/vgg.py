"""VGG-16 conv body to conv5_3 and its fc6/fc7 head, as Faster R-CNN uses them (Ren et al. 2015).

Shape shorthand: `N` images, `R` RoIs, `H, W` the input size. Blocks conv1..conv5 are 2, 2, 3, 3,
3 3x3 convs (+ReLU) with 64, 128, 256, 512, 512 channels; a 2x2 max-pool follows conv1..conv4
(the pool after conv5 is dropped), so conv_k has stride 2**(k-1):

    x      (N, 3, H, W)
    conv5  (N, 512, H/16, W/16)          (also conv1..conv4 at strides 1, 2, 4, 8)
    split_head(): fc6/fc7, (R, 512, 7, 7) -> flatten (R, 25088) -> (R, 4096)

Parameter names equal torchvision's `vgg16` (`features.N` with N = 0, 2, 5, 7, 10, 12, 14, 17,
19, 21, 24, 26, 28; fc6 = `classifier.0`, fc7 = `classifier.3`; fc8 `classifier.6` is ignored).
Parameter count, by hand (3x3 conv: 9*c_in*c_out + c_out):
    conv1 1792 + 36928; conv2 73856 + 147584; conv3 295168 + 2*590080;
    conv4 1180160 + 2*2359808; conv5 3*2359808  -> 14714688
    fc6 25088*4096 + 4096 = 102764544;  fc7 4096*4096 + 4096 = 16781312.
VGG-16 has no normalisation layers, so `norm` has no effect on it. `freeze_at=k` freezes the
convs of conv1..conv_k (Faster R-CNN froze conv1 and conv2: the default 2); fc6/fc7 are never
frozen by it.
"""

from __future__ import annotations

from torch import Tensor, nn

from backbones.layers import Conv2d
from backbones.resnet import NORMS, check_out_features
from backbones.weights import load_backbone_weights

__all__ = ["VGG16", "VGGHead", "build_vgg16"]

BLOCK_NAMES = ("conv1", "conv2", "conv3", "conv4", "conv5")
_BLOCKS = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))  # (convs, channels) per block


class VGGHead(nn.Module):
    """fc6/fc7 with ReLU and dropout: (R, 512, 7, 7) -> (R, 4096); `out_channels = 4096`."""

    out_channels = 4096

    def __init__(self, classifier: nn.Sequential) -> None:
        super().__init__()
        self.classifier = classifier  # torchvision's classifier[:6]: fc6 ReLU Drop fc7 ReLU Drop

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1:] != (512, 7, 7):
            raise ValueError(f"the fc6/fc7 head takes pooled maps (R, 512, 7, 7), "
                             f"got {tuple(x.shape)}")
        return self.classifier(x.flatten(1))  # (R, 512, 7, 7) -> (R, 25088) -> (R, 4096)


class VGG16(nn.Module):
    """VGG-16 conv body returning `{"conv5": (N, 512, H/16, W/16)}` (limited to `out_features`),
    plus fc6/fc7 in `classifier` until `split_head()` takes them."""

    def __init__(self, *, freeze_at: int = 2, out_features: list[str] | None = None,
                 head_dropout: float = 0.5) -> None:
        super().__init__()
        if not 0 <= freeze_at <= 5:
            raise ValueError(f"freeze_at must be in 0..5 (k freezes conv1..conv_k), "
                             f"got {freeze_at}")
        layers: list[nn.Module] = []
        in_channels, block_ends, block_channels = 3, [], {}
        for i, (num_convs, channels) in enumerate(_BLOCKS):
            for _ in range(num_convs):
                layers += [Conv2d(in_channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
                in_channels = channels
            block_ends.append(len(layers))  # index one past the block's last ReLU
            block_channels[BLOCK_NAMES[i]] = channels
            if i < len(_BLOCKS) - 1:  # no pool after conv5: stride 16, as in Faster R-CNN
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        self.features = nn.Sequential(*layers)
        self.classifier: nn.Sequential | None = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(inplace=True), nn.Dropout(head_dropout),
            nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(head_dropout),
        )
        self._init_weights()

        self.out_features = check_out_features(out_features, BLOCK_NAMES, default=("conv5",))
        self.out_channels = {f: block_channels[f] for f in self.out_features}
        self.strides = {f: 2 ** BLOCK_NAMES.index(f) for f in self.out_features}
        self._block_ends = dict(zip(BLOCK_NAMES, block_ends))
        self.freeze_at = freeze_at
        frozen_until = block_ends[freeze_at - 1] if freeze_at > 0 else 0
        for p in self.features[:frozen_until].parameters():
            p.requires_grad_(False)

    def _init_weights(self) -> None:
        """As torchvision: He (fan_out) convs, N(0, 0.01) linears, zero biases."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"VGG16 expects images (N, 3, H, W), got {tuple(x.shape)}")
        outputs: dict[str, Tensor] = {}
        start = 0
        for name in self.out_features:  # network order; nothing past the last one runs
            end = self._block_ends[name]
            for layer in self.features[start:end]:
                x = layer(x)
            outputs[name], start = x, end
        return outputs

    def split_head(self) -> VGGHead:
        """Remove fc6/fc7 and return them as a module (R, 512, 7, 7) -> (R, 4096)."""
        if self.classifier is None:
            raise RuntimeError("split_head() was already called: fc6/fc7 are gone")
        head = VGGHead(self.classifier)
        self.classifier = None
        return head


def build_vgg16(*, weights: str | None = None, norm: str = "FrozenBN", freeze_at: int = 2,
                out_features: list[str] | None = None, head_dropout: float = 0.5) -> VGG16:
    """Build VGG-16 and load `weights` (None, "imagenet" = torchvision's IMAGENET1K_V1, a path);
    torchvision's fc8 (`classifier.6`) is ignored. `norm` is checked but unused (no norm layers)."""
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")
    model = VGG16(freeze_at=freeze_at, out_features=out_features, head_dropout=head_dropout)
    if weights is not None:
        load_backbone_weights(model, weights, arch="vgg16", ignore_prefixes=("classifier.6.",))
    return model
