"""COCO ``segmentation`` fields: validated, stored compactly, turned into the model's RLE.

A COCO annotation's ``segmentation`` is one of

- **polygons**: ``[[x1, y1, x2, y2, ...], ...]``, one list per part of the object, vertices in
  continuous pixel coordinates; the object is the union of its parts;
- **uncompressed RLE**: ``{"size": [h, w], "counts": [n0, n1, ...]}``, alternating runs of 0s and
  1s (0s first) over the pixels in column-major order;
- **compressed RLE**: ``{"size": [h, w], "counts": "<string>"}``, the same runs in COCO's text
  encoding (crowd regions are stored so).

:func:`segmentation_problems` says why an object's segmentation cannot be used (``""`` where it
can): a polygon of fewer than 3 points, an odd number of coordinates or a non-finite one,
polygons wholly outside the image, an RLE of another size than its image or whose runs do not
cover it. The datasets treat such an annotation as a bad one (``data.on_bad_annotation``).

:class:`SegmentationIndex` keeps the segmentations of a dataset's objects in a few flat numpy
arrays (polygon coordinates, compressed RLE bytes and offsets), shared copy-on-write by the
DataLoader workers; :meth:`SegmentationIndex.counts` gives one object's RLE counts at its image's
size (polygons rasterised by pycocotools, COCO's own rasterisation), and
:meth:`SegmentationIndex.instance_masks` one image's ``InstanceMasks`` for the model. No
full-image bitmap is made on the way: a compressed RLE string is decoded to its counts directly
(:func:`rle_counts_from_string`).

The other way, :func:`encode_masks` writes predicted (pasted) masks as the compressed RLE of
COCO results files.
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils

from ..masks import InstanceMasks

__all__ = ["SegmentationIndex", "encode_masks", "rle_counts_from_string",
           "segmentation_problems"]

_POLYGONS, _RLE = 0, 1


def rle_counts_from_string(text: str | bytes) -> np.ndarray:
    """COCO's compressed RLE string -> its counts (int64), as pycocotools' ``rleFrString``.

    Each count is written in 5-bit groups, least significant first, as characters ``48 + g``
    with bit 0x20 set on every group but the last and bit 0x10 of the last the sign; from the
    fourth count on, a count is stored as its difference to the count two places before.
    """
    data = text.encode("ascii") if isinstance(text, str) else bytes(text)
    chars = np.frombuffer(data, dtype=np.uint8).astype(np.int64) - 48
    if len(chars) == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.flatnonzero((chars & 0x20) == 0)  # the last character of each count
    if len(ends) == 0 or ends[-1] != len(chars) - 1:
        raise ValueError("truncated RLE string")
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts + 1
    position = np.arange(len(chars)) - np.repeat(starts, lengths)  # 5-bit group of its count
    values = np.add.reduceat((chars & 0x1F) << (5 * position), starts)
    negative = (chars[ends] & 0x10) != 0
    values[negative] -= np.left_shift(1, 5 * lengths[negative])
    counts = values.copy()
    counts[1::2] = np.cumsum(values[1::2])  # count m (m >= 3) adds count m - 2
    counts[2::2] = np.cumsum(values[2::2])
    return counts


def _polygon_problem(polygons: list, height: int, width: int) -> str:
    parts = []
    for p in polygons:
        array = np.asarray(p) if isinstance(p, (list, tuple)) else np.zeros(0, dtype=object)
        if array.ndim != 1 or (array.dtype.kind not in "iuf" and len(p)):  # bools, str, ...
            return "has a segmentation polygon that is not a list of numbers"
        if len(p) < 6:
            return f"has a segmentation polygon of {len(p) // 2} point(s) (fewer than 3)"
        if len(p) % 2:
            return f"has a segmentation polygon of {len(p)} coordinates (an odd number)"
        parts.append(array)
    if not parts:
        return "has an empty segmentation (no polygon)"
    xy = np.concatenate(parts).astype(np.float64).reshape(-1, 2)
    if not np.isfinite(xy).all():
        return "has a segmentation polygon with a non-finite coordinate"
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    if (hi <= 0).any() or lo[0] >= width or lo[1] >= height:
        return f"has a segmentation wholly outside the {height}x{width} (h x w) image"
    return ""


def _rle_problem(rle: dict, height: int, width: int) -> str:
    size, counts = rle.get("size"), rle.get("counts")
    if list(size or []) != [height, width]:
        return f"has an RLE segmentation of size {size} for its {height}x{width} image"
    try:
        runs = (rle_counts_from_string(counts) if isinstance(counts, (str, bytes))
                else np.asarray(counts, dtype=np.int64).reshape(-1))
    except (ValueError, TypeError):
        return "has an RLE segmentation with unreadable counts"
    if len(runs) == 0 or (runs < 0).any() or int(runs.sum()) != height * width:
        return (f"has an RLE segmentation whose runs cover {int(runs.sum())} pixels, not its "
                f"image's {height * width}")
    return ""


def segmentation_problems(segmentations: Sequence[Any], sizes: np.ndarray) -> np.ndarray:
    """Why each segmentation cannot be used (``""`` where it can), for images of ``sizes``
    (A, 2) ``(height, width)``; ``None`` (no ``segmentation`` key) is a problem too."""
    reasons = np.full(len(segmentations), "", dtype=object)
    for j, (seg, (h, w)) in enumerate(zip(segmentations, sizes.tolist())):
        if isinstance(seg, list):
            reasons[j] = _polygon_problem(seg, int(h), int(w))
        elif isinstance(seg, dict):
            reasons[j] = _rle_problem(seg, int(h), int(w))
        elif seg is None:
            reasons[j] = "has no segmentation (the mask head needs one per object)"
        else:
            reasons[j] = "has a segmentation that is neither polygons nor RLE"
    return reasons


class SegmentationIndex:
    """Valid segmentations (see :func:`segmentation_problems`) of ``B`` objects, flat.

    Object ``j``'s polygons are ``coords[poly_offsets[p]:poly_offsets[p + 1]]`` for ``p`` in
    ``object_polygons[j]:object_polygons[j + 1]``; an RLE object's compressed string is
    ``rle_bytes[rle_offsets[q]:rle_offsets[q + 1]]`` with ``q = rle_of[j]`` (-1: polygons).
    """

    def __init__(self, segmentations: Sequence[Any]) -> None:
        polygons, rles, rle_of, per_object = [], [], [], []
        for seg in segmentations:
            if isinstance(seg, dict):
                rle_of.append(len(rles))
                rles.append(_compressed(seg))
                per_object.append(0)
            else:
                rle_of.append(-1)
                polygons.extend(seg)
                per_object.append(len(seg))
        lengths = [len(p) for p in polygons]
        self.coords = np.fromiter(itertools.chain.from_iterable(polygons), dtype=np.float64,
                                  count=sum(lengths))
        self.poly_offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
        self.object_polygons = np.concatenate([[0], np.cumsum(per_object, dtype=np.int64)])
        self.rle_bytes = np.frombuffer(b"".join(rles), dtype=np.uint8)
        self.rle_offsets = np.concatenate([[0], np.cumsum([len(r) for r in rles],
                                                          dtype=np.int64)])
        self.rle_of = np.asarray(rle_of, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rle_of)

    def counts(self, j: int, height: int, width: int) -> np.ndarray:
        """Object ``j``'s RLE counts at its image's ``height x width``."""
        q = int(self.rle_of[j])
        if q >= 0:
            text = self.rle_bytes[self.rle_offsets[q]:self.rle_offsets[q + 1]].tobytes()
        else:
            parts = [self.coords[self.poly_offsets[p]:self.poly_offsets[p + 1]]
                     for p in range(self.object_polygons[j], self.object_polygons[j + 1])]
            rles = mask_utils.frPyObjects(parts, height, width)
            text = mask_utils.merge(rles)["counts"] if len(rles) > 1 else rles[0]["counts"]
        return rle_counts_from_string(text)

    def instance_masks(self, start: int, end: int, height: int, width: int) -> InstanceMasks:
        """Objects ``start .. end - 1`` (one image's) as the model's ``InstanceMasks``."""
        return InstanceMasks([self.counts(j, height, width) for j in range(start, end)],
                             (height, width))


def _compressed(rle: dict) -> bytes:
    """An RLE dict's compressed counts string (an uncompressed one is compressed)."""
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        return counts.encode("ascii") if isinstance(counts, str) else counts
    h, w = rle["size"]
    return mask_utils.frPyObjects({"size": [h, w], "counts": list(counts)}, h, w)["counts"]


def encode_masks(masks: torch.Tensor | np.ndarray) -> list[dict]:
    """bool (D, H, W) masks (tensor or array) -> COCO RLE dicts ``{"size": [H, W], "counts":
    str}`` (json-ready), by pycocotools' ``mask.encode``."""
    if len(masks) == 0:
        return []
    array = masks.cpu().numpy() if isinstance(masks, torch.Tensor) else np.asarray(masks)
    # (D, H, W) -> (H, W, D) in column-major order, as pycocotools takes it
    rles = mask_utils.encode(np.asfortranarray(np.moveaxis(array, 0, -1).astype(np.uint8)))
    return [{"size": r["size"], "counts": r["counts"].decode("ascii")} for r in rles]
