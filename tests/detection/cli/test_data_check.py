"""``resdet data check`` and ``data browse`` on a COCO set with every kind of problem."""
from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from detection.cli import data_browse, data_check

GOOD = {"id": 1, "name": "cat"}, {"id": 7, "name": "dog"}


@pytest.fixture
def bad_set(tmp_path):
    """6 images of 48x64: 3 good (one without a box), one missing, one corrupt, one of the
    wrong size; boxes: 4 good and one of each bad kind."""
    folder = tmp_path / "images"
    folder.mkdir()
    for i in (1, 2, 3):
        cv2.imwrite(str(folder / f"good{i}.png"), np.full((48, 64, 3), 40 * i, np.uint8))
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8 this is no JPEG")
    cv2.imwrite(str(folder / "small.png"), np.zeros((20, 20, 3), np.uint8))
    images = [{"id": i, "file_name": f"good{i}.png", "height": 48, "width": 64}
              for i in (1, 2, 3)]
    images += [{"id": 4, "file_name": "missing.jpg", "height": 48, "width": 64},
               {"id": 5, "file_name": "corrupt.jpg", "height": 48, "width": 64},
               {"id": 6, "file_name": "small.png", "height": 48, "width": 64}]
    boxes = {11: (1, 1, [2, 2, 30, 30]), 12: (1, 7, [30, 10, 20, 30]),  # cat 30x30, dog 20x30
             13: (2, 7, [0, 0, 64, 48]), 14: (2, 1, [50, 40, 30, 30]),  # 14: clipped to 14x8
             101: (1, 1, [math.nan, 2, 10, 10]), 102: (1, 7, [10, 10, -5, 8]),
             103: (2, 1, [10, 10, 0, 8]), 104: (2, 7, [500, 500, 10, 10]),
             105: (2, 1, [10, 10, 0.5, 8])}
    annotations = [{"id": k, "image_id": im, "category_id": c, "bbox": b, "area": 1.0,
                    "iscrowd": 0} for k, (im, c, b) in boxes.items()]
    path = tmp_path / "set.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": list(GOOD)}))
    config = tmp_path / "check.yaml"
    config.write_text(
        f"data:\n  train: {{images: {folder}, annotations: {path}}}\n"
        f"  test: {{images: {folder}, annotations: {path}}}\n"
        f"output_dir: {tmp_path / 'out'}\n")
    return config, tmp_path


def test_check_names_each_bad_image_and_each_kind_of_bad_box(bad_set, capsys):
    config, tmp = bad_set
    assert data_check.main(["--config", str(config), "--workers", "2"]) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp / "out" / "data_check.json").read_text())
    assert set(report) == {"train", "test"}
    train = report["train"]
    kinds = {b["image_id"]: b["kind"] for b in train["bad_images"]}
    assert kinds == {4: "missing", 5: "corrupt", 6: "wrong_size"}
    errors = " ".join(b["error"] for b in train["bad_images"])
    assert "missing.jpg" in errors and "corrupt.jpg" in errors and "small.png" in errors
    named = {kind: [int(n.split(":")[0].split()[-1]) for n in names]
             for kind, names in train["bad_boxes"].items()}
    assert named == {"non_finite": [101], "negative_size": [102], "zero_size": [103],
                     "outside_image": [104], "too_small": [105]}
    assert train["images"] == 6 and train["boxes"] == 4 and train["clipped_boxes"] == 1
    assert train["empty_images"] == {"count": 4, "image_ids": [3, 4, 5, 6]}
    assert train["classes"] == {"cat": 2, "dog": 2}
    # 30x30 = 900 and 20x30 = 600 small (< 32^2), 64x48 = 3072 medium, 14x8 small
    sizes = train["box_sizes"]
    assert (sizes["small"], sizes["medium"], sizes["large"]) == (3, 1, 0)
    assert sizes["width"]["min"] == 14.0 and sizes["width"]["max"] == 64.0
    assert report["test"]["bad_boxes"] == train["bad_boxes"]
    # what a training run would skip: 3 bad images, 5 bad boxes, 4 images without a box (the
    # 3 bad ones hold none either) in train; the test set keeps its empty images
    assert "3 bad image(s): 1 corrupt, 1 missing, 1 wrong_size" in out
    assert "1 bad box(es), outside_image:" in out and "annotation id 104" in out
    assert "20 thing(s) a training run would skip" in out  # train 3 + 5 + 4, test 3 + 5


def test_a_cut_jpeg_that_opencv_decodes_is_a_truncated_image(bad_set, capsys):
    """good2.png re-encoded as a JPEG and cut to half: OpenCV decodes it with grey rows, the
    check names it as truncated."""
    config, tmp = bad_set
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    data = cv2.imencode(".jpg", image)[1].tobytes()
    (tmp / "images" / "good2.png").write_bytes(data[:len(data) // 2])
    assert cv2.imread(str(tmp / "images" / "good2.png")) is not None
    assert data_check.main(["--config", str(config), "--workers", "0"]) == 0
    report = json.loads((tmp / "out" / "data_check.json").read_text())
    bad = {b["image_id"]: b for b in report["train"]["bad_images"]}
    assert bad[2]["kind"] == "truncated" and bad[2]["error"].startswith(
        "truncated image (JPEG without its end-of-image marker FF D9; the file stops after ")
    assert "4 bad image(s): 1 corrupt, 1 missing, 1 truncated, 1 wrong_size" in (
        capsys.readouterr().out)


def test_strict_exits_2_when_anything_would_be_skipped(bad_set, capsys, tmp_path):
    config, tmp = bad_set
    assert data_check.main(["--config", str(config), "--strict", "--workers", "0",
                            "--output", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --strict: 20 image(s) or box(es) would be skipped")
    assert (tmp_path / "r.json").is_file()


def test_a_clean_set_passes_strict(tmp_path, capsys, synthetic_coco):
    config = tmp_path / "clean.yaml"
    s = synthetic_coco
    config.write_text(f"data:\n  train: {{images: {s.val_images}, annotations: "
                      f"{s.val_annotations}}}\n  filter_empty: false\n"
                      f"output_dir: {tmp_path / 'out'}\n")
    assert data_check.main(["--config", str(config), "--strict"]) == 0
    assert "0 thing(s) a training run would skip" in capsys.readouterr().out


def test_browse_draws_the_augmented_boxes(bad_set, tmp_path, capsys, monkeypatch):
    config, _ = bad_set
    out = tmp_path / "browse"
    texts, put = [], cv2.putText  # the tags written: class names alone, ground truth unscored
    monkeypatch.setattr(cv2, "putText", lambda img, text, *a, **k: (
        texts.append(text), put(img, text, *a, **k))[1])
    code = data_browse.main(["--config", str(config), "--output", str(out), "--num", "6",
                             "--set", "data.input.min_size_train=[96]",
                             "data.input.max_size_train=128", "data.on_bad_image=skip"])
    assert code == 0
    written = sorted(p.name for p in out.iterdir())
    # the three bad images are skipped by the dataset; the good ones are drawn at 96x128
    assert len(written) == 3 and all("good" in n for n in written)
    drawn = cv2.imread(str(out / next(n for n in written if "_1_good1" in n)))
    assert drawn.shape == (96, 128, 3)
    assert (drawn != drawn[47, 127]).any(axis=2).sum() > 100  # boxes and tags on a flat image
    # good1 holds a cat and a dog, good2 a dog and a (clipped) cat: 4 boxes, 4 tags
    assert sorted(texts) == ["cat", "cat", "dog", "dog"]


def test_browse_shows_the_configs_augmentations(bad_set, tmp_path, capsys):
    """data.augment (here LSJ at 80 px) is what browse draws: every image 80 x 80 (cropped or
    padded with grey), the boxes with it."""
    config, _ = bad_set
    out = tmp_path / "browse_lsj"
    code = data_browse.main(["--config", str(config), "--output", str(out), "--num", "6",
                             "--set", "data.augment=[{name: lsj, size: 80}]",
                             "data.on_bad_image=skip"])
    assert code == 0
    written = sorted(out.iterdir())
    assert len(written) == 3
    assert {cv2.imread(str(p)).shape for p in written} == {(80, 80, 3)}
    capsys.readouterr()
    code = data_browse.main(["--config", str(config), "--output", str(tmp_path / "typo"),
                             "--set", "data.augment=[{name: lsj, sise: 80}]"])
    assert code == 2  # a typo is one error line, before any image is read or written
    assert capsys.readouterr().err.strip() == (
        "error: data.augment[0] (preset lsj): unknown argument 'sise'; did you mean 'size'? "
        "(it takes size, min_scale, max_scale, flip_prob, fill)")
    assert not (tmp_path / "typo").exists()
