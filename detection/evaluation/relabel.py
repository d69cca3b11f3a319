"""An evaluator adaptor for models whose class list differs from the dataset's."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..data.classes import relabel_table

__all__ = ["Relabelled"]


class Relabelled:
    """``evaluator`` fed with a model's labels mapped to the dataset's through category ids;
    detections of categories the dataset lacks are dropped (e.g. the 10 unused ids of a
    converted 91-way torchvision COCO model). Same interface as the evaluators."""

    def __init__(self, evaluator: Any, *, model_classes: Sequence[dict],
                 data_classes: Sequence[dict]) -> None:
        self.lut = relabel_table(model_classes, data_classes)
        if not self.lut.any():
            raise ValueError("the checkpoint's classes share no category id with the dataset: "
                             f"{[c['id'] for c in model_classes]} vs "
                             f"{[c['id'] for c in data_classes]}")
        self.evaluator = evaluator

    def reset(self) -> None:
        self.evaluator.reset()

    def process(self, samples: list[dict], outputs: list[dict]) -> None:
        mapped = []
        for out in outputs:
            labels = self.lut[out["labels"]]
            keep = labels > 0
            mapped.append({"boxes": out["boxes"][keep], "scores": out["scores"][keep],
                           "labels": labels[keep]})
            if "masks" in out:  # a Mask R-CNN's
                mapped[-1]["masks"] = out["masks"][keep]
        self.evaluator.process(samples, mapped)

    def evaluate(self) -> dict:
        return self.evaluator.evaluate()
