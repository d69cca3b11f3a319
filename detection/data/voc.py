"""PASCAL VOC detection data read in place: ``read_voc`` (validated XML index) and ``VOCDataset``.

Layout (the devkit's, as unpacked from ``VOCtrainval_06-Nov-2007.tar`` and friends)::

    VOCdevkit/VOC2007/Annotations/000005.xml        one XML per image
                      JPEGImages/000005.jpg
                      ImageSets/Main/{train,val,trainval,test}.txt   one image name a line

An image is ``JPEGImages/<name>.jpg`` (as Detectron2 and torchvision's ``VOCDetection`` read it;
the XML's ``<filename>`` is not used) and its size is the XML's ``<size>``, checked on decoding.
Several ``(root, split)`` pairs are concatenated in the order given (VOC 2007+2012 trainval:
``roots=[".../VOC2007", ".../VOC2012"], splits="trainval"``); image ids are ``1..N`` in that
order, so a dataset and an evaluator built from the same pairs agree on them.

**Coordinates.** VOC boxes are integer pixel indices, 1-based and inclusive: ``xmin=1, xmax=W``
covers a whole image of width ``W``. In our continuous 0-based xyxy that box is ``[0, W]``, so
``x0 = xmin - 1, y0 = ymin - 1, x1 = xmax, y1 = ymax`` (Detectron2's ``load_voc_instances``
does exactly this). The devkit's areas ``(xmax - xmin + 1) * (ymax - ymin + 1)`` are then plain
``(x1 - x0) * (y1 - y0)``, which is why ``VOCEvaluator`` needs no "+1".

**Classes.** The 20 VOC classes in the devkit's order (``VOC_CLASSES``) get labels and ids
``1..20``; a custom set passes its own ``class_names``. An object whose ``<name>`` is not one of
them is an error naming the file and the object.

**Difficult objects** (``<difficult>1</difficult>``) stay out of the training targets unless
``keep_difficult=True``; they are always in the parsed index (``dataset.annotations.difficult``)
and ``VOCEvaluator`` ignores them as the devkit does.

XML is read with ``xml.etree.ElementTree`` (expat: no external entities are fetched, and entity
expansion attacks are refused by expat >= 2.4.1).
"""

from __future__ import annotations

import logging
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .base import DatasetError, DetectionDataset, Transform

__all__ = ["VOC_CLASSES", "VOCAnnotations", "VOCDataset", "read_voc", "voc_pairs"]

logger = logging.getLogger(__name__)

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
_COORDS = ("xmin", "ymin", "xmax", "ymax")

PathLike = str | os.PathLike


@dataclass(frozen=True)
class VOCAnnotations:
    """Every image of the ``(root, split)`` pairs and every object, as flat arrays.

    ``N`` images, ``M`` objects; the objects of image ``i`` are rows
    ``offsets[i]:offsets[i + 1]``, in XML order.
    """
    roots: tuple[str, ...]
    root_index: np.ndarray  # (N,) int64: roots[root_index[i]] holds image i
    names: np.ndarray       # (N,) str image name, e.g. "000005"
    sizes: np.ndarray       # (N, 2) int64 (height, width)
    offsets: np.ndarray     # (N + 1,) int64
    boxes: np.ndarray       # (M, 4) float64 0-based xyxy pixels, as annotated (not clipped)
    labels: np.ndarray      # (M,) int64 in 1..K
    difficult: np.ndarray   # (M,) bool

    @property
    def image_ids(self) -> np.ndarray:
        """(N,) int64 ids ``1..N`` in concatenation order."""
        return np.arange(1, len(self.names) + 1, dtype=np.int64)

    def xml_path(self, i: int) -> str:
        return os.path.join(self.roots[self.root_index[i]], "Annotations", f"{self.names[i]}.xml")

    def image_path(self, i: int) -> str:
        return os.path.join(self.roots[self.root_index[i]], "JPEGImages", f"{self.names[i]}.jpg")


def voc_pairs(roots: PathLike | Sequence[PathLike],
              splits: str | Sequence[str]) -> list[tuple[str, str]]:
    """``(root, split)`` pairs: one split for every root, or one split per root."""
    roots = [os.fspath(r) for r in ([roots] if isinstance(roots, (str, os.PathLike)) else roots)]
    splits = [splits] * len(roots) if isinstance(splits, str) else list(splits)
    if not roots or len(splits) != len(roots):
        raise ValueError(f"need one split for all roots or one per root: {len(roots)} root(s), "
                         f"{len(splits)} split(s)")
    return list(zip(roots, splits))


def read_voc(roots: PathLike | Sequence[PathLike], splits: str | Sequence[str],
             class_names: Sequence[str] = VOC_CLASSES) -> VOCAnnotations:
    """Parse and validate every XML of the ``(root, split)`` pairs (files are only read).

    Errors name the file and, where it applies, the line or the object (``object #3 (dog)``,
    counting from 1 in XML order): a missing root, split file or XML; unparsable XML; ``<size>``
    without positive integer ``<width>``/``<height>``; an object without ``<name>``, of an
    unknown class, without four numeric ``<bndbox>`` coordinates, or with ``<difficult>`` other
    than 0/1. A box's geometry (``xmax < xmin``, outside the image) is kept as written: it is the
    datasets' ``on_bad_annotation`` policy (``detection/data/base.py``); ``VOCEvaluator`` treats
    such a box as difficult.
    """
    class_index = {name: label for label, name in enumerate(class_names, start=1)}
    if len(class_index) != len(class_names):
        raise ValueError(f"class_names has duplicates: {list(class_names)}")
    pairs = voc_pairs(roots, splits)
    unique_roots = list(dict.fromkeys(root for root, _ in pairs))
    root_index, names, sizes, counts = [], [], [], []
    boxes, labels, difficult = [], [], []
    for root, split in pairs:
        for name in _read_split(root, split):
            (h, w), objects = _parse_xml(os.path.join(root, "Annotations", f"{name}.xml"),
                                         class_index)
            root_index.append(unique_roots.index(root))
            names.append(name)
            sizes.append((h, w))
            counts.append(len(objects))
            for box, label, diff in objects:
                boxes.append(box)
                labels.append(label)
                difficult.append(diff)
    return VOCAnnotations(
        roots=tuple(unique_roots), root_index=np.array(root_index, dtype=np.int64),
        names=np.array(names, dtype=np.str_), sizes=np.array(sizes, np.int64).reshape(-1, 2),
        offsets=np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64),
        boxes=np.array(boxes, np.float64).reshape(-1, 4),
        labels=np.array(labels, dtype=np.int64), difficult=np.array(difficult, dtype=bool))


def _read_split(root: str, split: str) -> list[str]:
    """Image names of ``ImageSets/Main/{split}.txt``, one a line (blank lines skipped)."""
    if not os.path.isdir(root):
        raise DatasetError(f"VOC root not found: {root} (expected a VOCdevkit/VOC2007-style "
                           "folder with Annotations/, JPEGImages/ and ImageSets/Main/)")
    path = os.path.join(root, "ImageSets", "Main", f"{split}.txt")
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise DatasetError(f"split file not found: {path}") from None
    except (UnicodeDecodeError, OSError) as e:
        raise DatasetError(f"{path}: cannot read split file: {e}") from None
    names = []
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if len(fields) > 1:
            raise DatasetError(f"{path}: line {number}: expected one image name, got {line!r}")
        names.extend(fields)
    if not names:
        raise DatasetError(f"{path}: no image names")
    return names


def _parse_xml(path: str, class_index: dict[str, int]
               ) -> tuple[tuple[int, int], list[tuple[list[float], int, bool]]]:
    """``((height, width), [(0-based xyxy, label, difficult), ...])`` of one annotation XML."""
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise DatasetError(f"annotation file not found: {path}") from None
    except ET.ParseError as e:
        raise DatasetError(f"{path}: invalid XML: {e}") from None
    except OSError as e:
        raise DatasetError(f"{path}: cannot read annotation file: {e}") from None
    if root.tag != "annotation":
        raise DatasetError(f"{path}: top element is <{root.tag}>, expected <annotation>")
    size = root.find("size")
    h, w = (_number(size, key) for key in ("height", "width"))
    if not (h is not None and w is not None and h > 0 and w > 0 and h.is_integer()
            and w.is_integer()):
        raise DatasetError(f"{path}: <size> needs positive integer <width> and <height>, got "
                           f"width {_text(size, 'width')!r}, height {_text(size, 'height')!r}")
    objects = []
    for k, obj in enumerate(root.findall("object"), start=1):  # direct children: not <part>s
        objects.append(_parse_object(obj, f"{path}: object #{k}", class_index))
    return (int(h), int(w)), objects


def _parse_object(obj: ET.Element, where: str, class_index: dict[str, int]
                  ) -> tuple[list[float], int, bool]:
    name = _text(obj, "name")
    if not name:
        raise DatasetError(f"{where} lacks <name>")
    if name not in class_index:
        raise DatasetError(f"{where}: unknown class {name!r}; the classes are "
                           f"{list(class_index)}")
    where = f"{where} ({name})"
    bndbox = obj.find("bndbox")
    xmin, ymin, xmax, ymax = coords = [_number(bndbox, c) for c in _COORDS]
    if any(v is None for v in coords):
        found = {c: _text(bndbox, c) for c in _COORDS}
        raise DatasetError(f"{where}: <bndbox> needs numbers <xmin> <ymin> <xmax> <ymax>, got "
                           f"{found}")
    diff = _text(obj, "difficult") or "0"  # absent in some VOC2012 objects: not difficult
    if diff not in ("0", "1"):
        raise DatasetError(f"{where}: <difficult> must be 0 or 1, got {diff!r}")
    # 1-based inclusive pixel indices -> continuous 0-based xyxy (see the module docstring)
    return [xmin - 1.0, ymin - 1.0, xmax, ymax], class_index[name], diff == "1"


def _one_based(box: np.ndarray) -> dict[str, float]:
    """A 0-based xyxy box back as the XML's 1-based ``<bndbox>`` values, for messages."""
    return dict(zip(_COORDS, (float(box[0]) + 1, float(box[1]) + 1, float(box[2]),
                              float(box[3]))))


def _text(element: ET.Element | None, tag: str) -> str | None:
    """The stripped text of ``element``'s child ``tag`` (a plain tag: ElementTree's fast path)."""
    found = None if element is None else element.find(tag)
    return None if found is None or found.text is None else found.text.strip()


def _number(element: ET.Element | None, tag: str) -> float | None:
    """The finite number in child ``tag``, or None."""
    try:
        value = float(_text(element, tag))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


class VOCDataset(DetectionDataset):
    """PASCAL VOC (or any set in its layout) read from ``VOCdevkit/VOCyyyy`` folders.

    Args:
        roots: one ``VOCdevkit/VOCyyyy`` folder or several, concatenated in this order.
        splits: the ``ImageSets/Main/{split}.txt`` name for every root (``"trainval"``) or one
            per root (``["trainval", "test"]``).
        class_names: label order (labels and ids ``1..K``); default the 20 ``VOC_CLASSES``.
        transforms: ``(image, boxes, labels) -> (image, boxes, labels)`` on numpy arrays, e.g.
            ``build_transforms(...)``; ``None`` keeps the original pixels.
        train: training (empty images filtered, a bad image is replaced by the next good image
            of the same orientation) or evaluation (every image kept, a bad image gives
            ``None``, which ``collate`` drops).
        keep_difficult: put ``difficult`` objects in the targets too (default: left out).
        filter_empty: in training, leave out images without a usable box.
        on_bad_image: ``"skip"`` (warn once per file, count in ``num_bad_images``) or
            ``"error"`` (raise ``DatasetError`` naming the file at once).
        on_bad_annotation: a bad box (``xmax < xmin``, wholly outside the image, ...) is
            ``"skip"``-ped with a warning naming the file and the object (``stats["bad_boxes"]``)
            or an ``"error"`` naming them (``detection/data/base.py``).
        min_box_size: boxes whose width or height after clipping to the image is <= this many
            pixels are dropped and counted in ``stats["dropped_boxes"]``.

    Samples are those of ``COCODataset`` (``detection/data/base.py``); ``file_name`` is the
    image's file relative to its root's ``JPEGImages/`` (``"000005.jpg"``). ``annotations``
    holds every parsed object, difficult ones included.
    """

    def __init__(self, *, roots: PathLike | Sequence[PathLike], splits: str | Sequence[str],
                 class_names: Sequence[str] | None = None, transforms: Transform | None = None,
                 train: bool, keep_difficult: bool = False, filter_empty: bool = True,
                 on_bad_image: str = "skip", on_bad_annotation: str = "skip",
                 min_box_size: float = 1.0) -> None:
        super().__init__(transforms=transforms, train=train, on_bad_image=on_bad_image)
        self.pairs = voc_pairs(roots, splits)
        names = tuple(VOC_CLASSES if class_names is None else class_names)
        self.annotations = ann = read_voc(*zip(*self.pairs), class_names=names)
        self.classes = [{"id": i, "name": n} for i, n in enumerate(names, start=1)]
        self.keep_difficult = keep_difficult
        source = ", ".join(f"{root} ({split})" for root, split in self.pairs)
        rows = np.repeat(np.arange(len(ann.names)), np.diff(ann.offsets))
        selected, counts = self._set_index(
            image_ids=ann.image_ids, sizes=ann.sizes,
            file_names=np.char.add(ann.names, ".jpg"),
            rows=rows, boxes=ann.boxes, labels=ann.labels,
            ignored=ann.difficult & (not keep_difficult), min_box_size=min_box_size,
            filter_empty=train and filter_empty, on_bad_annotation=on_bad_annotation,
            source=source, box_name=lambda j: (
                f"{ann.xml_path(rows[j])}: object #{j - ann.offsets[rows[j]] + 1} "
                f"({names[ann.labels[j] - 1]}) <bndbox> "
                f"{_one_based(ann.boxes[j])}"))
        self._rows = np.flatnonzero(selected)  # index -> row of ``annotations``
        self.stats = {"images": counts["images"],
                      "images_without_boxes": counts["images_without_boxes"],
                      "boxes": counts["boxes"], "difficult_boxes": int(ann.difficult.sum()),
                      "dropped_boxes": counts["dropped_boxes"], "bad_boxes": counts["bad_boxes"],
                      "clipped_boxes": counts["clipped_boxes"]}
        self._check_not_empty(source)
        s = self.stats
        logger.info("%s: %d images used of %d, %d boxes, %d images without boxes, %d difficult "
                    "boxes %s, %d bad boxes skipped, %d boxes clipped to their image", source,
                    len(self), s["images"], s["boxes"], s["images_without_boxes"],
                    s["difficult_boxes"], "kept" if keep_difficult else "ignored",
                    s["bad_boxes"], s["clipped_boxes"])
        if s["dropped_boxes"]:
            logger.warning("%s: dropped %d boxes of width or height <= %g px after clipping",
                           source, s["dropped_boxes"], min_box_size)

    def _image_path(self, idx: int) -> str:
        return self.annotations.image_path(self._rows[idx])

    def _size_origin(self, idx: int) -> str:
        return self.annotations.xml_path(self._rows[idx])

    @property
    def _image_folders(self) -> str:
        return ", ".join(os.path.join(r, "JPEGImages") for r in self.annotations.roots)

    def __repr__(self) -> str:
        return (f"VOCDataset(pairs={self.pairs!r}, train={self.train}, len={len(self)}, "
                f"classes={len(self.classes)})")
