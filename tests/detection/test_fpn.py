"""FPN: level names, strides and channels; numbers equal torchvision's BackboneWithFPN."""
import torch
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops import FrozenBatchNorm2d

from backbones import build_backbone
from detection.fpn import FPN


def test_equals_torchvision_backbone_with_fpn():
    torch.manual_seed(0)
    tv = resnet_fpn_backbone(backbone_name="resnet18", weights=None,
                             norm_layer=FrozenBatchNorm2d, trainable_layers=5).eval()
    body = build_backbone("resnet18", weights=None, norm="FrozenBN", freeze_at=0,
                          out_features=["res2", "res3", "res4", "res5"])
    ours = FPN(bottom_up=body, in_features=["res2", "res3", "res4", "res5"], out_channels=256)
    state = {k.replace("body.", "bottom_up.", 1): v for k, v in tv.state_dict().items()}
    ours.load_state_dict(state)
    # float64: our FrozenBN is folded into the convolutions (one rounding of W * s instead of one
    # per activation), which in float32 moves these maps by up to ~4e-5; in float64 only the
    # algorithms are compared, at assert_close's float64 tolerance
    ours.double().eval()
    tv.double()

    assert ours.out_features == ["p2", "p3", "p4", "p5", "p6"]
    assert ours.strides == {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}
    assert set(ours.out_channels.values()) == {256}
    x = torch.randn(1, 3, 96, 160, dtype=torch.float64)
    with torch.no_grad():
        out, expected = ours(x), tv(x)
    assert list(out) == ours.out_features
    for ours_map, tv_map in zip(out.values(), expected.values()):
        torch.testing.assert_close(ours_map, tv_map)
    assert out["p6"].shape == (1, 256, 2, 3)  # 96 x 160 / 64 = 1.5 x 2.5: max-pool rounds up
