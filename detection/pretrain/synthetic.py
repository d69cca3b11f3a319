"""A classification set this CPU trains on in minutes: crops of the synthetic shapes.

The detection set's generator (``detection.data.synthetic``) draws images of circles, squares,
triangles, stars and crosses on textured backgrounds; every annotated shape, cropped with some
context and resized to ``crop_size``, becomes one image of its class, written in the ImageNet
layout (``<root>/train/<class>/*.jpg``, ``<root>/val/<class>/*.jpg``), so the set trains through
the image-folder path of ``tools/pretrain.py``. A crop is the square around the box centre of side
``max(w, h) * U(1.15, 1.5)``, its centre moved by up to 10 % of the side, mirrored at the image
border; it may hold parts of neighbouring shapes, as detection crops do.

The source images use their own ``seed`` (1 by default; the detection configs use 0), so no
crop comes from the detection set's training or validation images. Everything depends only on
the parameters, recorded in ``<root>/shape_crops.json``, written last.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass

import cv2
import numpy as np

from ..data.synthetic import CATEGORIES, make_synthetic_coco

__all__ = ["ShapeCrops", "ensure_shape_crops", "make_shape_crops"]

_VERSION = 1
_MARKER = "shape_crops.json"


@dataclass(frozen=True)
class ShapeCrops:
    root: str
    train: str
    val: str

    @classmethod
    def at(cls, root: str) -> ShapeCrops:
        return cls(root, os.path.join(root, "train"), os.path.join(root, "val"))


def _crop(image: np.ndarray, box: list[float], size: int, rng: np.random.Generator
          ) -> np.ndarray:
    x, y, w, h = box  # COCO xywh
    side = max(w, h) * rng.uniform(1.15, 1.5)
    cx, cy = x + w / 2 + rng.uniform(-0.1, 0.1) * side, y + h / 2 + rng.uniform(-0.1, 0.1) * side
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    s = max(2, int(round(side)))
    pad = max(0, -x0, -y0, x0 + s - image.shape[1], y0 + s - image.shape[0])
    if pad:
        image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
    crop = image[y0 + pad:y0 + pad + s, x0 + pad:x0 + pad + s]
    interpolation = cv2.INTER_AREA if s > size else cv2.INTER_LINEAR
    return cv2.resize(crop, (size, size), interpolation=interpolation)


def make_shape_crops(root: str | os.PathLike, *, num_train_images: int, num_val_images: int,
                     crop_size: int = 64, image_size: int = 160, seed: int = 1) -> ShapeCrops:
    """Write the crops of ``num_train_images`` / ``num_val_images`` generated shape images (about
    2.5 shapes each) under ``root``; returns the paths."""
    root = os.fspath(root)
    names = {c["id"]: c["name"] for c in CATEGORIES}
    with tempfile.TemporaryDirectory() as source_dir:
        source = make_synthetic_coco(source_dir, num_train=num_train_images,
                                     num_val=num_val_images, image_size=image_size, seed=seed,
                                     empty_fraction=0.0)
        for split, images, annotations in (
                ("train", source.train_images, source.train_annotations),
                ("val", source.val_images, source.val_annotations)):
            for name in names.values():
                os.makedirs(os.path.join(root, split, name), exist_ok=True)
            with open(annotations) as f:
                coco = json.load(f)
            files = {im["id"]: im["file_name"] for im in coco["images"]}
            rng = np.random.default_rng([seed, 1 if split == "val" else 0])
            for ann in coco["annotations"]:
                image = cv2.imread(os.path.join(images, files[ann["image_id"]]))  # BGR stays BGR
                crop = _crop(image, ann["bbox"], crop_size, rng)
                path = os.path.join(root, split, names[ann["category_id"]],
                                    f"{ann['image_id']:06d}_{ann['id']:06d}.jpg")
                cv2.imwrite(path, crop, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return ShapeCrops.at(root)


def ensure_shape_crops(root: str | os.PathLike, *, num_train_images: int, num_val_images: int,
                       crop_size: int = 64, image_size: int = 160, seed: int = 1) -> ShapeCrops:
    """The set at ``root``, generated unless it is there with these parameters (into a
    temporary sibling folder, then renamed: never half-written). ``FileExistsError`` when
    ``root`` holds something else."""
    params = {"version": _VERSION, "num_train_images": num_train_images,
              "num_val_images": num_val_images, "crop_size": crop_size,
              "image_size": image_size, "seed": seed}
    root = os.path.abspath(os.fspath(root))
    try:
        with open(os.path.join(root, _MARKER)) as f:
            found = json.load(f)
    except (OSError, ValueError):
        found = None
    if found == params:
        return ShapeCrops.at(root)
    if found is not None or (os.path.exists(root) and (os.path.isfile(root) or os.listdir(root))):
        raise FileExistsError(f"{root} holds other data" + (
            f" (shape crops made with {found})" if found else "") +
            "; remove it or choose another folder")
    os.makedirs(os.path.dirname(root), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=os.path.basename(root) + ".tmp-", dir=os.path.dirname(root))
    try:
        make_shape_crops(tmp, **{k: v for k, v in params.items() if k != "version"})
        with open(os.path.join(tmp, _MARKER), "w") as f:
            json.dump(params, f)
        os.rename(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ShapeCrops.at(root)
