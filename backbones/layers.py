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

**One oneDNN call in bf16 inference.** `conv_norm(x, conv, norm, relu=..., residual=...)` is
`relu(norm(conv(x)) + residual)`, each part optional. On the CPU, for a model that
`fold_norms` folded (norm `nn.Identity`) and `detection.precision` stored in bf16, with
channels-last bf16 maps and no autograd, the convolution, the residual sum and the ReLU run as
one oneDNN convolution with post-ops (`torch.ops.mkldnn._convolution_pointwise`, what
`torch.compile` emits for the same pattern): the ReLU is applied to the rounded bf16 output as
before (bit for bit), the sum is rounded once instead of twice (within one bf16 rounding of the
exact value, where two separate steps may be two roundings away). Anything else takes the
separate steps.

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

__all__ = ["Conv2d", "adopt_conv2d", "conv_norm", "fold_norms", "folded_conv_params"]


def folded_conv_params(conv: nn.Conv2d, norm: nn.Module) -> tuple[Tensor, Tensor]:
    """Weight (C_out, C_in, k, k) and bias (C_out,) of ``norm(conv(x))`` as one convolution,
    ``norm`` a FrozenBatchNorm2d or a batch norm using its running statistics."""
    scale = (norm.running_var + norm.eps).rsqrt()  # (C_out,)
    scale = scale if norm.weight is None else norm.weight * scale
    shift = -norm.running_mean * scale
    shift = shift if norm.bias is None else norm.bias + shift
    bias = shift if conv.bias is None else conv.bias * scale + shift
    # (C_out,) -> (C_out, 1, 1, 1): each output channel's filter scaled by its s
    return conv.weight * scale.view(-1, 1, 1, 1), bias


def conv_norm(x: Tensor, conv: nn.Conv2d, norm: nn.Module, *, relu: bool = False,
              residual: Tensor | None = None) -> Tensor:
    """``relu(norm(conv(x)) + residual)`` (ReLU and residual optional), with a FrozenBatchNorm2d
    folded into the convolution; one oneDNN call in bf16 inference (see the module doc)."""
    if _fusable(x, conv, norm, residual):
        return _fused_conv(x, conv, relu, residual)
    if isinstance(norm, FrozenBatchNorm2d):
        weight, bias = folded_conv_params(conv, norm)
        out = conv._conv_forward(x, weight, bias)
    else:
        out = norm(conv(x))
    if residual is not None:
        out += residual
    return out.relu_() if relu else out


_POINTWISE = getattr(getattr(torch.ops, "mkldnn", None), "_convolution_pointwise", None)


def _fusable(x: Tensor, conv: nn.Conv2d, norm: nn.Module, residual: Tensor | None) -> bool:
    """Whether :func:`conv_norm` may make one oneDNN call of it: CPU bf16 inference of a folded
    convolution on non-empty channels-last maps (and residual); the fused sum fails on an empty
    batch (a C4 head without RoIs)."""
    channels_last = torch.channels_last
    return (_POINTWISE is not None and isinstance(norm, nn.Identity) and x.dim() == 4
            and x.numel() > 0 and not torch.is_grad_enabled() and x.device.type == "cpu"
            and x.dtype == conv.weight.dtype == torch.bfloat16
            and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)
            and x.is_contiguous(memory_format=channels_last)
            and (residual is None or (residual.dtype == x.dtype
                                      and residual.is_contiguous(memory_format=channels_last))))


def _fused_conv(x: Tensor, conv: nn.Conv2d, relu: bool, residual: Tensor | None) -> Tensor:
    args = (conv.weight, conv.bias, list(conv.padding), list(conv.stride), list(conv.dilation),
            conv.groups)
    if residual is None:
        return _POINTWISE(x, *args, "relu" if relu else "none", [], "")
    return _POINTWISE.binary(x, residual, *args, "add", None, "relu" if relu else None, [], "")


def _foldable(norm: nn.Module) -> bool:
    """A FrozenBatchNorm2d, or a batch norm in eval mode with running statistics."""
    return isinstance(norm, FrozenBatchNorm2d) or (
        isinstance(norm, (nn.BatchNorm2d, nn.SyncBatchNorm)) and not norm.training
        and norm.running_mean is not None)


def _conv_norm_pairs(module: nn.Module):
    """``(parent, conv, norm name)`` of every convolution followed by a foldable norm in the
    way :func:`conv_norm` pairs them: ``convK`` / ``bnK`` attributes of one module (the ResNet
    stem and blocks) and a ``Sequential(conv, norm)`` (a block's projection shortcut)."""
    for parent in module.modules():
        children = dict(parent.named_children())
        if isinstance(parent, nn.Sequential) and len(parent) == 2:
            if isinstance(parent[0], nn.Conv2d) and _foldable(parent[1]):
                yield parent, parent[0], "1"
            continue
        for name, norm in children.items():
            conv = children.get("conv" + name[2:]) if name.startswith("bn") else None
            if _foldable(norm) and isinstance(conv, nn.Conv2d):
                yield parent, conv, name


@torch.no_grad()
def fold_norms(module: nn.Module) -> int:
    """Fold each FrozenBatchNorm2d, and each batch norm in eval mode, into the convolution
    before it, for good (in place): the convolution gets :func:`folded_conv_params` and the
    norm becomes ``nn.Identity``, so :func:`conv_norm` runs the one convolution without folding
    it again on every call. FrozenBN outputs are bitwise those of :func:`conv_norm` (the same
    float32 products); a batch norm's within float32 rounding of ``norm(conv(x))``. The
    module's ``state_dict`` no longer has the norms and a batch norm no longer trains, so this
    is for inference only (``Predictor``, ``resdet eval``), never for a model that trains or is
    saved. Returns the number folded."""
    pairs = list(_conv_norm_pairs(module))
    for parent, conv, name in pairs:
        weight, bias = folded_conv_params(conv, getattr(parent, name))
        conv.weight = nn.Parameter(weight, requires_grad=False)
        conv.bias = nn.Parameter(bias, requires_grad=False)
        if isinstance(parent, nn.Sequential):
            parent[int(name)] = nn.Identity()
        else:
            setattr(parent, name, nn.Identity())
    return len(pairs)


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
