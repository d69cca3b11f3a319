#!/usr/bin/env python
"""Detect objects in images and videos; write them drawn, plus a COCO-style results JSON.

    python tools/infer.py --config configs/quickstart.yaml --weights output/quickstart/best.pth \\
        --input photo.jpg photos/ "more/*.png" clip.mp4 --output output/infer [--score-thr 0.5]
    python tools/infer.py --onnx model.onnx --input 0 --max-frames 300 --output output/camera
    python tools/infer.py --onnx model.onnx --input datasets/coco/val2017 --output output/val \\
        --save-coco output/val/results.json --annotations instances_val2017.json

Inputs: image files, folders (their images and videos), glob patterns, video files, a camera
index (``0``) and stream URLs (``rtsp://...``, ``http://...``); ``--max-frames N`` stops each
video, camera or stream after N frames. ``--onnx model.onnx`` runs a file of
``tools/export.py`` with ONNX Runtime instead of a checkpoint. Each image is written to
``--output`` with its detections drawn (same file name), each video, camera or stream as
``<name>.mp4``, ``camera<i>.mp4``, ``stream.mp4`` (mp4v). ``detections.json`` maps every
written image's file name (a frame: ``<video name>#<frame index>``, ``camera0#<frame index>``)
to its detections ``[{"category_id", "category_name", "bbox": [x, y, w, h], "score"}, ...]`` in
original pixels. A Mask R-CNN's masks are drawn filled and translucent in the box colours, and
each entry carries its mask as ``segmentation`` (COCO's compressed RLE). ``--save-coco FILE``
also writes the images' detections as a COCO results list (``image_id``, ``category_id``,
``bbox`` xywh, ``score``, ``segmentation``; ``pycocotools.COCO.loadRes`` reads it), the image
ids looked up by file name in the ``--annotations`` json (a COCO annotation or image-info file).
An input that cannot be read is reported by name and skipped; the tool then ends with
``error: N input(s) skipped`` (exit status 2). A camera or stream that cannot be
opened stops the tool with one ``error:`` line (exit status 2).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from detection.cli import ArgumentParser, UserError, tool_main  # noqa: E402
from detection.data.coco import DatasetError, decode_image  # noqa: E402
from detection.media import (VIDEO_SUFFIXES, coco_image_ids, coco_results,  # noqa: E402
                             expand_inputs, is_live, live_name, open_capture, read_frames)
from detection.predictor import Predictor  # noqa: E402
from detection.visualize import draw_detections  # noqa: E402

def _out_name(path: Path, suffix: str, used: set[str]) -> str:
    """The input's file name (with ``suffix``), made unique among this run's outputs."""
    name, i = path.stem + suffix, 1
    while name in used:
        name, i = f"{path.stem}_{i}{suffix}", i + 1
    used.add(name)
    return name


def _draw(image: np.ndarray, result: dict, predictor: Predictor, thresh: float) -> np.ndarray:
    drawn = draw_detections(image, result["boxes"], result["scores"], result["labels"],
                            predictor.category_names, score_thresh=thresh,
                            masks=result.get("masks"))
    return cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR)


def run_video(capture: cv2.VideoCapture, name: str, out: Path, predictor: Predictor,
              thresh: float, batch: int, results: dict, max_frames: Optional[int] = None
              ) -> None:
    """Detect in every frame of an opened video file, camera or stream (at most
    ``max_frames``), write them drawn to ``out``, their detections to
    ``results["<name>#<frame>"]``; releases ``capture``."""
    fps = capture.get(cv2.CAP_PROP_FPS)
    fps = fps if 1 <= fps <= 240 else 25.0  # cameras and streams may report 0 or nonsense
    known = [t for t in (int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), max_frames) if t and t > 0]
    total = min(known) if known else None  # a camera or stream has no frame count
    writer, index = None, 0
    try:
        with tqdm(total=total, desc=name, unit="frame", leave=False) as bar:
            for frames in read_frames(capture, batch, max_frames):
                if writer is None:
                    h, w = frames[0].shape[:2]
                    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                             (w, h))
                    if not writer.isOpened():
                        raise DatasetError(f"cannot write video: {out}")
                for frame, result in zip(frames, predictor(frames)):
                    writer.write(_draw(frame, result, predictor, thresh))
                    results[f"{name}#{index}"] = coco_results(result)
                    index += 1
                bar.update(len(frames))
    except KeyboardInterrupt:  # a camera or stream runs until stopped: keep what was written
        print(f"{name}: stopped after {index} frame(s)", file=sys.stderr)
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    if index == 0:
        raise DatasetError(f"no frame could be decoded from {name}")


def _decoded(paths: list[Path], failed: list[str]) -> list[tuple[Path, np.ndarray]]:
    """Decode ``paths``; an unreadable one goes to ``failed`` with the reason."""
    images = []
    for path in paths:
        try:
            images.append((path, decode_image(str(path))))
        except DatasetError as e:
            failed.append(str(e))
    return images


def _save_coco(path: str, entries: list[dict], unknown: list[str], annotations: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(entries))
    print(f"{len(entries)} detection(s) -> {path} (COCO results)")
    if unknown:
        print(f"warning: {len(unknown)} image(s) not in {annotations}, left out of {path}: "
              f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    live = [s for s in args.input if is_live(s)]
    files, failed = expand_inputs([s for s in args.input if not is_live(s)])
    missing = len(failed)
    captures = {}
    try:
        image_ids = coco_image_ids(args.annotations) if args.save_coco else None
        predictor = Predictor(args.config, weights=args.onnx or args.weights, device=args.device,
                              score_thresh=args.score_thr, batch_size=args.batch,
                              backend="onnxruntime" if args.onnx else "torch")
        for source in live:  # before any work: a camera or stream that fails stops the tool
            captures[source] = open_capture(source)
    except BaseException:  # tool_main prints a user error as one line
        for capture in captures.values():
            capture.release()
        raise
    thresh = args.score_thr if args.score_thr is not None else predictor.cfg.test.vis_score_thresh
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, list] = {}
    coco: list[dict] = []
    unknown: list[str] = []
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
                results[name] = coco_results(result)
                if image_ids is not None and path.name in image_ids:
                    coco.extend(coco_results(result, image_ids[path.name]))
                elif image_ids is not None:
                    unknown.append(path.name)
            bar.update(len(images[start:start + args.batch]))
    for path in videos:
        try:
            run_video(open_capture(path), path.name, out_dir / _out_name(path, ".mp4", used),
                      predictor, thresh, args.batch, results, args.max_frames)
        except (DatasetError, cv2.error) as e:
            failed.append(str(e))
    for source, capture in captures.items():
        name = _out_name(Path(live_name(source)), ".mp4", used)
        try:
            run_video(capture, Path(name).stem, out_dir / name, predictor, thresh, args.batch,
                      results, args.max_frames)
        except (DatasetError, cv2.error) as e:
            failed.append(f"{source}: {e}")
    (out_dir / "detections.json").write_text(json.dumps(results, indent=1))
    done = len(files) + len(live) - (len(failed) - missing)
    print(f"{done} of {len(files) + len(live)} file(s) -> {out_dir} (drawn, and "
          "detections.json)")
    if args.save_coco:
        _save_coco(args.save_coco, coco, unknown, args.annotations)
    for message in failed:
        print(f"skipped: {message}", file=sys.stderr)
    if failed:
        raise UserError(f"{len(failed)} input(s) skipped (listed above)")
    return 0


@tool_main
def main(argv: Optional[list[str]] = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="YAML config (default: the one in the checkpoint)")
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--weights", help="checkpoint (.pth)")
    model.add_argument("--onnx", help="a file of tools/export.py, run with ONNX Runtime")
    parser.add_argument("--input", nargs="+", required=True,
                        help="image / video files, folders, glob patterns, a camera index "
                             "(0) or a stream URL (rtsp://...)")
    parser.add_argument("--output", required=True, help="folder for drawn files + json")
    parser.add_argument("--score-thr", type=float, default=None,
                        help="keep and draw detections scoring at least this (default: keep "
                             "what the model returns, draw those >= test.vis_score_thresh)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 or auto")
    parser.add_argument("--batch", type=int, default=4, help="images/frames per forward pass")
    parser.add_argument("--max-frames", type=int, help="stop each video, camera or stream "
                                                        "after this many frames")
    parser.add_argument("--save-coco", metavar="FILE",
                        help="write the images' detections as a COCO results list")
    parser.add_argument("--annotations", help="COCO json of the input images (image ids for "
                                              "--save-coco)")
    args = parser.parse_args(argv)
    if args.batch < 1 or (args.max_frames is not None and args.max_frames < 1):
        parser.error("--batch and --max-frames must be at least 1")
    if bool(args.save_coco) != bool(args.annotations):
        parser.error("--save-coco and --annotations go together (image ids come from the json)")
    if args.onnx and args.config:
        parser.error("--config is for --weights: an .onnx file carries its own config")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
