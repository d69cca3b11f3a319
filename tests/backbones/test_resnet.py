"""ResNet backbones: parameter counts (torchvision and by hand), equality with torchvision under the
same weights, shortcut/plain wiring, freezing, out_features truncation and split_head."""

import pytest
import torch
import torchvision

from backbones import build_backbone
from backbones.resnet import PadIdentity, ResNet

TV_LAYERS = ("layer1", "layer2", "layer3", "layer4")


def num_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_parameter_count_equals_torchvision_without_fc(depth):
    with torch.device("meta"):  # shapes only: no memory, no init time
        ours = ResNet(depth=depth, norm="BN", freeze_at=0)
        theirs = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    assert num_params(ours) == num_params(theirs) - num_params(theirs.fc)
    ours_keys = set(ours.state_dict())
    theirs_keys = {k for k in theirs.state_dict() if not k.startswith("fc.")}
    assert ours_keys == theirs_keys


# Hand-computed totals (conv weights + norm gamma/beta, no fc); the arithmetic is in the
# docstring of backbones/resnet.py. A 1x1 projection + norm costs c_in*c_out + 2*c_out.
# ResNet-18 B, stage by stage: stem 7*7*3*64 + 2*64 = 9536; res2 147968; res3 525568;
#   res4 2099712; res5 8393728 -> 11176512.
# B's projections, ResNet-18/34: (64*128 + 256) + (128*256 + 512) + (256*512 + 1024)
#   = 8448 + 33280 + 132096 = 173824;  ResNet-50: (64*256 + 512) + (256*512 + 1024)
#   + (512*1024 + 2048) + (1024*2048 + 4096) = 16896 + 132096 + 526336 + 2101248 = 2776576.
# A and plain = B - B's projections.
# C = B + one c*c + 2c projection per identity block: ResNet-18: 2*4224 + 16640 + 66048 + 263168
#   = 354304; ResNet-34: 3*4224 + 3*16640 + 5*66048 + 2*263168 = 919168;
#   ResNet-50: 2*66048 + 3*263168 + 5*1050624 + 2*4198400 = 14571520.
HAND_COUNTS = {
    # depth: (A = plain, B, C)
    18: (11_176_512 - 173_824, 11_176_512, 11_176_512 + 354_304),
    34: (21_284_672 - 173_824, 21_284_672, 21_284_672 + 919_168),
    50: (23_508_032 - 2_776_576, 23_508_032, 23_508_032 + 14_571_520),
}


@pytest.mark.parametrize("depth", [18, 34, 50])
def test_shortcut_and_plain_parameter_counts_by_hand(depth):
    count_a, count_b, count_c = HAND_COUNTS[depth]
    assert (count_a, count_b, count_c) == {
        18: (11_002_688, 11_176_512, 11_530_816),
        34: (21_110_848, 21_284_672, 22_203_840),
        50: (20_731_456, 23_508_032, 38_079_552),
    }[depth]
    with torch.device("meta"):
        counts = {s: num_params(ResNet(depth=depth, shortcut=s, norm="BN", freeze_at=0))
                  for s in ("A", "B", "C")}
        plain = num_params(ResNet(depth=depth, residual=False, norm="BN", freeze_at=0))
    assert counts == {"A": count_a, "B": count_b, "C": count_c}
    assert plain == count_a


def test_resnet18_stage_counts_by_hand():
    with torch.device("meta"):
        model = ResNet(depth=18, norm="BN", freeze_at=0)
    assert num_params(model.conv1) + num_params(model.bn1) == 7 * 7 * 3 * 64 + 2 * 64
    assert [num_params(getattr(model, layer)) for layer in TV_LAYERS] == [
        2 * (2 * 9 * 64 * 64 + 4 * 64),
        (9 * 64 * 128 + 9 * 128 * 128 + 4 * 128) + 8448 + (2 * 9 * 128 * 128 + 4 * 128),
        (9 * 128 * 256 + 9 * 256 * 256 + 4 * 256) + 33280 + (2 * 9 * 256 * 256 + 4 * 256),
        (9 * 256 * 512 + 9 * 512 * 512 + 4 * 512) + 132096 + (2 * 9 * 512 * 512 + 4 * 512),
    ]


def torchvision_features(model, x):
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    out = {}
    for i, layer in enumerate(TV_LAYERS):
        x = getattr(model, layer)(x)
        out[f"res{i + 2}"] = x
    return out


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
@pytest.mark.parametrize("norm", ["FrozenBN", "BN"])
def test_torchvision_weights_give_identical_features(name, norm, tmp_path,
                                                     randomized_torchvision):
    reference = randomized_torchvision(name)
    path = tmp_path / f"{name}.pth"
    torch.save(reference.state_dict(), path)  # includes fc.* and num_batches_tracked
    ours = build_backbone(name, weights=str(path), norm=norm, freeze_at=0).eval()
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = torchvision_features(reference, x), ours(x)
    assert list(got) == ["res2", "res3", "res4", "res5"]
    for key in expected:
        assert got[key].shape == expected[key].shape
        # BN runs torchvision's own kernel: < 1e-5 absolute (measured: bit-exact). FrozenBN folds
        # gamma/sqrt(var+eps) into one scale, a different fp32 rounding that grows with the maps'
        # magnitude (random ResNet-50 res5 reaches ~170): 1e-5 relative to the largest value.
        scale = 1.0 if norm == "BN" else max(1.0, expected[key].abs().max().item())
        assert (got[key] - expected[key]).abs().max().item() < 1e-5 * scale, key
    assert expected["res5"].abs().max() > 0.1  # not a trivially zero comparison


def _block_with_zero_residual(shortcut, residual):
    """res3's first block (64 -> 128 channels, stride 2) with its last norm zeroed, so its output
    is relu(shortcut(x)) exactly: what the shortcut alone contributes."""
    model = ResNet(depth=18, shortcut=shortcut, residual=residual, norm="BN", freeze_at=0).eval()
    block = model.layer2[0]
    torch.nn.init.zeros_(block.bn2.weight)
    torch.nn.init.zeros_(block.bn2.bias)
    return block


def test_shortcut_wiring():
    x = torch.rand(1, 64, 8, 8)  # post-ReLU maps are non-negative
    with torch.no_grad():
        out_a = _block_with_zero_residual("A", True)(x)
        # A: strided identity, zero-padded from 64 to 128 channels
        assert torch.equal(out_a[:, :64], x[:, :, ::2, ::2])
        assert torch.equal(out_a[:, 64:], torch.zeros(1, 64, 4, 4))
        block_b = _block_with_zero_residual("B", True)
        assert torch.allclose(block_b(x), torch.relu(block_b.downsample(x)))
        block_c = _block_with_zero_residual("C", True)
        assert isinstance(block_c.downsample, torch.nn.Sequential)
        plain = _block_with_zero_residual(None, False)
        assert plain.downsample is None
        assert torch.equal(plain(x), torch.zeros(1, 128, 4, 4))  # no shortcut at all
    model_c = ResNet(depth=18, shortcut="C", norm="BN")
    assert all(isinstance(block.downsample, torch.nn.Sequential)
               for layer in TV_LAYERS for block in getattr(model_c, layer))


def test_pad_identity_bottleneck_stride_one():
    x = torch.randn(2, 64, 5, 5)
    y = PadIdentity(stride=1, in_channels=64, out_channels=256)(x)
    assert y.shape == (2, 256, 5, 5)
    assert torch.equal(y[:, :64], x) and not y[:, 64:].any()


def test_stride_in_1x1():
    default = ResNet(depth=50, norm="BN")
    msra = ResNet(depth=50, norm="BN", stride_in_1x1=True)
    for layer in ("layer2", "layer3", "layer4"):
        assert getattr(default, layer)[0].conv1.stride == (1, 1)
        assert getattr(default, layer)[0].conv2.stride == (2, 2)
        assert getattr(msra, layer)[0].conv1.stride == (2, 2)
        assert getattr(msra, layer)[0].conv2.stride == (1, 1)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert {k: v.shape for k, v in msra.eval()(x).items()} == {
            k: v.shape for k, v in default.eval()(x).items()}
    with pytest.raises(ValueError, match="bottleneck"):
        ResNet(depth=18, stride_in_1x1=True)


def _snapshot_stats(model):
    return {k: v.clone() for k, v in model.state_dict().items() if "running_" in k}


@pytest.mark.parametrize("norm", ["BN", "SyncBN"])
def test_freeze_at_two_blocks_gradients_and_statistics(norm):
    torch.manual_seed(0)
    model = ResNet(depth=18, norm=norm, freeze_at=2)
    model.eval()
    model.train()  # train() must keep the frozen parts in eval mode
    assert not model.bn1.training and not model.layer1.training
    assert not model.layer1[1].bn2.training and model.layer2[0].bn1.training
    before = _snapshot_stats(model)
    out = model(torch.randn(2, 3, 64, 64))
    sum(v.mean() for v in out.values()).backward()
    after = _snapshot_stats(model)
    for key in before:
        frozen = key.startswith(("bn1.", "layer1."))
        assert torch.equal(before[key], after[key]) == frozen, key
    for name, p in model.named_parameters():
        frozen = name.startswith(("conv1.", "bn1.", "layer1."))
        assert p.requires_grad != frozen, name
        assert (p.grad is None) == frozen, name
        if not frozen:
            assert p.grad.abs().sum() > 0, name


def test_freeze_levels():
    for freeze_at, trainable in [(0, 60), (1, 57), (2, 45), (3, 30), (4, 15), (5, 0)]:
        model = ResNet(depth=18, norm="BN", freeze_at=freeze_at)
        # ResNet-18 parameter tensors: stem 3 (conv, gamma, beta), res2 2 blocks * 6,
        # res3..res5 2 * 6 + 3 (projection conv, gamma, beta) = 15 each: 60 in all
        assert sum(p.requires_grad for p in model.parameters()) == trainable, freeze_at
    model = ResNet(depth=18, norm="BN", freeze_at=5, out_features=["res4"])
    head = model.split_head()
    head.train()  # frozen res5 stays frozen inside a RoI head
    assert not head.training and not head[0].bn1.training
    assert not any(p.requires_grad for p in head.parameters())
    with pytest.raises(ValueError, match="freeze_at"):
        ResNet(depth=18, freeze_at=6)


def test_frozen_bn_backbone_unfrozen_convs_get_gradients():
    model = build_backbone("resnet18", freeze_at=2, out_features=["res3"])
    model.train()
    model(torch.randn(1, 3, 32, 32))["res3"].sum().backward()
    assert model.conv1.weight.grad is None and model.layer1[0].conv1.weight.grad is None
    assert model.layer2[0].conv1.weight.grad.abs().sum() > 0
    assert model.layer4[0].conv1.weight.grad is None  # never ran: out_features stops at res3


def test_out_features_truncation_runs_nothing_past_res4():
    model = ResNet(depth=50, norm="BN", out_features=["res4"]).eval()
    calls = []
    for layer in TV_LAYERS:
        getattr(model, layer).register_forward_hook(lambda m, i, o, n=layer: calls.append(n))
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert calls == ["layer1", "layer2", "layer3"]
    assert list(out) == ["res4"] and out["res4"].shape == (1, 1024, 4, 4)
    assert model.out_features == ["res4"]
    assert model.out_channels == {"res4": 1024} and model.strides == {"res4": 16}
    with pytest.raises(ValueError, match="res6"):
        ResNet(depth=18, out_features=["res6"])
    assert ResNet(depth=18, out_features=["res5", "res3"]).out_features == ["res3", "res5"]


@pytest.mark.parametrize("depth, c4, c5", [(50, 1024, 2048), (18, 256, 512)])
def test_split_head_c4(depth, c4, c5):
    model = build_backbone(f"resnet{depth}", norm="BN", out_features=["res4"]).eval()
    head = model.split_head().eval()
    assert head.out_channels == c5
    assert model.layer4 is None
    assert not any(k.startswith("layer4.") for k in model.state_dict())
    with torch.no_grad():
        assert head(torch.randn(3, c4, 14, 14)).shape == (3, c5, 7, 7)
        assert model(torch.randn(1, 3, 64, 64))["res4"].shape == (1, c4, 4, 4)
    with pytest.raises(RuntimeError, match="already"):
        model.split_head()
    with pytest.raises(ValueError, match="res5"):
        build_backbone("resnet18", out_features=["res4", "res5"]).split_head()


def test_norm_options_and_names():
    gn = build_backbone("resnet18", norm="GN", freeze_at=0)
    assert isinstance(gn.bn1, torch.nn.GroupNorm) and gn.bn1.num_groups == 32
    assert isinstance(build_backbone("resnet18").bn1, torchvision.ops.FrozenBatchNorm2d)
    with torch.no_grad():
        assert gn(torch.randn(1, 3, 32, 32))["res5"].shape == (1, 512, 1, 1)
    with pytest.raises(ValueError, match="LN"):
        build_backbone("resnet18", norm="LN")
    with pytest.raises(ValueError, match="resnet18, resnet34, .*plain18.*vgg16"):
        build_backbone("resnet20")
    with pytest.raises(ValueError, match="plain"):
        build_backbone("plain18", shortcut="B")
    assert build_backbone("plain34", norm="BN").layer2[0].downsample is None
