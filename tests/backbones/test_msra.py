"""MSRA / Detectron ImageNet weights (Caffe2 blob names in a Python 2 pickle): converted weights
give the features of an independent Caffe2-semantics forward pass over the same blobs."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from backbones import WeightsError, build_backbone
from backbones.msra import caffe2_resnet_state_dict, convert_msra_weights
from backbones.resnet import ResNet

def caffe2_forward(blobs: dict[bytes, np.ndarray], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """MSRA's ResNet written from its Caffe2 definition: conv + AffineChannel, the stride in
    branch2a and branch1 of each stage's first block, max-pool 3x3/2 pad 1."""
    def w(name):
        return torch.from_numpy(blobs[name.encode()])

    def affine(y, name):
        return y * w(name + "_s")[None, :, None, None] + w(name + "_b")[None, :, None, None]

    x = F.relu(affine(F.conv2d(x, w("conv1_w"), stride=2, padding=3), "res_conv1_bn"))
    x = F.max_pool2d(x, 3, stride=2, padding=1)
    out = {}
    for stage, n in zip(range(2, 6), (3, 4, 6, 3)):
        for i in range(n):
            p = f"res{stage}_{i}_branch"
            stride = 2 if stage > 2 and i == 0 else 1
            y = F.relu(affine(F.conv2d(x, w(p + "2a_w"), stride=stride), p + "2a_bn"))
            y = F.relu(affine(F.conv2d(y, w(p + "2b_w"), padding=1), p + "2b_bn"))
            y = affine(F.conv2d(y, w(p + "2c_w")), p + "2c_bn")
            shortcut = affine(F.conv2d(x, w(p + "1_w"), stride=stride), p + "1_bn") if i == 0 \
                else x
            x = F.relu(y + shortcut)
        out[f"res{stage}"] = x
    return out


@pytest.fixture(scope="module")
def r50(tmp_path_factory, msra_r50_pkl):
    """Random R-50 blobs, their ``R-50.pkl`` as published, and the converted file (the ``rgb``
    option is checked in tests/tools/test_convert_pretrained.py)."""
    blobs, pkl = msra_r50_pkl
    dst = tmp_path_factory.mktemp("msra") / "R-50.pth"
    state, meta = convert_msra_weights(pkl)
    torch.save({"model": state, **meta}, dst)  # the layout tools/convert_pretrained.py writes
    return blobs, dst, meta


@pytest.mark.parametrize("norm", ["FrozenBN", "BN"])
def test_converted_weights_give_the_caffe2_features(r50, norm, one_thread):
    blobs, path, meta = r50
    assert meta["arch"] == "resnet50" and meta["input_format"] == "BGR"
    assert meta["pixel_mean"] == [103.53, 116.28, 123.675] and meta["pixel_std"] == [1, 1, 1]
    # BN in eval mode uses the same running statistics as FrozenBN: res2 is enough to show it
    out_features = None if norm == "FrozenBN" else ["res2"]
    ours = build_backbone("resnet50", weights=path, stride_in_1x1=True, norm=norm,
                          freeze_at=0, out_features=out_features).eval()
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(1)) * 50
    with torch.no_grad():
        expected, got = caffe2_forward(blobs, x), ours(x)
    assert list(got) == (out_features or ["res2", "res3", "res4", "res5"])
    for key in got:
        scale = expected[key].abs().max().item()
        assert scale > 0.1 and got[key].shape == expected[key].shape
        assert (got[key] - expected[key]).abs().max().item() < 2e-5 * scale, key


def test_resnet101_names_map_onto_every_parameter(make_msra_blobs):
    blobs = {k.decode(): v for k, v in make_msra_blobs(101, tiny=True).items()
             if not k.endswith(b"_momentum")}
    depth, state = caffe2_resnet_state_dict(blobs)
    assert depth == 101
    assert state["layer3.22.bn3.running_var"].item() == pytest.approx(1 - 1e-5)
    assert state["layer3.22.bn3.running_mean"].item() == 0
    with torch.device("meta"):
        expected = set(ResNet(depth=101, stride_in_1x1=True).state_dict())
    assert set(state) == expected | {"fc.weight", "fc.bias"}


def test_unknown_blobs_and_layouts_are_named(make_msra_blobs):
    blobs = {k.decode(): v for k, v in make_msra_blobs(50, tiny=True).items()
             if not k.endswith(b"_momentum")}
    with pytest.raises(WeightsError, match=r"blobs of no ResNet layer: \['res6_0_branch2a_w'\]"):
        caffe2_resnet_state_dict({**blobs, "res6_0_branch2a_w": np.zeros(1, np.float32)})
    blobs = {k: v for k, v in blobs.items() if not k.startswith("res4_5_")}
    with pytest.raises(WeightsError, match=r"bottleneck blocks per stage res2..res5 \(3, 4, 5, 3"):
        caffe2_resnet_state_dict(blobs)
