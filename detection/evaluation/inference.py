"""Inference over a dataset: the evaluation a training run calls, and drawn detections.

:class:`DatasetInference` is the ``evaluate`` callable a :class:`~detection.engine.Trainer` is
handed (the engine knows nothing of detection): it runs the model over a test loader
(:func:`inference_on_dataset`) and returns the evaluator's result; :func:`save_visualizations`
draws the outputs it kept into a run's ``vis/``.
"""
from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.loader import move_batch
from ..engine import distributed as du
from ..engine.files import write_image
from ..engine.runlog import LOGGER_NAME, Progress, format_eta
from ..engine.trainer import AMP_DTYPES

__all__ = ["DatasetInference", "inference_on_dataset", "save_visualizations"]

logger = logging.getLogger(LOGGER_NAME)


class DatasetInference:
    """``evaluate`` for :class:`Trainer`: inference over a test loader, then the evaluator;
    keeps the first ``keep`` ``(sample, output)`` pairs of the last call in ``kept``.

    ``prepare`` (e.g. ``Precision.prepare``) makes an inference copy of the training model for
    each call, as ``resdet eval`` prepares the saved one: the run's evaluations and a later
    ``resdet eval`` of its checkpoint give the same numbers; the training model is untouched."""

    def __init__(self, *, data_loader: Iterable[list[dict]], evaluator: Any,
                 device: torch.device, amp: bool = False, amp_dtype: str = "bf16",
                 keep: int = 0, prepare: Callable[[nn.Module], nn.Module] | None = None):
        self.data_loader, self.evaluator, self.device = data_loader, evaluator, device
        self.amp, self.amp_dtype, self.keep, self.prepare = amp, amp_dtype, keep, prepare
        self.kept: list[tuple[dict, dict]] = []

    def __call__(self, model: nn.Module) -> dict:
        if self.prepare is not None:
            model = self.prepare(copy.deepcopy(model))
        results, self.kept = inference_on_dataset(
            model, self.data_loader, self.evaluator, device=self.device, amp=self.amp,
            amp_dtype=self.amp_dtype, keep=self.keep)
        return results


def save_visualizations(kept: list[tuple[dict, dict]], folder: str | Path, *,
                        classes: list[dict], score_thresh: float = 0.5,
                        min_size: int = 512) -> list[Path]:
    """Draw each kept output on its (transformed) test image into ``folder``; returns the files.

    Outputs are in original-image pixels; they are scaled to the transformed image by
    ``(W' / W, H' / H)`` before drawing (masks pasted there, as Mask R-CNN's outputs carry
    them). Images whose longer side is under ``min_size`` are enlarged to it first, so that the
    tags can be read.
    """

    from ..masks import paste_masks
    from ..visualize import draw_detections

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = [c["name"] for c in classes]
    written = []
    for sample, pred in kept:
        image = sample["image"].permute(1, 2, 0).contiguous().numpy()  # (3, H, W) -> (H, W, 3)
        (h0, w0), (h, w) = sample["original_size"], image.shape[:2]
        scale = torch.tensor([w / w0, h / h0, w / w0, h / h0])
        boxes = pred["boxes"] * scale
        masks = paste_masks(pred["masks"], boxes, (h, w)) if "masks" in pred else None
        canvas = draw_detections(image, boxes, pred["scores"], pred["labels"],
                                 class_names=names, score_thresh=score_thresh,
                                 min_size=min_size, masks=masks)
        path = folder / f"{Path(sample['file_name']).stem}.jpg"
        write_image(path, canvas[:, :, ::-1])  # RGB -> BGR for OpenCV
        written.append(path)
    return written


@torch.no_grad()
def inference_on_dataset(model: nn.Module, data_loader: Iterable[list[dict]], evaluator: Any, *,
                         device: torch.device, amp: bool = False, amp_dtype: str = "bf16",
                         keep: int = 0, log_period_s: float = 5.0
                         ) -> tuple[dict, list[tuple[dict, dict]]]:
    """Run ``model`` over ``data_loader`` (this process's shard) and evaluate.

    The evaluator gathers the processes' outputs itself (``evaluate()`` is called on every
    process). Returns ``(results, kept)`` where ``kept`` holds the first ``keep``
    ``(sample, output)`` pairs of this process (for drawing detections). Rank 0 logs progress
    with an ETA every ``log_period_s`` seconds, then the inference and the evaluator's times.
    """
    was_training = model.training
    model.eval()
    evaluator.reset()
    kept = []
    use_amp = amp and (device.type == "cuda" or amp_dtype == "bf16")  # resolved by the caller
    total = len(data_loader) if hasattr(data_loader, "__len__") else None
    progress = Progress("inference", total, period_s=log_period_s,
                        enabled=du.is_main_process())
    t_data = time.perf_counter()
    for batch in data_loader:
        data_time = time.perf_counter() - t_data
        if not batch:  # each image of it skipped as bad (data.on_bad_image: skip, warned)
            progress.step(data_time)
            t_data = time.perf_counter()
            continue
        images, _ = move_batch(batch, device, with_targets=False)
        with torch.autocast(device.type, dtype=AMP_DTYPES[amp_dtype], enabled=use_amp):
            preds = model(images, original_sizes=[tuple(s["original_size"]) for s in batch])
        preds = [{k: v.float().cpu() if v.is_floating_point() else v.cpu()
                  for k, v in p.items()} for p in preds]
        evaluator.process([{k: v for k, v in s.items() if k != "image"} for s in batch], preds)
        kept.extend(list(zip(batch, preds))[: max(0, keep - len(kept))])
        progress.step(data_time)
        t_data = time.perf_counter()
    model.train(was_training)
    t_eval, inference_s = time.perf_counter(), progress.elapsed
    results = evaluator.evaluate()
    if du.is_main_process():
        logger.info("inference: %d it in %s (%.3f s/it); evaluator: %.2f s", progress.done,
                    format_eta(inference_s), inference_s / max(1, progress.done),
                    time.perf_counter() - t_eval)
    return results, kept

