"""Is the loader fast enough for the step it feeds? ``tools/pretrain.py --config F --benchmark``.

Measured in one process, one after the other, on the config's own data and model:

* loader: images/s of the training loader (``data.num_workers`` workers: decode, augment,
  collate) over ``batches`` batches after a warm-up, and the median ms of one sample
  (``dataset[i]``) in this process;
* step: images/s of one training step (forward, backward, SGD update) of the classifier on
  ``device`` with a batch of ``solver.ims_per_batch`` (per process) taken from the loader,
  the median of ``steps`` steps after two warm-up steps.

``ratio = loader / step``: above 1 the loader keeps up. On a CPU both share the cores in a real
run; on a GPU the step runs on the device and the loader has the CPU to itself.
"""

from __future__ import annotations

import itertools
import statistics
import time
from typing import Any

import torch

from .config import PretrainConfig
from .model import classification_inputs
from ..data.loader import make_train_loader

__all__ = ["benchmark_pretraining", "format_benchmark"]


def _loader_rate(dataset, *, batch: int, workers: int, batches: int) -> float:
    loader = make_train_loader(dataset, batch_size=batch, num_workers=workers, seed=0,
                                aspect_grouping=False)
    it = iter(loader)
    for _ in range(max(2, 2 * workers)):  # worker start-up and the first prefetch
        next(it)
    start = time.perf_counter()
    images = sum(len(b) for b in itertools.islice(it, batches))
    return images / (time.perf_counter() - start)


def _step_rate(model: torch.nn.Module, batch: list[dict], *, device: torch.device,
               steps: int) -> float:
    images, labels = classification_inputs(batch, device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    model.train()
    times = []
    for i in range(steps + 2):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        loss = model(images, labels)["loss_cls"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= 2:
            times.append(time.perf_counter() - start)
    return len(batch) / statistics.median(times)


def benchmark_pretraining(cfg: PretrainConfig, *, device: torch.device, batches: int = 20,
                          steps: int = 5) -> dict[str, Any]:
    """The measurements of the module docstring, as a JSON-ready dict."""
    from .setup import build_classifier, build_datasets, prepare_data

    cfg = prepare_data(cfg)
    train_set, _ = build_datasets(cfg)
    batch = cfg.solver.ims_per_batch
    loader_rate = _loader_rate(train_set, batch=batch, workers=cfg.data.num_workers,
                               batches=batches)
    sample_ms = []
    for i in range(20):
        start = time.perf_counter()
        train_set[i % len(train_set)]
        sample_ms.append(1000 * (time.perf_counter() - start))
    model = build_classifier(cfg, num_classes=len(train_set.classes)).to(device)
    samples = [train_set[i % len(train_set)] for i in range(batch)]
    step_rate = _step_rate(model, samples, device=device, steps=steps)
    return {"backbone": cfg.model.backbone.name, "device": str(device),
            "threads": torch.get_num_threads(), "batch": batch,
            "num_workers": cfg.data.num_workers, "input": list(samples[0]["image"].shape),
            "loader_images_per_s": loader_rate, "sample_ms": statistics.median(sample_ms),
            "step_images_per_s": step_rate, "ratio": loader_rate / step_rate}


def format_benchmark(r: dict[str, Any]) -> str:
    return (f"loader {r['loader_images_per_s']:.0f} images/s ({r['num_workers']} workers, "
            f"batch {r['batch']}, one sample {r['sample_ms']:.2f} ms in process); "
            f"{r['backbone']} training step on {r['device']} ({r['threads']} threads) "
            f"{r['step_images_per_s']:.1f} images/s at {'x'.join(map(str, r['input']))}; "
            f"loader / step = {r['ratio']:.1f}")
