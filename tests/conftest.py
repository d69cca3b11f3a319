"""Session-wide fixtures shared by every test package."""

from __future__ import annotations

import pytest

from detection.data.synthetic import SyntheticCOCO, make_synthetic_coco


@pytest.fixture(scope="session")
def synthetic_coco(tmp_path_factory: pytest.TempPathFactory) -> SyntheticCOCO:
    """A tiny synthetic COCO set built once per session (read-only for tests: copy to modify).

    24 train / 8 val images, longer side 128 px, 5 shape classes with category ids
    1, 3, 7, 12, 20. Fields: ``root``, ``train_images``, ``train_annotations``, ``val_images``,
    ``val_annotations`` (strings).
    """
    root = tmp_path_factory.mktemp("synthetic_coco")
    return make_synthetic_coco(root, num_train=24, num_val=8, image_size=128, seed=0)
