"""COCODataset: label mapping, box conversion, crowd handling, decoding, every bad input."""

from __future__ import annotations

import json
import logging
import os

import cv2
import numpy as np
import pytest
import torch

from detection.data import (COCODataset, DatasetError, make_test_loader, category_id_to_label,
                            collate, decode_image, label_to_category_id, read_coco_json)


def _coco(images, annotations, categories=None):
    return {"images": images, "annotations": annotations,
            "categories": categories or [{"id": 1, "name": "thing"}]}


def _image(image_id, h=60, w=100, name=None):
    return {"id": image_id, "file_name": name or f"{image_id}.png", "height": h, "width": w}


def _ann(ann_id, image_id, bbox, category_id=1, **extra):
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": bbox, **extra}


def _write(tmp_path, data, *, pixels=True):
    """Write ``data`` as json and a PNG (constant colour) for each of its images."""
    os.makedirs(tmp_path / "images", exist_ok=True)
    if pixels:
        for im in data["images"]:
            img = np.full((im["height"], im["width"], 3), (10, 20, 30), np.uint8)  # BGR
            cv2.imwrite(str(tmp_path / "images" / im["file_name"]), img)
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return str(tmp_path / "images"), str(path)


def _dataset(tmp_path, data, **kwargs):
    images, annotations = _write(tmp_path, data)
    kwargs.setdefault("train", True)
    return COCODataset(images=images, annotations=annotations, transforms=None, **kwargs)


# ----------------------------------------------------------------------------- labels, boxes
def test_non_contiguous_category_ids_map_to_labels_both_ways(tmp_path):
    cats = [{"id": 90, "name": "c"}, {"id": 5, "name": "a"}, {"id": 17, "name": "b"}]
    anns = [_ann(1, 1, [0, 0, 10, 10], 17), _ann(2, 1, [20, 20, 10, 10], 90),
            _ann(3, 1, [40, 5, 10, 10], 5)]
    ds = _dataset(tmp_path, _coco([_image(1)], anns, cats))
    assert ds.classes == [{"id": 5, "name": "a"}, {"id": 17, "name": "b"},
                          {"id": 90, "name": "c"}]
    assert ds[0]["labels"].tolist() == [2, 3, 1]
    assert [label_to_category_id(ds.classes, k) for k in (1, 2, 3)] == [5, 17, 90]
    assert label_to_category_id(ds.classes, torch.tensor([3, 1, 2])).tolist() == [90, 5, 17]
    assert [category_id_to_label(ds.classes, c) for c in (5, 17, 90)] == [1, 2, 3]
    with pytest.raises(ValueError, match="category id 6"):
        category_id_to_label(ds.classes, 6)
    with pytest.raises(ValueError, match="label 4"):
        label_to_category_id(ds.classes, 4)


def test_boxes_xywh_to_xyxy_clipped_and_tiny_boxes_dropped(tmp_path):
    anns = [_ann(1, 1, [10, 20, 30, 40]),     # -> [10, 20, 40, 60]
            _ann(2, 1, [90, 50, 20, 20]),     # clipped to the 100x60 image -> [90, 50, 100, 60]
            _ann(3, 1, [5, 5, 0.5, 10]),      # 0.5 px wide: dropped
            _ann(4, 1, [99.5, 5, 10, 10]),    # 0.5 px wide after clipping: dropped
            _ann(5, 1, [120, 10, 5, 5])]      # wholly outside the image: a bad box, skipped
    ds = _dataset(tmp_path, _coco([_image(1, h=60, w=100)], anns))
    sample = ds[0]
    assert sample["boxes"].dtype == torch.float32 and sample["labels"].dtype == torch.int64
    assert sample["boxes"].tolist() == [[10, 20, 40, 60], [90, 50, 100, 60]]
    assert ds.num_dropped_boxes == 2 and ds.stats["dropped_boxes"] == 2
    assert (ds.stats["boxes"], ds.stats["bad_boxes"], ds.stats["clipped_boxes"]) == (2, 1, 2)


def test_sample_format_and_rgb_order(tmp_path):
    ds = _dataset(tmp_path, _coco([_image(7, h=30, w=40, name="x.png")],
                                  [_ann(1, 7, [1, 2, 3, 4])]))
    s = ds[0]
    assert set(s) == {"image", "boxes", "labels", "image_id", "original_size", "file_name"}
    assert s["image"].dtype == torch.uint8 and s["image"].shape == (3, 30, 40)
    assert s["image"][:, 0, 0].tolist() == [30, 20, 10]  # BGR (10, 20, 30) on disk -> RGB
    assert s["image_id"] == 7 and s["original_size"] == (30, 40) and s["file_name"] == "x.png"
    assert ds.image_sizes.tolist() == [[30, 40]] and ds.image_ids.tolist() == [7]


def test_crowd_boxes_ignored_in_targets_and_empty_images_filtered(tmp_path):
    images = [_image(1), _image(2), _image(3)]
    anns = [_ann(1, 1, [0, 0, 10, 10]), _ann(2, 1, [20, 20, 30, 30], iscrowd=1),
            _ann(3, 2, [5, 5, 20, 20], iscrowd=1)]  # image 2: crowd only; image 3: nothing
    train = _dataset(tmp_path, _coco(images, anns))
    assert len(train) == 1 and train.image_ids.tolist() == [1]
    assert train[0]["boxes"].tolist() == [[0, 0, 10, 10]]
    assert train.stats == {"images": 3, "images_without_boxes": 2, "boxes": 1,
                           "crowd_boxes": 2, "dropped_boxes": 0,
                           "bad_boxes": 0, "clipped_boxes": 0}
    kept = COCODataset(images=train.images, annotations=train.annotations, train=True,
                       filter_empty=False)
    assert kept.image_ids.tolist() == [1, 2, 3]
    test = COCODataset(images=train.images, annotations=train.annotations, train=False)
    assert test.image_ids.tolist() == [1, 2, 3]
    assert test[1]["boxes"].shape == (0, 4) and test[1]["labels"].shape == (0,)


def test_transforms_are_applied_to_image_and_boxes(tmp_path):
    from detection.data import build_transforms
    images, annotations = _write(tmp_path, _coco([_image(1, h=60, w=100)],
                                                 [_ann(1, 1, [10, 20, 30, 40])]))
    ds = COCODataset(images=images, annotations=annotations, train=True,
                     transforms=build_transforms(train=True, min_size=30, max_size=1000,
                                                 flip_prob=1.0))
    s = ds[0]
    # scale 30/60 = 0.5 -> 30x50; xyxy [10, 20, 40, 60] -> [5, 10, 20, 30] -> flip in W=50
    assert s["image"].shape == (3, 30, 50) and s["original_size"] == (60, 100)
    torch.testing.assert_close(s["boxes"], torch.tensor([[30.0, 10, 45, 30]]))
    torch.testing.assert_close(ds[0]["boxes"], s["boxes"])  # the dataset's boxes not mutated


# ----------------------------------------------------------------------------- decoding
def test_decode_grayscale_rgba_and_16_bit(tmp_path):
    gray = np.array([[0, 50], [100, 255]], np.uint8)
    cv2.imwrite(str(tmp_path / "gray.png"), gray)
    out = decode_image(str(tmp_path / "gray.png"))
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    assert (out == gray[:, :, None]).all()

    bgra = np.zeros((2, 2, 4), np.uint8)
    bgra[..., 0], bgra[..., 1], bgra[..., 2], bgra[..., 3] = 1, 2, 3, 77
    cv2.imwrite(str(tmp_path / "rgba.png"), bgra)
    out = decode_image(str(tmp_path / "rgba.png"))
    assert out.shape == (2, 2, 3) and out[0, 0].tolist() == [3, 2, 1]

    deep = np.array([[0, 25700], [1000, 65535]], np.uint16)  # * 255 / 65535 -> 0, 100, 3.89, 255
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    assert cv2.imread(str(tmp_path / "deep.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    out = decode_image(str(tmp_path / "deep.png"))
    assert out.dtype == np.uint8 and out[..., 0].tolist() == [[0, 100], [4, 255]]

    deep_bgr = np.zeros((1, 1, 3), np.uint16)
    deep_bgr[0, 0] = (65535, 0, 25700)
    cv2.imwrite(str(tmp_path / "deep3.png"), deep_bgr)
    assert decode_image(str(tmp_path / "deep3.png"))[0, 0].tolist() == [100, 0, 255]


def test_decode_missing_and_corrupt(tmp_path):
    with pytest.raises(DatasetError, match="not found: .*nope.jpg"):
        decode_image(str(tmp_path / "nope.jpg"))
    (tmp_path / "bad.jpg").write_bytes(b"this is not a jpeg")
    with pytest.raises(DatasetError, match="cannot decode .*bad.jpg"):
        decode_image(str(tmp_path / "bad.jpg"))


# ----------------------------------------------------------------------------- bad json
def _json_error(tmp_path, data_or_text):
    path = tmp_path / "bad.json"
    text = data_or_text if isinstance(data_or_text, str) else json.dumps(data_or_text)
    path.write_text(text)
    with pytest.raises(DatasetError) as info:
        read_coco_json(path)
    message = str(info.value)
    assert str(path) in message
    return message


def test_annotation_json_errors_name_file_and_place(tmp_path):
    assert "line 3 column 5" in _json_error(tmp_path, '{\n  "images": [\n    ,\n  ]\n}')
    assert '"categories"' in _json_error(tmp_path, {"images": [], "annotations": []})
    assert '"annotations" (a list) is a dict' in _json_error(
        tmp_path, {"images": [], "annotations": {}, "categories": []})
    base = _coco([_image(1)], [])
    for field in ("bbox", "image_id", "category_id"):
        ann = _ann(12, 1, [0, 0, 5, 5])
        del ann[field]
        message = _json_error(tmp_path, dict(base, annotations=[ann]))
        assert f'annotation 12 lacks required field "{field}"' in message
    message = _json_error(tmp_path, dict(base, images=[{"id": 3, "file_name": "a.png"}]))
    assert 'image 3 lacks required field "height"' in message


def test_annotation_values_errors_name_annotation_id(tmp_path):
    base = _coco([_image(1)], [])
    message = _json_error(tmp_path, dict(base, annotations=[_ann(5, 1, [0, 0, 5])]))
    assert "annotation id 5: bbox must be 4 numbers" in message
    message = _json_error(tmp_path, dict(base, annotations=[_ann(6, 1, [0, "a", 5, 5])]))
    assert "annotation id 6: bbox must be 4 numbers" in message
    message = _json_error(tmp_path, dict(base, annotations=[_ann(8, 99, [0, 0, 5, 5])]))
    assert "annotation id 8 refers to unknown image id 99" in message
    message = _json_error(tmp_path, dict(base, annotations=[_ann(9, 1, [0, 0, 5, 5], 42)]))
    assert "annotation id 9 refers to unknown category id 42" in message
    message = _json_error(tmp_path, dict(base, images=[_image(1), _image(1)]))
    assert "duplicate image id 1" in message


def test_missing_annotation_file_and_image_folder(tmp_path):
    with pytest.raises(DatasetError, match="annotation file not found: .*absent.json"):
        read_coco_json(tmp_path / "absent.json")
    _, annotations = _write(tmp_path, _coco([_image(1)], [_ann(1, 1, [0, 0, 5, 5])]))
    with pytest.raises(DatasetError, match="image folder not found: .*nowhere"):
        COCODataset(images=str(tmp_path / "nowhere"), annotations=annotations, train=True)


def test_input_files_and_dicts_are_not_modified(tmp_path):
    from detection.evaluation import COCOEvaluator
    data = _coco([_image(1)], [_ann(1, 1, [0, 0, 10, 10])])  # no "area" / "iscrowd"
    images, annotations = _write(tmp_path, data)
    before = open(annotations, "rb").read()
    ds = COCODataset(images=images, annotations=annotations, train=False)
    COCOEvaluator(annotations=annotations, classes=ds.classes, verbose=False)
    assert open(annotations, "rb").read() == before
    assert data == _coco([_image(1)], [_ann(1, 1, [0, 0, 10, 10])])


# ----------------------------------------------------------------------------- bad images
BAD_IMAGES = ["missing", "corrupt", "wrong_size", "truncated_jpeg", "truncated_png"]


def _with_bad_image(tmp_path, kind):
    images = [_image(1, name="1.jpg" if kind == "truncated_jpeg" else None), _image(2),
              _image(3, h=100, w=60)]
    anns = [_ann(i, i, [0, 0, 10, 10]) for i in (1, 2, 3)]
    img_dir, annotations = _write(tmp_path, _coco(images, anns))
    bad = os.path.join(img_dir, images[0]["file_name"])
    if kind == "missing":
        os.remove(bad)
    elif kind == "corrupt":
        open(bad, "wb").write(b"\x89PNG garbage")
    elif kind.startswith("truncated"):  # cut in half (OpenCV decodes the JPEG "fine")
        noise = np.random.default_rng(0).integers(0, 256, (60, 100, 3), dtype=np.uint8)
        data = cv2.imencode(os.path.splitext(bad)[1], noise)[1].tobytes()
        open(bad, "wb").write(data[:len(data) // 2])
    else:  # a size that disagrees with the json
        cv2.imwrite(bad, np.zeros((10, 10, 3), np.uint8))
    return img_dir, annotations, bad


@pytest.mark.parametrize("kind", BAD_IMAGES)
def test_bad_image_in_training_is_replaced_and_counted(tmp_path, caplog, kind):
    img_dir, annotations, bad = _with_bad_image(tmp_path, kind)
    ds = COCODataset(images=img_dir, annotations=annotations, train=True)
    with caplog.at_level(logging.WARNING, logger="detection.data.coco"):
        sample = ds[0]
        ds[0]
    assert sample["image_id"] == 2  # next image of the same (landscape) orientation
    assert ds.num_bad_images == 2
    warnings = [r.getMessage() for r in caplog.records if "skipping bad image" in r.getMessage()]
    assert len(warnings) == 1 and bad in warnings[0]  # warned once per file


@pytest.mark.parametrize("kind", BAD_IMAGES)
def test_bad_image_with_on_bad_image_error_names_the_file(tmp_path, kind):
    img_dir, annotations, bad = _with_bad_image(tmp_path, kind)
    ds = COCODataset(images=img_dir, annotations=annotations, train=True, on_bad_image="error")
    with pytest.raises(DatasetError, match=bad):
        ds[0]
    assert ds.num_bad_images == 0


@pytest.mark.parametrize("kind", ["corrupt", "truncated_jpeg", "truncated_png"])
def test_bad_image_in_evaluation_is_left_out_also_across_workers(tmp_path, kind):
    img_dir, annotations, _ = _with_bad_image(tmp_path, kind)
    ds = COCODataset(images=img_dir, annotations=annotations, train=False)
    assert ds[0] is None
    assert collate([None, ds[1]])[0]["image_id"] == 2
    fresh = COCODataset(images=img_dir, annotations=annotations, train=False)
    loader = make_test_loader(fresh, batch_size=2, num_workers=1)
    ids = [s["image_id"] for batch in loader for s in batch]
    assert ids == [2, 3] and fresh.num_bad_images == 1  # counted in the worker, seen here


def test_error_from_a_worker_reaches_the_caller_with_the_file_name(tmp_path):
    img_dir, annotations, bad = _with_bad_image(tmp_path, "missing")
    ds = COCODataset(images=img_dir, annotations=annotations, train=False, on_bad_image="error")
    with pytest.raises(DatasetError, match=f"image file not found: {bad}"):
        list(make_test_loader(ds, num_workers=1))


def test_all_images_bad_stops_with_a_clear_message(tmp_path):
    images = [_image(i) for i in (1, 2)]
    img_dir, annotations = _write(tmp_path, _coco(images, [_ann(i, i, [0, 0, 5, 5])
                                                           for i in (1, 2)]), pixels=False)
    ds = COCODataset(images=img_dir, annotations=annotations, train=True)
    with pytest.raises(DatasetError, match="no loadable image left"):
        ds[0]


def test_dataset_without_usable_images_is_an_error(tmp_path):
    with pytest.raises(DatasetError, match="no image with a usable box"):
        _dataset(tmp_path, _coco([_image(1)], []))
    with pytest.raises(ValueError, match="on_bad_image"):
        _dataset(tmp_path, _coco([_image(1)], [_ann(1, 1, [0, 0, 5, 5])]), on_bad_image="x")


def test_synthetic_fixture_loads(synthetic_coco):
    ds = COCODataset(images=synthetic_coco.train_images,
                     annotations=synthetic_coco.train_annotations, train=True)
    assert [c["id"] for c in ds.classes] == [1, 3, 7, 12, 20]
    s = ds[0]
    h, w = s["original_size"]
    assert s["image"].shape == (3, h, w) and len(s["boxes"]) > 0
    assert (s["boxes"][:, 2:] <= torch.tensor([w, h])).all()


# ----------------------------------------------------------------------------- bad boxes
BAD_KINDS = {  # annotation id: (bbox, reason); image 1 is 60 x 100 (h x w)
    2: ([10, 10, -5, 10], "has a negative width or height"),
    3: ([10, 10, 5, 0], "has a zero width or height"),
    4: ([float("nan"), 10, 5, 5], "has a non-finite coordinate"),
    5: ([10, 10, float("inf"), 5], "has a non-finite coordinate"),
    6: ([120, 10, 5, 5], "lies wholly outside the 60x100 (h x w) image"),
}


def _bad_box_set():
    anns = [_ann(1, 1, [10, 20, 30, 40]), _ann(7, 1, [90, 50, 20, 20]),  # 7: partly outside
            _ann(8, 1, [-5, -5, 20, 20])]                                  # 8: partly outside
    anns += [_ann(i, 1, bbox) for i, (bbox, _) in BAD_KINDS.items()]
    return _coco([_image(1, h=60, w=100), _image(2)], anns + [_ann(9, 2, [1, 1, -3, 3])])


def test_each_kind_of_bad_box_is_skipped_named_and_counted(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="detection.data.coco"):
        ds = _dataset(tmp_path, _bad_box_set())
    assert len(ds) == 1  # image 2 has nothing usable left
    assert ds[0]["boxes"].tolist() == [[10, 20, 40, 60], [90, 50, 100, 60], [0, 0, 15, 15]]
    assert (ds.stats["boxes"], ds.stats["bad_boxes"], ds.stats["clipped_boxes"]) == (3, 6, 2)
    for ann_id, (bbox, reason) in BAD_KINDS.items():
        assert f"skipping annotation id {ann_id}: bbox {bbox} ({reason}; left out of training)" \
            in caplog.text
    evaluation = COCODataset(images=str(tmp_path / "images"), annotations=ds.annotations,
                             train=False)
    assert len(evaluation) == 2 and evaluation.stats["bad_boxes"] == 6  # every image kept


def test_past_ten_bad_boxes_only_a_count(tmp_path, caplog):
    anns = [_ann(1, 1, [10, 20, 30, 40])] + [_ann(i, 1, [0, 0, -1, 1]) for i in range(100, 113)]
    with caplog.at_level(logging.WARNING, logger="detection.data.coco"):
        ds = _dataset(tmp_path, _coco([_image(1)], anns))
    named = [r.getMessage() for r in caplog.records if "skipping annotation id" in r.message]
    assert len(named) == 10 and "annotation id 109:" in named[-1]
    assert "skipping 3 more bad boxes (13 in all)" in caplog.text
    assert ds.stats["bad_boxes"] == 13


def test_on_bad_annotation_error_names_the_file_and_the_annotation(tmp_path):
    with pytest.raises(DatasetError) as info:
        _dataset(tmp_path, _bad_box_set(), on_bad_annotation="error")
    assert str(info.value).startswith(f"{tmp_path / 'ann.json'}: annotation id 2: bbox "
                                      "[10, 10, -5, 10] has a negative width or height")
    with pytest.raises(ValueError, match="on_bad_annotation"):
        _dataset(tmp_path, _bad_box_set(), on_bad_annotation="ignore")


def test_evaluation_treats_a_bad_box_as_an_ignored_region(tmp_path):
    """Image 1: a good box [10, 20, 40, 60] and one of width -20 spanning x 50..70. The
    highest-scoring detection lies on the bad one: ignored, AP@.5 = 100; were it a false
    positive, the precision at full recall would be 1/2. NaN and inf boxes match nothing and
    count as no miss; the file is not modified."""
    from detection.evaluation import COCOEvaluator

    data = _coco([_image(1)], [_ann(1, 1, [10, 20, 30, 40]), _ann(2, 1, [70, 10, -20, 30]),
                               _ann(3, 1, [float("nan"), 1, 2, 2]),
                               _ann(4, 1, [1, 1, float("inf"), 2])])
    images, annotations = _write(tmp_path, data)
    before = open(annotations, "rb").read()
    evaluator = COCOEvaluator(annotations=annotations, classes=[{"id": 1, "name": "thing"}],
                              verbose=False)
    evaluator.process([{"image_id": 1}], [{
        "boxes": torch.tensor([[50.0, 10, 70, 40], [10, 20, 40, 60]]),
        "scores": torch.tensor([0.95, 0.9]), "labels": torch.tensor([1, 1])}])
    result = evaluator.evaluate()
    assert result["mAP50"] == pytest.approx(100.0) and result["AR100"] == pytest.approx(100.0)
    assert open(annotations, "rb").read() == before
