"""Augmentations from the config (detection/data/augment.py): names and arguments checked, the
presets, boxes that stay on their objects through crops, and resumable randomness."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from detection.data.augment import MASK_SAFE, build_augment, expand
from detection.data.coco import COCODataset
from detection.data.loader import make_train_loader
from detection.data.transforms import DetectionTransform, build_transforms

DEFAULTS = {"resize_flip": {"sizes": [48, 64], "max_size": 96, "flip_prob": 0.5,
                            "photometric": False},
            "lsj": {"size": 64, "flip_prob": 0.5}}


def _build(specs, masks=False):
    return build_augment(specs, defaults=DEFAULTS, masks=masks)


# ------------------------------------------------------------------------------- checking
@pytest.mark.parametrize("specs, message", [
    ([{"name": "HorizontalFlip"}, {"name": "RandomCorp", "height": 8, "width": 8}],
     r"data.augment\[1\]: unknown transform 'RandomCorp'.*did you mean 'RandomCrop'\?"),
    ([{"name": "RandomCrop", "heigth": 8, "width": 8}],
     r"data.augment\[0\] \(RandomCrop\): unknown argument 'heigth'; did you mean 'height'\?"),
    ([{"name": "HorizontalFlip", "p": 2}],
     r"data.augment\[0\] \(HorizontalFlip\): p: Input should be less than or equal to 1 "
     r"\(got 2\)"),
    ([{"name": "lsj", "sise": 32}],
     r"data.augment\[0\] \(preset lsj\): unknown argument 'sise'; did you mean 'size'\?"),
    ([{"p": 0.5}], r"data.augment\[0\]: each entry is a mapping with a name"),
    ([{"name": "OneOf", "transforms": [{"name": "Blur"}, {"name": "Bluur"}]}],
     r"data.augment\[0\] \(OneOf\).transforms\[1\]: unknown transform 'Bluur'"),
    ([{"name": "Normalize"}], None),  # an image-only transform: accepted
])
def test_each_entry_is_checked_with_one_error_naming_it(specs, message):
    if message is None:
        assert len(_build(specs)) == 1
        return
    with pytest.raises(ValueError, match=message):
        _build(specs)


def test_a_model_with_masks_refuses_what_masks_cannot_follow():
    with pytest.raises(ValueError, match=r"data.augment\[1\] \(Rotate\): Rotate is not an "
                                         r"axis-aligned affine map.*mask_head"):
        _build([{"name": "HorizontalFlip"}, {"name": "Rotate", "limit": 10}], masks=True)
    with pytest.raises(ValueError, match=r"transforms\[0\] \(Perspective\)"):
        _build([{"name": "OneOf", "transforms": [{"name": "Perspective"}]}], masks=True)
    # the presets and pixel-level transforms pass; without masks a rotation passes
    ops = _build([{"name": "lsj"}, {"name": "resize_flip"}, {"name": "ColorJitter"}],
                 masks=True)
    assert [type(op).__name__ for op in ops] == [
        "HorizontalFlip", "ResizeScale", "RandomCrop", "ResizeShortestEdge", "HorizontalFlip",
        "ColorJitter"]
    assert {"ResizeScale", "RandomCrop", "HorizontalFlip"} <= MASK_SAFE
    assert type(_build([{"name": "Rotate"}])[0]).__name__ == "Rotate"


def test_presets_expand_with_the_config_defaults_and_their_own_arguments():
    (_, resize), (_, flip) = expand([{"name": "resize_flip", "flip_prob": 0.25}],
                                    defaults=DEFAULTS)
    assert resize == {"name": "ResizeShortestEdge", "sizes": [48, 64], "max_size": 96}
    assert flip == {"name": "HorizontalFlip", "p": 0.25}
    entries = [e for _, e in expand([{"name": "lsj", "size": 32, "max_scale": 1.5}],
                                    defaults=DEFAULTS)]
    assert entries[0] == {"name": "HorizontalFlip", "p": 0.5}
    assert entries[1] == {"name": "ResizeScale", "min_scale": 0.1, "max_scale": 1.5,
                          "height": 32, "width": 32}
    assert entries[2]["height"] == entries[2]["width"] == 32 and entries[2]["pad_if_needed"]


# ------------------------------------------------------------------------------- boxes
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]


def _painted(h=80, w=100):
    """A black image with four rectangles of distinct colours; their boxes (pixel edges)."""
    image = np.zeros((h, w, 3), np.uint8)
    boxes = np.array([[5, 6, 35, 30], [50, 10, 95, 45], [10, 40, 40, 75], [60, 55, 90, 78]],
                     np.float32)
    for (x0, y0, x1, y1), colour in zip(boxes.astype(int), COLOURS):
        image[y0:y1, x0:x1] = colour
    return image, boxes, np.arange(1, 5, dtype=np.int64)


PALETTE = np.array([(0, 0, 0), (128, 128, 128), *COLOURS], np.float32)  # black, padding, objects


def _extent(image: np.ndarray, colour) -> np.ndarray | None:
    """The pixel-edge box of the pixels nearest to ``colour`` among the palette (a blended
    edge pixel goes to the nearer of its two colours)."""
    dist = ((image[:, :, None, :].astype(np.float32) - PALETTE) ** 2).sum(-1)  # (H, W, P)
    nearest = PALETTE[dist.argmin(-1)]
    ys, xs = np.nonzero((nearest == np.asarray(colour, np.float32)).all(-1))
    if len(xs) == 0:
        return None
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def _check_boxes_on_objects(tf: DetectionTransform, seeds, *, min_visibility=0.0):
    image, boxes, labels = _painted()
    sizes_seen = set()
    for seed in seeds:
        tf.set_random_seed(seed)
        out, out_boxes, out_labels, kept, _ = tf.apply(image, boxes, labels)
        sizes_seen.add(out.shape[:2])
        assert np.array_equal(labels[kept], out_labels)
        for box, label in zip(out_boxes, out_labels):
            assert (box[2:] > box[:2]).all()
            assert 0 <= box[0] and box[2] <= out.shape[1] and box[3] <= out.shape[0]
            found = _extent(out, COLOURS[label - 1])
            if min(box[2] - box[0], box[3] - box[1]) < 3:  # too small to read back
                continue
            assert found is not None, (seed, label)
            assert np.abs(found - box).max() <= 1.0, (seed, label, found, box)
        for label in set(labels) - set(out_labels):  # a dropped box: its object is gone,
            found = _extent(out, COLOURS[label - 1])  # or too little of it is left
            if found is not None and min_visibility > 0:
                continue
            assert found is None or min(found[2:] - found[:2]) <= 2, (seed, label, found)
    return sizes_seen


def test_lsj_keeps_each_box_on_its_object_through_resize_crop_pad_and_flip():
    tf = DetectionTransform(_build([{"name": "lsj", "size": 64}]))
    sizes = _check_boxes_on_objects(tf, range(40))
    assert sizes == {(64, 64)}  # every output is the fixed size (cropped or padded)
    image, boxes, labels = _painted()
    for seed in range(40):  # padding (grey) only ever at the bottom and right, as Detectron2's
        tf.set_random_seed(seed)
        out = tf(image, boxes, labels)[0]
        grey = (out == 128).all(-1)
        rows, cols = grey.all(1), grey.all(0)
        assert not rows[0] and not cols[0]  # the first row and column hold image
        if rows.any():
            assert rows[rows.argmax():].all()  # once a row is padding, all below are
        if cols.any():
            assert cols[cols.argmax():].all()


def test_resize_flip_keeps_each_box_on_its_object():
    tf = DetectionTransform(_build([{"name": "resize_flip"}]))
    sizes = _check_boxes_on_objects(tf, range(20))
    assert sizes == {(48, 60), (64, 80)}  # shorter side 48 or 64, aspect kept


def test_a_crop_drops_boxes_below_the_visibility_threshold_and_clips_the_others():
    image, boxes, labels = _painted()
    crop = [{"name": "Crop", "x_min": 20, "y_min": 0, "x_max": 100, "y_max": 80}]
    # box 1 keeps 15 of its 30 px width (0.5), box 3 keeps 20 of 30 (0.67)
    for threshold, kept_labels in [(0.0, [1, 2, 3, 4]), (0.6, [2, 3, 4]), (0.7, [2, 4])]:
        tf = DetectionTransform(_build(crop), min_visibility=threshold)
        _, out_boxes, out_labels, kept, _ = tf.apply(image, boxes, labels)
        assert out_labels.tolist() == kept_labels and (kept + 1).tolist() == kept_labels
        expected = boxes[kept - 0] - np.array([20, 0, 20, 0], np.float32)
        expected[:, 0::2] = expected[:, 0::2].clip(0, 80)
        assert np.allclose(out_boxes, expected)
    _check_boxes_on_objects(DetectionTransform(_build(crop), min_visibility=0.6), [0],
                            min_visibility=0.6)


def test_a_box_cropped_away_entirely_is_dropped():
    image, boxes, labels = _painted()
    tf = DetectionTransform(_build([{"name": "Crop", "x_min": 45, "y_min": 0, "x_max": 100,
                                     "y_max": 50}]))
    _, out_boxes, out_labels, _, _ = tf.apply(image, boxes, labels)
    assert out_labels.tolist() == [2]
    assert np.allclose(out_boxes, [[5, 10, 50, 45]])


def test_the_resize_flip_preset_is_todays_pipeline_bitwise():
    image, boxes, labels = _painted()
    today = build_transforms(train=True, min_size=[48, 64], max_size=96, flip_prob=0.5,
                             photometric=True)
    preset = DetectionTransform(_build([{"name": "resize_flip", "photometric": True}]))
    for seed in range(6):
        today.set_random_seed(seed)
        preset.set_random_seed(seed)
        a, b = today(image, boxes, labels), preset(image, boxes, labels)
        assert all(np.array_equal(x, y) for x, y in zip(a, b))


# ------------------------------------------------------------------------------- resume
@pytest.mark.parametrize("preset", ["resize_flip", "lsj"])
def test_each_preset_resumes_bitwise(synthetic_coco, preset):
    """Batch k of a loader started at 0 equals batch k of one resumed at k: same images, same
    augmentation (the per-sample reseeding covers our transforms and albumentations' own)."""
    tf = DetectionTransform(_build([{"name": preset, "size": 64} if preset == "lsj"
                                    else {"name": preset}]))
    data = COCODataset(images=synthetic_coco.train_images,
                       annotations=synthetic_coco.train_annotations, transforms=tf, train=True)

    def batches(start: int, n: int):
        loader = make_train_loader(data, batch_size=2, num_workers=0, seed=3, start_iter=start)
        it = iter(loader)
        return [next(it) for _ in range(n)]

    full = batches(0, 4)
    resumed = batches(2, 2)
    for a_batch, b_batch in zip(full[2:], resumed):
        for a, b in zip(a_batch, b_batch):
            assert a["image_id"] == b["image_id"]
            assert torch.equal(a["image"], b["image"]) and torch.equal(a["boxes"], b["boxes"])
    if preset == "lsj":  # the preset is what the loader applies: every image 64 x 64
        assert {tuple(s["image"].shape) for b in full for s in b} == {(3, 64, 64)}


# ------------------------------------------------------------------------------- masks
def _masks_of(image: np.ndarray, boxes: np.ndarray):
    """The four rectangles as compact masks of the untransformed image."""
    from pycocotools import mask as mask_utils

    from detection.data.masks import rle_counts_from_string
    from detection.masks import InstanceMasks

    h, w = image.shape[:2]
    counts = []
    for x0, y0, x1, y1 in boxes.astype(int):
        bitmap = np.zeros((h, w), np.uint8)
        bitmap[y0:y1, x0:x1] = 1
        counts.append(rle_counts_from_string(
            mask_utils.encode(np.asfortranarray(bitmap))["counts"]))
    return InstanceMasks(counts, (h, w))


@pytest.mark.parametrize("specs", [
    [{"name": "lsj", "size": 64}],
    [{"name": "lsj", "size": 64, "min_scale": 0.8, "max_scale": 1.6}],  # mostly crops
    [{"name": "resize_flip"}, {"name": "PadIfNeeded", "min_height": 72, "min_width": 90,
                               "position": "bottom_right", "fill": 128}],
])
def test_masks_follow_their_objects_through_crops_pads_resizes_and_flips(specs):
    """Pixel-wise: each kept object's mask (its compact RLE read through the affine the corner
    keypoints gave) covers its colour's pixels in the transformed image (blurred borders
    aside), and a mask is dropped with its box."""
    image, boxes, labels = _painted()
    masks = _masks_of(image, boxes)
    tf = DetectionTransform(_build(specs, masks=True), masks=True)
    checked = 0
    for seed in range(25):
        tf.set_random_seed(seed)
        out, out_boxes, out_labels, out_masks = tf.with_masks(image, boxes, labels, masks)
        assert len(out_masks) == len(out_labels)
        raster = out_masks.rasterize(*out.shape[:2]).numpy()
        dist = ((out[:, :, None, :].astype(np.float32) - PALETTE) ** 2).sum(-1)
        nearest = dist.argmin(-1)  # palette index per pixel: 2.. are the objects
        for mask, label, box in zip(raster, out_labels, out_boxes):
            colour = nearest == label + 1
            if colour.sum() < 16:  # a sliver too small to judge
                continue
            # they differ on the blurred border only: at most one ring of pixels
            w, h = box[2:] - box[:2]
            assert (mask ^ colour).sum() <= 2 * (w + h) + 4, (seed, label)
            ys, xs = np.nonzero(mask)
            assert np.abs(np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) - box
                          ).max() <= 1.0  # and the mask fits its box
            checked += 1
    assert checked > 20
