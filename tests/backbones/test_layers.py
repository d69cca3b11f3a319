"""backbones/layers.py: FrozenBN folded into the convolution, the NCHW weight gradient."""
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import FeaturePyramidNetwork, FrozenBatchNorm2d

from backbones.layers import (Conv2d, adopt_conv2d, conv_norm, fold_norms,
                              folded_conv_params)


def _frozen_bn(channels: int, generator: torch.Generator) -> FrozenBatchNorm2d:
    norm = FrozenBatchNorm2d(channels).double()
    for name in ("weight", "bias", "running_mean"):
        getattr(norm, name).copy_(torch.randn(channels, generator=generator, dtype=torch.float64))
    norm.running_var.copy_(torch.rand(channels, generator=generator, dtype=torch.float64) + 0.1)
    return norm


@pytest.mark.parametrize("bias", [False, True])
def test_folded_frozen_bn_equals_conv_then_norm(bias):
    g = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=bias).double()
    norm = _frozen_bn(6, g)
    x = torch.randn(2, 4, 9, 7, generator=g, dtype=torch.float64, requires_grad=True)
    expected = norm(conv(x))
    got = conv_norm(x, conv, norm)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    # by hand for one output: sum over the window, then (. - mean) * gamma / sqrt(var + eps) + beta
    s = norm.weight[1] / (norm.running_var[1] + norm.eps).sqrt()
    window = torch.nn.functional.pad(x, (1, 1, 1, 1))[0, :, 2:5, 4:7]  # output (1, 2)
    raw = (window * conv.weight[1]).sum() + (conv.bias[1] if bias else 0)
    torch.testing.assert_close(got[0, 1, 1, 2], (raw - norm.running_mean[1]) * s + norm.bias[1])
    weight, _ = folded_conv_params(conv, norm)
    torch.testing.assert_close(weight[1], conv.weight[1] * s)
    # a trainable convolution before a FrozenBN gets the unfolded model's gradients
    grads = torch.autograd.grad(got.square().sum(), [x, conv.weight])
    expected_grads = torch.autograd.grad(expected.square().sum(), [x, conv.weight])
    for a, b in zip(grads, expected_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    assert norm.weight.grad is None and not norm.weight.requires_grad  # still frozen


def test_other_norms_run_unfolded():
    conv, norm = nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4).train()
    x = torch.randn(2, 3, 5, 5)
    out = conv_norm(x, conv, norm)
    assert int(norm.num_batches_tracked) == 1  # BN itself ran, statistics updated
    torch.testing.assert_close(out.mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-6, rtol=0)


@pytest.mark.parametrize("stride,bias", [(1, True), (2, False)])
def test_nchw_weight_gradient_equals_nn_conv2d(stride, bias):
    torch.manual_seed(0)
    ref = nn.Conv2d(5, 7, 3, stride=stride, padding=1, bias=bias).double()
    ours = Conv2d(5, 7, 3, stride=stride, padding=1, bias=bias).double()
    ours.load_state_dict(ref.state_dict())
    ours.to(memory_format=torch.channels_last)
    x = torch.randn(2, 5, 11, 8, dtype=torch.float64).contiguous(
        memory_format=torch.channels_last).requires_grad_(True)
    out, expected = ours(x), ref(x)
    assert type(out.grad_fn).__name__ == "_ConvNCHWWeightGradBackward"
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, [x, *ours.parameters()], grad)
    want = torch.autograd.grad(expected, [x, *ref.parameters()], grad)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    # the input gradient stays channels-last, the weight gradient takes the weight's layout
    assert got[0].is_contiguous(memory_format=torch.channels_last)
    assert got[1].stride() == ours.weight.stride() != ref.weight.stride()


def test_nn_conv2d_path_elsewhere():
    conv = Conv2d(3, 4, 3, padding=1)
    cl = torch.randn(1, 3, 6, 6).contiguous(memory_format=torch.channels_last)
    for x in (cl, cl.contiguous()):  # NCHW input
        name = type(conv(x.requires_grad_(True)).grad_fn).__name__
        assert name == ("_ConvNCHWWeightGradBackward" if x is cl else "ConvolutionBackward0")
    with torch.no_grad():
        assert conv(cl).grad_fn is None
    one = Conv2d(3, 4, 1)
    assert type(one(cl).grad_fn).__name__ == "ConvolutionBackward0"  # 1x1: no gain


def test_adopt_conv2d_keeps_parameters():
    fpn = FeaturePyramidNetwork([8, 16], 4)
    before = {k: v.clone() for k, v in fpn.state_dict().items()}
    assert adopt_conv2d(fpn) is fpn
    convs = [m for m in fpn.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 4 and all(type(m) is Conv2d for m in convs)
    after = fpn.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], v) for k, v in before.items())


def test_fold_norms_for_good_gives_the_same_bits():
    """Every FrozenBN of a ResNet-18 (the stem, two per block, three projection shortcuts)
    folded into its convolution: the same float32 features, bit for bit, with the norms gone."""
    from backbones.resnet import ResNet
    g = torch.Generator().manual_seed(1)
    model = ResNet(depth=18, norm="FrozenBN", out_features=["res2", "res3", "res4", "res5"])
    for m in model.modules():
        if isinstance(m, FrozenBatchNorm2d):
            m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.copy_(torch.randn(m.bias.shape, generator=g))
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    x = torch.randn(1, 3, 64, 96, generator=g)
    with torch.no_grad():
        expected = model(x)
        assert fold_norms(model) == 1 + 8 * 2 + 3
        got = model(x)
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())
    for key in expected:
        assert torch.equal(got[key], expected[key]), key


def test_conv_norm_in_bf16_inference_is_one_call_within_one_rounding():
    """A folded convolution with ReLU (and a residual) on channels-last bf16 maps without
    autograd: the ReLU alone gives the separate steps' bits; with the residual, the sum is
    within one bf16 rounding of the exact value (the separate steps round twice)."""
    from backbones import layers
    g = torch.Generator().manual_seed(4)
    conv = nn.Conv2d(16, 32, 3, padding=1).to(torch.bfloat16)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.1)
        conv.bias.copy_(torch.randn(32, generator=g))
    cl = torch.channels_last
    x = torch.randn(2, 16, 12, 10, generator=g).to(torch.bfloat16).contiguous(memory_format=cl)
    res = torch.randn(2, 32, 12, 10, generator=g).to(torch.bfloat16).contiguous(memory_format=cl)
    with torch.no_grad():
        assert layers._fusable(x, conv, nn.Identity(), res)
        fused = conv_norm(x, conv, nn.Identity(), relu=True)
        assert torch.equal(fused, conv(x).relu_())
        got = conv_norm(x, conv, nn.Identity(), relu=True, residual=res)
        exact = (F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=1)
                 + res.double()).relu()
        ulp = (exact.abs().clamp_min(1e-30).log2().floor() - 7).exp2()  # bf16: 7 bits stored
        assert ((got.double() - exact).abs() <= ulp / 2 + 1e-4).all()  # + float32 sums
        twice = conv(x).add_(res).relu_()  # the separate steps: rounded, summed, rounded
        assert (twice.double() - exact).abs().max() > (got.double() - exact).abs().max()
        empty = x[:0]  # no RoI for a C4 head: the separate steps, an empty result
        assert not layers._fusable(empty, conv, nn.Identity(), res[:0])
        assert conv_norm(empty, conv, nn.Identity(), relu=True, residual=res[:0]).shape == (
            0, 32, 12, 10)
        # elsewhere, the separate steps: autograd, float32, NCHW, an unfolded norm
        assert not layers._fusable(x.float(), conv.float(), nn.Identity(), None)
        assert not layers._fusable(x.contiguous(), conv, nn.Identity(), None)
        assert not layers._fusable(x, conv, nn.BatchNorm2d(32), None)
    assert not layers._fusable(x, conv, nn.Identity(), None)  # grad enabled


def test_fold_norms_folds_batch_norms_in_eval_mode_only():
    """A ResNet-18 trained with BN (as the quick start): in eval mode each BN folds into its
    convolution with the same features within float32 rounding; in train mode none folds."""
    from backbones.resnet import ResNet
    g = torch.Generator().manual_seed(2)
    model = ResNet(depth=18, norm="BN", freeze_at=0, out_features=["res3", "res5"])
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g))
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    assert fold_norms(model) == 0  # train mode: its statistics still move
    x = torch.randn(2, 3, 64, 96, generator=g)
    with torch.no_grad():
        expected = model.eval()(x)
        assert fold_norms(model) == 1 + 8 * 2 + 3
        got = model(x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-4)
