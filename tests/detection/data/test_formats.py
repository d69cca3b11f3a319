"""Format conversion: VOC -> COCO equals VOCDataset, COCO -> YOLO -> COCO round trip, YOLO and
names-file errors naming the file and line."""

from __future__ import annotations

import json
import re

import cv2
import numpy as np
import pytest

from detection.data import COCODataset, DatasetError, VOCDataset, read_coco_json
from detection.data.formats import (coco_to_yolo, read_class_names, read_yolo_labels,
                                    voc_to_coco, write_json, yolo_to_coco)

VOC2007 = {
    "000005": (100, 80, [{"name": "chair", "bbox": (10, 20, 30, 40), "difficult": 0},
                         {"name": "dog", "bbox": (50, 10, 90, 70), "difficult": 1}]),
    "000007": (60, 90, [{"name": "car", "bbox": (1, 1, 60, 90), "difficult": 0}]),
}
VOC2012 = {"2008_000008": (120, 100, [{"name": "horse", "bbox": (5, 6, 60, 50),
                                       "difficult": 0}])}


@pytest.fixture(scope="module")
def devkit(tmp_path_factory, write_voc):
    base = tmp_path_factory.mktemp("VOCdevkit")
    return [str(write_voc(base / "VOC2007", "trainval", VOC2007)),
            str(write_voc(base / "VOC2012", "trainval", VOC2012))]


@pytest.mark.parametrize("keep_difficult", [False, True])
def test_voc_to_coco_trains_to_the_same_samples_as_voc_dataset(devkit, tmp_path,
                                                               keep_difficult):
    data, images = voc_to_coco(devkit, "trainval", keep_difficult=keep_difficult)
    assert data["images"][0] == {"id": 1, "file_name": "VOC2007/JPEGImages/000005.jpg",
                                 "height": 80, "width": 100}
    assert data["annotations"][0]["bbox"] == [9, 19, 21, 21]  # 1-based (10, 20)-(30, 40)
    assert [a["iscrowd"] for a in data["annotations"]] == [0, int(not keep_difficult), 0, 0]
    write_json(data, tmp_path / "voc.json")
    for train in (True, False):
        coco = COCODataset(images=images, annotations=tmp_path / "voc.json", train=train)
        voc = VOCDataset(roots=devkit, splits="trainval", train=train,
                         keep_difficult=keep_difficult)
        assert coco.classes == voc.classes and coco.image_ids.tolist() == voc.image_ids.tolist()
        for i in range(len(voc)):
            a, b = coco[i], voc[i]  # also decodes each image through its COCO file_name
            assert a["boxes"].tolist() == b["boxes"].tolist()
            assert a["labels"].tolist() == b["labels"].tolist()
            assert a["original_size"] == b["original_size"]
    one, folder = voc_to_coco(devkit[0], "trainval")
    assert folder.endswith("JPEGImages") and one["images"][1]["file_name"] == "000007.jpg"


def _coco_with(tmp_path, images, annotations, categories):
    path = tmp_path / "in.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": categories}))
    return path


def test_coco_to_yolo_lines_by_hand(tmp_path):
    path = _coco_with(tmp_path, [
        {"id": 4, "file_name": "sub/a.png", "height": 50, "width": 100},
        {"id": 9, "file_name": "b.png", "height": 50, "width": 100}], [
        {"id": 1, "image_id": 4, "category_id": 30, "bbox": [10, 20, 30, 10]},
        {"id": 2, "image_id": 4, "category_id": 7, "bbox": [90, 40, 20, 20]},  # clipped
        {"id": 3, "image_id": 4, "category_id": 7, "bbox": [0, 0, 5, 5], "iscrowd": 1},
        {"id": 4, "image_id": 4, "category_id": 7, "bbox": [120, 0, 5, 5]},  # outside
        {"id": 5, "image_id": 9, "category_id": 7, "bbox": [1, 1, float("nan"), 5]}],
        [{"id": 30, "name": "cup"}, {"id": 7, "name": "plate"}])
    stats = coco_to_yolo(path, tmp_path / "labels", tmp_path / "names.txt")
    assert stats == {"images": 2, "boxes": 2, "crowd_skipped": 1, "bad_skipped": 2}
    # cup: centre (25, 25) / (100, 50), size (30, 10) / (100, 50); plate: [90, 40]-[100, 50]
    assert (tmp_path / "labels" / "sub" / "a.txt").read_text() == (
        "1 0.250000 0.500000 0.300000 0.200000\n0 0.950000 0.900000 0.100000 0.200000\n")
    assert (tmp_path / "labels" / "b.txt").read_text() == ""  # an image without objects
    assert (tmp_path / "names.txt").read_text() == "plate\ncup\n"  # category id order
    with pytest.raises(FileExistsError, match=r"names\.txt already exists"):
        coco_to_yolo(path, tmp_path / "labels2", tmp_path / "names.txt")
    assert not (tmp_path / "labels2").exists()


def test_coco_to_yolo_to_coco_round_trip(synthetic_coco, tmp_path):
    coco_to_yolo(synthetic_coco.train_annotations, tmp_path / "labels", tmp_path / "names.txt")
    back = yolo_to_coco(synthetic_coco.train_images, tmp_path / "labels", tmp_path / "names.txt")
    source = read_coco_json(synthetic_coco.train_annotations)
    assert [c["name"] for c in back["categories"]] == [
        c["name"] for c in sorted(source["categories"], key=lambda c: c["id"])]
    name_of = {c["id"]: c["name"] for c in source["categories"]}
    back_name_of = {c["id"]: c["name"] for c in back["categories"]}

    def by_file(data, names):
        files = {im["id"]: im["file_name"] for im in data["images"]}
        out = {f: [] for f in files.values()}
        for a in data["annotations"]:
            out[files[a["image_id"]]].append((names[a["category_id"]], a["bbox"]))
        return {f: sorted(v) for f, v in out.items()}

    a, b = by_file(source, name_of), by_file(back, back_name_of)
    assert a.keys() == b.keys() and sum(map(len, a.values())) > 20
    err = max(abs(u - v) for f in a for (na, ba), (nb, bb) in zip(a[f], b[f])
              for u, v in zip(ba, bb) if na == nb)
    assert [[n for n, _ in a[f]] for f in a] == [[n for n, _ in b[f]] for f in a]
    # 6 decimals: x = (cx - w/2) W is off by <= (5e-7 + 2.5e-7) * 128 px = 9.6e-5 (0.5 asked)
    assert err < 2e-4


def test_yolo_to_coco_by_hand_with_yaml_names(tmp_path):
    (tmp_path / "images" / "x").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "images" / "x" / "a.jpg"), np.zeros((50, 200, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "images" / "b.png"), np.zeros((10, 10, 3), np.uint8))
    (tmp_path / "labels" / "x").mkdir(parents=True)
    (tmp_path / "labels" / "x" / "a.txt").write_text("1 0.5 0.5 0.25 0.4\n\n0 0 0 0.1 0.1\n")
    (tmp_path / "data.yaml").write_text("path: .\nnames:\n  0: cup\n  1: plate\n")
    data = yolo_to_coco(tmp_path / "images", tmp_path / "labels", tmp_path / "data.yaml")
    assert data["images"] == [{"id": 1, "file_name": "b.png", "height": 10, "width": 10},
                              {"id": 2, "file_name": "x/a.jpg", "height": 50, "width": 200}]
    # plate: centre (100, 25), size (50, 20) -> [75, 15, 50, 20]; cup at the corner
    assert [(a["image_id"], a["category_id"], a["bbox"]) for a in data["annotations"]] == [
        (2, 2, [75.0, 15.0, 50.0, 20.0]), (2, 1, [-10.0, -2.5, 20.0, 5.0])]
    assert data["categories"] == [{"id": 1, "name": "cup"}, {"id": 2, "name": "plate"}]


@pytest.mark.parametrize("line, message", [
    ("0 0.5 0.5 0.2", "expected 5 values 'class x_center y_center width height', got 4"),
    ("0 0.5 0.5 0.2 0.2 0.9", "expected 5 values .*, got 6"),
    ("3 0.5 0.5 0.2 0.2", "class '3' is not one of 0..1"),
    ("0.5 0.5 0.5 0.2 0.2", "class '0.5' is not one of"),
    ("0 12 30 40 50",
     r"x_center y_center width height must be normalised to \[0, 1\] \(pixels\?\), got 12 30"),
    ("0 0.5 nan 0.2 0.2", "x_center .* must be normalised"),
    ("cat 0.5 0.5 0.2 0.2", "not a number"),
])
def test_bad_yolo_lines_name_the_file_and_line(tmp_path, line, message):
    path = tmp_path / "a.txt"
    path.write_text(f"1 0.5 0.5 0.2 0.2\n\n{line}\n")
    with pytest.raises(DatasetError, match=re.escape(f"{path}: line 3: ") + message):
        read_yolo_labels(path, num_classes=2)


def test_names_files_and_missing_inputs(tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("cup\n plate \n\n")
    assert read_class_names(names) == ["cup", "plate"]
    names.write_text("cup\n\nplate\n")
    with pytest.raises(DatasetError, match=r"names\.txt: line 2 is empty"):
        read_class_names(names)
    names.write_text("cup\nplate\ncup\n")
    with pytest.raises(DatasetError, match="class name 'cup' appears twice"):
        read_class_names(names)
    (tmp_path / "d.yaml").write_text("names: {0: a, 2: b}\n")
    with pytest.raises(DatasetError, match=r"d\.yaml: expected 'names:'"):
        read_class_names(tmp_path / "d.yaml")
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes(b"not a jpeg")
    names.write_text("cup\n")
    with pytest.raises(DatasetError, match=r"cannot read image size .*a\.jpg"):
        yolo_to_coco(tmp_path / "images", tmp_path / "labels", names)
    cv2.imwrite(str(tmp_path / "images" / "a.jpg"), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DatasetError, match=r"no label file under .*labels .*labels/a\.txt"):
        yolo_to_coco(tmp_path / "images", tmp_path / "labels", names)
