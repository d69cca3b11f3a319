"""A reproducible COCO-format dataset of coloured shapes, for the quickstart and the tests.

Layout::

    <root>/train/000000.jpg ...      <root>/annotations/train.json
    <root>/val/000000.jpg ...        <root>/annotations/val.json
    <root>/synthetic.json            generation parameters, written last (marks a complete set)

The class is the shape (circle, square, triangle, star, cross) and never the colour, which is
random per object and chosen to stand out from the background under it. Category ids are
deliberately non-contiguous (1, 3, 7, 12, 20) so the id <-> label mapping is exercised.
Shapes are randomly rotated, their circumradius is 9-25 % of the shorter image side (the
smallest box side is about 13 % of it); boxes overlap a little (at most 30 % of the smaller box
is covered); backgrounds are smooth colour fields with thin clutter lines and pixel noise; images
are landscape or portrait (shorter side 75-100 % of ``image_size``); ``empty_fraction`` of the
images hold no object. Image ``i`` depends only on ``(seed, split, i)``.

Each annotation's ``segmentation`` is the exact polygon the shape was drawn from (one part,
vertices rounded to 0.01 px as the ``bbox``; a circle is the 48-gon it is drawn as), so the set
trains and evaluates instance masks too (``configs/quickstart_mask.yaml``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["CATEGORIES", "SyntheticCOCO", "ensure_synthetic", "make_synthetic_coco"]

CATEGORIES = [{"id": 1, "name": "circle"}, {"id": 3, "name": "square"},
              {"id": 7, "name": "triangle"}, {"id": 12, "name": "star"},
              {"id": 20, "name": "cross"}]
_VERSION = 1
_SPLITS = {"train": 0, "val": 1}


@dataclass(frozen=True)
class SyntheticCOCO:
    """Paths of a synthetic set (strings, ready for ``COCODataset``)."""

    root: str
    train_images: str
    train_annotations: str
    val_images: str
    val_annotations: str

    @classmethod
    def at(cls, root: str | os.PathLike) -> SyntheticCOCO:
        root = os.fspath(root)
        ann = os.path.join(root, "annotations")
        return cls(root, os.path.join(root, "train"), os.path.join(ann, "train.json"),
                   os.path.join(root, "val"), os.path.join(ann, "val.json"))


def _shape_polygon(kind: str, radius: float, angle: float) -> np.ndarray:
    """(P, 2) vertices around (0, 0), circumradius ``radius``, rotated by ``angle`` (rad)."""
    if kind == "circle":
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        r = np.full_like(t, radius)
    elif kind in ("square", "triangle"):
        n = 4 if kind == "square" else 3
        t = np.arange(n) * 2 * np.pi / n
        r = np.full_like(t, radius)
    elif kind == "star":
        t = np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, radius, 0.45 * radius)
    else:  # cross: a plus sign with arms of half-width a
        a, b = 0.3 * radius, radius
        xy = np.array([(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a),
                       (a, b), (-a, b), (-a, a), (-b, a), (-b, -a), (-a, -a)])
        t, r = np.arctan2(xy[:, 1], xy[:, 0]), np.hypot(xy[:, 0], xy[:, 1])
    return np.stack([r * np.cos(t + angle), r * np.sin(t + angle)], axis=1)


def _overlap(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over the smaller box's area: how much of either box the other covers."""
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / np.minimum(area(box), area(boxes))


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    base = rng.integers(40, 216, size=3).astype(np.float32)
    field = cv2.resize(rng.normal(0, 35, (4, 4, 3)).astype(np.float32), (w, h),
                       interpolation=cv2.INTER_CUBIC)
    img = np.clip(base + field, 0, 255).astype(np.uint8)
    for _ in range(rng.integers(0, 5)):  # thin low-contrast clutter, not annotated
        p1, p2 = rng.integers(0, [w, h], size=(2, 2))
        colour = np.clip(base + rng.normal(0, 40, 3), 0, 255)
        cv2.line(img, tuple(map(int, p1)), tuple(map(int, p2)), colour.tolist(), 1, cv2.LINE_AA)
    return img


def _draw_image(rng: np.random.Generator, image_size: int, max_objects: int,
                empty_fraction: float) -> tuple[np.ndarray, list[dict]]:
    """One image (H, W, 3) uint8 RGB and its objects ``{"category_id", "bbox" xyxy, "polygon"
    (P, 2), "area"}``."""
    short = int(rng.integers(int(0.75 * image_size), image_size + 1))
    h, w = (short, image_size) if rng.random() < 0.5 else (image_size, short)
    img = _background(rng, h, w)
    n = 0 if rng.random() < empty_fraction else int(rng.integers(1, max_objects + 1))
    objects: list[dict] = []
    for _ in range(n):
        for _attempt in range(30):
            cat = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
            poly = _shape_polygon(cat["name"], rng.uniform(0.09, 0.25) * min(h, w),
                                  rng.uniform(0, 2 * np.pi))
            lo, hi = poly.min(axis=0), poly.max(axis=0)
            poly = poly + rng.uniform(-lo, [w, h] - hi)  # shift fully inside the image
            box = np.concatenate([poly.min(axis=0), poly.max(axis=0)])
            if not objects or _overlap(box, np.array([o["bbox"] for o in objects])).max() <= 0.3:
                break
        else:
            continue
        x1, y1, x2, y2 = box.astype(int)
        under = img[y1:y2 + 1, x1:x2 + 1].reshape(-1, 3).mean(axis=0)
        colour = rng.integers(0, 256, size=3)
        for _retry in range(10):
            if np.linalg.norm(colour - under) > 90:
                break
            colour = rng.integers(0, 256, size=3)
        else:
            colour = 255 - under  # the complement of the background always stands out
        # vertices in continuous coordinates (pixel i spans [i, i+1)); cv2 puts pixel centres on
        # integers, so shift by -0.5; 4 fractional bits for sub-pixel edges
        pts = np.round((poly - 0.5) * 16).astype(np.int32)
        cv2.fillPoly(img, [pts], colour.tolist(), cv2.LINE_AA, shift=4)
        objects.append({"category_id": cat["id"], "bbox": box, "polygon": poly,
                        "area": float(cv2.contourArea(poly.astype(np.float32)))})
    noise = rng.normal(0, 8, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8), objects


def _make_split(root: str, split: str, num_images: int, *, image_size: int, seed: int,
                max_objects: int, empty_fraction: float) -> dict:
    folder = os.path.join(root, split)
    os.makedirs(folder, exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        rng = np.random.default_rng([seed, _SPLITS[split], i])
        img, objects = _draw_image(rng, image_size, max_objects, empty_fraction)
        file_name = f"{i:06d}.jpg"
        cv2.imwrite(os.path.join(folder, file_name), img[:, :, ::-1],
                    [cv2.IMWRITE_JPEG_QUALITY, 95])
        images.append({"id": i + 1, "file_name": file_name,
                       "height": img.shape[0], "width": img.shape[1]})
        for o in objects:
            x1, y1, x2, y2 = (round(float(v), 2) for v in o["bbox"])
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1,
                                "category_id": o["category_id"],
                                "bbox": [x1, y1, round(x2 - x1, 2), round(y2 - y1, 2)],
                                "area": round(o["area"], 2), "iscrowd": 0,
                                "segmentation": [[round(float(v), 2)
                                                  for v in o["polygon"].reshape(-1)]]})
    return {"info": {"description": f"resdet synthetic shapes ({split})", "version": _VERSION},
            "images": images, "annotations": annotations, "categories": CATEGORIES}


def make_synthetic_coco(root: str | os.PathLike, *, num_train: int = 400, num_val: int = 100,
                        image_size: int = 160, seed: int = 0, max_objects: int = 4,
                        empty_fraction: float = 0.08) -> SyntheticCOCO:
    """Write a synthetic set under ``root`` (overwriting its files) and return its paths."""
    if image_size < 32 or num_train < 0 or num_val < 0 or max_objects < 1:
        raise ValueError("need image_size >= 32, num_train/num_val >= 0 and max_objects >= 1")
    params = _params(num_train, num_val, image_size, seed, max_objects, empty_fraction)
    paths = SyntheticCOCO.at(root)
    os.makedirs(os.path.dirname(paths.train_annotations), exist_ok=True)
    for split, n, ann_path in (("train", num_train, paths.train_annotations),
                               ("val", num_val, paths.val_annotations)):
        data = _make_split(paths.root, split, n, image_size=image_size, seed=seed,
                           max_objects=max_objects, empty_fraction=empty_fraction)
        with open(ann_path, "w") as f:
            json.dump(data, f)
    with open(os.path.join(paths.root, "synthetic.json"), "w") as f:
        json.dump(params, f)
    return paths


def ensure_synthetic(root: str | os.PathLike, *, num_train: int = 400, num_val: int = 100,
                     image_size: int = 160, seed: int = 0, max_objects: int = 4,
                     empty_fraction: float = 0.08) -> SyntheticCOCO:
    """Generate the set at ``root`` unless it is already there with these parameters.

    Safe when several processes race: each writes into its own temporary sibling folder and
    renames it onto ``root`` (atomic); a loser finds the winner's complete set and uses it.
    Raises ``FileExistsError`` when ``root`` holds something else.
    """
    params = _params(num_train, num_val, image_size, seed, max_objects, empty_fraction)
    root = os.path.abspath(os.fspath(root))
    found = _read_marker(root)
    if found == params:
        return SyntheticCOCO.at(root)
    if found is not None or (os.path.isdir(root) and os.listdir(root)) or os.path.isfile(root):
        raise FileExistsError(f"{root} holds other data" + (
            f" (a synthetic set made with {found})" if found else "") +
            "; remove it or choose another folder")
    parent = os.path.dirname(root)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=os.path.basename(root) + ".tmp-", dir=parent)
    try:
        make_synthetic_coco(tmp, **{k: v for k, v in params.items() if k != "version"})
        try:
            os.rename(tmp, root)
        except OSError:
            if _read_marker(root) != params:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return SyntheticCOCO.at(root)


def _params(num_train: int, num_val: int, image_size: int, seed: int, max_objects: int,
            empty_fraction: float) -> dict:
    return {"version": _VERSION, "num_train": int(num_train), "num_val": int(num_val),
            "image_size": int(image_size), "seed": int(seed), "max_objects": int(max_objects),
            "empty_fraction": float(empty_fraction)}


def _read_marker(root: str) -> dict | None:
    try:
        with open(os.path.join(root, "synthetic.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
