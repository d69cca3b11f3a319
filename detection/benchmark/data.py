"""The data task of ``tools/benchmark.py``: training-loader throughput.

Images/s of the config's training loader (``data.num_workers`` workers, decode + augment +
collate) at the config's training input size, and the time of one ``dataset[i]`` (decode and
transforms) in this process. The data is the config's ``data.train`` when its annotation file
exists (or ``data.synthetic`` is enabled), else a generated set of 640 px shapes in the system's
temporary folder (COCO's typical image size).
"""
from __future__ import annotations

import dataclasses
import itertools
import tempfile
import time
from pathlib import Path
from typing import Any

from ..config import Config

__all__ = ["measure_loader"]


def _data_config(cfg: Config, batch: int) -> tuple[Config, str]:
    cfg = dataclasses.replace(cfg, solver=dataclasses.replace(cfg.solver, ims_per_batch=batch))
    if cfg.data.synthetic.enabled or Path(cfg.data.train.annotations).is_file():
        return cfg, "data.train"
    root = Path(tempfile.gettempdir()) / "resdet_benchmark_shapes"
    data = dataclasses.replace(
        cfg.data, train=dataclasses.replace(cfg.data.train, images="", annotations=""),
        synthetic=dataclasses.replace(cfg.data.synthetic, enabled=True, root=str(root),
                                      num_train=64, num_val=1, image_size=640))
    return dataclasses.replace(cfg, data=data), "synthetic 640 px (data.train not found)"


def measure_loader(cfg: Config, *, batch: int, batches: int) -> dict[str, Any]:
    """Loader images/s over ``batches`` batches of ``batch`` after warm-up, and the ms of one
    sample in this process (median of 20)."""
    from ..setup import build_train_dataset, build_train_loader, prepare_data

    cfg, source = _data_config(cfg, batch)
    dataset = build_train_dataset(prepare_data(cfg))
    loader = build_train_loader(cfg, dataset)
    it = iter(loader)
    for _ in range(max(2, 2 * cfg.data.num_workers)):  # worker start-up and first prefetch
        next(it)
    start = time.perf_counter()
    images = sum(len(b) for b in itertools.islice(it, batches))
    elapsed = time.perf_counter() - start
    del it, loader
    sample_ms = []
    for i in range(20):
        t0 = time.perf_counter()
        dataset[i % len(dataset)]
        sample_ms.append(1000 * (time.perf_counter() - t0))
    sample_ms.sort()
    return {"images_per_s": images / elapsed, "num_workers": cfg.data.num_workers,
            "batch": batch, "batches": batches, "source": source,
            "min_size_train": cfg.data.input.min_size_train,
            "max_size_train": cfg.data.input.max_size_train,
            "sample_ms_in_process": sample_ms[len(sample_ms) // 2]}
