"""COCO-format detection datasets: validated json reading, label mapping, ``COCODataset``.

A sample (``dataset[i]``) is the dict of ``detection/data/base.py`` (docs/ARCHITECTURE.md);
decoding and the bad-image policy live there too, shared with ``VOCDataset``.

Category ids (COCO's 1..90 with gaps, or any ids of a custom set) map to contiguous labels
``1..K`` in increasing id order; ``classes[label - 1] = {"id": category_id, "name": str}``.

The annotation json is parsed once with ``json``, validated (every error names the file and the
image / annotation / category id at fault) and reduced to flat numpy arrays, so DataLoader workers
share it copy-on-write without touching Python reference counts. ``load_coco`` builds the
pycocotools ``COCO`` index from the same validated data for evaluation.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from pycocotools.coco import COCO

from ..masks import InstanceMasks
from .base import (DatasetError, DetectionDataset, Transform, bad_box_reasons, decode_image,
                   ignored_regions)
from .classes import classes_from_categories
from .masks import SegmentationIndex, segmentation_problems

__all__ = ["COCODataset", "DatasetError", "Transform", "decode_image", "load_coco",
           "read_coco_json"]

logger = logging.getLogger(__name__)

_REQUIRED = {
    "images": ("id", "file_name", "height", "width"),
    "annotations": ("id", "image_id", "category_id", "bbox"),
    "categories": ("id", "name"),
}


# ----------------------------------------------------------------------------- json reading
def read_coco_json(path: str | os.PathLike) -> dict[str, Any]:
    """Parse and validate a COCO detection json; returns the parsed dict (the file is untouched).

    Checks the structure: the json parses; the top level has ``images``, ``annotations``,
    ``categories`` lists; each entry has its required keys (``_REQUIRED``); image / category /
    annotation ids are unique and image / category ids are integers; every ``bbox`` is 4 numbers;
    every annotation refers to a known image and category. A box's geometry (NaN, negative or
    zero size, outside the image) is the datasets' ``on_bad_annotation`` policy, not checked here.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise DatasetError(f"annotation file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise DatasetError(
            f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}"
        ) from None
    except (UnicodeDecodeError, OSError) as e:
        raise DatasetError(f"{path}: cannot read annotation file: {e}") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: top level must be a JSON object, got {type(data).__name__}")
    for section, keys in _REQUIRED.items():
        _check_section(data, section, keys, path)
    _check_annotations(data, path)
    return data


def _check_section(data: dict, section: str, keys: Sequence[str], path: str) -> None:
    entries = data.get(section)
    if not isinstance(entries, list):
        found = "missing" if entries is None else f"a {type(entries).__name__}"
        raise DatasetError(f'{path}: required field "{section}" (a list) is {found}')
    what = section[:-1] if section != "categories" else "category"
    required = set(keys)
    for i, entry in enumerate(entries):
        if not (isinstance(entry, dict) and required <= entry.keys()):
            missing = [k for k in keys if not isinstance(entry, dict) or k not in entry]
            ident = entry.get("id", f"#{i}") if isinstance(entry, dict) else f"#{i}"
            raise DatasetError(f'{path}: {what} {ident} lacks required field "{missing[0]}"')
    ids = [e["id"] for e in entries]
    if section != "annotations":
        for i, e in zip(ids, entries):
            if type(i) is not int:  # noqa: E721 - bool is not an id
                raise DatasetError(f"{path}: {what} id {i!r} is not an integer")
    if len(set(ids)) != len(ids):
        seen: set = set()
        dup = next(i for i in ids if i in seen or seen.add(i))
        raise DatasetError(f"{path}: duplicate {what} id {dup!r}")


def _check_annotations(data: dict, path: str) -> None:
    anns = data["annotations"]
    try:
        boxes = np.array([a["bbox"] for a in anns] or np.zeros((0, 4)))
    except (ValueError, TypeError):  # ragged
        boxes = np.zeros((0, 0))
    if boxes.dtype.kind not in "iuf" or boxes.shape != (len(anns), 4):
        for a in anns:  # slow path only to name the offending annotation
            bbox = a["bbox"]
            if not (isinstance(bbox, list) and len(bbox) == 4 and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)):
                raise DatasetError(f"{path}: annotation id {a['id']}: bbox must be 4 numbers "
                                   f"[x, y, width, height], got {bbox!r}")
    for key, section in (("image_id", "images"), ("category_id", "categories")):
        known = {e["id"] for e in data[section]}
        for a in anns:
            if a[key] not in known:
                what = "image" if section == "images" else "category"
                raise DatasetError(f"{path}: annotation id {a['id']} refers to unknown "
                                   f"{what} id {a[key]!r}")


def coco_boxes(data: dict) -> tuple[np.ndarray, np.ndarray]:
    """(A, 4) xyxy boxes of every annotation of a validated COCO dict and (A, 2) ``(h, w)`` of
    their images, in file order."""
    anns = data["annotations"]
    size = {im["id"]: (im["height"], im["width"]) for im in data["images"]}
    xywh = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
    with np.errstate(invalid="ignore"):  # inf + -inf: NaN, a bad box like any other
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    sizes = np.array([size[a["image_id"]] for a in anns], dtype=np.float64).reshape(-1, 2)
    return xyxy, sizes


def load_coco(path: str | os.PathLike, *, masks: bool = False) -> COCO:
    """A pycocotools ``COCO`` index of a validated json, for evaluation (the file is untouched).

    ``area`` (w*h) and ``iscrowd`` (0) are filled in where missing, as COCOeval needs them. A
    bad box (``bad_box_reasons``), which training skips, becomes an **ignored region**: marked
    ``iscrowd=1``, so a detection on it is neither a true nor a false positive and it is never a
    miss, exactly as pycocotools treats a crowd region. The region is the box with a negative
    side turned around; a box with a non-finite coordinate has no region and matches nothing
    (``ignored_regions``). Valid boxes are evaluated as written, as pycocotools does.

    ``masks`` (``segm`` evaluation): every annotation needs a ``segmentation`` (else
    ``DatasetError`` naming it); a bad one (``segmentation_problems``), which training skips,
    makes the annotation an ignored region too, its segmentation then the region's box.
    """
    data = read_coco_json(path)
    anns = data["annotations"]
    xyxy, sizes = coco_boxes(data)
    bad = bad_box_reasons(xyxy, sizes) != ""
    bad_mask = np.zeros(len(anns), dtype=bool)
    if masks:
        missing = [a["id"] for a in anns if a.get("segmentation") is None]
        if missing:
            raise DatasetError(f"{path}: annotation id {missing[0]} has no segmentation "
                               f"({len(missing)} in all): mask evaluation needs one per object")
        bad_mask = segmentation_problems([a["segmentation"] for a in anns],
                                         sizes.astype(np.int64)) != ""
    regions = ignored_regions(xyxy)
    for a, is_bad, mask_bad, (x0, y0, x1, y1) in zip(anns, bad, bad_mask, regions.tolist()):
        a.setdefault("iscrowd", 0)
        if is_bad:
            a["iscrowd"], a["bbox"], a["area"] = 1, [x0, y0, x1 - x0, y1 - y0], (x1 - x0) * (
                y1 - y0)
        elif "area" not in a:
            a["area"] = float(a["bbox"][2]) * float(a["bbox"][3])
        if is_bad or mask_bad:
            a["iscrowd"] = 1
            if masks:
                x, y, w, h = a["bbox"]
                a["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints "creating index..."
        coco.createIndex()
    return coco


# ----------------------------------------------------------------------------- dataset
class COCODataset(DetectionDataset):
    """A COCO-format detection dataset (COCO 2017 by path, or any custom COCO json).

    Args:
        images: folder the images' ``file_name`` entries are relative to.
        annotations: the COCO json (never modified).
        transforms: ``(image, boxes, labels) -> (image, boxes, labels)`` on numpy arrays, e.g.
            ``build_transforms(...)``; ``None`` keeps the original pixels.
        train: training targets (crowd boxes left out, empty images filtered, a bad image is
            replaced by the next good image of the same orientation) or evaluation (every image
            kept, a bad image gives ``None``, which ``collate`` drops).
        filter_empty: in training, leave out images without a usable box.
        on_bad_image: ``"skip"`` (warn once per file, count in ``num_bad_images``) or ``"error"``
            (raise ``DatasetError`` naming the file at once).
        on_bad_annotation: a bad box (NaN, negative or zero size, wholly outside the image) is
            ``"skip"``-ped with a warning naming its annotation id (``stats["bad_boxes"]``) or
            an ``"error"`` naming the file and the annotation id (``detection/data/base.py``).
        min_box_size: boxes whose width or height after clipping to the image is <= this many
            pixels are dropped and counted in ``stats["dropped_boxes"]``.
        masks: samples carry ``masks`` (``InstanceMasks``, one per box) from each annotation's
            ``segmentation`` (polygons, or RLE); an annotation whose segmentation is missing or
            bad (``detection.data.masks.segmentation_problems``) is a bad annotation (above).
            ``transforms`` must then be built with ``masks=True``.

    Crowd boxes (``iscrowd=1``) never enter the targets; evaluation reads them from the json.
    """

    def __init__(self, *, images: str | os.PathLike, annotations: str | os.PathLike,
                 transforms: Transform | None = None, train: bool, filter_empty: bool = True,
                 on_bad_image: str = "skip", on_bad_annotation: str = "skip",
                 min_box_size: float = 1.0, masks: bool = False) -> None:
        super().__init__(transforms=transforms, train=train, on_bad_image=on_bad_image)
        self.images = os.fspath(images)
        self.annotations = os.fspath(annotations)
        if not os.path.isdir(self.images):
            raise DatasetError(f"image folder not found: {self.images}")
        if masks and transforms is not None and not getattr(transforms, "masks", False):
            raise ValueError("COCODataset(masks=True) needs transforms that move masks: "
                             "build_transforms(..., masks=True)")
        self._segments: SegmentationIndex | None = None
        data = read_coco_json(self.annotations)
        self.classes = classes_from_categories(data["categories"])
        self._index(data, min_box_size=min_box_size, filter_empty=train and filter_empty,
                    on_bad_annotation=on_bad_annotation, masks=masks)
        self._check_not_empty(self.annotations)
        s = self.stats
        logger.info("%s: %d images used of %d, %d boxes, %d images without boxes, %d crowd "
                    "boxes ignored, %d bad boxes skipped, %d boxes clipped to their image",
                    self.annotations, len(self), s["images"], s["boxes"],
                    s["images_without_boxes"], s["crowd_boxes"], s["bad_boxes"],
                    s["clipped_boxes"])
        if s["dropped_boxes"]:
            logger.warning("%s: dropped %d boxes of width or height <= %g px after clipping",
                           self.annotations, s["dropped_boxes"], min_box_size)

    def _index(self, data: dict, *, min_box_size: float, filter_empty: bool,
               on_bad_annotation: str, masks: bool) -> None:
        """Validated image fields and xywh -> xyxy boxes (and segmentations) into the shared
        flat index."""
        imgs, anns = data["images"], data["annotations"]
        for im in imgs:
            h, w = im["height"], im["width"]
            if not (type(h) is int and type(w) is int and h > 0 and w > 0  # noqa: E721
                    and isinstance(im["file_name"], str)):
                raise DatasetError(f"{self.annotations}: image id {im['id']}: height/width must "
                                   f"be positive integers and file_name a string")
        img_ids = np.array([im["id"] for im in imgs], dtype=np.int64)
        ann_xyxy, ann_sizes = coco_boxes(data)
        order = np.argsort(img_ids)
        cat_ids = np.array([c["id"] for c in self.classes], dtype=np.int64)
        crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool)
        problems = None
        if masks:  # crowd regions never enter the targets: their masks are not read
            problems = segmentation_problems(
                [None if c else a.get("segmentation") for a, c in zip(anns, crowd)],
                ann_sizes.astype(np.int64))
            problems[crowd] = ""
        _, counts = self._set_index(
            image_ids=img_ids,
            sizes=np.array([[im["height"], im["width"]] for im in imgs], np.int64).reshape(-1, 2),
            file_names=np.array([im["file_name"] for im in imgs], dtype=np.str_),
            rows=order[np.searchsorted(img_ids[order], [a["image_id"] for a in anns])],
            boxes=ann_xyxy,
            labels=np.searchsorted(cat_ids, [a["category_id"] for a in anns]) + 1,
            ignored=crowd, min_box_size=min_box_size, filter_empty=filter_empty,
            on_bad_annotation=on_bad_annotation, source=self.annotations,
            box_name=lambda j: f"annotation id {anns[j]['id']}: bbox {anns[j]['bbox']}",
            mask_problems=problems)
        if masks:
            self._segments = SegmentationIndex([anns[j]["segmentation"]
                                                for j in self._box_rows])
        self.stats = {"images": counts["images"],
                      "images_without_boxes": counts["images_without_boxes"],
                      "boxes": counts["boxes"], "crowd_boxes": counts["ignored"],
                      "dropped_boxes": counts["dropped_boxes"], "bad_boxes": counts["bad_boxes"],
                      "clipped_boxes": counts["clipped_boxes"]}

    def _masks(self, start: int, end: int, height: int, width: int) -> InstanceMasks | None:
        if self._segments is None:
            return None
        return self._segments.instance_masks(start, end, height, width)

    def _image_path(self, idx: int) -> str:
        return os.path.join(self.images, str(self._file_names[idx]))

    def _size_origin(self, idx: int) -> str:
        return self.annotations

    @property
    def _image_folders(self) -> str:
        return self.images

    def __repr__(self) -> str:
        return (f"COCODataset(images={self.images!r}, annotations={self.annotations!r}, "
                f"train={self.train}, len={len(self)}, classes={len(self.classes)})")
