"""Resize / flip / photometric transforms: hand-computed boxes and sizes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from detection.data import build_transforms, resized_shape

BOX = np.array([[10, 20, 50, 80]], np.float32)
LABELS = np.array([4], np.int64)


def _image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("h, w, size, max_size, expected", [
    (480, 640, 800, 1333, (800, 1067)),    # 800/480 = 1.667; 640 * 1.667 = 1066.7
    (200, 1000, 400, 1000, (200, 1000)),   # min(400/200, 1000/1000) = 1: capped by max_size
    (100, 1000, 400, 500, (50, 500)),      # min(4, 0.5) = 0.5
    (300, 200, 100, 1000, (150, 100)),     # portrait: 100/200
    (427, 640, 800, 1333, (800, 1199)),    # 640 * 800/427 = 1199.06
])
def test_resized_shape_follows_the_scale_rule(h, w, size, max_size, expected):
    assert resized_shape(h, w, size, max_size) == expected


def test_test_time_resize_scales_image_and_boxes():
    img = _image(200, 300)
    out, boxes, labels = build_transforms(train=False, min_size=100, max_size=1000)(
        img, BOX, LABELS)
    assert out.shape == (100, 150, 3)
    np.testing.assert_array_equal(out, cv2.resize(img, (150, 100),
                                                  interpolation=cv2.INTER_LINEAR))
    # scale 0.5: [10, 20, 50, 80] -> [5, 10, 25, 40]
    np.testing.assert_allclose(boxes, [[5, 10, 25, 40]], atol=1e-4)
    assert boxes.dtype == np.float32 and labels.tolist() == [4]


def test_max_size_caps_the_longer_side():
    out, boxes, _ = build_transforms(train=False, min_size=400, max_size=500)(
        _image(100, 1000), np.array([[100, 10, 300, 90]], np.float32), LABELS)
    assert out.shape == (50, 500, 3)
    np.testing.assert_allclose(boxes, [[50, 5, 150, 45]], atol=1e-4)


def test_flip_mirrors_image_and_boxes():
    img = _image(200, 300)
    t = build_transforms(train=True, min_size=200, max_size=1000, flip_prob=1.0)
    out, boxes, labels = t(img, BOX, LABELS)
    np.testing.assert_array_equal(out, img[:, ::-1])  # scale 1: no resize
    # x1' = 300 - 50, x2' = 300 - 10
    np.testing.assert_allclose(boxes, [[250, 20, 290, 80]], atol=1e-4)
    assert labels.tolist() == [4]


def test_resize_then_flip():
    t = build_transforms(train=True, min_size=100, max_size=1000, flip_prob=1.0)
    out, boxes, _ = t(_image(200, 300), BOX, LABELS)
    assert out.shape == (100, 150, 3)
    # [5, 10, 25, 40] mirrored in W = 150
    np.testing.assert_allclose(boxes, [[125, 10, 145, 40]], atol=1e-4)


def test_multi_scale_draws_from_the_list_and_is_seedable():
    t = build_transforms(train=True, min_size=[50, 100], max_size=1000, flip_prob=0.5)
    img = _image(200, 300)
    t.set_random_seed(3)
    first = [t(img, BOX, LABELS) for _ in range(12)]
    assert {o[0].shape[0] for o in first} == {50, 100}
    for out, boxes, _ in first:  # the box follows whichever scale / flip was drawn
        s = out.shape[0] / 200
        flipped = [out.shape[1] - 50 * s, 20 * s, out.shape[1] - 10 * s, 80 * s]
        assert (np.allclose(boxes[0], BOX[0] * s, atol=1e-3)
                or np.allclose(boxes[0], flipped, atol=1e-3))
    t.set_random_seed(3)
    again = [t(img, BOX, LABELS) for _ in range(12)]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


def test_photometric_changes_pixels_not_boxes():
    t = build_transforms(train=True, min_size=200, max_size=1000, flip_prob=0.0,
                         photometric=True)
    t.set_random_seed(0)
    img = _image(200, 300)
    outs = [t(img, BOX, LABELS) for _ in range(5)]
    assert any(not np.array_equal(o[0], img) for o in outs)
    for _, boxes, _ in outs:
        np.testing.assert_allclose(boxes, BOX, atol=1e-4)


def test_empty_boxes_pass_through():
    out, boxes, labels = build_transforms(train=True, min_size=100, max_size=1000)(
        _image(200, 300), np.zeros((0, 4), np.float32), np.zeros((0,), np.int64))
    assert boxes.shape == (0, 4) and labels.shape == (0,) and out.shape == (100, 150, 3)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="single size"):
        build_transforms(train=False, min_size=[100, 200], max_size=1000)
    with pytest.raises(ValueError, match="min_size"):
        build_transforms(train=True, min_size=[], max_size=1000)
    with pytest.raises(ValueError, match="max_size"):
        build_transforms(train=True, min_size=100, max_size=0)
    with pytest.raises(ValueError, match="flip_prob"):
        build_transforms(train=True, min_size=100, max_size=1000, flip_prob=2)
