"""Anchor boxes of the Region Proposal Network: ``sizes x aspect_ratios`` per location and level.

Shape shorthand: ``L`` levels, ``A`` anchors per location (``len(sizes[l]) * len(ratios[l])``),
``Hi, Wi`` a level's map size, ``Hp, Wp`` the padded batch size.

Base (cell) anchors of one level, centred on 0, for size ``s`` and aspect ratio ``r = h / w``::

    h_ratio = sqrt(r),  w_ratio = 1 / h_ratio
    w = w_ratio * s,  h = h_ratio * s          (so that w * h = s^2)
    base = round((-w / 2, -h / 2, w / 2, h / 2))

ordered ratio-major (all sizes of the first ratio first). Level ``l`` with map ``(Hi, Wi)`` has
stride ``(Hp // Hi, Wp // Wi)`` and anchors ``base + (x * stride_w, y * stride_h)`` for every cell,
ordered ``(y, x, a)`` -- the order of the RPN head's ``(N, A, Hi, Wi) -> (N, Hi*Wi*A)`` flattening.
This reproduces torchvision's ``AnchorGenerator`` exactly, including the rounding of base anchors
and its integer-division rule for strides.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["AnchorGenerator", "cell_anchors"]


def cell_anchors(sizes: Sequence[float], aspect_ratios: Sequence[float]) -> Tensor:
    """Zero-centred base anchors (len(aspect_ratios) * len(sizes), 4), rounded to integers."""
    scales = torch.as_tensor(sizes, dtype=torch.float32)
    ratios = torch.as_tensor(aspect_ratios, dtype=torch.float32)
    h_ratios = torch.sqrt(ratios)
    w_ratios = 1 / h_ratios
    ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)  # (R, S) -> (R*S,)
    hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)
    return (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round()


class AnchorGenerator(nn.Module):
    """Anchors for each level of a batch; cached per (map sizes, padded size, device, dtype)."""

    def __init__(
        self, *, sizes: Sequence[Sequence[float]], aspect_ratios: Sequence[Sequence[float]]
    ) -> None:
        super().__init__()
        if len(sizes) != len(aspect_ratios):
            raise ValueError(
                f"anchor sizes ({len(sizes)} levels) and aspect_ratios ({len(aspect_ratios)} "
                "levels) must have one entry per level"
            )
        self.sizes = [list(s) for s in sizes]
        self.aspect_ratios = [list(r) for r in aspect_ratios]
        self.cell_anchors = [cell_anchors(s, r) for s, r in zip(self.sizes, self.aspect_ratios)]
        self._cache: dict[tuple, list[Tensor]] = {}

    @property
    def num_anchors_per_location(self) -> list[int]:
        return [len(s) * len(r) for s, r in zip(self.sizes, self.aspect_ratios)]

    def forward(
        self, grid_sizes: Sequence[tuple[int, int]], image_size: tuple[int, int], *,
        device: torch.device | None = None, dtype: torch.dtype = torch.float32,
    ) -> list[Tensor]:
        """Anchors per level, each (Hi*Wi*A, 4), for maps ``grid_sizes`` of a padded batch."""
        if len(grid_sizes) != len(self.cell_anchors):
            raise ValueError(
                f"anchor generator has {len(self.cell_anchors)} levels but got "
                f"{len(grid_sizes)} feature maps"
            )
        device = torch.device("cpu") if device is None else device
        grids = tuple((int(g[0]), int(g[1])) for g in grid_sizes)
        key = (grids, (int(image_size[0]), int(image_size[1])), device, dtype)
        anchors = self._cache.get(key)
        if anchors is None:
            anchors = [
                self._grid_anchors(base, grid, image_size).to(device=device, dtype=dtype)
                for base, grid in zip(self.cell_anchors, grid_sizes)
            ]
            if len(self._cache) >= 16:  # multi-scale training sees a few dozen sizes at most
                self._cache.clear()
            self._cache[key] = anchors
        return anchors

    @staticmethod
    def _grid_anchors(base: Tensor, grid: tuple[int, int], image_size: tuple[int, int]) -> Tensor:
        grid_h, grid_w = int(grid[0]), int(grid[1])
        stride_h, stride_w = int(image_size[0]) // grid_h, int(image_size[1]) // grid_w
        shifts_x = torch.arange(grid_w, dtype=torch.int32) * stride_w
        shifts_y = torch.arange(grid_h, dtype=torch.int32) * stride_h
        shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
        shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
        shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)  # (Hi*Wi, 4)
        # (Hi*Wi, 1, 4) + (1, A, 4) -> (Hi*Wi*A, 4)
        return (shifts.view(-1, 1, 4) + base.view(1, -1, 4)).reshape(-1, 4)
