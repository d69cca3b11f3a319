"""Session-wide fixtures shared by every test package."""

from __future__ import annotations

from pathlib import Path

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


def _voc_object_xml(obj: dict) -> str:
    """One ``<object>`` as the VOC devkit's files have it (tabs, this element order)."""
    xmin, ymin, xmax, ymax = obj["bbox"]
    parts = "".join(
        f"\t\t<part>\n\t\t\t<name>{name}</name>\n\t\t\t<bndbox>\n\t\t\t\t<xmin>{a}</xmin>\n"
        f"\t\t\t\t<ymin>{b}</ymin>\n\t\t\t\t<xmax>{c}</xmax>\n\t\t\t\t<ymax>{d}</ymax>\n"
        "\t\t\t</bndbox>\n\t\t</part>\n" for name, (a, b, c, d) in obj.get("parts", []))
    difficult = ("" if obj.get("difficult") is None
                 else f"\t\t<difficult>{obj['difficult']}</difficult>\n")
    return (f"\t<object>\n\t\t<name>{obj['name']}</name>\n\t\t<pose>Unspecified</pose>\n"
            f"\t\t<truncated>{obj.get('truncated', 0)}</truncated>\n{difficult}"
            f"\t\t<bndbox>\n\t\t\t<xmin>{xmin}</xmin>\n\t\t\t<ymin>{ymin}</ymin>\n"
            f"\t\t\t<xmax>{xmax}</xmax>\n\t\t\t<ymax>{ymax}</ymax>\n\t\t</bndbox>\n"
            f"{parts}\t</object>\n")


def voc_xml(name: str, width: int, height: int, objects: list[dict]) -> str:
    """An annotation file in the published VOC2007 format (``Annotations/000005.xml``)."""
    return ("<annotation>\n\t<folder>VOC2007</folder>\n"
            f"\t<filename>{name}.jpg</filename>\n"
            "\t<source>\n\t\t<database>The VOC2007 Database</database>\n"
            "\t\t<annotation>PASCAL VOC2007</annotation>\n\t\t<image>flickr</image>\n"
            "\t\t<flickrid>325991873</flickrid>\n\t</source>\n"
            "\t<owner>\n\t\t<flickrid>archintent louisville</flickrid>\n\t\t<name>?</name>\n"
            "\t</owner>\n"
            f"\t<size>\n\t\t<width>{width}</width>\n\t\t<height>{height}</height>\n"
            "\t\t<depth>3</depth>\n\t</size>\n\t<segmented>0</segmented>\n"
            + "".join(_voc_object_xml(o) for o in objects) + "</annotation>\n")


@pytest.fixture(scope="session")
def write_voc():
    """``write_voc(root, split, images, jpeg=True) -> root``: a ``VOCdevkit/VOCyyyy`` tree.

    ``images``: ``{name: (width, height, [{"name", "bbox": (xmin, ymin, xmax, ymax) 1-based,
    "difficult": 0/1 or None (tag left out), "parts": [(name, bbox)]}])}``; written in the
    published layout (``Annotations/<name>.xml``, ``ImageSets/Main/<split>.txt``,
    ``JPEGImages/<name>.jpg`` of a constant colour when ``jpeg``). Adds to an existing tree.
    """
    import cv2
    import numpy as np

    def write(root, split: str, images: dict, jpeg: bool = True):
        root = Path(root)
        for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        for name, (width, height, objects) in images.items():
            (root / "Annotations" / f"{name}.xml").write_text(
                voc_xml(name, width, height, objects))
            if jpeg:
                cv2.imwrite(str(root / "JPEGImages" / f"{name}.jpg"),
                            np.full((height, width, 3), (40, 80, 120), np.uint8))
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text(
            "".join(f"{name}\n" for name in images))
        return root

    return write


@pytest.fixture(scope="session")
def tiny_config():
    """``tiny_config(folder, data, **sections) -> folder / "tiny.yaml"``: a training config of
    R-18-FPN with 32 channels on 64 px images (a real model, a second per few iterations) on
    ``data`` (a ``SyntheticCOCO``), output in ``folder / "out"``; ``sections`` update its
    top-level sections key by key (``solver={"max_iter": 2}``)."""
    import yaml

    def write(folder: Path, data: SyntheticCOCO, **sections) -> Path:
        cfg = {
            "model": {"backbone": {"name": "resnet18", "weights": None, "norm": "BN",
                                   "freeze_at": 0},
                      "fpn": {"out_channels": 32},
                      "anchor_generator": {"sizes": [[16], [32], [64], [128], [256]],
                                           "aspect_ratios": [[1.0]]},
                      "rpn": {"pre_nms_topk_train": 200, "post_nms_topk_train": 64,
                              "pre_nms_topk_test": 100, "post_nms_topk_test": 32,
                              "batch_size_per_image": 32},
                      "roi_heads": {"fc_dim": 64, "batch_size_per_image": 16,
                                    "detections_per_img": 20, "score_thresh": 0.0}},
            "data": {"train": {"images": data.train_images,
                               "annotations": data.train_annotations},
                     "test": {"images": data.val_images, "annotations": data.val_annotations},
                     "input": {"min_size_train": [56, 64], "max_size_train": 96,
                               "min_size_test": 64, "max_size_test": 96, "flip_prob": 0.5},
                     "num_workers": 0},
            "solver": {"max_iter": 4, "base_lr": 0.01, "ims_per_batch": 2, "steps": [3],
                       "warmup_iters": 2, "checkpoint_period": 2},
            "test": {"eval_period": 2, "vis_images": 2, "vis_score_thresh": 0.0},
            "output_dir": str(Path(folder) / "out"), "device": "cpu", "log_period": 1,
        }
        for section, values in sections.items():
            cfg[section] = {**cfg[section], **values} if isinstance(values, dict) else values
        path = Path(folder) / "tiny.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    return write
