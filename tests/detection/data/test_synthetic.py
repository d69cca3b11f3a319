"""Synthetic shapes set: format, reproducibility, object sizes, race-safe generation, CLI."""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest

from detection.data import COCODataset, decode_image, ensure_synthetic, make_synthetic_coco
from detection.data.synthetic import CATEGORIES

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    return make_synthetic_coco(tmp_path_factory.mktemp("s") / "a", num_train=40, num_val=4,
                               image_size=64, seed=1, empty_fraction=0.2)


def test_layout_categories_and_boxes(small_set):
    data = json.loads(Path(small_set.train_annotations).read_text())
    assert [c["id"] for c in data["categories"]] == [1, 3, 7, 12, 20]
    assert len(data["images"]) == 40
    assert {a["category_id"] for a in data["annotations"]} == {1, 3, 7, 12, 20}
    with_objects = {a["image_id"] for a in data["annotations"]}
    assert 0 < len(with_objects) < 40  # some images hold no object
    orientations = {im["width"] >= im["height"] for im in data["images"]}
    assert orientations == {True, False}
    sizes = {im["id"]: (im["height"], im["width"]) for im in data["images"]}
    for a in data["annotations"]:
        h, w = sizes[a["image_id"]]
        x, y, bw, bh = a["bbox"]
        assert 0 <= x and 0 <= y and x + bw <= w and y + bh <= h
        assert min(bw, bh) >= 0.12 * min(h, w)  # objects are not tiny
        assert 0 < a["area"] <= bw * bh + 1e-6
    for im in data["images"][:5]:
        img = decode_image(os.path.join(small_set.train_images, im["file_name"]))
        assert img.shape == (im["height"], im["width"], 3)


def test_objects_are_visible_where_the_box_says(small_set):
    data = json.loads(Path(small_set.train_annotations).read_text())
    checked = 0
    for a in data["annotations"][:20]:
        im = next(i for i in data["images"] if i["id"] == a["image_id"])
        img = decode_image(os.path.join(small_set.train_images, im["file_name"])).astype(float)
        x, y, w, h = (int(round(v)) for v in a["bbox"])
        cx, cy = x + w // 2, y + h // 2  # every shape covers its centre
        centre = img[cy - 1:cy + 2, cx - 1:cx + 2].reshape(-1, 3).mean(0)
        ring = np.concatenate([img[max(y - 3, 0):y, x:x + w].reshape(-1, 3),
                               img[y + h:y + h + 3, x:x + w].reshape(-1, 3)])
        if len(ring) and not _covered(a, data):
            assert np.linalg.norm(centre - ring.mean(0)) > 30
            checked += 1
    assert checked >= 5


def _covered(ann, data):
    """Whether another box of the image overlaps ``ann`` (the ring test then may not hold)."""
    x, y, w, h = ann["bbox"]
    for b in data["annotations"]:
        if b["image_id"] == ann["image_id"] and b["id"] != ann["id"]:
            bx, by, bw, bh = b["bbox"]
            if bx < x + w + 3 and x - 3 < bx + bw and by < y + h + 3 and y - 3 < by + bh:
                return True
    return False


def test_reproducible_and_seed_dependent(tmp_path):
    a = make_synthetic_coco(tmp_path / "a", num_train=3, num_val=2, image_size=48, seed=4)
    b = make_synthetic_coco(tmp_path / "b", num_train=3, num_val=2, image_size=48, seed=4)
    c = make_synthetic_coco(tmp_path / "c", num_train=3, num_val=2, image_size=48, seed=5)
    assert Path(a.train_annotations).read_bytes() == Path(b.train_annotations).read_bytes()
    assert Path(a.train_annotations).read_bytes() != Path(c.train_annotations).read_bytes()
    for name in os.listdir(a.val_images):
        assert (Path(a.val_images, name).read_bytes() == Path(b.val_images, name).read_bytes())


def test_loads_as_a_dataset_with_mapped_labels(small_set):
    ds = COCODataset(images=small_set.train_images, annotations=small_set.train_annotations,
                     train=True)
    assert ds.classes == CATEGORIES
    data = json.loads(Path(small_set.train_annotations).read_text())
    first = ds.image_ids[0]
    cats = [a["category_id"] for a in data["annotations"] if a["image_id"] == first]
    label_of = {1: 1, 3: 2, 7: 3, 12: 4, 20: 5}
    assert ds[0]["labels"].tolist() == [label_of[c] for c in cats]


def _ensure(root, queue):
    paths = ensure_synthetic(root, num_train=6, num_val=2, image_size=48, seed=0)
    queue.put(paths.root)


def test_ensure_synthetic_is_idempotent_and_race_safe(tmp_path):
    root = tmp_path / "race"
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_ensure, args=(str(root), queue)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert {queue.get(), queue.get()} == {str(root)}
    assert sorted(os.listdir(tmp_path)) == ["race"]  # no temporary folder left behind
    data = json.loads((root / "annotations" / "train.json").read_text())
    assert len(data["images"]) == 6 and len(os.listdir(root / "train")) == 6
    stamp = os.stat(root / "annotations" / "train.json").st_mtime_ns
    ensure_synthetic(root, num_train=6, num_val=2, image_size=48, seed=0)
    assert os.stat(root / "annotations" / "train.json").st_mtime_ns == stamp
    with pytest.raises(FileExistsError, match="made with"):
        ensure_synthetic(root, num_train=7, num_val=2, image_size=48, seed=0)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="holds other data"):
        ensure_synthetic(tmp_path / "other", num_train=2, num_val=1, image_size=48)


def test_cli(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("make_synthetic",
                                                  ROOT / "tools" / "make_synthetic.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    root = tmp_path / "cli"
    args = ["--root", str(root), "--num-train", "3", "--num-val", "1", "--image-size", "48"]
    assert tool.main(args) == 0
    assert str(root / "annotations" / "val.json") in capsys.readouterr().out
    assert len(os.listdir(root / "train")) == 3
    assert tool.main(args[:3] + ["4"] + args[4:]) == 2
    assert "holds other data" in capsys.readouterr().err


def test_ensure_synthetic_loser_of_the_race_uses_the_winners_set(tmp_path, monkeypatch):
    import detection.data.synthetic as synthetic
    root = tmp_path / "set"
    real = synthetic.make_synthetic_coco

    def make_while_another_process_wins(folder, **kwargs):
        real(folder, **kwargs)
        real(root, **kwargs)  # the other process renames its complete set onto root first

    monkeypatch.setattr(synthetic, "make_synthetic_coco", make_while_another_process_wins)
    paths = ensure_synthetic(root, num_train=2, num_val=1, image_size=48)
    assert paths.root == str(root) and sorted(os.listdir(tmp_path)) == ["set"]
