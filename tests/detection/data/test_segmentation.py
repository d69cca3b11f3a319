"""COCO segmentations in the data: RLE strings, validation, compact storage, a dataset's masks,
masks moved by every augmentation (checked pixel-wise), bad polygons named."""
from __future__ import annotations

import json
import logging
import os

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from detection.data import COCODataset, DatasetError
from detection.data.coco import load_coco
from detection.data.masks import (SegmentationIndex, encode_masks, rle_counts_from_string,
                                  segmentation_problems)
from detection.data.transforms import build_transforms


def _rle(bitmap: np.ndarray) -> dict:
    return mask_utils.encode(np.asfortranarray(bitmap.astype(np.uint8)))


def _runs(counts: np.ndarray) -> np.ndarray:
    """Counts -> the pixels they encode, column-major."""
    return np.repeat(np.arange(len(counts)) % 2, counts)


def test_rle_strings_decode_as_pycocotools():
    rng = np.random.default_rng(0)
    cases = [np.zeros((5, 7)), np.ones((5, 7)), rng.random((40, 30)) < 0.3,
             np.pad(np.ones((300, 200)), 50)]  # long runs: multi-character, negative deltas
    for bitmap in cases:
        rle = _rle(bitmap)
        counts = rle_counts_from_string(rle["counts"])
        assert np.array_equal(_runs(counts), bitmap.flatten(order="F"))
        assert np.array_equal(_runs(counts), mask_utils.decode(rle).flatten(order="F"))
    assert rle_counts_from_string("") .tolist() == []
    with pytest.raises(ValueError, match="truncated"):
        rle_counts_from_string("1\\o")  # '\\' - 48 = 44: the continuation bit set at the end


def test_problems_are_named():
    h, w = 20, 30
    good = [[1.0, 1.0, 10.0, 1.0, 10.0, 8.0]]
    cases = {
        "": good,
        "polygon of 2 point(s) (fewer than 3)": [[1, 1, 5, 5]],
        "polygon of 7 coordinates (an odd number)": [[1, 1, 5, 5, 9, 1, 4]],
        "polygon with a non-finite coordinate": [[1, 1, float("nan"), 5, 9, 1]],
        "wholly outside the 20x30 (h x w) image": [[31, 1, 40, 1, 35, 9]],
        "empty segmentation": [],
        "not a list of numbers": [[1, 1, "5", 5, 9, 1]],
        "RLE segmentation of size [20, 31]": {"size": [20, 31], "counts": [620]},
        "runs cover 599 pixels": {"size": [20, 30], "counts": [599]},
        "no segmentation": None,
    }
    problems = segmentation_problems(list(cases.values()), np.array([[h, w]] * len(cases)))
    for expected, problem in zip(cases, problems):
        assert (expected in problem) if expected else problem == ""
    rle = _rle(np.ones((h, w)))
    assert segmentation_problems([rle, {**rle, "counts": rle["counts"].decode()}],
                                 np.array([[h, w]] * 2)).tolist() == ["", ""]


def test_index_gives_pycocotools_masks_for_polygons_and_both_rles():
    h, w = 24, 32
    parts = [[2.0, 2.0, 12.5, 2.0, 12.5, 10.0, 2.0, 10.0], [20.0, 14.0, 30.0, 20.0, 18.0, 22.0]]
    bitmap = np.zeros((h, w), np.uint8)
    bitmap[5:9, 20:31] = 1
    compressed = _rle(bitmap)
    uncompressed = {"size": [h, w], "counts": rle_counts_from_string(compressed["counts"]
                                                                    ).tolist()}
    index = SegmentationIndex([parts, uncompressed, {**compressed,
                                                     "counts": compressed["counts"].decode()}])
    masks = index.instance_masks(0, 3, h, w).rasterize(h, w).numpy()
    union = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(parts, h, w)))
    assert np.array_equal(masks[0], union.astype(bool))
    assert np.array_equal(masks[1], bitmap.astype(bool))
    assert np.array_equal(masks[2], bitmap.astype(bool))


def test_encode_masks_round_trips_through_pycocotools():
    rng = np.random.default_rng(1)
    masks = rng.random((3, 9, 11)) < 0.5
    rles = encode_masks(masks)
    assert isinstance(rles[1]["counts"], str) and rles[1]["size"] == [9, 11]
    decoded = mask_utils.decode([{**r, "counts": r["counts"].encode()} for r in rles])
    assert np.array_equal(decoded.transpose(2, 0, 1), masks)
    assert encode_masks(masks[:0]) == []


# ----------------------------------------------------------------------------- datasets
def _write(tmp_path, image: np.ndarray, annotations: list[dict]) -> tuple[str, str]:
    os.makedirs(tmp_path / "images", exist_ok=True)
    cv2.imwrite(str(tmp_path / "images" / "1.png"), image[:, :, ::-1])
    h, w = image.shape[:2]
    data = {"images": [{"id": 1, "file_name": "1.png", "height": h, "width": w}],
            "annotations": annotations,
            "categories": [{"id": 3, "name": "a"}, {"id": 8, "name": "b"}]}
    (tmp_path / "ann.json").write_text(json.dumps(data))
    return str(tmp_path / "images"), str(tmp_path / "ann.json")


def _objects(h: int = 60, w: int = 80):
    """An image whose two objects are painted exactly where their masks are: a triangle
    (polygon, category 3) in red and a blob (compressed RLE, category 8) in green, plus a crowd
    region (RLE) in blue that stays out of the targets."""
    triangle = [8.0, 6.0, 40.0, 10.0, 14.0, 50.0]
    blob = np.zeros((h, w), np.uint8)
    cv2.ellipse(blob, (58, 36), (14, 9), 20.0, 0, 360, 1, -1)
    crowd = np.zeros((h, w), np.uint8)
    crowd[52:59, 2:20] = 1
    image = np.zeros((h, w, 3), np.uint8)
    image[mask_utils.decode(mask_utils.frPyObjects([triangle], h, w))[:, :, 0] > 0] = (255, 0, 0)
    image[blob > 0] = (0, 255, 0)
    image[crowd > 0] = (0, 0, 255)
    rle = _rle(blob)
    crowd_rle = _rle(crowd)
    anns = [{"id": 11, "image_id": 1, "category_id": 3, "bbox": [8, 6, 32, 44],
             "segmentation": [triangle], "iscrowd": 0},
            {"id": 12, "image_id": 1, "category_id": 8,
             "bbox": mask_utils.toBbox(rle).tolist(),
             "segmentation": {"size": [h, w], "counts": rle["counts"].decode()}, "iscrowd": 0},
            {"id": 13, "image_id": 1, "category_id": 8, "bbox": [2, 52, 18, 7],
             "segmentation": {"size": [h, w], "counts": crowd_rle["counts"].decode()},
             "iscrowd": 1}]
    return image, anns


@pytest.mark.parametrize("flip, size", [(0.0, 60), (0.0, 150), (1.0, 60), (1.0, 120)])
def test_masks_stay_on_their_objects_after_flip_and_resize(tmp_path, flip, size):
    """Pixel-wise: after the augmentation, each object's mask (rasterised through its affine)
    covers the pixels of the object's colour in the transformed image (bilinear resizing blurs
    only the border pixels), and nothing of the other object's colour."""
    image, anns = _objects()
    images, annotations = _write(tmp_path, image, anns)
    transforms = build_transforms(train=True, min_size=[size], max_size=1000, flip_prob=flip,
                                  masks=True)
    ds = COCODataset(images=images, annotations=annotations, transforms=transforms, train=True,
                     masks=True)
    sample = ds[0]
    assert sample["labels"].tolist() == [1, 2] and len(sample["masks"]) == 2  # crowd left out
    pixels = sample["image"].permute(1, 2, 0).numpy().astype(int)
    masks = sample["masks"].rasterize(*pixels.shape[:2]).numpy()
    for mask, channel in zip(masks, (0, 1)):
        colour = (pixels[:, :, channel] > 127) & (pixels.sum(2) - pixels[:, :, channel] < 128)
        iou = (mask & colour).sum() / (mask | colour).sum()
        assert iou > 0.95, iou
        other = pixels[:, :, 1 - channel] > 127
        assert (mask & other).sum() == 0
    if flip:  # the triangle's left-most vertex (x 8) is now on the right
        assert masks[0][:, -int(8 * size / 60) - 3:].any()
        assert not masks[0][:, :int(30 * size / 60)].any()


def test_samples_without_masks_are_unchanged(tmp_path):
    image, anns = _objects()
    images, annotations = _write(tmp_path, image, anns)
    plain = COCODataset(images=images, annotations=annotations, train=True)
    assert "masks" not in plain[0]
    with pytest.raises(ValueError, match="masks=True"):
        COCODataset(images=images, annotations=annotations, train=True, masks=True,
                    transforms=build_transforms(train=True, min_size=60, max_size=100))


def test_bad_polygons_follow_on_bad_annotation(tmp_path, caplog):
    image, anns = _objects()
    anns[0]["segmentation"] = [[8.0, 6.0, 40.0, 10.0]]  # two points
    images, annotations = _write(tmp_path, image, anns)
    with caplog.at_level(logging.WARNING, logger="detection.data.coco"):
        ds = COCODataset(images=images, annotations=annotations, train=True, masks=True)
    assert ds[0]["labels"].tolist() == [2] and len(ds[0]["masks"]) == 1
    assert ds.stats["bad_boxes"] == 1
    assert "annotation id 11" in caplog.text and "fewer than 3" in caplog.text
    with pytest.raises(DatasetError, match=r"annotation id 11: .*fewer than 3.*"
                                           r"on_bad_annotation: error"):
        COCODataset(images=images, annotations=annotations, train=True, masks=True,
                    on_bad_annotation="error")
    anns[0]["segmentation"] = [[8.0, 6.0, float("nan"), 10.0, 14.0, 50.0]]
    anns[1]["segmentation"] = [[100.0, 6.0, 140.0, 10.0, 114.0, 50.0]]  # outside the 80 px
    images, annotations = _write(tmp_path, image, anns)
    with pytest.raises(DatasetError, match="annotation id 11: .*non-finite"):
        COCODataset(images=images, annotations=annotations, train=True, masks=True,
                    on_bad_annotation="error")
    with caplog.at_level(logging.WARNING, logger="detection.data.coco"):
        with pytest.raises(DatasetError, match="no image with a usable box"):
            COCODataset(images=images, annotations=annotations, train=True, masks=True)
    assert "annotation id 12" in caplog.text and "wholly outside the 60x80" in caplog.text
    # a box-only dataset never reads them
    assert len(COCODataset(images=images, annotations=annotations, train=True)[0]["boxes"]) == 2


def test_evaluation_ground_truth_ignores_bad_segmentations(tmp_path):
    """Training skips them; evaluation makes them ignored regions (crowd), their segmentation
    the box, so pycocotools can read every annotation; a missing one is an error."""
    image, anns = _objects()
    anns[0]["segmentation"] = [[8.0, 6.0, 40.0, 10.0]]
    _, annotations = _write(tmp_path, image, anns)
    coco = load_coco(annotations, masks=True)
    bad = coco.anns[11]
    assert bad["iscrowd"] == 1 and bad["segmentation"] == [[8, 6, 40, 6, 40, 50, 8, 50]]
    assert coco.anns[12]["iscrowd"] == 0 and coco.annToMask(coco.anns[12]).sum() > 100
    assert load_coco(annotations).anns[11]["iscrowd"] == 0  # box evaluation: a good box
    del anns[1]["segmentation"]
    _, annotations = _write(tmp_path, image, anns)
    with pytest.raises(DatasetError, match="annotation id 12 has no segmentation"):
        load_coco(annotations, masks=True)
