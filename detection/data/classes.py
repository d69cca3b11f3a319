"""Class lists and the maps between contiguous labels and a dataset's category ids.

A class list is ``[{"id": category_id, "name": str}, ...]`` ordered by label: label ``i`` (1..K)
is entry ``i - 1``; label 0 is the background. Datasets build it from their categories, every
checkpoint stores it, and every label <-> category id conversion goes through this module.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["classes_from_categories", "label_to_category_id", "category_id_to_label",
           "relabel_table"]


def classes_from_categories(categories: Sequence[dict]) -> list[dict]:
    """``[{"id", "name"}, ...]`` ordered by category id: entry ``label - 1`` is label ``label``."""
    return [{"id": int(c["id"]), "name": str(c["name"])}
            for c in sorted(categories, key=lambda c: c["id"])]


def label_to_category_id(classes: Sequence[dict], labels: int | torch.Tensor) -> int | torch.Tensor:
    """Contiguous label(s) ``1..K`` -> category id(s); a Tensor is mapped in one indexing op."""
    if isinstance(labels, torch.Tensor):
        ids = torch.tensor([c["id"] for c in classes], dtype=torch.int64, device=labels.device)
        return ids[labels.long() - 1]
    if not 1 <= labels <= len(classes):
        raise ValueError(f"label {labels} outside 1..{len(classes)}")
    return classes[labels - 1]["id"]


def category_id_to_label(classes: Sequence[dict], category_id: int) -> int:
    """Category id -> contiguous label ``1..K``."""
    for label, c in enumerate(classes, start=1):
        if c["id"] == category_id:
            return label
    raise ValueError(f"category id {category_id} is not one of {[c['id'] for c in classes]}")


def relabel_table(source: Sequence[dict], target: Sequence[dict]) -> torch.Tensor:
    """``table[label in source]`` = the label of the same category id in ``target`` (0 where
    ``target`` lacks it, and for the background); shape ``(len(source) + 1,)``, int64."""
    label_of = {c["id"]: label for label, c in enumerate(target, start=1)}
    return torch.tensor([0] + [label_of.get(c["id"], 0) for c in source], dtype=torch.int64)
