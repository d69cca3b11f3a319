"""VOCDataset, read_voc: a generated VOCdevkit tree read to hand-computed boxes; bad input."""

from __future__ import annotations

import logging
import os

import cv2
import numpy as np
import pytest
import torch

from detection.data import VOC_CLASSES, DatasetError, VOCDataset, read_voc

# label = 1 + index in the devkit's class order
CHAIR, DOG, HORSE, PERSON, CAR = 9, 12, 13, 15, 7

VOC2007 = {
    "000005": (100, 80, [
        {"name": "chair", "bbox": (10, 20, 30, 40), "difficult": 0},
        {"name": "dog", "bbox": (50, 10, 90, 70), "difficult": 1},
        {"name": "person", "bbox": (1, 1, 100, 80), "difficult": 0,  # the whole image
         "parts": [("head", (40, 2, 60, 20)), ("hand", (3, 30, 9, 40))]},
    ]),
    "000007": (60, 90, [{"name": "car", "bbox": (5, 5, 50, 80), "difficult": 1}]),
}
VOC2012 = {"2008_000008": (120, 100, [{"name": "horse", "bbox": (5, 6, 60, 50),
                                       "difficult": None}])}  # no <difficult> tag: 0


@pytest.fixture(scope="module")
def devkit(tmp_path_factory, write_voc):
    base = tmp_path_factory.mktemp("VOCdevkit")
    return (str(write_voc(base / "VOC2007", "trainval", VOC2007)),
            str(write_voc(base / "VOC2012", "trainval", VOC2012)))


def test_two_roots_read_to_hand_computed_boxes_labels_and_difficult_flags(devkit):
    ann = read_voc(devkit, "trainval")
    assert ann.names.tolist() == ["000005", "000007", "2008_000008"]
    assert ann.image_ids.tolist() == [1, 2, 3] and ann.root_index.tolist() == [0, 0, 1]
    assert ann.sizes.tolist() == [[80, 100], [90, 60], [100, 120]]
    assert ann.offsets.tolist() == [0, 3, 4, 5]
    # 1-based inclusive (xmin, ymin, xmax, ymax) -> 0-based xyxy (xmin - 1, ymin - 1, xmax, ymax);
    # the person's <part> boxes are not objects
    assert ann.boxes.tolist() == [[9, 19, 30, 40], [49, 9, 90, 70], [0, 0, 100, 80],
                                  [4, 4, 50, 80], [4, 5, 60, 50]]
    assert ann.labels.tolist() == [CHAIR, DOG, PERSON, CAR, HORSE]
    assert ann.difficult.tolist() == [False, True, False, True, False]
    assert ann.xml_path(2) == os.path.join(devkit[1], "Annotations", "2008_000008.xml")


def test_training_leaves_difficult_out_and_filters_empty_images(devkit):
    ds = VOCDataset(roots=devkit, splits=["trainval", "trainval"], train=True)
    assert ds.classes == [{"id": i + 1, "name": n} for i, n in enumerate(VOC_CLASSES)]
    assert ds.classes[CHAIR - 1]["name"] == "chair" and len(ds.classes) == 20
    assert ds.image_ids.tolist() == [1, 3]  # 000007 holds only a difficult car
    assert ds.image_sizes.tolist() == [[80, 100], [100, 120]]
    first, second = ds[0], ds[1]
    assert first["boxes"].tolist() == [[9, 19, 30, 40], [0, 0, 100, 80]]
    assert first["labels"].tolist() == [CHAIR, PERSON]
    assert second["boxes"].tolist() == [[4, 5, 60, 50]] and second["labels"].tolist() == [HORSE]
    assert ds.stats == {"images": 3, "images_without_boxes": 1, "boxes": 3,
                        "difficult_boxes": 2, "dropped_boxes": 0,
                        "bad_boxes": 0, "clipped_boxes": 0}
    kept = VOCDataset(roots=devkit, splits="trainval", train=True, keep_difficult=True)
    assert kept.image_ids.tolist() == [1, 2, 3]
    assert kept[0]["labels"].tolist() == [CHAIR, DOG, PERSON]
    assert kept[1]["boxes"].tolist() == [[4, 4, 50, 80]]


def test_sample_format_matches_coco_datasets(devkit):
    ds = VOCDataset(roots=devkit, splits="trainval", train=False)
    assert ds.image_ids.tolist() == [1, 2, 3]
    s = ds[1]
    assert set(s) == {"image", "boxes", "labels", "image_id", "original_size", "file_name"}
    assert s["image"].dtype == torch.uint8 and s["image"].shape == (3, 90, 60)
    colour = s["image"][:, 45, 30].tolist()  # written as BGR (40, 80, 120), JPEG
    assert all(abs(a - b) <= 2 for a, b in zip(colour, (120, 80, 40)))
    assert s["image_id"] == 2 and s["original_size"] == (90, 60) and s["file_name"] == "000007.jpg"
    assert s["boxes"].shape == (0, 4) and s["labels"].dtype == torch.int64  # difficult only


def test_user_class_list_sets_labels(tmp_path, write_voc):
    root = write_voc(tmp_path / "VOCmine", "all", {"a": (50, 40, [
        {"name": "cup", "bbox": (1, 1, 10, 10), "difficult": 0},
        {"name": "  plate ", "bbox": (20, 20, 50, 40), "difficult": 0}])}, jpeg=False)
    ann = read_voc(root, "all", class_names=["plate", "cup"])
    assert ann.labels.tolist() == [2, 1] and ann.boxes.tolist() == [[0, 0, 10, 10],
                                                                     [19, 19, 50, 40]]
    with pytest.raises(DatasetError, match=r"a\.xml: object #1: unknown class 'cup'"):
        read_voc(root, "all", class_names=["plate"])


# ----------------------------------------------------------------------------- bad inputs
GOOD = (50, 40, [{"name": "cat", "bbox": (1, 2, 30, 40), "difficult": 0}])


@pytest.mark.parametrize("edit, message", [
    (lambda x: x.replace("</annotation>", ""), r"000001\.xml: invalid XML: .*line \d+"),
    (lambda x: x.replace("<annotation>", "<annot>").replace("</annotation>", "</annot>"),
     r"000001\.xml: top element is <annot>"),
    (lambda x: x.replace("<width>50</width>", "<width>0</width>"),
     r"000001\.xml: <size> needs positive integer <width> and <height>, got width '0'"),
    (lambda x: x.replace("<height>40</height>", ""), r"000001\.xml: <size> needs positive"),
    (lambda x: x.replace("<name>cat</name>", ""), r"000001\.xml: object #1 lacks <name>"),
    (lambda x: x.replace("<name>cat</name>", "<name>kitten</name>"),
     r"000001\.xml: object #1: unknown class 'kitten'"),
    (lambda x: x.replace("<ymax>40</ymax>", "<ymax>forty</ymax>"),
     r"000001\.xml: object #1 \(cat\): <bndbox> needs numbers .*'ymax': 'forty'"),
    (lambda x: x.replace("<xmin>1</xmin>", ""), r"object #1 \(cat\): <bndbox> needs numbers"),
    (lambda x: x.replace("<difficult>0</difficult>", "<difficult>yes</difficult>"),
     r"object #1 \(cat\): <difficult> must be 0 or 1, got 'yes'"),
])
def test_malformed_xml_names_the_file_and_the_object(tmp_path, write_voc, edit, message):
    root = write_voc(tmp_path / "VOC", "train", {"000001": GOOD}, jpeg=False)
    xml = root / "Annotations" / "000001.xml"
    xml.write_text(edit(xml.read_text()))
    before = xml.read_bytes()
    with pytest.raises(DatasetError, match=message) as info:
        VOCDataset(roots=root, splits="train", train=True)
    assert str(xml) in str(info.value)
    assert xml.read_bytes() == before


def test_a_box_with_xmax_below_xmin_is_skipped_or_an_error_naming_the_object(tmp_path,
                                                                             write_voc, caplog):
    two = (50, 40, [GOOD[2][0], {"name": "dog", "bbox": (20, 5, 10, 30), "difficult": 0}])
    root = write_voc(tmp_path / "VOC", "train", {"000001": two}, jpeg=False)
    xml = root / "Annotations" / "000001.xml"
    with caplog.at_level(logging.WARNING, logger="detection.data.voc"):
        ds = VOCDataset(roots=root, splits="train", train=True)
    assert (ds.stats["boxes"], ds.stats["bad_boxes"]) == (1, 1)
    assert f"skipping {xml}: object #2 (dog)" in caplog.text
    assert "has a negative width or height" in caplog.text
    with pytest.raises(DatasetError, match=r"000001\.xml: object #2 \(dog\) <bndbox> .*'xmin': "
                                           r"20\.0.*has a negative width or height"):
        VOCDataset(roots=root, splits="train", train=True, on_bad_annotation="error")


def test_missing_root_split_and_annotation_files(tmp_path, write_voc):
    with pytest.raises(DatasetError, match=r"VOC root not found: .*nowhere"):
        read_voc(tmp_path / "nowhere", "train")
    root = write_voc(tmp_path / "VOC", "train", {"000001": GOOD}, jpeg=False)
    with pytest.raises(DatasetError, match=r"split file not found: .*Main.val\.txt"):
        read_voc(root, "val")
    (root / "ImageSets" / "Main" / "val.txt").write_text("000001\n\n000002\n")
    with pytest.raises(DatasetError, match=r"annotation file not found: .*000002\.xml"):
        read_voc(root, "val")
    (root / "ImageSets" / "Main" / "val.txt").write_text("000001 1\n")
    with pytest.raises(DatasetError, match=r"val\.txt: line 1: expected one image name"):
        read_voc(root, "val")
    with pytest.raises(ValueError, match="one split for all roots or one per root"):
        read_voc([root, root], ["train", "train", "val"])


def test_bad_images_follow_the_shared_policy(tmp_path, write_voc, caplog):
    root = write_voc(tmp_path / "VOC", "train", {"a": GOOD, "b": GOOD})
    os.remove(root / "JPEGImages" / "a.jpg")
    cv2.imwrite(str(root / "JPEGImages" / "b.jpg"), np.zeros((10, 10, 3), np.uint8))
    train = VOCDataset(roots=root, splits="train", train=True)
    with pytest.raises(DatasetError, match="no loadable image left"), \
            caplog.at_level(logging.WARNING, logger="detection.data.voc"):
        train[0]
    warnings = [r.getMessage() for r in caplog.records if r.name == "detection.data.voc"]
    assert any("a.jpg" in w for w in warnings)
    assert any(f"{root / 'Annotations' / 'b.xml'} gives 40x50" in w for w in warnings)
    strict = VOCDataset(roots=root, splits="train", train=False, on_bad_image="error")
    with pytest.raises(DatasetError, match=r"image file not found: .*a\.jpg"):
        strict[0]
    assert VOCDataset(roots=root, splits="train", train=False)[1] is None
