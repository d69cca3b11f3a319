"""``resdet infer`` on a long stream: flat memory, and a killed run keeps every finished frame.

A 2,000-frame generated video (32x24 px) through a tiny detector in a subprocess, as a user
runs it. The detections go to detections.jsonl as each frame is done, the drawn frames to a
fragmented H.264 MP4 (PyAV); nothing of a frame is kept once it is written.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from detection.build import build_model
from detection.config import config_to_dict, load_config
from detection.engine.checkpoint import save_checkpoint

ROOT = Path(__file__).resolve().parents[2]
FRAMES = 2000
TINY = ["model.backbone.name=resnet18", "model.backbone.weights=null", "model.num_classes=2",
        "model.fpn.out_channels=16", "model.roi_heads.fc_dim=32",
        "model.rpn.pre_nms_topk_test=50", "model.rpn.post_nms_topk_test=10",
        "model.roi_heads.detections_per_img=3", "data.input.min_size_test=32",
        "data.input.max_size_test=32", "model.anchor_generator.sizes=[[8],[16],[32],[64],[128]]"]


@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    """``(weights, video)``: a tiny detector's checkpoint and a 2,000-frame video."""
    folder = tmp_path_factory.mktemp("stream")
    cfg = load_config(None, TINY)
    torch.manual_seed(0)
    weights = folder / "tiny.pth"
    save_checkpoint({"model": build_model(cfg).state_dict(), "config": config_to_dict(cfg),
                     "classes": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
                     "iteration": 1}, weights)
    video = folder / "long.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (32, 24))
    rng = np.random.default_rng(0)
    for _ in range(FRAMES):
        writer.write(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    writer.release()
    return weights, video


def _start(weights: Path, video: Path, out: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-m", "detection.cli", "infer", "--weights", str(weights), "--input",
         str(video), "--output", str(out), "--batch", "25", "--score-thr", "0", "--device",
         "cpu"], cwd=out.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)


def _rss_mb(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return next((int(line.split()[1]) / 1024 for line in status.splitlines()
                 if line.startswith("VmRSS:")), None)


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _watch(proc: subprocess.Popen, jsonl: Path, until_lines: int | None = None,
           timeout: float = 400.0) -> list[tuple[int, float]]:
    """``(lines written, RSS MB)`` every 50 ms until the process ends (or writes
    ``until_lines`` lines)."""
    samples, start = [], time.monotonic()
    while proc.poll() is None and time.monotonic() - start < timeout:
        lines, rss = _lines(jsonl), _rss_mb(proc.pid)
        if rss is not None:
            samples.append((lines, rss))
        if until_lines is not None and lines >= until_lines:
            break
        time.sleep(0.05)
    return samples


def _frames(jsonl: Path) -> list[dict]:
    text = jsonl.read_text()
    complete = text[:text.rfind("\n") + 1]  # a line cut by the kill is not a finished frame
    return [json.loads(line) for line in complete.splitlines()]


def test_memory_stays_flat_over_2000_frames(stream, tmp_path):
    weights, video = stream
    out = tmp_path / "out"
    proc = _start(weights, video, out)
    samples = _watch(proc, out / "detections.jsonl")
    stdout, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    # while the stream runs: from the 200th line to the last frame's (interpreter shutdown
    # after it is not the stream's)
    streaming = [(lines, rss) for lines, rss in samples if 200 <= lines < FRAMES]
    at_200, later = streaming[0][1], [rss for _, rss in streaming]
    assert streaming[-1][0] >= 1900  # sampled up to the end
    print(f"RSS at frame 200: {at_200:.1f} MB, largest after it: {max(later):.1f} MB")
    assert max(later) - at_200 < 50, (at_200, max(later))
    frames = _frames(out / "detections.jsonl")
    assert [f["frame"] for f in frames] == list(range(FRAMES))
    assert all(f["source"] == "long.mp4" and len(f["detections"]) == 3 for f in frames)
    import av
    with av.open(str(out / "long.mp4")) as container:
        v = container.streams.video[0]
        assert v.codec_context.name == "h264" and (v.width, v.height) == (32, 24)
        assert sum(1 for _ in container.decode(v)) == FRAMES
    assert f"long.mp4 -> {out / 'long.mp4'}: H.264 (PyAV, libx264)" in stdout


def test_a_killed_run_keeps_every_finished_frame(stream, tmp_path):
    weights, video = stream
    out = tmp_path / "out"
    proc = _start(weights, video, out)
    samples = _watch(proc, out / "detections.jsonl", until_lines=FRAMES // 2)
    assert proc.poll() is None and samples[-1][0] >= FRAMES // 2  # still running, half done
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    frames = _frames(out / "detections.jsonl")
    assert FRAMES // 2 <= len(frames) < FRAMES
    assert [f["frame"] for f in frames] == list(range(len(frames)))
    assert all(len(f["detections"]) == 3 for f in frames)
    # the video: complete fragments up to the kill (a key frame every 2 s = 50 frames)
    import av
    with av.open(str(out / "long.mp4")) as container:
        decoded = sum(1 for _ in container.decode(container.streams.video[0]))
    assert len(frames) - 2 * 50 - 25 <= decoded <= len(frames)
