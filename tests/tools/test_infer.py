import json
import os
import re
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from detection.build import build_model
from detection.config import config_to_dict, dump_config, load_config
from detection.data.base import DatasetError
from detection.engine.checkpoint import save_checkpoint
from detection import media, video
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


def _results(out: Path) -> dict[str, list]:
    """detections.jsonl as ``{name: detections}``; a frame's name is ``<source>#<frame>``."""
    lines = (out / infer.JSONL).read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    return {e["source"] + (f"#{e['frame']}" if "frame" in e else ""): e["detections"]
            for e in entries}


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
    assert "3 of 3 input(s)" in capsys.readouterr().out
    results = _results(out)
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


def _write_video(path: Path, frames: int) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (96, 64))
    rng = np.random.default_rng(1)
    for _ in range(frames):
        writer.write(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8))
    writer.release()
    return path


def _read_frames(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def test_video_round_trip(checkpoint, tmp_path):
    config, weights = checkpoint
    video = _write_video(tmp_path / "clip.mp4", 5)
    out = tmp_path / "out"
    assert infer.main(["--config", str(config), "--weights", str(weights), "--input", str(video),
                       "--output", str(out), "--score-thr", "0.0", "--batch", "2"]) == 0
    results = _results(out)
    assert sorted(results) == [f"clip.mp4#{i}" for i in range(5)]
    assert all(len(dets) == 3 for dets in results.values())
    frames = _read_frames(out / "clip.mp4")
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
    assert list(_results(out)) == ["img0.png"]


def test_missing_weights_is_a_clear_error(tmp_path, capsys):
    _images(tmp_path / "in", 1)
    code = infer.main(["--weights", str(tmp_path / "nope.pth"), "--input", str(tmp_path / "in"),
                       "--output", str(tmp_path / "out")])
    assert code == 2
    assert "weights file not found" in capsys.readouterr().err


def test_camera_index_with_max_frames(checkpoint, tmp_path, monkeypatch):
    """``--input 0`` opens camera 0: here a generated video stands in for the camera."""
    config, weights = checkpoint
    video = _write_video(tmp_path / "camera_feed.mp4", 7)
    opened = []
    real = cv2.VideoCapture

    def fake_capture(source, *args):
        opened.append(source)
        return real(str(video)) if source == 0 else real(source, *args)

    monkeypatch.setattr(media.cv2, "VideoCapture", fake_capture)
    out = tmp_path / "out"
    assert infer.main(["--weights", str(weights), "--input", "0", "--max-frames", "4",
                       "--output", str(out), "--score-thr", "0.0", "--batch", "3"]) == 0
    assert opened == [0]  # the camera index, as an int
    results = _results(out)
    assert sorted(results) == [f"camera0#{i}" for i in range(4)]
    assert len(_read_frames(out / "camera0.mp4")) == 4


def test_unreachable_stream_is_one_line_error(checkpoint, tmp_path, capsys):
    _, weights = checkpoint
    url = "rtsp://127.0.0.1:9/live"  # the discard port: connection refused at once
    code = infer.main(["--weights", str(weights), "--input", url, "--output", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert err == f"error: cannot open stream {url} (unreachable, or not a video stream)\n"
    assert media.is_live(url) and media.is_live("0") and not media.is_live(str(tmp_path))


def test_onnx_model_and_coco_results(exported, tmp_path, capsys):
    from pycocotools.coco import COCO

    ex = exported("fpn")
    images = _images(tmp_path / "in", 3)
    coco_json = tmp_path / "images.json"  # image info, as COCO's test-dev json: no annotations
    coco_json.write_text(json.dumps({
        "images": [{"id": 40 + i, "file_name": f"val/img{i}.png", "height": 72, "width": 100}
                   for i in range(2)],  # img2.png is not in it
        "categories": [{"id": c["id"], "name": c["name"]} for c in ex.classes]}))
    results = tmp_path / "out" / "results.json"
    code = infer.main(["--onnx", str(ex.onnx), "--input", str(tmp_path / "in"), "--output",
                       str(tmp_path / "out"), "--save-coco", str(results), "--annotations",
                       str(coco_json)])
    assert code == 0
    err = capsys.readouterr().err
    assert f"warning: 1 image(s) not in {coco_json}, left out of {results}: img2.png" in err
    entries = json.loads(results.read_text())
    expected = Predictor(weights=ex.onnx, backend="onnxruntime")(images[1])
    mine = [e for e in entries if e["image_id"] == 41]
    assert len(mine) == len(expected["scores"]) > 10
    for entry, box, score, cid in zip(mine, expected["boxes"], expected["scores"],
                                      expected["labels"]):
        assert set(entry) == {"image_id", "category_id", "bbox", "score"}
        assert entry["bbox"] == pytest.approx([box[0], box[1], box[2] - box[0], box[3] - box[1]],
                                              abs=0.01)
        assert entry["score"] == pytest.approx(score, abs=1e-5) and entry["category_id"] == cid
    gt = COCO(str(coco_json))
    dt = gt.loadRes(str(results))
    assert sorted(dt.getImgIds()) == [40, 41] and len(dt.getAnnIds()) == len(entries)


def test_bad_option_combinations(checkpoint, tmp_path, capsys):
    config, weights = checkpoint
    for extra in (["--save-coco", "r.json"], ["--max-frames", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            infer.main(["--weights", str(weights), "--input", "x.png", "--output",
                        str(tmp_path), *extra])
        assert exit_info.value.code == 2
    with pytest.raises(SystemExit):
        infer.main(["--weights", str(weights), "--onnx", "m.onnx", "--input", "x.png",
                    "--output", str(tmp_path)])
    assert "not allowed with argument" in capsys.readouterr().err


def test_classes_and_no_draw(checkpoint, tmp_path, capsys):
    config, weights = checkpoint
    images = _images(tmp_path / "in", 2)
    out = tmp_path / "out"
    assert infer.main(["--weights", str(weights), "--input", str(tmp_path / "in"), "--output",
                       str(out), "--score-thr", "0.0", "--classes", "DOG", "9",
                       "--no-draw"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["detections.jsonl"]  # nothing drawn
    results = _results(out)
    everything = Predictor(config, weights=weights, score_thresh=0.0)(images)
    for name, expected in zip(("img0.png", "img1.png"), everything):
        kept = [int(c) for c in expected["labels"] if c in (5, 9)]
        assert [d["category_id"] for d in results[name]] == kept
        assert {d["category_name"] for d in results[name]} <= {"dog", "fox"}
    capsys.readouterr()
    assert infer.main(["--weights", str(weights), "--input", str(tmp_path / "in"), "--output",
                       str(out), "--classes", "wolf"]) == 2
    assert "error: --classes: the model has no class 'wolf' (its classes: cat, dog, fox)" in (
        capsys.readouterr().err)


def test_without_pyav_the_video_is_mp4v_and_says_so(checkpoint, tmp_path, capsys, monkeypatch):
    from detection import video as video_module

    _, weights = checkpoint
    monkeypatch.setattr(video_module, "h264_available", lambda: False)
    clip = _write_video(tmp_path / "clip.mp4", 3)
    assert infer.main(["--weights", str(weights), "--input", str(clip), "--output",
                       str(tmp_path / "out")]) == 0
    assert "mp4v (OpenCV; browsers do not play it" in capsys.readouterr().out
    import av

    with av.open(str(tmp_path / "out" / "clip.mp4")) as container:
        assert container.streams.video[0].codec_context.name == "mpeg4"  # MPEG-4 Part 2: mp4v
    assert len(_read_frames(tmp_path / "out" / "clip.mp4")) == 3


def test_masks_are_drawn_translucent_and_written_as_rle(exported, tmp_path, one_thread):
    """A Mask R-CNN checkpoint: detections.jsonl and the COCO results carry each detection's
    mask as compressed RLE (the Predictor's pasted mask), and the drawn image has the masks
    filled in: inside a drawn mask, away from boxes and tags, a pixel is the blend of the
    image and the class colour."""
    from pycocotools import mask as mask_utils

    from detection.visualize import MASK_ALPHA

    ex = exported("fpn_mask")
    (image,) = _images(tmp_path / "in", 1, size=(96, 128))
    coco_json = tmp_path / "images.json"
    coco_json.write_text(json.dumps({"images": [{"id": 7, "file_name": "img0.png",
                                                 "height": 96, "width": 128}]}))
    results = tmp_path / "out" / "results.json"
    assert infer.main(["--weights", str(ex.weights), "--input", str(tmp_path / "in"),
                       "--output", str(tmp_path / "out"), "--score-thr", "0.3",
                       "--save-coco", str(results), "--annotations", str(coco_json),
                       "--amp", "off"]) == 0  # float32: the same masks on every CPU
    predictor = Predictor(weights=ex.weights, score_thresh=0.3, amp="off")
    expected = predictor(image)
    assert expected["masks"].shape == (len(expected["boxes"]), 96, 128)
    entries = _results(tmp_path / "out")["img0.png"]
    assert len(entries) == len(expected["boxes"]) > 3
    decoded = mask_utils.decode([{**e["segmentation"], "counts": e["segmentation"]["counts"]
                                  .encode()} for e in entries]).transpose(2, 0, 1)
    assert np.array_equal(decoded.astype(bool), expected["masks"])
    coco = json.loads(results.read_text())
    assert [e["segmentation"] for e in coco] == [e["segmentation"] for e in entries]
    drawn = _read_rgb(tmp_path / "out" / "img0.png")
    from detection.visualize import draw_detections

    boxes_only = draw_detections(image, expected["boxes"], expected["scores"],
                                 expected["labels"], predictor.category_names, score_thresh=0.3)
    untouched = (boxes_only == image).all(2)  # no box outline or tag there
    masks = expected["masks"]
    assert not (drawn != boxes_only).any(2)[~masks.any(0)].any()  # nothing outside the masks
    checked = 0
    for k, mask in enumerate(masks):  # pixels only mask k covers: image and colour blended
        only = mask & (masks.sum(0) == 1) & untouched
        color = np.array(color_for_label(int(expected["labels"][k])), dtype=float)
        blend = np.round(image[only] * (1 - MASK_ALPHA) + color * MASK_ALPHA)
        assert np.array_equal(drawn[only], blend.astype(np.uint8))
        checked += int(only.sum())
    assert checked > 100, checked


def test_a_full_disk_stops_with_one_error_line(checkpoint, tmp_path, capsys, small_disk):
    """No room for the first drawn image: one error line naming it; the JSON line of that image
    was written before (detections.jsonl grows as the run goes) and nothing half-written."""
    config, weights = checkpoint
    _images(tmp_path / "in", 2)
    disk = small_disk(tmp_path / "disk", capacity=0)
    assert infer.main(["--config", str(config), "--weights", str(weights), "--input",
                       str(tmp_path / "in"), "--output", str(disk.folder / "out")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    out = re.escape(f"{disk.folder}/out")
    assert len(errors) == 1 and re.fullmatch(
        rf"error: cannot write {out}/img0.png: no space left on device \(it needs [\d,]+ "
        rf"bytes = [\d.]+ KiB; 0 bytes are free in {out}\)", errors[0]), errors
    assert [p.name for p in (disk.folder / "out").iterdir()] == ["detections.jsonl"]


VIDEO_ON_TMPFS = """
import sys
import numpy as np
from detection.engine.files import DiskFullError
from detection.video import open_video_writer
out = sys.argv[1] + "/clip.mp4"
try:
    writer = open_video_writer(out, fps=10.0, size=(96, 64), h264=sys.argv[2] == "h264")
    rng = np.random.default_rng(1)
    try:
        for _ in range(60):
            writer.write(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8))
    finally:
        writer.close()
except DiskFullError as e:
    print(e)
"""


@pytest.mark.parametrize("codec", ["mp4v", "h264"])
def test_a_video_cut_short_by_a_real_full_tmpfs_is_found(tmp_path, tmpfs, codec):
    """A 64 KiB tmpfs cannot hold 60 frames of noise: OpenCV's writer reports no failed write,
    PyAV's an OSError; both end in one DiskFullError naming the file."""
    if codec == "h264" and not video.h264_available():
        pytest.skip("PyAV with libx264 is not installed")
    (tmp_path / "script.py").write_text(VIDEO_ON_TMPFS)
    disk = tmp_path / "disk"
    proc = tmpfs(disk, "64k", f"{sys.executable} {tmp_path / 'script.py'} {disk} {codec}",
                 env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2])))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"cannot write {disk}/clip.mp4: no space left on device"), proc.stdout


def test_a_whole_video_passes_the_check_and_a_cut_one_is_named(tmp_path):
    clip = _write_video(tmp_path / "clip.mp4", 5)
    video.check_video(clip)
    data = clip.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[:len(data) - 50])
    assert not video.mp4_complete(tmp_path / "cut.mp4")
    with pytest.raises(DatasetError) as e:  # not a full disk: another failure, named
        video.check_video(tmp_path / "cut.mp4")
    assert str(e.value) == (f"cannot write video: {tmp_path / 'cut.mp4'} (the video is cut "
                            f"short after {len(data) - 50:,} bytes)")


def test_truncated_jpeg_and_png_inputs_are_named_and_skipped(checkpoint, tmp_path, capsys):
    config, weights = checkpoint
    _images(tmp_path / "in", 1)
    noise = np.random.default_rng(2).integers(0, 256, (72, 100, 3), dtype=np.uint8)
    for suffix in (".jpg", ".png"):
        data = cv2.imencode(suffix, noise)[1].tobytes()
        (tmp_path / "in" / f"cut{suffix}").write_bytes(data[:3000])
    assert cv2.imread(str(tmp_path / "in" / "cut.jpg")) is not None  # OpenCV: "fine"
    out = tmp_path / "out"
    assert infer.main(["--config", str(config), "--weights", str(weights), "--input",
                       str(tmp_path / "in"), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    skipped = [line for line in err.splitlines() if line.startswith("skipped: ")]
    assert skipped == [
        "skipped: truncated image (JPEG without its end-of-image marker FF D9; the file stops "
        f"after 3,000 bytes): {tmp_path / 'in' / 'cut.jpg'}",
        "skipped: truncated image (PNG without its IEND chunk; the file stops after 3,000 "
        f"bytes): {tmp_path / 'in' / 'cut.png'}"]
    assert err.endswith("error: 2 input(s) skipped (listed above)\n")
    assert sorted(p.name for p in out.iterdir()) == ["detections.jsonl", "img0.png"]
