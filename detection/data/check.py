"""Look at a dataset before training: every image read, every box judged, counted by kind.

``check_dataset(dataset, workers=N)`` reads every image of a ``DetectionDataset`` through the
dataset's own decoding path (``dataset[i]``, so whatever a training run would reject, this
rejects too) in ``N`` DataLoader workers, and returns a plain dict (JSON-ready):

- ``bad_images``: each image that is missing, corrupt, of another size than its annotation
  says, or otherwise unreadable, with its kind and the dataset's own message;
- ``bad_boxes``: by kind (``non_finite``, ``negative_size``, ``zero_size``, ``outside_image``,
  ``too_small``), each box as the dataset names it (``annotation id 17: bbox [...]``);
- ``empty_images``: images without a box to train on (left out of training when
  ``data.filter_empty``);
- ``classes``: boxes per class; ``box_sizes``: COCO's small / medium / large counts and the
  width and height quartiles, in original pixels.

The dataset must be built with ``on_bad_image="error"`` and ``filter_empty=False`` (so every
image is read and a bad one raises) and ``on_bad_annotation="skip"`` (so every bad box is
recorded instead of stopping at the first); :func:`check_dataset` checks that.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from torch.utils.data import Dataset

from .base import DatasetError, DetectionDataset
from .loader import ForkSafeLoader

__all__ = ["BAD_BOX_KINDS", "BAD_IMAGE_KINDS", "check_dataset", "problem_count"]

#: kind -> how the dataset's reason starts (``bad_box_reasons``, and too small after clipping)
BAD_BOX_KINDS = {"non_finite": "has a non-finite", "negative_size": "has a negative",
                 "zero_size": "has a zero", "outside_image": "lies wholly outside",
                 "too_small": "is at most"}
#: kind -> a phrase of the dataset's message (``decode_image``, ``DetectionDataset._load``)
BAD_IMAGE_KINDS = {"missing": "not found", "corrupt": "cannot decode", "truncated": "truncated",
                   "wrong_size": "but", "unsupported": "unsupported"}
SMALL, MEDIUM = 32 ** 2, 96 ** 2  # COCO's area limits


class _Probe(Dataset):
    """``(index, None)`` for an image the dataset reads, ``(index, message)`` for one it
    rejects; the decoded image stays in the worker."""

    def __init__(self, dataset: DetectionDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, str | None]:
        try:
            self.dataset[index]
        except DatasetError as e:
            return index, str(e)
        return index, None


def _as_list(batch: list) -> list:
    return batch


def _kind(message: str, kinds: dict[str, str], default: str) -> str:
    return next((k for k, phrase in kinds.items() if phrase in message), default)


def _read_all(dataset: DetectionDataset, workers: int) -> list[tuple[int, str]]:
    loader = ForkSafeLoader(_Probe(dataset), batch_size=16, num_workers=workers,
                            collate_fn=_as_list)
    return [(i, error) for batch in loader for i, error in batch if error is not None]


def _quartiles(values: np.ndarray) -> dict[str, float]:
    if not len(values):
        return {}
    q = np.percentile(values, [0, 25, 50, 75, 100])
    return dict(zip(("min", "q1", "median", "q3", "max"), (round(float(v), 1) for v in q)))


def _box_summary(dataset: DetectionDataset) -> tuple[dict[str, int], dict[str, Any]]:
    offsets, boxes = dataset.annotated_boxes
    _, labels = dataset.box_labels
    counts = np.bincount(labels, minlength=len(dataset.classes) + 1)
    classes = {c["name"]: int(counts[i + 1]) for i, c in enumerate(dataset.classes)}
    wh = (boxes[:, 2:] - boxes[:, :2]).astype(np.float64)
    area = wh.prod(axis=1)
    sizes = {"small": int((area < SMALL).sum()),
             "medium": int(((area >= SMALL) & (area < MEDIUM)).sum()),
             "large": int((area >= MEDIUM).sum()),
             "width": _quartiles(wh[:, 0]), "height": _quartiles(wh[:, 1])}
    return classes, sizes


def check_dataset(dataset: DetectionDataset, *, workers: int = 2) -> dict[str, Any]:
    """Read every image and judge every box of ``dataset`` (module docstring)."""
    if dataset.on_bad_image != "error" or dataset.transforms is not None:
        raise ValueError("check_dataset needs a dataset with on_bad_image='error' and no "
                         "transforms")
    bad_images = [{"image_id": int(dataset.image_ids[i]), "kind": _kind(
        message, BAD_IMAGE_KINDS, "unreadable"), "error": message}
        for i, message in _read_all(dataset, workers)]
    bad_boxes: dict[str, list[str]] = {kind: [] for kind in BAD_BOX_KINDS}
    for name, reason in dataset.box_problems:
        bad_boxes[_kind(reason, BAD_BOX_KINDS, "too_small")].append(f"{name} {reason}")
    offsets, _ = dataset.annotated_boxes
    empty = dataset.image_ids[np.diff(offsets) == 0]
    classes, sizes = _box_summary(dataset)
    stats = dataset.stats
    return {
        "images": len(dataset), "boxes": stats["boxes"],
        "ignored_boxes": stats.get("crowd_boxes", stats.get("difficult_boxes", 0)),
        "clipped_boxes": stats["clipped_boxes"],
        "bad_images": bad_images,
        "bad_boxes": bad_boxes,
        "empty_images": {"count": int(len(empty)), "image_ids": empty[:20].tolist()},
        "classes": classes, "box_sizes": sizes,
    }


def problem_count(report: dict[str, Any], *, filter_empty: bool) -> int:
    """What a training run would skip: bad images, bad boxes and (with ``filter_empty``)
    images without a box."""
    return (len(report["bad_images"]) + sum(len(v) for v in report["bad_boxes"].values())
            + (report["empty_images"]["count"] if filter_empty else 0))
