"""Instance masks in the model's contract: compact ground truth in, RoI-sized probabilities out.

Shape shorthand: ``n`` objects of one image, ``C`` runs of all of them, ``R`` RoIs, ``M`` the
mask size, ``D`` detections, ``H, W`` an image's height and width.

**Ground truth** (:class:`InstanceMasks`): one image's object masks as COCO run-length encodings
at the size the image was annotated at, ``(h, w)``: each mask's pixels in column-major order
(``p = x * h + y``), as alternating runs of 0s and 1s, 0s first (COCO's uncompressed RLE
``counts``). The data transforms do not touch them: they record ``affine``, the map from the
current (resized, flipped) image's pixels back to the annotated ones::

    x_ref = sx * x + tx,    y_ref = sy * y + ty

in continuous coordinates (pixel ``(i, j)`` spans ``[j, j + 1) x [i, i + 1)``), so a horizontal
flip is ``sx < 0``. A mask is only ever read at points: :meth:`InstanceMasks.crop_and_resize`
reads each object at the ``M x M`` cell centres of its RoIs (the training targets, as Detectron2
rasterises polygons inside a box), :meth:`InstanceMasks.rasterize` at every pixel centre of the
current image. A point reads the annotated pixel it falls in; outside the image it reads 0.

**Outputs**: the model returns ``masks`` ``(D, 1, M, M)`` probabilities at RoI resolution;
:func:`paste_masks` turns them into ``(D, H, W)`` bool masks of an image, with torchvision's
rule (``paste_masks_in_image``): each mask padded by one cell of zeros, its box enlarged by
``(M + 2) / M`` about its centre and truncated to integer pixels ``x0, y0, x1, y1`` (both ends
inclusive), the padded mask resized bilinearly (``align_corners=False``) to ``(y1 - y0 + 1,
x1 - x0 + 1)`` pixels and placed there, then thresholded at ``> threshold``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["InstanceMasks", "paste_masks"]


class InstanceMasks:
    """The masks of one image's ``n`` objects (see the module docstring).

    Args:
        counts: one int tensor (or sequence) of RLE counts per object, each summing to ``h * w``.
        size: ``(h, w)``, the size the counts encode (the annotated image).
        affine: ``(sx, tx, sy, ty)`` from the current image's pixels to ``size``'s; default the
            identity (the current image is the annotated one).
    """

    def __init__(self, counts: Sequence[Tensor | Sequence[int]], size: tuple[int, int], *,
                 affine: Sequence[float] | Tensor = (1.0, 0.0, 1.0, 0.0),
                 device: torch.device | str | None = None) -> None:
        self.size = (int(size[0]), int(size[1]))
        area = self.size[0] * self.size[1]
        runs = [torch.as_tensor(c, dtype=torch.int64, device=device).reshape(-1) for c in counts]
        for i, c in enumerate(runs):
            if c.numel() == 0 or int(c.sum()) != area or bool((c < 0).any()):
                raise ValueError(f"mask {i}: RLE counts must be >= 0 and sum to h * w = {area} "
                                 f"for size {self.size}, got {c.numel()} counts summing to "
                                 f"{int(c.sum()) if c.numel() else 0}")
        self.num_runs = torch.tensor([len(c) for c in runs], dtype=torch.int64, device=device)
        # run ends of all objects in one increasing sequence: object o's pixel p sits at
        # o * h * w + p, so one searchsorted finds the run of any (object, pixel)
        offsets = torch.arange(len(runs), dtype=torch.int64, device=device) * area
        self.run_ends = (torch.cat([c.cumsum(0) for c in runs]) if runs else
                         torch.zeros(0, dtype=torch.int64, device=device))
        self.run_ends += torch.repeat_interleave(offsets, self.num_runs)
        self.first_run = self.num_runs.cumsum(0) - self.num_runs  # (n,)
        self.affine = torch.as_tensor(affine, dtype=torch.float64, device=device).reshape(4)

    @classmethod
    def _of(cls, run_ends: Tensor, num_runs: Tensor, size: tuple[int, int], affine: Tensor
            ) -> InstanceMasks:
        out = cls.__new__(cls)
        out.run_ends, out.num_runs, out.size, out.affine = run_ends, num_runs, size, affine
        out.first_run = num_runs.cumsum(0) - num_runs
        return out

    def __len__(self) -> int:
        return int(self.num_runs.shape[0])

    def __repr__(self) -> str:
        return (f"InstanceMasks(n={len(self)}, size={self.size}, "
                f"affine={[round(v, 4) for v in self.affine.tolist()]})")

    @property
    def device(self) -> torch.device:
        return self.run_ends.device

    def to(self, device: torch.device | str, non_blocking: bool = False) -> InstanceMasks:
        return self._of(self.run_ends.to(device, non_blocking=non_blocking),
                        self.num_runs.to(device, non_blocking=non_blocking), self.size,
                        self.affine.to(device, non_blocking=non_blocking))

    def select(self, objects: Sequence[int] | Tensor) -> InstanceMasks:
        """The masks of ``objects`` (indices into these, in that order), e.g. of the boxes a
        crop kept; the same ``size`` and ``affine``."""
        objects = torch.as_tensor(objects, dtype=torch.int64, device=self.device).reshape(-1)
        area = self.size[0] * self.size[1]
        num = self.num_runs[objects]  # (m,)
        starts = torch.repeat_interleave(self.first_run[objects], num)  # (C',) a run's object
        within = torch.arange(int(num.sum()), device=self.device) - torch.repeat_interleave(
            num.cumsum(0) - num, num)  # (C',) the run's place in its object
        # object o's runs move from slot o to slot i of the selection: shift by (i - o) * area
        shift = torch.repeat_interleave(
            (torch.arange(len(objects), device=self.device) - objects) * area, num)
        return self._of(self.run_ends[starts + within] + shift, num, self.size, self.affine)

    def with_affine(self, affine: Sequence[float] | Tensor) -> InstanceMasks:
        """The same masks seen from another image: ``affine`` maps its pixels to ``size``'s."""
        affine = torch.as_tensor(affine, dtype=torch.float64, device=self.device).reshape(4)
        return self._of(self.run_ends, self.num_runs, self.size, affine)

    def _read(self, objects: Tensor, xs: Tensor, ys: Tensor) -> Tensor:
        """Mask values of ``objects`` (R,) at the points ``ys x xs`` ((R, My), (R, Mx) in the
        current image's pixels) -> bool (R, My, Mx)."""
        h, w = self.size
        sx, tx, sy, ty = self.affine.tolist()
        col = torch.floor(xs.double() * sx + tx).to(torch.int64)  # (R, Mx) annotated pixels
        row = torch.floor(ys.double() * sy + ty).to(torch.int64)  # (R, My)
        inside = (((row >= 0) & (row < h))[:, :, None]
                  & ((col >= 0) & (col < w))[:, None, :])  # (R, My, Mx)
        pixel = col.clamp(0, w - 1)[:, None, :] * h + row.clamp(0, h - 1)[:, :, None]
        position = objects.to(torch.int64)[:, None, None] * (h * w) + pixel  # (R, My, Mx)
        run = torch.searchsorted(self.run_ends, position.reshape(-1), right=True)
        run = run.reshape(position.shape) - self.first_run[objects][:, None, None]
        return inside & (run % 2 == 1)  # runs alternate 0s, 1s, 0s first

    @torch.no_grad()
    def crop_and_resize(self, boxes: Tensor, objects: Tensor, mask_size: int) -> Tensor:
        """Training targets: the masks of ``objects`` (R,) read at the ``M x M`` cell centres of
        ``boxes`` (R, 4) (xyxy, current image pixels) -> float (R, M, M) of 0s and 1s."""
        if len(boxes) == 0:
            return boxes.new_zeros((0, mask_size, mask_size))
        centres = (torch.arange(mask_size, device=boxes.device, dtype=torch.float64) + 0.5
                   ) / mask_size  # (M,)
        b = boxes.double()
        xs = b[:, 0:1] + centres * (b[:, 2:3] - b[:, 0:1])  # (R, M)
        ys = b[:, 1:2] + centres * (b[:, 3:4] - b[:, 1:2])
        return self._read(objects.to(self.device), xs, ys).to(boxes.dtype)

    @torch.no_grad()
    def rasterize(self, height: int, width: int) -> Tensor:
        """Every mask at the pixel centres of the current ``height x width`` image -> bool
        (n, H, W)."""
        n = len(self)
        xs = (torch.arange(width, device=self.device, dtype=torch.float64) + 0.5).expand(n, -1)
        ys = (torch.arange(height, device=self.device, dtype=torch.float64) + 0.5).expand(n, -1)
        return self._read(torch.arange(n, device=self.device), xs, ys)


def paste_masks(masks: Tensor, boxes: Tensor, image_size: tuple[int, int], *,
                threshold: float = 0.5) -> Tensor:
    """RoI masks into their image (torchvision's rule, module docstring).

    Args:
        masks: (D, 1, M, M) or (D, M, M) probabilities, each over its box.
        boxes: (D, 4) xyxy in the pixels of the image to paste into.
        image_size: ``(H, W)`` of that image.
        threshold: a pixel is in the mask when its probability is above it.

    Returns bool (D, H, W).
    """
    height, width = (int(v) for v in image_size)
    masks = masks.reshape(-1, masks.shape[-2], masks.shape[-1]).float()  # (D, M, M)
    out = torch.zeros((len(masks), height, width), dtype=torch.bool, device=masks.device)
    if len(masks) == 0:
        return out
    size = masks.shape[-1]
    padded = F.pad(masks, (1, 1, 1, 1))  # (D, M + 2, M + 2)
    scale = (size + 2) / size
    b = boxes.float()
    centre, half = (b[:, :2] + b[:, 2:]) * 0.5, (b[:, 2:] - b[:, :2]) * 0.5 * scale
    corners = torch.cat([centre - half, centre + half], dim=1).to(torch.int64)  # truncated
    for i, (x0, y0, x1, y1) in enumerate(corners.tolist()):
        h, w = max(y1 - y0 + 1, 1), max(x1 - x0 + 1, 1)
        xa, xb, ya, yb = max(x0, 0), min(x1 + 1, width), max(y0, 0), min(y1 + 1, height)
        if xa >= xb or ya >= yb:
            continue
        # (M + 2, M + 2) -> (1, 1, M + 2, M + 2) -> (1, 1, h, w) -> (h, w)
        resized = F.interpolate(padded[i][None, None], size=(h, w), mode="bilinear",
                                align_corners=False)[0, 0]
        out[i, ya:yb, xa:xb] = resized[ya - y0:yb - y0, xa - x0:xb - x0] > threshold
    return out
