#!/usr/bin/env python
"""Detect objects in images and videos; write them drawn, plus a COCO-style results JSON.

    python tools/infer.py --config configs/quickstart.yaml --weights output/quickstart/best.pth \\
        --input photo.jpg photos/ "more/*.png" clip.mp4 --output output/infer [--score-thr 0.5]

Inputs: image files, folders (their images and videos), glob patterns and video files. Each
image is written to ``--output`` with its detections drawn (same file name), each video as
``<name>.mp4`` (mp4v). ``detections.json`` maps every written image's file name (a video
frame: ``<video name>#<frame index>``) to its detections ``[{"category_id", "category_name", "bbox":
[x, y, w, h], "score"}, ...]`` in original pixels. An input that cannot be read is reported by
name and skipped; the tool then ends with ``error: N input(s) skipped`` and exit status 2.
"""
from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path
from typing import Iterator, Optional

import cv2
import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from detection.cli import ArgumentParser, UserError, tool_main  # noqa: E402
from detection.data.coco import DatasetError, decode_image  # noqa: E402
from detection.predictor import Predictor  # noqa: E402
from detection.visualize import draw_detections  # noqa: E402

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}


def expand_inputs(paths: list[str]) -> tuple[list[Path], list[str]]:
    """Files from files, folders and globs (in order, once each), and the inputs that match
    nothing."""
    files: list[Path] = []
    missing: list[str] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found = sorted(f for f in path.iterdir()
                           if f.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
        elif path.is_file():
            found = [path]
        else:
            found = sorted(Path(f) for f in glob.glob(p) if Path(f).is_file())
        if not found:
            missing.append(f"{p}: no such file, or no image/video in it")
        files.extend(f for f in found if f not in files)
    return files, missing


def _coco_results(result: dict) -> list[dict]:
    """Detections as COCO results entries (xyxy -> xywh)."""
    return [{"category_id": int(c), "category_name": n,
             "bbox": [round(float(x1), 2), round(float(y1), 2), round(float(x2 - x1), 2),
                      round(float(y2 - y1), 2)], "score": round(float(s), 5)}
            for (x1, y1, x2, y2), s, c, n in zip(result["boxes"], result["scores"],
                                                  result["labels"], result["class_names"])]


def _out_name(path: Path, suffix: str, used: set[str]) -> str:
    """The input's file name (with ``suffix``), made unique among this run's outputs."""
    name, i = path.stem + suffix, 1
    while name in used:
        name, i = f"{path.stem}_{i}{suffix}", i + 1
    used.add(name)
    return name


def _draw(image: np.ndarray, result: dict, predictor: Predictor, thresh: float) -> np.ndarray:
    drawn = draw_detections(image, result["boxes"], result["scores"], result["labels"],
                            predictor.category_names, score_thresh=thresh)
    return cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR)


def _frames(capture: cv2.VideoCapture, batch: int) -> Iterator[list[np.ndarray]]:
    frames: list[np.ndarray] = []
    while True:
        ok, frame = capture.read()
        if ok:
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        if frames and (len(frames) == batch or not ok):
            yield frames
            frames = []
        if not ok:
            return


def run_video(path: Path, out: Path, predictor: Predictor, thresh: float, batch: int,
              results: dict) -> None:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise DatasetError(f"cannot open video: {path}")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    writer, index = None, 0
    try:
        with tqdm(total=total, desc=path.name, unit="frame", leave=False) as bar:
            for frames in _frames(capture, batch):
                if writer is None:
                    h, w = frames[0].shape[:2]
                    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                             (w, h))
                    if not writer.isOpened():
                        raise DatasetError(f"cannot write video: {out}")
                for frame, result in zip(frames, predictor(frames)):
                    writer.write(_draw(frame, result, predictor, thresh))
                    results[f"{path.name}#{index}"] = _coco_results(result)
                    index += 1
                bar.update(len(frames))
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    if index == 0:
        raise DatasetError(f"no frame could be decoded from video: {path}")


def _decoded(paths: list[Path], failed: list[str]) -> list[tuple[Path, np.ndarray]]:
    """Decode ``paths``; an unreadable one goes to ``failed`` with the reason."""
    images = []
    for path in paths:
        try:
            images.append((path, decode_image(str(path))))
        except DatasetError as e:
            failed.append(str(e))
    return images


def run(args: argparse.Namespace) -> int:
    files, failed = expand_inputs(args.input)
    missing = len(failed)
    predictor = Predictor(args.config, weights=args.weights, device=args.device,
                          score_thresh=args.score_thr, batch_size=args.batch)
    thresh = args.score_thr if args.score_thr is not None else predictor.cfg.test.vis_score_thresh
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, list] = {}
    used: set[str] = set()
    videos = [f for f in files if f.suffix.lower() in VIDEO_SUFFIXES]
    images = [f for f in files if f.suffix.lower() not in VIDEO_SUFFIXES]
    with tqdm(total=len(images), desc="images", unit="img", disable=not images) as bar:
        for start in range(0, len(images), args.batch):
            batch = _decoded(images[start:start + args.batch], failed)
            for (path, image), result in zip(batch, predictor([im for _, im in batch])):
                name = _out_name(path, path.suffix, used)  # results keyed like the files
                if not cv2.imwrite(str(out_dir / name), _draw(image, result, predictor, thresh)):
                    failed.append(f"cannot write {out_dir / name}")
                results[name] = _coco_results(result)
            bar.update(len(images[start:start + args.batch]))
    for path in videos:
        try:
            run_video(path, out_dir / _out_name(path, ".mp4", used), predictor, thresh,
                      args.batch, results)
        except (DatasetError, cv2.error) as e:
            failed.append(str(e))
    (out_dir / "detections.json").write_text(json.dumps(results, indent=1))
    done = len(files) - (len(failed) - missing)
    print(f"{done} of {len(files)} file(s) -> {out_dir} (drawn, and detections.json)")
    for message in failed:
        print(f"skipped: {message}", file=sys.stderr)
    if failed:
        raise UserError(f"{len(failed)} input(s) skipped (listed above)")
    return 0


@tool_main
def main(argv: Optional[list[str]] = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="YAML config (default: the one in the checkpoint)")
    parser.add_argument("--weights", required=True, help="checkpoint (.pth)")
    parser.add_argument("--input", nargs="+", required=True,
                        help="image / video files, folders or glob patterns")
    parser.add_argument("--output", required=True, help="folder for drawn files + json")
    parser.add_argument("--score-thr", type=float, default=None,
                        help="keep and draw detections scoring at least this (default: keep "
                             "what the model returns, draw those >= test.vis_score_thresh)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 or auto")
    parser.add_argument("--batch", type=int, default=4, help="images/frames per forward pass")
    args = parser.parse_args(argv)
    if args.batch < 1:
        parser.error("--batch must be at least 1")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
