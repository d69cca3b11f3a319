"""detection/masks.py: RLE ground truth read at points, torchvision's paste rule."""
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from torchvision.models.detection.roi_heads import paste_masks_in_image

from detection.data.masks import rle_counts_from_string
from detection.masks import InstanceMasks, paste_masks


def _counts(bitmap: np.ndarray) -> np.ndarray:
    return rle_counts_from_string(mask_utils.encode(np.asfortranarray(
        bitmap.astype(np.uint8)))["counts"])


def test_counts_and_rasterize_by_hand():
    # a 3x4 image; column-major pixels: x=0: 0 0 0 | x=1: 0 1 1 | x=2: 0 1 1 | x=3: 0 0 0
    masks = InstanceMasks([[4, 2, 1, 2, 3], [12]], (3, 4))
    expected = [[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0]]
    assert masks.rasterize(3, 4)[0].int().tolist() == expected
    assert not masks.rasterize(3, 4)[1].any()  # all 0s: a single run
    # mask starting with 1s: the first run of 0s is empty
    assert InstanceMasks([[0, 3, 9]], (3, 4)).rasterize(3, 4)[0, :, 0].all()


def test_select_keeps_the_chosen_objects_in_their_new_order():
    rng = np.random.default_rng(0)
    bitmaps = rng.random((4, 6, 5)) > 0.5
    masks = InstanceMasks([_counts(b) for b in bitmaps], (6, 5), affine=(0.5, 0.0, 0.5, 0.0))
    chosen = masks.select([3, 1])
    assert len(chosen) == 2 and chosen.affine.tolist() == [0.5, 0.0, 0.5, 0.0]
    full = masks.rasterize(12, 10)
    assert torch.equal(chosen.rasterize(12, 10), full[[3, 1]])
    plain = InstanceMasks([_counts(b) for b in bitmaps], (6, 5))
    assert torch.equal(plain.select([2, 0, 2]).rasterize(6, 5),
                       torch.from_numpy(bitmaps[[2, 0, 2]]))
    assert len(masks.select([])) == 0 and masks.select([]).rasterize(6, 5).shape == (0, 6, 5)


def test_bad_counts_are_refused():
    with pytest.raises(ValueError, match="sum to h \\* w = 12"):
        InstanceMasks([[4, 2]], (3, 4))


def test_crop_and_resize_reads_cell_centres():
    # a 10x10 image whose left half (x < 5) is on
    bitmap = np.zeros((10, 10), bool)
    bitmap[:, :5] = True
    masks = InstanceMasks([_counts(bitmap)], (10, 10))
    # box x 2..8: cell centres at x = 2.75, 4.25, 5.75, 7.25 -> on, on, off, off
    out = masks.crop_and_resize(torch.tensor([[2.0, 0.0, 8.0, 10.0]]), torch.tensor([0]), 4)
    assert out.dtype == torch.float32 and out.shape == (1, 4, 4)
    assert out[0].tolist() == [[1.0, 1.0, 0.0, 0.0]] * 4
    # outside the image reads 0
    out = masks.crop_and_resize(torch.tensor([[-8.0, 0.0, 0.0, 10.0]]), torch.tensor([0]), 2)
    assert not out.any()


def test_affine_flip_and_scale():
    """Rasterising through ``affine`` equals flipping / resizing the annotated bitmap."""
    rng = np.random.default_rng(0)
    bitmap = rng.random((6, 8)) < 0.4
    masks = InstanceMasks([_counts(bitmap)], (6, 8))
    flipped = masks.with_affine((-1.0, 8.0, 1.0, 0.0))  # x_ref = 8 - x
    assert np.array_equal(flipped.rasterize(6, 8)[0].numpy(), bitmap[:, ::-1])
    doubled = masks.with_affine((0.5, 0.0, 0.5, 0.0))  # a 12x16 image
    assert np.array_equal(doubled.rasterize(12, 16)[0].numpy(),
                          bitmap.repeat(2, axis=0).repeat(2, axis=1))


def test_paste_equals_torchvision():
    """torchvision's paste_masks_in_image thresholded at 0.5, on boxes inside, across and
    outside the image's borders."""
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(5, 1, 28, 28, generator=g)
    boxes = torch.tensor([[10.3, 12.7, 60.2, 40.9], [-5.0, -3.2, 20.5, 18.0],
                          [70.0, 50.0, 99.9, 79.9], [30.0, 30.0, 30.4, 30.6],
                          [0.0, 0.0, 100.0, 80.0]])
    ours = paste_masks(masks, boxes, (80, 100))
    expected = paste_masks_in_image(masks, boxes, (80, 100))[:, 0] > 0.5
    assert ours.dtype == torch.bool and ours.shape == (5, 80, 100)
    assert torch.equal(ours, expected)
    assert paste_masks(masks[:0], boxes[:0], (80, 100)).shape == (0, 80, 100)
