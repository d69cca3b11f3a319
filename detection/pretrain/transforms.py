"""Classification transforms on numpy images ``(H, W, 3)`` uint8 RGB.

A pipeline draws from one generator that ``set_random_seed`` reseeds, which is what the training
loader (``detection.data.loader``) calls before every sample, so a resumed run redraws the same
scales, crops, flips and colour shifts. The paper's recipes (He et al. 2016):

* ImageNet training (Section 3.4): the shorter side resized to a random size in [256, 480]
  (scale augmentation), a random 224x224 crop, a horizontal flip with probability 0.5, and the
  "standard colour augmentation" of Krizhevsky et al.: ``rgb += V (alpha * lambda)`` per image,
  ``alpha ~ N(0, 0.1)``, with the eigenvectors ``V`` and eigenvalues ``lambda`` of ImageNet's
  pixel covariance (fb.resnet.torch's values, in 0..1 units, scaled here to 0..255).
* ImageNet testing: the shorter side resized to 256, then the 224x224 centre crop (single crop)
  or the 10 crops of Krizhevsky et al.: the four corners and the centre, then the same five of
  the mirrored image (``torchvision.transforms.functional.ten_crop``'s order and geometry).
* CIFAR-10 (Section 4.2): 4 pixels of zeros padded on each side, a random 32x32 crop, a flip;
  testing on the original 32x32 image.

Resizing uses OpenCV: area averaging to shrink, bilinear to enlarge.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

__all__ = ["CenterCrop", "ClassificationTransform", "HorizontalFlip", "Lighting", "RandomCrop",
           "ResizeShorter", "TenCrop", "build_transforms", "center_offset"]

# fb.resnet.torch's PCA of ImageNet RGB pixels (0..1 units); columns of EIGVEC are eigenvectors
EIGVAL = np.array([0.2175, 0.0188, 0.0045])
EIGVEC = np.array([[-0.5675, 0.7192, 0.4009],
                   [-0.5808, -0.0045, -0.8140],
                   [-0.5836, -0.6948, 0.4203]])


def center_offset(size: int, crop: int) -> int:
    """The first row (column) of a centred crop, as torchvision: ``round((size - crop) / 2)``."""
    return int(round((size - crop) / 2.0))


class ResizeShorter:
    """Resize so the shorter side is ``size`` (an int) or a random integer in ``[lo, hi]``."""

    def __init__(self, size: int | Sequence[int]) -> None:
        self.lo, self.hi = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        if not 0 < self.lo <= self.hi:
            raise ValueError(f"resize sizes must be positive with lo <= hi, got {size!r}")

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        size = self.lo if self.lo == self.hi else int(rng.integers(self.lo, self.hi + 1))
        h, w = image.shape[:2]
        scale = size / min(h, w)
        shape = (size, max(1, round(w * scale))) if h <= w else (max(1, round(h * scale)), size)
        if shape == (h, w):
            return image
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        return cv2.resize(image, (shape[1], shape[0]), interpolation=interpolation)


def _pad_to(image: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad (bottom, right) an image smaller than ``size`` so a crop fits."""
    h, w = image.shape[:2]
    if h >= size and w >= size:
        return image
    return cv2.copyMakeBorder(image, 0, max(0, size - h), 0, max(0, size - w),
                              cv2.BORDER_CONSTANT, value=0)


class RandomCrop:
    """A random ``size`` x ``size`` crop after ``pad`` zero pixels on every side."""

    def __init__(self, size: int, pad: int = 0) -> None:
        self.size, self.pad = int(size), int(pad)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.pad:
            p = self.pad
            image = cv2.copyMakeBorder(image, p, p, p, p, cv2.BORDER_CONSTANT, value=0)
        image = _pad_to(image, self.size)
        h, w = image.shape[:2]
        top = int(rng.integers(0, h - self.size + 1))
        left = int(rng.integers(0, w - self.size + 1))
        return image[top:top + self.size, left:left + self.size]


class CenterCrop:
    """The centred ``size`` x ``size`` crop."""

    def __init__(self, size: int) -> None:
        self.size = int(size)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        image = _pad_to(image, self.size)
        h, w = image.shape[:2]
        top, left = center_offset(h, self.size), center_offset(w, self.size)
        return image[top:top + self.size, left:left + self.size]


class TenCrop:
    """``(10, size, size, 3)``: corners (top-left, top-right, bottom-left, bottom-right) and
    centre, then the same five crops of the horizontally mirrored image."""

    def __init__(self, size: int) -> None:
        self.size = int(size)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        image = _pad_to(image, self.size)
        h, w, s = image.shape[0], image.shape[1], self.size
        corners = [(0, 0), (0, w - s), (h - s, 0), (h - s, w - s),
                   (center_offset(h, s), center_offset(w, s))]
        crops = [img[t:t + s, l:l + s] for img in (image, image[:, ::-1]) for t, l in corners]
        return np.stack(crops)


class HorizontalFlip:
    """Mirror left-right with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = float(p)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return image[:, ::-1] if self.p > 0 and rng.random() < self.p else image


class Lighting:
    """AlexNet's colour augmentation: every pixel's RGB += ``255 * V (alpha * lambda)``,
    ``alpha ~ N(0, std)`` drawn once per image."""

    def __init__(self, std: float) -> None:
        self.std = float(std)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        alpha = rng.normal(0.0, self.std, 3)
        shift = 255.0 * EIGVEC @ (alpha * EIGVAL)  # (3,) RGB
        return np.clip(image + shift.astype(np.float32), 0, 255).round().astype(np.uint8)


class ClassificationTransform:
    """Ops applied in order, ``op(image, rng) -> image``, with one generator for all of them."""

    def __init__(self, ops: Sequence) -> None:
        self.ops = list(ops)
        self.rng = np.random.default_rng()

    def set_random_seed(self, seed: int | None) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        for op in self.ops:
            image = op(image, self.rng)
        return np.ascontiguousarray(image)

    def __repr__(self) -> str:
        return f"ClassificationTransform({[type(op).__name__ for op in self.ops]})"


def build_transforms(*, train: bool, scale: Sequence[int] = (256, 480), crop: int = 224,
                     pad: int = 0, flip_prob: float = 0.5, lighting_std: float = 0.1,
                     test_size: int = 256, test_crops: int = 1) -> ClassificationTransform:
    """The training or test pipeline (module docstring); ``scale`` ``[]`` and ``test_size`` 0
    keep the image's size (CIFAR), ``test_crops`` is 1 (centre) or 10."""
    if train:
        ops: list = [ResizeShorter(scale)] if scale else []
        ops.append(RandomCrop(crop, pad))
        if flip_prob > 0:
            ops.append(HorizontalFlip(flip_prob))
        if lighting_std > 0:
            ops.append(Lighting(lighting_std))
        return ClassificationTransform(ops)
    if test_crops not in (1, 10):
        raise ValueError(f"test_crops must be 1 or 10, got {test_crops}")
    ops = [ResizeShorter(test_size)] if test_size else []
    ops.append(TenCrop(crop) if test_crops == 10 else CenterCrop(crop))
    return ClassificationTransform(ops)
