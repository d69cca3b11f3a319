"""COCO-format detection datasets: validated json reading, image decoding, ``COCODataset``.

A sample (``dataset[i]``) is the dict of docs/ARCHITECTURE.md::

    {"image": uint8 Tensor (3, H, W) RGB after transforms,
     "boxes": float32 Tensor (n, 4) xyxy in transformed pixels,
     "labels": int64 Tensor (n,) in 1..K,
     "image_id": int, "original_size": (h, w) before transforms, "file_name": str}

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
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np
import torch
from pycocotools.coco import COCO

from .classes import classes_from_categories

logger = logging.getLogger(__name__)

# (image HxWx3 uint8 RGB, boxes (n, 4) float32 xyxy, labels (n,) int64) -> same, transformed
Transform = Callable[[np.ndarray, np.ndarray, np.ndarray],
                     tuple[np.ndarray, np.ndarray, np.ndarray]]

_REQUIRED = {
    "images": ("id", "file_name", "height", "width"),
    "annotations": ("id", "image_id", "category_id", "bbox"),
    "categories": ("id", "name"),
}


class DatasetError(ValueError):
    """Bad dataset input; the message names the file and the image / annotation id at fault."""


# ----------------------------------------------------------------------------- json reading
def read_coco_json(path: str | os.PathLike) -> dict[str, Any]:
    """Parse and validate a COCO detection json; returns the parsed dict (the file is untouched).

    Checks: the json parses; the top level has ``images``, ``annotations``, ``categories`` lists;
    each entry has its required keys (``_REQUIRED``); image / category / annotation ids are unique
    and image / category ids are integers; every ``bbox`` is 4 finite numbers with width and
    height >= 0; every annotation refers to a known image and category.
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
    boxes = boxes.astype(np.float64)
    bad = ~np.isfinite(boxes).all(axis=1) | (boxes[:, 2] < 0) | (boxes[:, 3] < 0)
    if bad.any():
        a = anns[int(np.flatnonzero(bad)[0])]
        raise DatasetError(f"{path}: annotation id {a['id']}: bbox {a['bbox']} has a negative "
                           "or non-finite width/height")
    for key, section in (("image_id", "images"), ("category_id", "categories")):
        known = {e["id"] for e in data[section]}
        for a in anns:
            if a[key] not in known:
                what = "image" if section == "images" else "category"
                raise DatasetError(f"{path}: annotation id {a['id']} refers to unknown "
                                   f"{what} id {a[key]!r}")


def load_coco(path: str | os.PathLike) -> COCO:
    """A pycocotools ``COCO`` index of a validated json; ``area`` (w*h) and ``iscrowd`` (0) are
    filled in where missing, as COCOeval needs them (in our parsed copy, not in the file)."""
    data = read_coco_json(path)
    for a in data["annotations"]:
        a.setdefault("iscrowd", 0)
        if "area" not in a:
            a["area"] = float(a["bbox"][2]) * float(a["bbox"][3])
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints "creating index..."
        coco.createIndex()
    return coco


# ----------------------------------------------------------------------------- decoding
def decode_image(path: str) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` uint8 RGB with OpenCV.

    Grayscale is replicated to 3 channels, RGBA drops alpha, 16-bit is scaled to 8-bit
    (``v8 = round(v16 * 255 / 65535)``). Raises ``DatasetError`` naming the file otherwise.
    """
    if not os.path.isfile(path):
        raise DatasetError(f"image file not found: {path}")
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DatasetError(f"cannot decode image (corrupt or unsupported format): {path}")
    if img.dtype == np.uint16:
        img = cv2.convertScaleAbs(img, alpha=255.0 / 65535.0)
    elif img.dtype != np.uint8:
        raise DatasetError(f"unsupported pixel type {img.dtype} in image: {path}")
    channels = 1 if img.ndim == 2 else img.shape[2]
    codes = {1: cv2.COLOR_GRAY2RGB, 3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGB}
    if channels not in codes:
        raise DatasetError(f"unsupported number of channels {channels} in image: {path}")
    return cv2.cvtColor(img, codes[channels])


# ----------------------------------------------------------------------------- dataset
class COCODataset(torch.utils.data.Dataset):
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
        min_box_size: boxes whose width or height after clipping to the image is <= this many
            pixels are dropped and counted in ``stats["dropped_boxes"]``.

    Crowd boxes (``iscrowd=1``) never enter the targets; evaluation reads them from the json.
    """

    _MAX_BAD_IN_A_ROW = 10

    def __init__(self, *, images: str | os.PathLike, annotations: str | os.PathLike,
                 transforms: Transform | None = None, train: bool, filter_empty: bool = True,
                 on_bad_image: str = "skip", min_box_size: float = 1.0) -> None:
        if on_bad_image not in ("skip", "error"):
            raise ValueError(f'on_bad_image must be "skip" or "error", got {on_bad_image!r}')
        self.images = os.fspath(images)
        self.annotations = os.fspath(annotations)
        if not os.path.isdir(self.images):
            raise DatasetError(f"image folder not found: {self.images}")
        self.transforms = transforms
        self.train = train
        self.on_bad_image = on_bad_image
        data = read_coco_json(self.annotations)
        self.classes = classes_from_categories(data["categories"])
        self._index(data, min_box_size=min_box_size, filter_empty=train and filter_empty)
        self._num_bad = torch.zeros((), dtype=torch.int64).share_memory_()  # seen by workers
        self._warned: set[int] = set()  # per process
        s = self.stats
        if len(self) == 0:
            raise DatasetError(f"{self.annotations}: no image" + (
                " with a usable box (filter_empty=True)" if s["images"] else "s"))
        logger.info("%s: %d images used of %d, %d boxes, %d images without boxes, %d crowd "
                    "boxes ignored", self.annotations, len(self), s["images"], s["boxes"],
                    s["images_without_boxes"], s["crowd_boxes"])
        if s["dropped_boxes"]:
            logger.warning("%s: dropped %d boxes of width or height <= %g px after clipping",
                           self.annotations, s["dropped_boxes"], min_box_size)

    def _index(self, data: dict, *, min_box_size: float, filter_empty: bool) -> None:
        """Flat arrays: per image id / (h, w) / file name, boxes and labels grouped by image."""
        imgs, anns = data["images"], data["annotations"]
        for im in imgs:
            h, w = im["height"], im["width"]
            if not (type(h) is int and type(w) is int and h > 0 and w > 0  # noqa: E721
                    and isinstance(im["file_name"], str)):
                raise DatasetError(f"{self.annotations}: image id {im['id']}: height/width must "
                                   f"be positive integers and file_name a string")
        img_ids = np.array([im["id"] for im in imgs], dtype=np.int64)
        sizes = np.array([[im["height"], im["width"]] for im in imgs], np.int64).reshape(-1, 2)
        names = np.array([im["file_name"] for im in imgs], dtype=np.str_)
        crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool)
        ann_boxes = np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
        order = np.argsort(img_ids)
        rows = order[np.searchsorted(img_ids[order], [a["image_id"] for a in anns])]
        cat_ids = np.array([c["id"] for c in self.classes], dtype=np.int64)
        labels = np.searchsorted(cat_ids, [a["category_id"] for a in anns]).astype(np.int64) + 1
        # xywh -> xyxy, clipped to the image
        xyxy = np.concatenate([ann_boxes[:, :2], ann_boxes[:, :2] + ann_boxes[:, 2:]], axis=1)
        hw = sizes[rows].astype(np.float64)
        xyxy[:, 0::2] = np.clip(xyxy[:, 0::2], 0, hw[:, 1:2])
        xyxy[:, 1::2] = np.clip(xyxy[:, 1::2], 0, hw[:, 0:1])
        wh = xyxy[:, 2:] - xyxy[:, :2]
        big = (wh > min_box_size).all(axis=1)
        keep = ~crowd & big
        kept_rows = rows[keep]
        by_image = np.argsort(kept_rows, kind="stable")  # json order within an image
        counts = np.bincount(kept_rows, minlength=len(imgs))
        selected = counts > 0 if filter_empty else np.ones(len(imgs), dtype=bool)
        self._image_ids, self._sizes, self._file_names = (
            img_ids[selected], sizes[selected], names[selected])
        self._offsets = np.concatenate([[0], np.cumsum(counts[selected])])
        self._boxes = xyxy[keep][by_image].astype(np.float32)
        self._labels = labels[keep][by_image]
        self.stats = {"images": len(imgs), "images_without_boxes": int((counts == 0).sum()),
                      "boxes": int(keep.sum()), "crowd_boxes": int(crowd.sum()),
                      "dropped_boxes": int((~crowd & ~big).sum())}

    def __len__(self) -> int:
        return len(self._image_ids)

    @property
    def image_ids(self) -> np.ndarray:
        """(N,) int64 image id of each index."""
        return self._image_ids

    @property
    def image_sizes(self) -> np.ndarray:
        """(N, 2) int64 ``(height, width)`` of each index, from the json (no decoding)."""
        return self._sizes

    @property
    def num_dropped_boxes(self) -> int:
        return self.stats["dropped_boxes"]

    @property
    def num_bad_images(self) -> int:
        """Bad images skipped so far, summed over DataLoader workers."""
        return int(self._num_bad)

    def __getitem__(self, idx: int) -> dict[str, Any] | None:
        for _ in range(self._MAX_BAD_IN_A_ROW):
            try:
                return self._load(idx)
            except DatasetError as e:
                if self.on_bad_image == "error":
                    raise
                self._note_bad(idx, e)
                if not self.train:
                    return None
                last_error = e
                idx = self._substitute(idx)
        raise DatasetError(f"{self._MAX_BAD_IN_A_ROW} images in a row failed to load, the last: "
                           f"{last_error}; check the image folder {self.images}")

    def _load(self, idx: int) -> dict[str, Any]:
        h, w = (int(v) for v in self._sizes[idx])
        file_name = str(self._file_names[idx])
        path = os.path.join(self.images, file_name)
        image = decode_image(path)
        if image.shape[:2] != (h, w):
            raise DatasetError(f"{path}: image is {image.shape[0]}x{image.shape[1]} (h x w) but "
                               f"{self.annotations} gives {h}x{w} for image id "
                               f"{self._image_ids[idx]}")
        start, end = self._offsets[idx], self._offsets[idx + 1]
        boxes, labels = self._boxes[start:end], self._labels[start:end]
        if self.transforms is not None:
            image, boxes, labels = self.transforms(image, boxes, labels)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "boxes": torch.from_numpy(np.array(boxes, dtype=np.float32).reshape(-1, 4)),
            "labels": torch.from_numpy(np.array(labels, dtype=np.int64)),
            "image_id": int(self._image_ids[idx]),
            "original_size": (h, w),
            "file_name": file_name,
        }

    def _note_bad(self, idx: int, error: DatasetError) -> None:
        self._num_bad += 1
        if idx not in self._warned:
            self._warned.add(idx)
            logger.warning("skipping bad image (%s): %s", "training" if self.train else
                           "left out of evaluation", error)

    def _substitute(self, idx: int) -> int:
        """The next index of the same orientation (w >= h or w < h) not yet known to be bad."""
        portrait = self._sizes[:, 1] < self._sizes[:, 0]
        for step in range(1, len(self)):
            j = (idx + step) % len(self)
            if portrait[j] == portrait[idx] and j not in self._warned:
                return j
        raise DatasetError(f"no loadable image left in {self.images}")

    def __repr__(self) -> str:
        return (f"COCODataset(images={self.images!r}, annotations={self.annotations!r}, "
                f"train={self.train}, len={len(self)}, classes={len(self.classes)})")
