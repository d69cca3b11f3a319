"""Loader throughput (decode + augment + collate) on synthetic data; a measurement, not a test.

    python -m detection.data.loader_benchmark [--workers 2] [--batches 60] [--root /tmp/bench]

Two settings: the quickstart (synthetic 160 px images, shorter side 160, max 256) and COCO size
(synthetic images of 480-640 x 640 upscaled to shorter side 800, max 1333). Prints images/s of
the training loader and, in one process, the ms per image of decoding and of the transforms.
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time

from .coco import COCODataset, decode_image
from .loader import build_train_loader
from .synthetic import ensure_synthetic
from .transforms import build_transforms


def _images_per_second(dataset: COCODataset, *, batch_size: int, workers: int, batches: int
                       ) -> float:
    loader = build_train_loader(dataset, batch_size=batch_size, num_workers=workers, seed=0)
    it = iter(loader)
    for _ in range(max(2, workers * 2)):  # warm-up: worker start, first prefetch
        next(it)
    start = time.perf_counter()
    n = sum(len(batch) for batch in itertools.islice(it, batches))
    return n / (time.perf_counter() - start)


def _ms_per_image(dataset: COCODataset, count: int = 40) -> tuple[float, float]:
    """Mean ms to decode, and to transform, one image, in this process."""
    decode = transform = 0.0
    for i in range(count):
        idx = i % len(dataset)
        start = time.perf_counter()
        image = decode_image(os.path.join(dataset.images, str(dataset._file_names[idx])))
        mid = time.perf_counter()
        lo, hi = dataset._offsets[idx], dataset._offsets[idx + 1]
        dataset.transforms(image, dataset._boxes[lo:hi], dataset._labels[lo:hi])
        decode, transform = decode + mid - start, transform + time.perf_counter() - mid
    return 1000 * decode / count, 1000 * transform / count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--root", default=os.path.join(tempfile.gettempdir(), "loader_bench"))
    args = parser.parse_args(argv)
    settings = [("quickstart 160 px", dict(num_train=400, num_val=1, image_size=160), 160, 256, 8),
                ("COCO size 800/1333", dict(num_train=64, num_val=1, image_size=640), 800, 1333,
                 2)]
    for name, synthetic, min_size, max_size, batch_size in settings:
        paths = ensure_synthetic(os.path.join(args.root, str(synthetic["image_size"])),
                                 **synthetic)
        dataset = COCODataset(images=paths.train_images, annotations=paths.train_annotations,
                              train=True, transforms=build_transforms(
                                  train=True, min_size=min_size, max_size=max_size))
        rate = _images_per_second(dataset, batch_size=batch_size, workers=args.workers,
                                  batches=args.batches)
        decode_ms, transform_ms = _ms_per_image(dataset)
        print(f"{name}: {rate:7.1f} images/s with {args.workers} workers (batch {batch_size}); "
              f"one process: decode {decode_ms:.2f} ms + transforms {transform_ms:.2f} ms "
              "per image")


if __name__ == "__main__":
    main()
