"""The paper's CIFAR-10 nets: parameter counts by hand (ResNet-20: 0.27M), maps and strides,
option A wiring, plain nets, freezing and split_head."""

import pytest
import torch
import torch.nn.functional as F

from backbones import build_backbone
from backbones.cifar_resnet import CifarResNet


def num_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def hand_count(n: int) -> int:
    """Conv weights + norm gamma/beta + the 10-way fc (64 * 10 + 10), the module docstring's sum."""
    stem = 9 * 3 * 16 + 2 * 16
    res2 = n * (2 * 9 * 16 * 16 + 4 * 16)
    res3 = (9 * 16 * 32 + 9 * 32 * 32 + 4 * 32) + (n - 1) * (2 * 9 * 32 * 32 + 4 * 32)
    res4 = (9 * 32 * 64 + 9 * 64 * 64 + 4 * 64) + (n - 1) * (2 * 9 * 64 * 64 + 4 * 64)
    return stem + res2 + res3 + res4 + 64 * 10 + 10


@pytest.mark.parametrize("depth, paper_m", [(20, 0.27), (32, 0.46), (44, 0.66), (56, 0.85),
                                            (110, 1.7)])
def test_parameter_counts_are_the_papers(depth, paper_m):
    n = (depth - 2) // 6
    with torch.device("meta"):
        resnet = CifarResNet(depth=depth)
        plain = CifarResNet(depth=depth, residual=False)
        resnet_b = CifarResNet(depth=depth, shortcut="B")
    fc = 64 * 10 + 10
    assert num_params(resnet) + fc == num_params(plain) + fc == hand_count(n)
    assert round(hand_count(n) / 1e6, 2 if depth < 110 else 1) == paper_m
    # B adds a projection + norm at res3 and res4: (16*32 + 2*32) + (32*64 + 2*64)
    assert num_params(resnet_b) - num_params(resnet) == 576 + 2176
    assert hand_count(3) == 269_722


def test_maps_strides_and_names():
    model = build_backbone("cifar_resnet20", norm="BN", freeze_at=0).eval()
    assert model.out_channels == {"res2": 16, "res3": 32, "res4": 64}
    assert model.strides == {"res2": 1, "res3": 2, "res4": 4}
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "res2": (2, 16, 32, 32), "res3": (2, 32, 16, 16), "res4": (2, 64, 8, 8)}
    assert len(model.layer1) == 3 and build_backbone("cifar_plain56").layer3[8].residual is False
    assert list(build_backbone("cifar_resnet20", out_features=["res3"])(
        torch.randn(1, 3, 32, 32))) == ["res3"]


def test_option_a_shortcut_is_subsampled_and_zero_padded():
    model = CifarResNet(depth=20).eval()
    block = model.layer2[0]  # 16 -> 32 channels, stride 2
    torch.nn.init.zeros_(block.bn2.weight)
    torch.nn.init.zeros_(block.bn2.bias)
    x = torch.rand(1, 16, 8, 8)
    with torch.no_grad():
        out = block(x)
    expected = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 0, 16))
    assert torch.equal(out, expected)
    plain = CifarResNet(depth=20, residual=False).eval().layer2[0]
    torch.nn.init.zeros_(plain.bn2.weight)
    torch.nn.init.zeros_(plain.bn2.bias)
    with torch.no_grad():
        assert torch.equal(plain(x), torch.zeros(1, 32, 4, 4))  # no shortcut at all


def test_freezing_split_head_and_bad_depths():
    model = CifarResNet(depth=20, freeze_at=2, out_features=["res3"])
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in model.named_parameters() if n.startswith(("conv1", "bn1",
                                                                              "layer1"))}
    model.train()
    assert not model.bn1.training and not model.layer1[0].bn1.training
    assert model.layer2[0].bn1.training
    head = model.split_head()
    assert head.out_channels == 64 and tuple(head(torch.randn(2, 32, 8, 8)).shape) == (
        2, 64, 4, 4)
    with pytest.raises(ValueError, match="6n\\+2 layers"):
        CifarResNet(depth=21)
    with pytest.raises(ValueError, match="plain net has no shortcuts"):
        CifarResNet(depth=20, residual=False, shortcut="A")
