"""Detection transforms on numpy images with albumentations: resize, flip, photometric jitter.

A transform is called as ``transform(image, boxes, labels) -> (image, boxes, labels)`` with
``image`` (H, W, 3) uint8 RGB, ``boxes`` (n, 4) float32 xyxy pixels and ``labels`` (n,) int64;
boxes follow every geometric op.

Resize rule (torchvision's ``GeneralizedRCNNTransform``, Detectron2's ``ResizeShortestEdge``)::

    scale = min(size / min(h, w), max_size / max(h, w))
    (h', w') = (round(h * scale), round(w * scale))       # round half up

so the shorter side becomes ``size`` unless the longer side would pass ``max_size``; boxes scale by
``w'/w`` and ``h'/h``. Training draws ``size`` from ``min_size`` per image (multi-scale). The
sample's ``original_size`` with the image's new shape gives the scale back.
Horizontal flip: ``x1' = W - x2``, ``x2' = W - x1``.

**Masks** (``masks=True``): :meth:`DetectionTransform.with_masks` also moves an image's
``InstanceMasks``. Masks stay as annotated (run-length encoded at the original size); what
changes is their ``affine``, the map from the new image's pixels back to the original's. It is
read off two keypoints that go through every transform with the image, the corners ``(0, 0)``
and ``(W, H)`` (albumentations treats a keypoint as a pixel centre, ``x - 0.5``; its flip maps
``k -> W - 1 - k``, i.e. ``x -> W - x``), so any flip, resize or crop of the pipeline moves the
masks exactly as it moves the image and the boxes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np

from ..masks import InstanceMasks

__all__ = ["DetectionTransform", "Resize", "ResizeShortestEdge", "build_transforms", "resized_shape"]


def resized_shape(height: int, width: int, size: int, max_size: int) -> tuple[int, int]:
    """``(h', w')`` after the resize rule above."""
    scale = min(size / min(height, width), max_size / max(height, width))
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


class Resize(A.DualTransform):
    """A resize to ``new_shape`` (from ``get_params_dependent_on_data`` of a subclass): cv2
    ``INTER_LINEAR`` for the image; boxes, kept by albumentations in normalised coordinates,
    unchanged; keypoints are pixel centres (``x - 0.5``): ``k' = (k + 0.5) * w' / w - 0.5``."""

    def apply(self, img: np.ndarray, new_shape: tuple[int, int], **params: Any) -> np.ndarray:
        if img.shape[:2] == new_shape:
            return img
        return cv2.resize(img, (new_shape[1], new_shape[0]), interpolation=cv2.INTER_LINEAR)

    def apply_to_bboxes(self, bboxes: np.ndarray, **params: Any) -> np.ndarray:
        return bboxes  # normalised coordinates are scale invariant

    def apply_to_keypoints(self, keypoints: np.ndarray, new_shape: tuple[int, int],
                           old_shape: tuple[int, int], **params: Any) -> np.ndarray:
        out = np.array(keypoints, dtype=np.float64)
        for axis, (new, old) in enumerate(zip(new_shape[::-1], old_shape[::-1])):
            out[:, axis] = (out[:, axis] + 0.5) * (new / old) - 0.5
        return out


class ResizeShortestEdge(Resize):
    """Resize so the shorter side is a size drawn from ``sizes``, the longer side <= max_size.

    Bounding boxes are kept by albumentations in normalised coordinates, so they need no change
    here; cv2 ``INTER_LINEAR`` resizes the image.
    """

    def __init__(self, sizes: Sequence[int], max_size: int, p: float = 1.0) -> None:
        super().__init__(p=p)
        self.sizes = [int(s) for s in sizes]
        self.max_size = int(max_size)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]
                                     ) -> dict[str, Any]:
        height, width = params["shape"][:2]
        size = self.sizes[self.py_random.randrange(len(self.sizes))]
        return {"new_shape": resized_shape(height, width, size, self.max_size),
                "old_shape": (height, width)}

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("sizes", "max_size")


class DetectionTransform:
    """An albumentations pipeline behind the ``(image, boxes, labels)`` call of the datasets.

    Boxes are clipped to the image after each transform; one left with no width or height
    (1e-5 px, wholly cropped away) or with less than ``min_visibility`` of its area (after a
    crop) is dropped with its label (and its mask). Resizes and flips keep every box.
    """

    def __init__(self, transforms: Sequence[A.BasicTransform], *, masks: bool = False,
                 min_visibility: float = 0.0) -> None:
        if not 0.0 <= min_visibility <= 1.0:
            raise ValueError(f"box min_visibility must be in [0, 1], got {min_visibility}")
        self.masks = masks
        keypoints = A.KeypointParams(format="xy", remove_invisible=False) if masks else None
        self.compose = A.Compose(
            list(transforms),
            bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels", "index"],
                                     clip=True, min_visibility=min_visibility,
                                     min_width=1e-5, min_height=1e-5),
            keypoint_params=keypoints,
        )

    def __call__(self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.apply(image, boxes, labels)[:3]

    def apply(self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, **targets: Any
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        """``(image, boxes, labels, kept, out)``: ``kept`` (m,) the input rows of the boxes
        left, ``out`` albumentations' whole result (``targets``, e.g. ``keypoints``, moved)."""
        index = np.arange(len(boxes), dtype=np.int64)
        out = self.compose(image=image, bboxes=boxes, labels=labels, index=index, **targets)
        boxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
        return (out["image"], boxes, np.asarray(out["labels"], dtype=np.int64),
                np.asarray(out["index"], dtype=np.int64), out)

    def with_masks(self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
                   masks: InstanceMasks
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, InstanceMasks]:
        """As calling it, and ``masks`` moved with the image (module docstring)."""
        if not self.masks:
            raise ValueError("this DetectionTransform was built without masks=True")
        h, w = image.shape[:2]
        corners = np.array([[-0.5, -0.5], [w - 0.5, h - 0.5]])  # (0, 0), (w, h) as centres
        image, boxes, labels, kept, out = self.apply(image, boxes, labels, keypoints=corners)
        (x0, y0), (x1, y1) = np.asarray(out["keypoints"], dtype=np.float64)[:, :2] + 0.5
        # the new image's x0 .. x1 is the old 0 .. w: x_old = (x - x0) * w / (x1 - x0)
        sx, sy = w / (x1 - x0), h / (y1 - y0)
        ax, bx, ay, by = masks.affine.tolist()  # old image -> annotated
        affine = (ax * sx, bx - ax * sx * x0, ay * sy, by - ay * sy * y0)
        return image, boxes, labels, masks.select(kept).with_affine(affine)

    def set_random_seed(self, seed: int | None) -> None:
        """Reseed the augmentation RNG (albumentations ignores the global numpy/random seeds)."""
        self.compose.set_random_seed(seed)

    def __repr__(self) -> str:
        return f"DetectionTransform({self.compose.transforms})"


def build_transforms(*, train: bool, min_size: int | Sequence[int], max_size: int,
                     flip_prob: float = 0.5, photometric: bool = False,
                     masks: bool = False) -> DetectionTransform:
    """Training: multi-scale resize, horizontal flip, optional colour jitter; test: resize only.

    Args:
        train: training pipeline (random) or test pipeline (deterministic resize).
        min_size: shorter-side size, or a list to draw from per image in training.
        max_size: cap on the longer side.
        flip_prob: probability of a horizontal flip in training.
        photometric: in training, jitter brightness/contrast/saturation (+-20 %) and hue (+-0.02)
            with probability 0.8.
        masks: also move ``InstanceMasks`` (:meth:`DetectionTransform.with_masks`).
    """
    sizes = [min_size] if isinstance(min_size, int) else list(min_size)
    if not sizes or any(not isinstance(s, int) or s <= 0 for s in sizes):
        raise ValueError(f"min_size must be a positive int or a list of them, got {min_size!r}")
    if not isinstance(max_size, int) or max_size <= 0:
        raise ValueError(f"max_size must be a positive int, got {max_size!r}")
    if not 0.0 <= flip_prob <= 1.0:
        raise ValueError(f"flip_prob must be in [0, 1], got {flip_prob}")
    if not train:
        if len(sizes) != 1:
            raise ValueError(f"test-time min_size must be a single size, got {min_size!r}")
        return DetectionTransform([ResizeShortestEdge(sizes, max_size)], masks=masks)
    ops: list[A.BasicTransform] = [ResizeShortestEdge(sizes, max_size)]
    if flip_prob > 0:
        ops.append(A.HorizontalFlip(p=flip_prob))
    if photometric:
        ops.append(A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.8))
    return DetectionTransform(ops, masks=masks)
