"""Index samplers: infinite shuffled training stream (uniform or repeat-factor), inference
shards, aspect-ratio batches.

Distributed layout (as Detectron2): every rank draws the same global stream of indices from the
shared ``seed``; rank ``r`` of ``W`` takes positions ``r, r + W, r + 2W, ...``. The stream depends
only on ``(size, seed)``, so a run resumed at iteration ``k`` that skips its first ``k`` batches
(``SkipBatches``) sees the very batches the first run would have seen.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

__all__ = ["AspectRatioBatchSampler", "InferenceSampler", "RepeatFactorTrainingSampler",
           "SkipBatches", "TrainingSampler", "aspect_ratio_groups", "dist_rank_world_size",
           "repeat_factors"]


def dist_rank_world_size(rank: int | None = None, world_size: int | None = None
                         ) -> tuple[int, int]:
    """Explicit values win; else those of the initialised process group; else ``(0, 1)``."""
    initialised = torch.distributed.is_available() and torch.distributed.is_initialized()
    if world_size is None:
        world_size = torch.distributed.get_world_size() if initialised else 1
    if rank is None:
        rank = torch.distributed.get_rank() if initialised else 0
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
    return rank, world_size


class TrainingSampler(Sampler[int]):
    """Infinite stream of indices in ``[0, size)``: one permutation per epoch from a generator
    seeded once with ``seed``; this rank's share is every ``world_size``-th element."""

    def __init__(self, size: int, *, seed: int, shuffle: bool = True, rank: int | None = None,
                 world_size: int | None = None) -> None:
        if size <= 0:
            raise ValueError(f"TrainingSampler needs a non-empty dataset, got size {size}")
        self.size, self.seed, self.shuffle = size, int(seed), shuffle
        self.rank, self.world_size = dist_rank_world_size(rank, world_size)

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(self._global_stream(), self.rank, None, self.world_size)

    def _global_stream(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(self.seed)
        while True:
            if self.shuffle:
                yield from torch.randperm(self.size, generator=generator).tolist()
            else:
                yield from range(self.size)


def repeat_factors(offsets: np.ndarray, labels: np.ndarray, *, threshold: float) -> np.ndarray:
    """Per-image repeat factors of LVIS (Gupta et al. 2019, sec. 4) / Detectron2.

    With ``f(c)`` the fraction of the images that hold class ``c``::

        r(c) = max(1, sqrt(threshold / f(c)))        r(image) = max(1, max_{c in image} r(c))

    Args:
        offsets: (N + 1,) the boxes of image ``i`` are ``labels[offsets[i]:offsets[i + 1]]``.
        labels: (B,) the class of each box.
        threshold: ``t``; classes in fewer than a fraction ``t`` of the images are repeated.

    Returns (N,) float64 factors >= 1 (an image without boxes: 1).
    """
    offsets, labels = np.asarray(offsets, np.int64), np.asarray(labels, np.int64)
    num_images = len(offsets) - 1
    if num_images <= 0:
        raise ValueError("repeat_factors needs at least one image")
    if threshold <= 0:
        raise ValueError(f"repeat threshold must be > 0, got {threshold}")
    image_of_box = np.repeat(np.arange(num_images), np.diff(offsets))
    pairs = np.unique(np.stack([image_of_box, labels]), axis=1)  # (2, P) unique (image, class)
    classes, images_with = np.unique(pairs[1], return_counts=True)
    class_factor = np.maximum(1.0, np.sqrt(threshold / (images_with / num_images)))
    factors = np.ones(num_images)
    np.maximum.at(factors, pairs[0], class_factor[np.searchsorted(classes, pairs[1])])
    return factors


class RepeatFactorTrainingSampler(TrainingSampler):
    """Infinite stream where image ``i`` appears ``r_i`` times per epoch on average
    (Detectron2's ``RepeatFactorTrainingSampler``): each epoch repeats it ``floor(r_i)`` times,
    plus once more with probability ``r_i - floor(r_i)`` (stochastic rounding), then shuffles.

    Both draws come from one generator seeded once with ``seed``, so the stream is a pure
    function of ``(repeat_factors, seed)`` and a resumed run skipping its first batches sees
    the very batches of an uninterrupted one; ranks share it as ``TrainingSampler`` does.
    """

    def __init__(self, repeat_factors: Sequence[float] | np.ndarray, *, seed: int,
                 rank: int | None = None, world_size: int | None = None) -> None:
        factors = torch.as_tensor(np.asarray(repeat_factors, dtype=np.float64))
        if factors.ndim != 1 or not bool((factors >= 1).all()):
            raise ValueError("repeat_factors must be a 1-d sequence of values >= 1")
        super().__init__(len(factors), seed=seed, rank=rank, world_size=world_size)
        self.int_part = factors.floor()
        self.frac_part = factors - self.int_part

    def _global_stream(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(self.seed)
        while True:
            rounded = self.int_part + (torch.rand(self.size, generator=generator,
                                                  dtype=torch.float64) < self.frac_part)
            indices = torch.repeat_interleave(torch.arange(self.size), rounded.long())
            yield from indices[torch.randperm(len(indices), generator=generator)].tolist()


class InferenceSampler(Sampler[int]):
    """Contiguous shard of ``[0, size)`` for this rank; shard sizes differ by at most one, the
    union over ranks is every index exactly once (no padding, unlike ``DistributedSampler``)."""

    def __init__(self, size: int, *, rank: int | None = None, world_size: int | None = None
                 ) -> None:
        self.size = size
        self.rank, self.world_size = dist_rank_world_size(rank, world_size)
        self.start = size * self.rank // self.world_size
        self.end = size * (self.rank + 1) // self.world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.end))

    def __len__(self) -> int:
        return self.end - self.start


def aspect_ratio_groups(image_sizes: Sequence[Sequence[int]]) -> list[int]:
    """Group id per image from ``(height, width)``: 0 for landscape (w >= h), 1 for portrait."""
    return [0 if int(w) >= int(h) else 1 for h, w in image_sizes]


class AspectRatioBatchSampler:
    """Batches of ``batch_size`` indices sharing one group id (torchvision's
    ``GroupedBatchSampler``, Detectron2's ``AspectRatioGroupedDataset``), so padding a batch
    wastes little. A batch is emitted when its group's buffer fills; the remainder of a finite
    sampler is dropped."""

    def __init__(self, sampler: Iterable[int], group_ids: Sequence[int], batch_size: int) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.sampler, self.batch_size = sampler, batch_size
        self.group_ids = [int(g) for g in group_ids]

    def __iter__(self) -> Iterator[list[int]]:
        buffers: dict[int, list[int]] = {}
        for idx in self.sampler:
            buffer = buffers.setdefault(self.group_ids[idx], [])
            buffer.append(idx)
            if len(buffer) == self.batch_size:
                yield buffer[:]
                buffer.clear()


class SkipBatches:
    """The batches of ``batch_sampler`` from number ``start`` on (resuming at an iteration)."""

    def __init__(self, batch_sampler: Iterable[list[int]], start: int) -> None:
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        self.batch_sampler, self.start = batch_sampler, start

    def __iter__(self) -> Iterator[list[int]]:
        return itertools.islice(iter(self.batch_sampler), self.start, None)
