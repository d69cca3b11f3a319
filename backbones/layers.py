"""Convolution helpers shared by the backbones and the detector: FrozenBN folding, and a
convolution whose CPU weight gradient is computed in NCHW.

Shape shorthand: `N` images, `C_in`/`C_out` channels, `k` kernel size.

**FrozenBN folding.** A frozen batch norm after a convolution is an affine map per output channel,

    FrozenBN(conv(x)) = conv(x) * s + t,   s = gamma / sqrt(var + eps),   t = beta - mean * s,

so it equals one convolution with weight `W * s` (per output channel) and bias `b * s + t`.
`conv_norm(x, conv, norm)` computes that folded convolution on every call: the activations are
never rescaled (no extra pass over them, forward or backward), while parameters and buffers stay
as they are -- `state_dict()` keeps the unfolded layout, checkpoints load and save unchanged, and a
trainable convolution before a FrozenBN still trains (its gradient flows through `W * s`). Any
other norm (BN, GN, SyncBN) runs as usual: `norm(conv(x))`.

**NCHW weight gradient.** On the CPU, oneDNN's weight-gradient kernels for channels-last inputs
of k > 1 convolutions are several times slower than for NCHW ones, while its channels-last
forward and input-gradient kernels are as fast or faster (docs/benchmarks.md).
`Conv2d` (an `nn.Conv2d` with the same parameters) keeps the channels-last forward and input
gradient and computes the weight gradient from NCHW copies of its input and output gradient, when
training on the CPU with channels-last maps. Elsewhere (CUDA, NCHW inputs, 1x1 kernels,
inference) it is `nn.Conv2d`.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.ops import FrozenBatchNorm2d

__all__ = ["Conv2d", "adopt_conv2d", "conv_norm", "folded_conv_params"]


def folded_conv_params(conv: nn.Conv2d, norm: FrozenBatchNorm2d) -> tuple[Tensor, Tensor]:
    """Weight (C_out, C_in, k, k) and bias (C_out,) of ``norm(conv(x))`` as one convolution."""
    scale = norm.weight * (norm.running_var + norm.eps).rsqrt()  # (C_out,)
    shift = norm.bias - norm.running_mean * scale
    bias = shift if conv.bias is None else conv.bias * scale + shift
    # (C_out,) -> (C_out, 1, 1, 1): each output channel's filter scaled by its s
    return conv.weight * scale.view(-1, 1, 1, 1), bias


def conv_norm(x: Tensor, conv: nn.Conv2d, norm: nn.Module) -> Tensor:
    """``norm(conv(x))``, with a FrozenBatchNorm2d folded into the convolution."""
    if not isinstance(norm, FrozenBatchNorm2d):
        return norm(conv(x))
    weight, bias = folded_conv_params(conv, norm)
    return conv._conv_forward(x, weight, bias)


class _ConvNCHWWeightGrad(torch.autograd.Function):
    """``F.conv2d`` whose weight gradient is computed from NCHW copies (see the module doc)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, stride, padding, dilation,
                groups: int) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.conf = (stride, padding, dilation, groups)
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conf
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_x = grad_w = grad_b = None
        if need_x:  # channels-last, as nn.Conv2d computes it
            grad_x = torch.ops.aten.convolution_backward(
                grad, x, weight, None, stride, padding, dilation, False, [0, 0], groups,
                [True, False, False])[0]
        if need_w:  # NCHW, returned in the weight's own layout
            grad_w = torch.nn.grad.conv2d_weight(x.contiguous(), weight.shape, grad.contiguous(),
                                                 stride, padding, dilation, groups)
            if not weight.is_contiguous():  # channels-last parameters: their layout
                grad_w = grad_w.contiguous(memory_format=torch.channels_last)
        if need_b and ctx.has_bias:
            grad_b = grad.sum(dim=(0, 2, 3))
        return grad_x, grad_w, grad_b, None, None, None, None


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` that computes its CPU weight gradient in NCHW for channels-last inputs."""

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if (self.padding_mode == "zeros" and not isinstance(self.padding, str)
                and input.device.type == "cpu" and weight.requires_grad and torch.is_grad_enabled()
                and not torch.is_autocast_enabled("cpu")  # bf16: oneDNN's own backward
                and self.kernel_size != (1, 1) and not input.is_contiguous()
                and input.is_contiguous(memory_format=torch.channels_last)):
            return _ConvNCHWWeightGrad.apply(input, weight, bias, self.stride, self.padding,
                                             self.dilation, self.groups)
        return super()._conv_forward(input, weight, bias)


def adopt_conv2d(module: nn.Module) -> nn.Module:
    """Turn every plain ``nn.Conv2d`` inside ``module`` (e.g. torchvision's FPN) into
    :class:`Conv2d`, in place: the same parameters, names and state_dict. Returns ``module``."""
    for m in module.modules():
        if type(m) is nn.Conv2d:
            m.__class__ = Conv2d
    return module
