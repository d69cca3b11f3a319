"""DataLoaders for training (infinite, resumable, aspect-grouped) and inference (sharded).

Each yields ``list[dict]`` samples (``collate``); decoding and augmentation run in the workers.
``batch_size`` is per process: with ``W`` processes the global batch is ``W * batch_size``.

**Workers and OpenCV.** Workers are forked, and each limits OpenCV to one thread (one worker per
core). A forked child inherits OpenCV's thread pool without its threads: if the parent had used
OpenCV (drawing, evaluation, generating the synthetic set), the child's ``cv2.setNumThreads``
waits forever on the dead threads' condition variable. So the loaders start their workers while
this process's OpenCV pool is shut down (``cv2.setNumThreads(1)`` for the instant of the fork,
then restored, :class:`ForkSafeLoader`): the parent keeps its threads, the workers inherit none.
"""

from __future__ import annotations

import contextlib
import functools
import random
from collections.abc import Iterable, Iterator
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler

from ..engine.preemption import defer_to_main_process
from .samplers import (AspectRatioBatchSampler, InferenceSampler, SkipBatches, TrainingSampler,
                       aspect_ratio_groups, dist_rank_world_size)

__all__ = ["ForkSafeLoader", "SeededBatches", "SeededSamples", "collate", "make_test_loader",
           "make_train_loader", "move_batch"]


def collate(batch: list[dict[str, Any] | None]) -> list[dict[str, Any]]:
    """Keep samples as a list (images differ in size); drop ``None`` (skipped bad images)."""
    return [sample for sample in batch if sample is not None]


def move_batch(batch: list[dict], device: torch.device, *, with_targets: bool = True
               ) -> tuple[list[torch.Tensor], list[dict] | None]:
    """The model's inputs from a collated batch, on ``device``: images (and targets, for
    training and for a validation loss)."""
    images = [s["image"].to(device, non_blocking=True) for s in batch]
    if not with_targets:
        return images, None
    targets = [{"boxes": s["boxes"].to(device, non_blocking=True),
                "labels": s["labels"].to(device, non_blocking=True)} for s in batch]
    for target, sample in zip(targets, batch):
        if "masks" in sample:  # InstanceMasks (Mask R-CNN)
            target["masks"] = sample["masks"].to(device, non_blocking=True)
    return images, targets


def _worker_seed(seed: int, rank: int, start_iter: int, worker_id: int) -> int:
    """Independent 32-bit seed per (run seed, rank, resume point, worker)."""
    return int(np.random.SeedSequence([seed, rank, start_iter, worker_id]).generate_state(1)[0])


def _seed_transforms(seed: int, dataset: Dataset) -> None:
    transforms = getattr(dataset, "transforms", None)
    if hasattr(transforms, "set_random_seed"):  # albumentations keeps its own RNG
        transforms.set_random_seed(seed)


@contextlib.contextmanager
def _opencv_pool_shut_down() -> Iterator[None]:
    """OpenCV single-threaded (its pool's threads stopped) inside the block, restored after."""
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(threads)


class ForkSafeLoader(DataLoader):
    """A ``DataLoader`` whose worker processes start while OpenCV's thread pool is shut down in
    this process, so they never inherit a pool whose threads do not exist (module docstring)."""

    def __iter__(self):
        if self.num_workers == 0:
            return super().__iter__()
        with _opencv_pool_shut_down():  # workers are started (forked) inside __iter__
            return super().__iter__()


def _init_worker(worker_id: int, *, seed: int, rank: int, start_iter: int) -> None:
    cv2.setNumThreads(1)  # one worker per core; no thread pool inside each
    defer_to_main_process()  # SIGTERM / SIGUSR1: the main process stops the run (preemption.py)
    worker_seed = _worker_seed(seed, rank, start_iter, worker_id)
    random.seed(worker_seed)
    np.random.seed(worker_seed)
    torch.manual_seed(worker_seed)


class SeededBatches:
    """Batch ``k`` of ``batches`` (numbered from ``start``) as ``(index, seed)`` pairs; the seed
    of each slot is a function of ``(seed, rank, k, slot)`` only."""

    def __init__(self, batches: Iterable[list[int]], *, seed: int, rank: int, start: int):
        self.batches, self.seed, self.rank, self.start = batches, seed, rank, start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for k, batch in enumerate(self.batches, start=self.start):
            seeds = np.random.SeedSequence([self.seed, self.rank, k]).generate_state(len(batch))
            yield [(int(i), int(s)) for i, s in zip(batch, seeds)]


class SeededSamples(Dataset):
    """``dataset[index]`` for an ``(index, seed)`` pair, its transforms reseeded first."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]) -> Any:
        index, seed = item
        _seed_transforms(seed, self.dataset)
        return self.dataset[index]


def make_train_loader(dataset: Dataset, *, batch_size: int, num_workers: int, seed: int,
                       start_iter: int = 0, aspect_grouping: bool = True,
                       pin_memory: bool | None = None, rank: int | None = None,
                       world_size: int | None = None, sampler: Sampler[int] | None = None
                       ) -> DataLoader:
    """An endless loader of training batches, exactly resumable: batch ``k`` holds the same
    images *and the same augmentation* (scales, flips, colour jitter) for a given ``seed``,
    whether the run started at 0 or resumed at ``start_iter <= k``, and whatever
    ``num_workers``. The first ``start_iter`` batches are skipped as indices (nothing is decoded
    for them), and each sample's transform RNG is reseeded from ``(seed, rank, batch number,
    slot)`` before it is loaded (``SeededBatches``, ``SeededSamples``).

    Args:
        dataset: map-style dataset whose ``transforms`` may have ``set_random_seed``; with
            ``aspect_grouping`` it needs ``image_sizes`` ((N, 2) height, width), as
            ``COCODataset`` has.
        batch_size: images per batch in this process.
        num_workers: DataLoader worker processes (0: load in the main process).
        seed: the same on every rank.
        start_iter: iteration to resume at.
        aspect_grouping: batch landscape and portrait images separately.
        pin_memory: default True when CUDA is available.
        rank, world_size: default from ``torch.distributed`` when initialised, else 0 and 1.
        sampler: this rank's endless stream of indices, a pure function of its seed (e.g.
            ``RepeatFactorTrainingSampler``); default ``TrainingSampler(seed=seed)``.
    """
    rank, world_size = dist_rank_world_size(rank, world_size)
    if sampler is None:
        sampler = TrainingSampler(len(dataset), seed=seed, rank=rank, world_size=world_size)
    if aspect_grouping:
        sizes = getattr(dataset, "image_sizes", None)
        if sizes is None:
            raise TypeError(f"aspect_grouping needs dataset.image_sizes; {type(dataset).__name__}"
                            " has none (pass aspect_grouping=False)")
        batches = AspectRatioBatchSampler(sampler, aspect_ratio_groups(sizes), batch_size)
    else:
        batches = BatchSampler(sampler, batch_size, drop_last=True)
    seeded = SeededBatches(SkipBatches(batches, start_iter), seed=seed, rank=rank,
                           start=start_iter)
    return ForkSafeLoader(
        SeededSamples(dataset), batch_sampler=seeded, num_workers=num_workers,
        collate_fn=collate, pin_memory=_pin(pin_memory), persistent_workers=num_workers > 0,
        worker_init_fn=functools.partial(_init_worker, seed=seed, rank=rank,
                                         start_iter=start_iter),
    )


def make_test_loader(dataset: Dataset, *, batch_size: int = 1, num_workers: int,
                     pin_memory: bool | None = None, rank: int | None = None,
                     world_size: int | None = None) -> DataLoader:
    """One pass over this rank's shard of ``dataset`` in index order (``InferenceSampler``).

    Its workers end with each pass (not persistent): a worker forked during training keeps
    alive every page the main process held at the fork and frees later (hundreds of MB for the
    quick start: docs/long_runs.md), which a persistent worker would hold to the end of the
    run; a new fork per evaluation costs a fraction of a second."""
    sampler = InferenceSampler(len(dataset), rank=rank, world_size=world_size)
    rank = sampler.rank
    return ForkSafeLoader(
        dataset, batch_sampler=BatchSampler(sampler, batch_size, drop_last=False),
        num_workers=num_workers, collate_fn=collate, pin_memory=_pin(pin_memory),
        persistent_workers=False,
        worker_init_fn=functools.partial(_init_worker, seed=0, rank=rank, start_iter=0),
    )


def _pin(pin_memory: bool | None) -> bool:
    return torch.cuda.is_available() if pin_memory is None else pin_memory
