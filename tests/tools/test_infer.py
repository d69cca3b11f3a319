import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from detection.build import build_model
from detection.config import config_to_dict, dump_config, load_config
from detection.engine.checkpoint import save_checkpoint
from detection.predictor import Predictor
from detection.visualize import color_for_label
from tool_loader import load_tool

CLASSES = [{"id": 2, "name": "cat"}, {"id": 5, "name": "dog"}, {"id": 9, "name": "fox"}]
TINY = ["model.backbone.name=resnet18", "model.backbone.weights=null", "model.num_classes=3",
        "model.fpn.out_channels=32", "model.roi_heads.fc_dim=64",
        "model.rpn.pre_nms_topk_test=100", "model.rpn.post_nms_topk_test=30",
        "model.roi_heads.detections_per_img=3", "data.input.min_size_test=64",
        "data.input.max_size_test=128"]


infer = load_tool("infer")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("infer")
    cfg = load_config(None, TINY)
    torch.manual_seed(0)
    model = build_model(cfg)
    config = folder / "tiny.yaml"
    config.write_text(dump_config(cfg))
    weights = folder / "tiny.pth"
    save_checkpoint({"model": model.state_dict(), "config": config_to_dict(cfg),
                     "classes": CLASSES, "iteration": 1}, weights)
    return config, weights


def _images(folder: Path, n: int, size=(72, 100)) -> list[np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images = []
    for i in range(n):
        image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / f"img{i}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        images.append(image)
    return images


def _read_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def test_images_from_folder_and_glob_are_drawn_with_json(checkpoint, tmp_path, capsys):
    config, weights = checkpoint
    images = _images(tmp_path / "in", 3)
    out = tmp_path / "out"
    code = infer.main(["--config", str(config), "--weights", str(weights), "--input",
                       str(tmp_path / "in" / "img0.png"), str(tmp_path / "in" / "img[12].png"),
                       "--output", str(out), "--score-thr", "0.0", "--batch", "2"])
    assert code == 0
    assert "3 of 3 file(s)" in capsys.readouterr().out
    results = json.loads((out / "detections.json").read_text())
    assert sorted(results) == ["img0.png", "img1.png", "img2.png"]
    expected = Predictor(config, weights=weights, score_thresh=0.0)(images[1])
    dets = results["img1.png"]
    assert len(dets) == len(expected["scores"]) == 3
    for det, box, score, cid in zip(dets, expected["boxes"], expected["scores"],
                                    expected["labels"]):
        x1, y1, x2, y2 = box
        assert det["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1], abs=0.01)
        assert det["score"] == pytest.approx(score, abs=1e-5)
        assert det["category_id"] == cid and cid in (2, 5, 9)
    drawn = _read_rgb(out / "img1.png")
    assert drawn.shape == images[1].shape
    changed = (drawn != images[1]).any(axis=2)
    assert changed.sum() > 50
    # the best detection is drawn last: its left edge carries its class colour
    x1, y1, _, y2 = np.round(expected["boxes"][0]).astype(int)
    x1 = min(max(x1, 0), drawn.shape[1] - 1)
    assert tuple(drawn[(y1 + y2) // 2, x1]) == color_for_label(int(expected["labels"][0]))
    # far from every box (and its tag above) nothing changed
    mask = np.zeros_like(changed)
    for bx1, by1, bx2, by2 in np.round(expected["boxes"]).astype(int):
        mask[max(by1 - 20, 0):by2 + 3, max(bx1 - 2, 0):bx2 + 60] = True
    assert not (changed & ~mask).any()


def test_video_round_trip(checkpoint, tmp_path):
    config, weights = checkpoint
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (96, 64))
    rng = np.random.default_rng(1)
    for _ in range(5):
        writer.write(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8))
    writer.release()
    out = tmp_path / "out"
    assert infer.main(["--config", str(config), "--weights", str(weights), "--input", str(video),
                       "--output", str(out), "--score-thr", "0.0", "--batch", "2"]) == 0
    results = json.loads((out / "detections.json").read_text())
    assert sorted(results) == [f"clip.mp4#{i}" for i in range(5)]
    assert all(len(dets) == 3 for dets in results.values())
    capture = cv2.VideoCapture(str(out / "clip.mp4"))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    assert len(frames) == 5 and frames[0].shape == (64, 96, 3)


def test_unreadable_inputs_reported_by_name(checkpoint, tmp_path, capsys):
    config, weights = checkpoint
    _images(tmp_path / "in", 1)
    (tmp_path / "in" / "broken.jpg").write_bytes(b"not an image at all")
    (tmp_path / "in" / "broken.mp4").write_bytes(b"not a video either")
    out = tmp_path / "out"
    code = infer.main(["--weights", str(weights), "--input", str(tmp_path / "in"),
                       str(tmp_path / "missing.png"), "--output", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "broken.mp4" in err and "missing.png" in err
    assert err.endswith("error: 3 input(s) skipped (listed above)\n")
    assert (out / "img0.png").is_file()
    assert list(json.loads((out / "detections.json").read_text())) == ["img0.png"]


def test_missing_weights_is_a_clear_error(tmp_path, capsys):
    _images(tmp_path / "in", 1)
    code = infer.main(["--weights", str(tmp_path / "nope.pth"), "--input", str(tmp_path / "in"),
                       "--output", str(tmp_path / "out")])
    assert code == 2
    assert "weights file not found" in capsys.readouterr().err
