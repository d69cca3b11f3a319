"""Conversion between detection formats: PASCAL VOC XML and YOLO txt to COCO json, COCO to YOLO.

COCO is the format the training path reads (``COCODataset``, ``COCOEvaluator``); these
functions bring the other two to it (and COCO out to YOLO). Input files are only read; an output
file that already exists is refused before anything is written.

Formats:

- **VOC**: a ``VOCdevkit/VOCyyyy`` tree, read by ``read_voc`` (``detection/data/voc.py``); boxes
  are 1-based inclusive pixel indices, so ``xmin = 1, xmax = W`` is ``x = 0, width = W`` in COCO.
- **YOLO** (Darknet / Ultralytics): one ``.txt`` per image, at the image's path relative to the
  image folder with ``.txt`` for its suffix, one object a line ``class x_center y_center width
  height``, the class 0-based and the rest normalised by the image width / height; no file
  means no object. Class names come from a names file: one name a line (``obj.names``,
  ``classes.txt``), or a YAML file with ``names:`` (a list, or ``{0: name, ...}``; Ultralytics'
  ``data.yaml``).
- **COCO**: ``images`` (``id``, ``file_name``, ``height``, ``width``), ``annotations`` (``bbox``
  ``[x, y, width, height]`` in pixels, ``iscrowd``, ``area``), ``categories``. YOLO class ``c``
  is category id ``c + 1``; COCO categories are YOLO classes in increasing id order (the label
  order of ``COCODataset``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from ..engine import files
from ..engine.files import write_text
from .base import DatasetError
from .classes import classes_from_categories
from .base import bad_box_reasons
from .coco import coco_boxes, read_coco_json
from .voc import VOC_CLASSES, read_voc

__all__ = ["coco_to_yolo", "read_class_names", "read_yolo_labels", "voc_to_coco", "write_json",
           "yolo_to_coco"]

IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
PathLike = str | os.PathLike


# ----------------------------------------------------------------------------- VOC -> COCO
def voc_to_coco(roots: PathLike | Sequence[PathLike], splits: str | Sequence[str], *,
                class_names: Sequence[str] = VOC_CLASSES, keep_difficult: bool = False,
                ) -> tuple[dict[str, Any], str]:
    """COCO json data of VOC ``(root, split)`` pairs, and the image folder it refers to.

    Image ids are ``1..N`` in split order (those of ``VOCDataset``); ``file_name`` is relative
    to the returned folder: ``<root>/JPEGImages`` for one root, the roots' common parent for
    several (``VOC2007/JPEGImages/000005.jpg``). Difficult objects are written with
    ``iscrowd: 1``, so that ``COCODataset`` leaves them out of training and COCOeval ignores
    detections on them, as VOC does; ``keep_difficult`` writes them as ordinary boxes.
    """
    ann = read_voc(roots, splits, class_names=class_names)
    folders = [os.path.join(root, "JPEGImages") for root in ann.roots]
    image_root = folders[0] if len(folders) == 1 else os.path.commonpath(
        [os.path.abspath(f) for f in folders])
    images = []
    for i, (image_id, (h, w)) in enumerate(zip(ann.image_ids, ann.sizes)):
        rel = os.path.relpath(os.path.abspath(ann.image_path(i)), os.path.abspath(image_root))
        images.append({"id": int(image_id), "file_name": Path(rel).as_posix(), "height": int(h),
                       "width": int(w)})
    rows = np.repeat(ann.image_ids, np.diff(ann.offsets))
    xywh = np.concatenate([ann.boxes[:, :2], ann.boxes[:, 2:] - ann.boxes[:, :2]], axis=1)
    annotations = [{"id": k + 1, "image_id": int(image_id), "category_id": int(label),
                    "bbox": box, "area": box[2] * box[3],
                    "iscrowd": int(bool(difficult) and not keep_difficult)}
                   for k, (image_id, label, box, difficult) in enumerate(zip(
                       rows, ann.labels, xywh.tolist(), ann.difficult))]
    categories = [{"id": i, "name": n} for i, n in enumerate(class_names, start=1)]
    return {"images": images, "annotations": annotations, "categories": categories}, image_root


# ----------------------------------------------------------------------------- YOLO -> COCO
def read_class_names(path: PathLike) -> list[str]:
    """Class names in YOLO class order from a names file (one a line) or a YAML ``names:``."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise DatasetError(f"class names file not found: {path}") from None
    except (UnicodeDecodeError, OSError) as e:
        raise DatasetError(f"{path}: cannot read class names file: {e}") from None
    if path.endswith((".yaml", ".yml")):
        names = _yaml_names(text, path)
    else:
        lines = [line.strip() for line in text.splitlines()]
        while lines and not lines[-1]:
            lines.pop()
        if "" in lines:
            raise DatasetError(f"{path}: line {lines.index('') + 1} is empty (one class name a "
                               "line, the line number minus one is the class)")
        names = lines
    if not names:
        raise DatasetError(f"{path}: no class names")
    if len(set(names)) != len(names):
        dup = next(n for i, n in enumerate(names) if n in names[:i])
        raise DatasetError(f"{path}: class name {dup!r} appears twice")
    return names


def _yaml_names(text: str, path: str) -> list[str]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise DatasetError(f"{path}: invalid YAML: {e}".replace("\n", " ")) from None
    names = data.get("names") if isinstance(data, dict) else None
    if isinstance(names, dict) and sorted(names) == list(range(len(names))):
        names = [names[i] for i in range(len(names))]
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise DatasetError(f"{path}: expected 'names:' as a list of strings or "
                           "{0: name, 1: name, ...}")
    return names


def read_yolo_labels(path: PathLike, num_classes: int) -> np.ndarray:
    """``(n, 5)`` float64 rows ``[class, cx, cy, w, h]`` of a YOLO label file (blank lines
    skipped). Errors name the file and the line: not 5 values, a class outside
    ``0..num_classes-1``, a coordinate that is not a number in ``[0, 1]``."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (UnicodeDecodeError, OSError) as e:
        raise DatasetError(f"{path}: cannot read label file: {e}") from None
    rows = []
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}: line {number}"
        if len(fields) != 5:
            raise DatasetError(f"{where}: expected 5 values 'class x_center y_center width "
                               f"height', got {len(fields)}: {line.strip()!r}")
        try:
            values = [float(v) for v in fields]
        except ValueError:
            raise DatasetError(f"{where}: not a number in {line.strip()!r}") from None
        cls = values[0]
        if not (cls.is_integer() and 0 <= cls < num_classes):
            raise DatasetError(f"{where}: class {fields[0]!r} is not one of 0..{num_classes - 1}")
        if not all(0.0 <= v <= 1.0 for v in values[1:]):  # also refuses nan
            raise DatasetError(f"{where}: x_center y_center width height must be normalised to "
                               f"[0, 1] (pixels?), got {' '.join(fields[1:])}")
        rows.append(values)
    return np.array(rows, dtype=np.float64).reshape(-1, 5)


def yolo_to_coco(images: PathLike, labels: PathLike, names: PathLike) -> dict[str, Any]:
    """COCO json data of a YOLO set: every image under ``images`` (sorted by path; sizes read
    from the file headers) with its ``labels`` file; ``file_name`` relative to ``images``."""
    images, labels = Path(images), Path(labels)
    for folder, what in ((images, "image"), (labels, "label")):
        if not folder.is_dir():
            raise DatasetError(f"{what} folder not found: {folder}")
    class_names = read_class_names(names)
    files = sorted(p.relative_to(images) for p in images.rglob("*")
                   if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DatasetError(f"no image ({', '.join(IMAGE_SUFFIXES)}) under {images}")
    coco_images, annotations, labelled = [], [], 0
    for image_id, rel in enumerate(files, start=1):
        width, height = _image_size(images / rel)
        coco_images.append({"id": image_id, "file_name": rel.as_posix(), "height": height,
                            "width": width})
        label_file = labels / rel.with_suffix(".txt")
        if not label_file.is_file():
            continue
        labelled += 1
        rows = read_yolo_labels(label_file, len(class_names))
        for cls, cx, cy, w, h in rows.tolist():
            box = [(cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": int(cls) + 1, "bbox": box,
                                "area": box[2] * box[3], "iscrowd": 0})
    if not labelled:
        raise DatasetError(f"no label file under {labels} for any of the {len(files)} images "
                           f"(expected e.g. {labels / files[0].with_suffix('.txt')})")
    return {"images": coco_images, "annotations": annotations,
            "categories": [{"id": i, "name": n} for i, n in enumerate(class_names, start=1)]}


def _image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from the file header, as stored (no EXIF rotation, as OpenCV's
    ``IMREAD_UNCHANGED`` decoding in ``decode_image``)."""
    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, ValueError) as e:
        raise DatasetError(f"cannot read image size (corrupt or unsupported format): {path}: "
                           f"{e}") from None


# ----------------------------------------------------------------------------- COCO -> YOLO
def coco_to_yolo(annotations: PathLike, labels: PathLike, names: PathLike) -> dict[str, int]:
    """Write a YOLO label file per image of a COCO json (under ``labels``, at the image's
    ``file_name`` with ``.txt``; empty for an image without objects) and the names file.

    Boxes are clipped to the image and written with 6 decimals (0.5 px is reached only past
    500,000 px). Crowd boxes (YOLO has none) and bad boxes (``bad_box_reasons``: NaN, negative
    or zero size, wholly outside the image) are left out and counted.
    Returns ``{"images", "boxes", "crowd_skipped", "bad_skipped"}``.
    """
    data = read_coco_json(annotations)
    classes = classes_from_categories(data["categories"])
    yolo_class = {c["id"]: k for k, c in enumerate(classes)}
    labels, names = Path(labels), Path(names)
    lines: dict[int, list[str]] = {im["id"]: [] for im in data["images"]}
    size = {im["id"]: (im["width"], im["height"]) for im in data["images"]}
    stats = {"images": len(lines), "boxes": 0, "crowd_skipped": 0, "bad_skipped": 0}
    bad = bad_box_reasons(*coco_boxes(data)) != ""
    for a, is_bad in zip(data["annotations"], bad):
        if a.get("iscrowd", 0) or is_bad:
            stats["bad_skipped" if is_bad else "crowd_skipped"] += 1
            continue
        w, h = size[a["image_id"]]
        x, y, bw, bh = (float(v) for v in a["bbox"])
        x0, y0 = min(max(x, 0.0), w), min(max(y, 0.0), h)
        x1, y1 = min(max(x + bw, 0.0), w), min(max(y + bh, 0.0), h)
        lines[a["image_id"]].append(
            f"{yolo_class[a['category_id']]} {(x0 + x1) / 2 / w:.6f} {(y0 + y1) / 2 / h:.6f} "
            f"{(x1 - x0) / w:.6f} {(y1 - y0) / h:.6f}\n")
        stats["boxes"] += 1
    outputs = {im["id"]: labels / Path(im["file_name"]).with_suffix(".txt")
               for im in data["images"]}
    if len(set(outputs.values())) != len(outputs):
        raise DatasetError(f"{annotations}: two images share a file name stem, so they would "
                           "share a label file")
    _refuse_existing([names, *outputs.values()])
    for image_id, path in outputs.items():
        write_text(path, "".join(lines[image_id]), fsync=False)
    write_text(names, "".join(f"{c['name']}\n" for c in classes))
    return stats


# ----------------------------------------------------------------------------- writing
def write_json(data: dict[str, Any], path: PathLike) -> None:
    """Write COCO json data to a new file (an existing one is refused)."""
    path = Path(path)
    _refuse_existing([path])
    files.write_json(path, data)


def _refuse_existing(paths: Sequence[Path]) -> None:
    existing = [p for p in paths if p.exists()]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise FileExistsError(f"{existing[0]} already exists{more}; nothing was written (choose "
                              "another output path: files are never overwritten)")
