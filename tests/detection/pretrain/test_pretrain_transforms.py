"""Classification transforms: 10-crop geometry (by hand and against torchvision), CIFAR's padded
crops, scale augmentation, AlexNet's colour shift, and seeding."""

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from detection.pretrain.transforms import (EIGVAL, EIGVEC, Lighting, RandomCrop,
                                           ResizeShorter, TenCrop, build_transforms)


def coordinate_image(h: int, w: int) -> np.ndarray:
    """(h, w, 3) uint8 whose pixel (y, x) holds (y, x, 7): every crop tells where it came from."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([y, x, np.full_like(y, 7)], axis=2).astype(np.uint8)


def test_ten_crop_geometry_by_hand_and_as_torchvision():
    image = coordinate_image(9, 12)  # h 9, w 12, crops of 5: centre top round(2) = 2, left 4
    crops = TenCrop(5)(image, np.random.default_rng(0))
    assert crops.shape == (10, 5, 5, 3)
    corners = [(c[0, 0, 0], c[0, 0, 1]) for c in crops[:5]]  # (row, column) of each top-left
    assert corners == [(0, 0), (0, 7), (4, 0), (4, 7), (2, 4)]
    # the last five are crops of the mirrored image: its top-left crop is the original's top-right
    assert np.array_equal(crops[5], crops[1][:, ::-1])
    # the mirrored centre crop starts at column 12 - 5 - 4 = 3 of the original
    assert np.array_equal(crops[9], image[2:7, 3:8][:, ::-1])
    reference = TF.ten_crop(torch.from_numpy(image).permute(2, 0, 1), [5, 5])
    for ours, theirs in zip(crops, reference):
        assert torch.equal(torch.from_numpy(ours.copy()).permute(2, 0, 1), theirs)


def test_test_pipelines_resize_then_crop():
    image = coordinate_image(300, 400)
    single = build_transforms(train=False, crop=224, test_size=256)(image)
    assert single.shape == (224, 224, 3)
    ten = build_transforms(train=False, crop=224, test_size=256, test_crops=10)(image)
    assert ten.shape == (10, 224, 224, 3) and np.array_equal(ten[4], single)
    cifar = coordinate_image(32, 32)
    assert np.array_equal(build_transforms(train=False, crop=32, test_size=0)(cifar), cifar)


def test_cifar_padded_random_crop():
    image = coordinate_image(32, 32) + 1  # no zero pixel inside the image
    padded = np.zeros((40, 40, 3), np.uint8)
    padded[4:36, 4:36] = image
    crop, rng = RandomCrop(32, pad=4), np.random.default_rng(0)
    seen = set()
    for _ in range(300):
        out = crop(image, rng)
        rows, cols = np.nonzero(out[:, :, 2])  # any image pixel says where the crop starts
        top = int(out[rows[0], cols[0], 0]) - 1 + 4 - rows[0]
        left = int(out[rows[0], cols[0], 1]) - 1 + 4 - cols[0]
        assert 0 <= top <= 8 and 0 <= left <= 8
        assert np.array_equal(out, padded[top:top + 32, left:left + 32])
        seen.add((top, left))
    assert len(seen) > 60  # offsets 0..8 in both directions: 81 possible


def test_scale_augmentation_draws_the_shorter_side_in_range():
    resize, rng = ResizeShorter((256, 480)), np.random.default_rng(0)
    sizes = [resize(np.zeros((375, 500, 3), np.uint8), rng).shape[:2] for _ in range(300)]
    shorter = [h for h, _ in sizes]
    assert min(shorter) == 256 and max(shorter) == 480
    assert all(w == round(500 * h / 375) for h, w in sizes)


def test_lighting_shifts_every_pixel_by_the_pca_offset():
    image = np.full((4, 5, 3), 100, np.uint8)
    rng = np.random.default_rng(3)
    alpha = np.random.default_rng(3).normal(0.0, 0.1, 3)
    shift = 255 * sum(EIGVEC[:, j] * alpha[j] * EIGVAL[j] for j in range(3))
    out = Lighting(0.1)(image, rng)
    assert np.array_equal(out, np.broadcast_to(np.round(100 + shift), out.shape))
    assert np.abs(shift).max() > 0.5  # a visible shift, so the comparison means something


def test_training_pipeline_is_reproducible_from_its_seed():
    tf = build_transforms(train=True, scale=(40, 60), crop=32)
    image = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    tf.set_random_seed(11)
    a = [tf(image) for _ in range(3)]
    tf.set_random_seed(11)
    b = [tf(image) for _ in range(3)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and not np.array_equal(a[0], a[1])
    with pytest.raises(ValueError, match="test_crops must be 1 or 10"):
        build_transforms(train=False, test_crops=5)
