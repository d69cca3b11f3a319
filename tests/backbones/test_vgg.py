"""VGG-16: parameter counts, equality with torchvision's conv5_3 and fc6/fc7 under the same weights,
freezing, out_features truncation and split_head."""

import pytest
import torch
import torchvision

from backbones import build_backbone
from backbones.vgg import VGG16


def num_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_by_hand_and_torchvision():
    with torch.device("meta"):
        ours = VGG16()
        theirs = torchvision.models.vgg16(weights=None)
    # 3x3 conv: 9*c_in*c_out + c_out. conv1: 1792 + 36928; conv2: 73856 + 147584;
    # conv3: 295168 + 2*590080; conv4: 1180160 + 2*2359808; conv5: 3*2359808
    by_hand = 1792 + 36928 + 73856 + 147584 + 295168 + 2 * 590080 + 1180160 + 5 * 2359808
    assert by_hand == 14_714_688
    assert num_params(ours.features) == by_hand == num_params(theirs.features)
    assert num_params(ours.classifier) == (25088 * 4096 + 4096) + (4096 * 4096 + 4096)
    theirs_keys = {k for k in theirs.state_dict() if not k.startswith("classifier.6.")}
    assert set(ours.state_dict()) == theirs_keys


def test_torchvision_weights_give_identical_conv5_and_fc7(tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.vgg16(weights=None).eval()
    path = tmp_path / "vgg16.pth"
    torch.save({"state_dict": reference.state_dict()}, path)  # wrapped form is accepted too
    x = torch.randn(1, 3, 64, 80)
    pooled = torch.randn(3, 512, 7, 7)
    with torch.no_grad():
        expected_conv5 = reference.features[:30](x)  # up to conv5_3's ReLU, pool5 dropped
        expected_fc7 = reference.classifier[:5](pooled.flatten(1))  # fc6 ReLU Drop fc7 ReLU
    del reference  # ~550 MB

    ours = build_backbone("vgg16", weights=path).eval()
    with torch.no_grad():
        out = ours(x)
    assert list(out) == ["conv5"] and out["conv5"].shape == (1, 512, 4, 5)
    assert ours.out_channels == {"conv5": 512} and ours.strides == {"conv5": 16}
    assert (out["conv5"] - expected_conv5).abs().max().item() < 1e-5
    assert expected_conv5.abs().max() > 0.1
    head = ours.split_head().eval()
    assert head.out_channels == 4096 and ours.classifier is None
    with torch.no_grad():
        got_fc7 = head(pooled)
    assert got_fc7.shape == (3, 4096)
    assert (got_fc7 - expected_fc7).abs().max().item() < 1e-5
    assert expected_fc7.abs().max() > 0.01
    with pytest.raises(ValueError, match=r"\(R, 512, 7, 7\)"):
        head(torch.randn(3, 512, 6, 6))
    with pytest.raises(RuntimeError, match="already"):
        ours.split_head()


def test_freeze_at_and_truncation():
    torch.manual_seed(0)
    model = VGG16(freeze_at=2, out_features=["conv4"])
    calls = []
    for i in (16, 23, 24):  # pool after conv3, pool after conv4, conv5_1
        model.features[i].register_forward_hook(lambda m, inp, o, i=i: calls.append(i))
    out = model(torch.randn(1, 3, 32, 32))
    assert calls == [16] and list(out) == ["conv4"] and out["conv4"].shape == (1, 512, 4, 4)
    out["conv4"].sum().backward()
    conv_indices = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21]  # conv1_1 .. conv4_3
    for i in conv_indices:
        conv = model.features[i]
        frozen = i < 10  # conv1_x and conv2_x, as Faster R-CNN
        assert conv.weight.requires_grad != frozen
        assert (conv.weight.grad is None) == frozen, i
    assert model.features[10].weight.grad.abs().sum() > 0
    with torch.device("meta"):  # requires_grad flags only: no memory, no init time
        assert all(p.requires_grad for p in VGG16(freeze_at=0).parameters())
        assert not any(p.requires_grad for p in VGG16(freeze_at=5).features.parameters())
        assert all(p.requires_grad for p in VGG16(freeze_at=5).classifier.parameters())
        with pytest.raises(ValueError, match="freeze_at"):
            VGG16(freeze_at=6)
        with pytest.raises(ValueError, match="conv6"):
            VGG16(out_features=["conv6"])
