"""RoI feature pooling (RoIAlign or RoIPool from ``torchvision.ops``), single or multi-level.

``pooler_type``: ``ROIAlign`` (torchvision's ``MultiScaleRoIAlign``, ``aligned=False``),
``ROIAlignV2`` (``aligned=True``: box corners shifted by -0.5 px so that a pixel's centre sits at
``i + 0.5``, Detectron2's default) or ``ROIPool`` (quantised max pooling, Fast R-CNN).

Shape shorthand: ``N`` images, ``R`` RoIs over the batch, ``C`` channels, ``S`` output size,
``L`` levels.

With several levels (FPN), RoI ``(x1, y1, x2, y2)`` goes to level (FPN paper, eq. 1)::

    k = floor(k0 + log2(sqrt(w * h) / 224) + 1e-6),  clamped to [k_min, k_max]

with ``k0 = 4`` and ``k_min, k_max = log2`` of the first and last level's stride -- torchvision's
``LevelMapper`` formula, so pooled features equal ``MultiScaleRoIAlign``'s.

torchvision's CPU RoIAlign kernel (forward and backward) runs on one thread. With several torch
threads, :func:`threaded_roi_align` runs it on slices of the RoIs on as many Python threads (the
kernel releases the GIL), forward and backward: the pooled features equal one call's bitwise; the
feature gradient is the sum of the slices' gradients (equal up to float summation order).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor, nn
from torchvision.ops import roi_align, roi_pool

__all__ = ["RoIPooler", "assign_fpn_levels", "nchw_float32", "threaded_roi_align"]


def assign_fpn_levels(
    boxes: Tensor, *, min_level: int, max_level: int, canonical_scale: float = 224.0,
    canonical_level: int = 4, eps: float = 1e-6,
) -> Tensor:
    """Level index ``0 .. max_level - min_level`` of each box (R, 4) -> int64 (R,)."""
    sizes = torch.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    eps_t = torch.tensor(eps, dtype=sizes.dtype, device=sizes.device)
    levels = torch.floor(canonical_level + torch.log2(sizes / canonical_scale) + eps_t)
    levels = levels.clamp(min=min_level, max=max_level)
    return levels.to(torch.int64) - min_level


class _ThreadedRoIAlign(torch.autograd.Function):
    """torchvision's RoIAlign kernels on ``threads`` slices of the RoIs at once."""

    @staticmethod
    def forward(ctx, feature: Tensor, rois: Tensor, output_size: tuple[int, int], scale: float,
                sampling_ratio: int, aligned: bool, threads: int) -> Tensor:
        feature = nchw_float32(feature) if feature.dtype == torch.float32 else \
            feature.contiguous()  # the kernel's NCHW, converted once, not per slice
        ctx.save_for_backward(rois)
        ctx.conf = (tuple(feature.shape), output_size, scale, sampling_ratio, aligned, threads)

        def pool(part: Tensor) -> Tensor:
            return torch.ops.torchvision.roi_align(feature, part, scale, *output_size,
                                                   sampling_ratio, aligned)

        with ThreadPoolExecutor(threads) as workers:
            return torch.cat(list(workers.map(pool, rois.tensor_split(threads))))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        (rois,) = ctx.saved_tensors
        shape, (h, w), scale, sampling_ratio, aligned, threads = ctx.conf

        def part_grad(part: tuple[Tensor, Tensor]) -> Tensor:  # (N, C, Hi, Wi) per slice
            return torch.ops.torchvision._roi_align_backward(
                part[0].contiguous(), part[1], scale, h, w, *shape, sampling_ratio, aligned)

        with ThreadPoolExecutor(threads) as workers:
            parts = list(workers.map(part_grad, zip(grad.tensor_split(threads),
                                                    rois.tensor_split(threads))))
        total = parts[0]
        for part in parts[1:]:
            total += part
        return total, None, None, None, None, None, None


def nchw_float32(feature: Tensor, *, rows: int = 1024) -> Tensor:
    """``feature.float().contiguous()``: (N, C, H, W) maps as RoIAlign's kernel reads them. A
    channels-last CPU map without autograd is transposed ``rows`` pixels at a time, (rows, C)
    -> (C, rows): PyTorch's one transposing copy of a whole map is ~5x slower (it reads the
    source with a stride of C elements across all of H x W)."""
    if (feature.device.type != "cpu" or feature.dim() != 4 or feature.is_contiguous()
            or not feature.is_contiguous(memory_format=torch.channels_last)
            or (feature.requires_grad and torch.is_grad_enabled())):
        return feature.float().contiguous()
    n, c, h, w = feature.shape
    pixels = feature.permute(0, 2, 3, 1).reshape(n, h * w, c)  # (N, C, H, W) -> (N, H*W, C)
    out = torch.empty(n, c, h * w, dtype=torch.float32)
    for start in range(0, h * w, rows):
        out[:, :, start:start + rows].copy_(pixels[:, start:start + rows].transpose(1, 2))
    return out.view(n, c, h, w)  # (N, C, H*W) -> (N, C, H, W)


def threaded_roi_align(feature: Tensor, rois: Tensor, output_size: tuple[int, int],
                       scale: float, sampling_ratio: int, *, aligned: bool = False,
                       min_rois_per_thread: int = 64) -> Tensor:
    """``torchvision.ops.roi_align``, on up to ``torch.get_num_threads()`` threads on the CPU
    (at least ``min_rois_per_thread`` RoIs each); one call elsewhere (CUDA, tracing). Under CPU
    autocast it computes in float32 and returns the feature's dtype, as torchvision's autocast
    rule for ``roi_align`` does, on the same threads."""
    threads = min(torch.get_num_threads(), rois.shape[0] // max(min_rois_per_thread, 1))
    if (feature.device.type == "cpu" and torch.is_autocast_enabled("cpu")
            and not torch.jit.is_tracing() and not torch.jit.is_scripting()):
        with torch.autocast("cpu", enabled=False):
            return threaded_roi_align(nchw_float32(feature), rois.float(), output_size, scale,
                                      sampling_ratio, aligned=aligned,
                                      min_rois_per_thread=min_rois_per_thread).to(feature.dtype)
    if (threads < 2 or feature.device.type != "cpu" or torch.is_autocast_enabled("cpu")
            or torch.jit.is_tracing() or torch.jit.is_scripting()
            or feature.dtype != rois.dtype):
        return roi_align(feature, rois, output_size, scale, sampling_ratio, aligned)
    return _ThreadedRoIAlign.apply(feature, rois, output_size, scale, sampling_ratio, aligned,
                                   threads)


class RoIPooler(nn.Module):
    """Pool an ``S x S`` feature per RoI from one level, or from its FPN level among several."""

    def __init__(
        self, *, output_size: int, strides: Sequence[int], pooler_type: str = "ROIAlign",
        sampling_ratio: int = 0,
    ) -> None:
        super().__init__()
        if pooler_type not in ("ROIAlign", "ROIAlignV2", "ROIPool"):
            raise ValueError("pooler_type must be 'ROIAlign', 'ROIAlignV2' or 'ROIPool', "
                             f"got {pooler_type!r}")
        levels = [math.log2(s) for s in strides]
        if not strides or any(lv != int(lv) for lv in levels):
            raise ValueError(f"pooler strides must be powers of two, got {list(strides)}")
        if any(b - a != 1 for a, b in zip(levels, levels[1:])):
            raise ValueError(f"pooler strides must be consecutive powers of two, got {strides}")
        self.output_size = (int(output_size), int(output_size))
        self.scales = [1.0 / s for s in strides]
        self.min_level, self.max_level = int(levels[0]), int(levels[-1])
        self.pooler_type = pooler_type
        self.sampling_ratio = int(sampling_ratio)

    def _pool(self, feature: Tensor, rois: Tensor, scale: float) -> Tensor:
        if self.pooler_type == "ROIPool":
            # torchvision's roi_pool has no CPU autocast rule: bf16 maps meet float32 boxes.
            # A max is exact in any dtype, so the maps go to the boxes' dtype and come back.
            return roi_pool(feature.to(rois.dtype), rois, self.output_size,
                            scale).to(feature.dtype)
        return threaded_roi_align(feature, rois, self.output_size, scale, self.sampling_ratio,
                                  aligned=self.pooler_type == "ROIAlignV2")

    def forward(self, features: Sequence[Tensor], boxes: Sequence[Tensor]) -> Tensor:
        """``features`` L x (N, C, Hi, Wi), ``boxes`` N x (Ri, 4) -> (R, C, S, S)."""
        if len(features) != len(self.scales):
            raise ValueError(f"pooler expects {len(self.scales)} levels, got {len(features)}")
        concat = torch.cat(list(boxes), dim=0)
        image_idx = torch.repeat_interleave(
            torch.arange(len(boxes), device=concat.device, dtype=concat.dtype),
            torch.tensor([len(b) for b in boxes], device=concat.device),
        )
        rois = torch.cat([image_idx[:, None], concat], dim=1)  # (R, 5): image index, box
        if len(features) == 1:
            return self._pool(features[0], rois, self.scales[0])

        levels = assign_fpn_levels(concat, min_level=self.min_level, max_level=self.max_level)
        first = features[0]
        out = first.new_zeros((rois.shape[0], first.shape[1], *self.output_size))
        for level, (feature, scale) in enumerate(zip(features, self.scales)):
            idx = torch.nonzero(levels == level).squeeze(1)
            if idx.numel():
                out[idx] = self._pool(feature, rois[idx], scale).to(out.dtype)
        return out
