"""What every detection dataset shares: decoding, the flat box index, the bad-image and
bad-box policies.

A format-specific subclass (``COCODataset``, ``VOCDataset``) parses its annotation files once,
validates them, and hands :meth:`DetectionDataset._set_index` one row per image and one row per
box; from then on everything is format-free. A sample (``dataset[i]``) is the dict of
docs/ARCHITECTURE.md::

    {"image": uint8 Tensor (3, H, W) RGB after transforms,
     "boxes": float32 Tensor (n, 4) xyxy in transformed pixels,
     "labels": int64 Tensor (n,) in 1..K,
     "image_id": int, "original_size": (h, w) before transforms, "file_name": str,
     "masks": InstanceMasks (n objects; only from a dataset made with masks)}

**Bad boxes** (:func:`bad_box_reasons`): a non-finite coordinate, a negative or zero width or
height, or a box wholly outside its image. With ``on_bad_annotation="skip"`` (the default, as
torchvision's references and MMDetection do) such a box stays out of the targets, is named in a
warning (the first ``MAX_NAMED_BAD_BOXES``, then a count) and counted in ``stats["bad_boxes"]``;
``"error"`` stops at the first with a message naming the file and the annotation. Boxes partly
outside their image are clipped to it (``stats["clipped_boxes"]``), never reported as bad.

The index is a handful of numpy arrays (image ids, sizes, file names, boxes grouped by image
through offsets), so DataLoader workers share it copy-on-write without touching Python reference
counts.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import torch

from ..masks import InstanceMasks
from .integrity import truncation

# (image HxWx3 uint8 RGB, boxes (n, 4) float32 xyxy, labels (n,) int64) -> same, transformed
Transform = Callable[[np.ndarray, np.ndarray, np.ndarray],
                     tuple[np.ndarray, np.ndarray, np.ndarray]]


class DatasetError(ValueError):
    """Bad dataset input; the message names the file and the image / annotation id at fault."""


ON_BAD = ("skip", "error")
MAX_NAMED_BAD_BOXES = 10


def bad_box_reasons(boxes: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Why each box cannot be an object of its image; ``""`` where it can.

    Args:
        boxes: (B, 4) xyxy pixels, as annotated (not clipped).
        sizes: (B, 2) ``(height, width)`` of each box's image.

    Returns a (B,) str array: ``"has a non-finite coordinate"``, ``"has a negative width or
    height"``, ``"has a zero width or height"``, ``"lies wholly outside the HxW image"`` or ``""``.
    """
    xyxy = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    hw = np.asarray(sizes, dtype=np.float64).reshape(-1, 2)
    reasons = np.full(len(xyxy), "", dtype=object)
    finite = np.isfinite(xyxy).all(axis=1)
    with np.errstate(invalid="ignore"):
        wh = xyxy[:, 2:] - xyxy[:, :2]
        negative = finite & (wh < 0).any(axis=1)
        zero = finite & ~negative & (wh == 0).any(axis=1)
        inside_lo = np.maximum(xyxy[:, :2], 0)
        inside_hi = np.minimum(xyxy[:, 2:], hw[:, ::-1])
        outside = finite & ~negative & ~zero & (inside_hi <= inside_lo).any(axis=1)
    reasons[~finite] = "has a non-finite coordinate"
    reasons[negative] = "has a negative width or height"
    reasons[zero] = "has a zero width or height"
    for i in np.flatnonzero(outside):
        reasons[i] = f"lies wholly outside the {int(hw[i, 0])}x{int(hw[i, 1])} (h x w) image"
    return reasons


def ignored_regions(boxes: np.ndarray) -> np.ndarray:
    """(B, 4) xyxy -> the regions evaluation ignores for bad boxes: each box with its corners
    sorted (a negative side turned around); a box with a non-finite coordinate becomes all zeros
    (no region: it matches nothing)."""
    xyxy = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    out = np.concatenate([np.minimum(xyxy[:, :2], xyxy[:, 2:]),
                          np.maximum(xyxy[:, :2], xyxy[:, 2:])], axis=1)
    out[~np.isfinite(xyxy).all(axis=1)] = 0.0
    return out


def read_image_file(path: str) -> bytes:
    """The bytes of an image file, checked whole (``integrity.truncation``: a JPEG without its
    end marker, a PNG without ``IEND``, ...); ``DatasetError`` naming the file otherwise."""
    if not os.path.isfile(path):
        raise DatasetError(f"image file not found: {path}")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DatasetError(f"cannot read image file ({e.strerror}): {path}") from None
    if not data:
        raise DatasetError(f"empty image file: {path}")
    cut = truncation(data)
    if cut:
        raise DatasetError(f"truncated image ({cut}): {path}")
    return data


def decode_image(path: str) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` uint8 RGB with OpenCV.

    Grayscale is replicated to 3 channels, RGBA drops alpha, 16-bit is scaled to 8-bit
    (``v8 = round(v16 * 255 / 65535)``). Raises ``DatasetError`` naming the file otherwise,
    a truncated file included (:func:`read_image_file`: the file is read once, checked, then
    decoded from memory).
    """
    data = read_image_file(path)
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
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


class DetectionDataset(torch.utils.data.Dataset):
    """Base of the detection datasets: indexing, decoding, transforms and bad images.

    Args (keyword-only, passed on by the subclass):
        transforms: ``(image, boxes, labels) -> (image, boxes, labels)`` on numpy arrays;
            ``None`` keeps the original pixels.
        train: a bad image is replaced by the next good image of the same orientation
            (training) or gives ``None``, which ``collate`` drops (evaluation).
        on_bad_image: ``"skip"`` (warn once per file, count in ``num_bad_images``) or
            ``"error"`` (raise ``DatasetError`` naming the file at once).

    A subclass sets ``classes`` and calls :meth:`_set_index`, and says where an image and its
    recorded size come from (:meth:`_image_path`, :meth:`_size_origin`, :attr:`_image_folders`).
    Warnings go to the subclass's module logger (``detection.data.coco``, ...).
    """

    _MAX_BAD_IN_A_ROW = 10
    classes: list[dict]

    def __init__(self, *, transforms: Transform | None, train: bool, on_bad_image: str) -> None:
        if on_bad_image not in ("skip", "error"):
            raise ValueError(f'on_bad_image must be "skip" or "error", got {on_bad_image!r}')
        self.transforms = transforms
        self.train = train
        self.on_bad_image = on_bad_image
        self._num_bad = torch.zeros((), dtype=torch.int64).share_memory_()  # seen by workers
        self._warned: set[int] = set()  # per process
        self._logger = logging.getLogger(type(self).__module__)

    # ------------------------------------------------------------------------- subclass hooks
    def _image_path(self, idx: int) -> str:
        raise NotImplementedError

    def _size_origin(self, idx: int) -> str:
        """The file that gives image ``idx``'s height and width (for error messages)."""
        raise NotImplementedError

    @property
    def _image_folders(self) -> str:
        """The image folder(s), for error messages."""
        raise NotImplementedError

    # ------------------------------------------------------------------------- the index
    def _set_index(self, *, image_ids: np.ndarray, sizes: np.ndarray, file_names: np.ndarray,
                   rows: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
                   ignored: np.ndarray, min_box_size: float, filter_empty: bool,
                   on_bad_annotation: str, source: str,
                   box_name: Callable[[int], str], mask_problems: np.ndarray | None = None
                   ) -> tuple[np.ndarray, dict[str, int]]:
        """Store the flat arrays; boxes are clipped to their image, and bad, tiny or ignored
        ones (crowd, difficult) left out of the targets.

        Args:
            image_ids, sizes, file_names: (I,) int64, (I, 2) int64 ``(h, w)``, (I,) str.
            rows, boxes, labels, ignored: per box, its image row in ``0..I-1``, xyxy (B, 4)
                float pixels, label ``1..K``, and whether it stays out of the targets.
            min_box_size: a box whose width or height after clipping is <= this is dropped.
            filter_empty: leave out images without a kept box.
            on_bad_annotation: ``"skip"`` or ``"error"`` for bad boxes (module docstring).
            source: the annotation file(s), for messages.
            box_name: box ``j`` as the user finds it, e.g. ``"annotation id 17: bbox [...]"``.
            mask_problems: (B,) str, why box ``j``'s mask is unusable (``""``: it is usable);
                such a box is bad like one with a bad box (a dataset with masks).

        Returns the boolean (I,) mask of images kept and the counts ``images``,
        ``images_without_boxes``, ``boxes`` (kept), ``ignored``, ``dropped_boxes`` (tiny),
        ``bad_boxes``, ``clipped_boxes``. ``self._box_rows`` gives each kept box's ``j``.
        """
        xyxy = np.array(boxes, dtype=np.float64).reshape(-1, 4)
        hw = sizes[rows].astype(np.float64)
        bad = self._check_boxes(xyxy, hw, on_bad_annotation, source, box_name, mask_problems)
        xyxy[bad] = 0.0
        clipped = xyxy.copy()
        clipped[:, 0::2] = np.clip(xyxy[:, 0::2], 0, hw[:, 1:2])
        clipped[:, 1::2] = np.clip(xyxy[:, 1::2], 0, hw[:, 0:1])
        was_clipped = ~bad & (clipped != xyxy).any(axis=1)
        xyxy = clipped
        big = ~bad & (xyxy[:, 2:] - xyxy[:, :2] > min_box_size).all(axis=1)
        keep = ~ignored & big
        # every box left out, by name and why (``resdet data check`` reports them by kind)
        self.box_problems += [(box_name(j), f"is at most {min_box_size:g} px wide or high after "
                               "clipping (too small to train on)")
                              for j in np.flatnonzero(~ignored & ~big & ~bad)]
        kept_rows = rows[keep]
        by_image = np.argsort(kept_rows, kind="stable")  # file order within an image
        counts = np.bincount(kept_rows, minlength=len(image_ids))
        selected = counts > 0 if filter_empty else np.ones(len(image_ids), dtype=bool)
        self._image_ids, self._sizes, self._file_names = (
            image_ids[selected], sizes[selected], file_names[selected])
        self._offsets = np.concatenate([[0], np.cumsum(counts[selected])])
        self._box_rows = np.flatnonzero(keep)[by_image]
        self._boxes = xyxy[keep][by_image].astype(np.float32)
        self._labels = np.asarray(labels, dtype=np.int64)[keep][by_image]
        counts_out = {"images": len(image_ids), "images_without_boxes": int((counts == 0).sum()),
                      "boxes": int(keep.sum()), "ignored": int(ignored.sum()),
                      "dropped_boxes": int((~ignored & ~big & ~bad).sum()),
                      "bad_boxes": int(bad.sum()), "clipped_boxes": int(was_clipped.sum())}
        return selected, counts_out

    def _check_boxes(self, xyxy: np.ndarray, hw: np.ndarray, policy: str, source: str,
                     box_name: Callable[[int], str],
                     mask_problems: np.ndarray | None = None) -> np.ndarray:
        """The (B,) mask of bad boxes (or masks); raises or warns as ``policy`` says."""
        if policy not in ON_BAD:
            raise ValueError(f'on_bad_annotation must be "skip" or "error", got {policy!r}')
        reasons = bad_box_reasons(xyxy, hw)
        if mask_problems is not None:
            reasons = np.where(reasons != "", reasons, mask_problems)
        bad = reasons != ""
        found = np.flatnonzero(bad)
        self.box_problems = [(box_name(j), str(reasons[j])) for j in found]
        if policy == "error" and len(found):
            j = found[0]
            raise DatasetError(f"{source}: {box_name(j)} {reasons[j]} (data.on_bad_annotation: "
                               "error; 'skip' leaves such boxes out and goes on)")
        what = "left out of training" if self.train else "an ignored region in evaluation"
        for j in found[:MAX_NAMED_BAD_BOXES]:
            self._logger.warning("%s: skipping %s (%s; %s)", source, box_name(j), reasons[j],
                                 what)
        if len(found) > MAX_NAMED_BAD_BOXES:
            self._logger.warning("%s: skipping %d more bad boxes (%d in all)", source,
                                 len(found) - MAX_NAMED_BAD_BOXES, len(found))
        return bad

    def __len__(self) -> int:
        return len(self._image_ids)

    @property
    def image_ids(self) -> np.ndarray:
        """(N,) int64 image id of each index."""
        return self._image_ids

    @property
    def image_sizes(self) -> np.ndarray:
        """(N, 2) int64 ``(height, width)`` of each index, from the annotations (no decoding)."""
        return self._sizes

    @property
    def box_labels(self) -> tuple[np.ndarray, np.ndarray]:
        """``(offsets (N + 1,), labels (B,))``: the labels of image ``i``'s kept boxes are
        ``labels[offsets[i]:offsets[i + 1]]`` (no decoding; for repeat-factor sampling)."""
        return self._offsets, self._labels

    @property
    def annotated_boxes(self) -> tuple[np.ndarray, np.ndarray]:
        """``(offsets (N + 1,), boxes (B, 4))``: image ``i``'s kept boxes (xyxy, clipped, in
        original pixels) are ``boxes[offsets[i]:offsets[i + 1]]`` (no decoding)."""
        return self._offsets, self._boxes

    @property
    def num_dropped_boxes(self) -> int:
        return self.stats["dropped_boxes"]

    @property
    def num_bad_images(self) -> int:
        """Bad images skipped so far, summed over DataLoader workers."""
        return int(self._num_bad)

    # ------------------------------------------------------------------------- samples
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
                           f"{last_error}; check the image folder {self._image_folders}")

    def _load(self, idx: int) -> dict[str, Any]:
        h, w = (int(v) for v in self._sizes[idx])
        path = self._image_path(idx)
        image = decode_image(path)
        if image.shape[:2] != (h, w):
            raise DatasetError(f"{path}: image is {image.shape[0]}x{image.shape[1]} (h x w) but "
                               f"{self._size_origin(idx)} gives {h}x{w} for image id "
                               f"{self._image_ids[idx]}")
        start, end = self._offsets[idx], self._offsets[idx + 1]
        boxes, labels = self._boxes[start:end], self._labels[start:end]
        masks = self._masks(start, end, h, w)
        if self.transforms is not None and masks is not None:
            image, boxes, labels, masks = self.transforms.with_masks(image, boxes, labels, masks)
        elif self.transforms is not None:
            image, boxes, labels = self.transforms(image, boxes, labels)
        sample = {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "boxes": torch.from_numpy(np.array(boxes, dtype=np.float32).reshape(-1, 4)),
            "labels": torch.from_numpy(np.array(labels, dtype=np.int64)),
            "image_id": int(self._image_ids[idx]),
            "original_size": (h, w),
            "file_name": str(self._file_names[idx]),
        }
        if masks is not None:
            sample["masks"] = masks
        return sample

    def _masks(self, start: int, end: int, height: int, width: int) -> InstanceMasks | None:
        """The masks of kept boxes ``start .. end - 1`` (one image's); ``None``: no masks."""
        return None

    def _note_bad(self, idx: int, error: DatasetError) -> None:
        self._num_bad += 1
        if idx not in self._warned:
            self._warned.add(idx)
            self._logger.warning("skipping bad image (%s): %s", "training" if self.train else
                                 "left out of evaluation", error)

    def _substitute(self, idx: int) -> int:
        """The next index of the same orientation (w >= h or w < h) not yet known to be bad."""
        portrait = self._sizes[:, 1] < self._sizes[:, 0]
        for step in range(1, len(self)):
            j = (idx + step) % len(self)
            if portrait[j] == portrait[idx] and j not in self._warned:
                return j
        raise DatasetError(f"no loadable image left in {self._image_folders}")

    def _check_not_empty(self, source: str) -> None:
        """Raise when no image is left (``source``: the annotation file(s), for the message)."""
        if len(self) == 0:
            raise DatasetError(f"{source}: no image" + (
                " with a usable box (filter_empty=True)" if self.stats["images"] else "s"))
