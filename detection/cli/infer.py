"""Detect objects in images, videos, cameras and streams; write them drawn, and as JSON lines.

    resdet infer --weights output/quickstart/best.pth --input photo.jpg photos/ "more/*.png" \\
        clip.mp4 --output output/infer [--score-thr 0.5] [--classes circle star]
    resdet infer --onnx model.onnx --input 0 --max-frames 300 --output output/camera
    resdet infer --weights W.pth --input rtsp://host/stream --no-draw --output output/stream
    resdet infer --weights W.pth --input datasets/coco/val2017 --output output/val \\
        --save-coco output/val/results.json --annotations instances_val2017.json

Inputs: image files, folders (their images and videos), glob patterns, video files, a camera
index (0) and stream URLs (rtsp://..., http://...); --max-frames N stops each video, camera or
stream after N frames (Ctrl-C stops one too, keeping what was written). --onnx model.onnx runs
a file of `resdet export` with ONNX Runtime instead of a checkpoint (as --weights model.onnx
--backend onnxruntime); --weights model.xml --backend openvino an OpenVINO IR (or .onnx); without
--config a checkpoint's stored config is used. --amp auto (the config's test.amp by default)
runs bf16 where the CPU has native bf16 (AMX, AVX512-BF16), float32 elsewhere; --amp off forces
float32.

Written to the --output folder while the run goes on: detections.jsonl, one line per image or
frame as soon as it is done, {"source": <file name, camera0 or stream>, "frame": <index, for
videos>, "detections": [{"category_id", "category_name", "bbox": [x, y, w, h], "score"}, ...]}
in original pixels (so memory stays flat and an interrupted run keeps every finished frame; a
Mask R-CNN's entries carry their mask as "segmentation", COCO's compressed RLE); each image with
its detections drawn (same file name; masks filled and translucent in the box colours), each
video, camera or stream as <name>.mp4, camera<i>.mp4, stream.mp4: H.264 in a fragmented MP4 that
browsers play (needs PyAV: pip install -e ".[video]"; without it mp4v, said in the log).
--no-draw writes the JSON lines only; --classes keeps the detections of some classes (names or
category ids). --save-coco FILE also writes the images' detections as a COCO results list
(image_id, category_id, bbox xywh, score, segmentation; pycocotools' COCO.loadRes reads it), the
image ids looked up by file name in the --annotations json. An input that cannot be read is
reported by name and skipped; the run then ends with `error: N input(s) skipped` (exit status
2). A camera or stream that cannot be opened stops the run with one error line (exit status 2),
and so does a full disk (the line names the file, the bytes it needed and the space left).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import IO, Optional

import cv2
import numpy as np
from tqdm import tqdm

from ..data.base import DatasetError, decode_image
from ..engine.files import DiskFullError, disk_full_error, is_disk_full, write_image, write_json
from ..media import (VIDEO_SUFFIXES, coco_image_ids, coco_results, expand_inputs, is_live,
                     live_name, open_capture, read_frames)
from ..predictor import Predictor
from ..video import open_video_writer
from ..visualize import draw_detections
from .common import (ArgumentParser, UserError, add_config_options, add_option, run_config,
                     tool_main)

JSONL = "detections.jsonl"


def _out_name(path: Path, suffix: str, used: set[str]) -> str:
    """The input's file name (with ``suffix``), made unique among this run's outputs."""
    name, i = path.stem + suffix, 1
    while name in used:
        name, i = f"{path.stem}_{i}{suffix}", i + 1
    used.add(name)
    return name


def _draw(image: np.ndarray, result: dict, predictor: Predictor, thresh: float) -> np.ndarray:
    """RGB in, RGB out: ``image`` with the detections scoring at least ``thresh`` drawn."""
    return draw_detections(image, result["boxes"], result["scores"], result["labels"],
                           predictor.category_names, score_thresh=thresh,
                           masks=result.get("masks"))


def keep_classes(result: dict, ids: Optional[set[int]]) -> dict:
    """``result`` with only the detections whose category id is in ``ids`` (all: ``None``)."""
    if ids is None:
        return result
    keep = np.isin(result["labels"], sorted(ids))
    kept = {k: v[keep] for k, v in result.items() if k != "class_names"}  # masks too
    return {**kept, "class_names": [n for n, k in zip(result["class_names"], keep) if k]}


def class_ids(wanted: Optional[list[str]], classes: list[dict]) -> Optional[set[int]]:
    """Category ids of ``--classes`` (names, case-insensitive, or ids); an unknown one is an
    error listing the model's classes."""
    if not wanted:
        return None
    by_name = {c["name"].lower(): c["id"] for c in classes}
    ids = {c["id"] for c in classes}
    out = set()
    for item in wanted:
        if item.lower() in by_name:
            out.add(by_name[item.lower()])
        elif item.lstrip("-").isdigit() and int(item) in ids:
            out.add(int(item))
        else:
            names = ", ".join(c["name"] for c in classes[:20])
            raise UserError(f"--classes: the model has no class {item!r} (its classes: "
                            f"{names}{' ...' if len(classes) > 20 else ''})")
    return out


class Stream:
    """What one run writes as it goes: the JSON lines, line-buffered (one write per line)."""

    def __init__(self, out_dir: Path, predictor: Predictor, args: argparse.Namespace) -> None:
        self.out_dir, self.predictor = out_dir, predictor
        self.draw = not args.no_draw
        self.keep = class_ids(args.classes, predictor.classes)
        self.thresh = (args.score_thr if args.score_thr is not None
                       else predictor.cfg.test.vis_score_thresh)
        self.batch, self.max_frames = args.batch, args.max_frames
        self.lines: IO[str] = open(out_dir / JSONL, "w", encoding="utf-8", buffering=1)

    def detect(self, images: list[np.ndarray]) -> list[dict]:
        return [keep_classes(r, self.keep) for r in self.predictor(images)]

    def record(self, source: str, result: dict, frame: Optional[int] = None) -> None:
        entry = {"source": source, **({"frame": frame} if frame is not None else {}),
                 "detections": coco_results(result)}
        line = json.dumps(entry) + "\n"
        try:
            self.lines.write(line)
        except OSError as e:  # a full disk: one clear line (the lines before it are whole)
            if is_disk_full(e):
                raise disk_full_error(self.out_dir / JSONL, needed=len(line.encode())) from None
            raise

    def close(self) -> None:
        self.lines.close()


def run_video(capture: cv2.VideoCapture, name: str, out: Path, stream: Stream) -> None:
    """Detect in every frame of an opened video file, camera or stream (at most
    ``stream.max_frames``); each frame's detections become a JSON line as soon as they are
    known, the drawn frames a video at ``out`` (unless ``--no-draw``). Releases ``capture``."""
    fps = capture.get(cv2.CAP_PROP_FPS)
    fps = fps if 1 <= fps <= 240 else 25.0  # cameras and streams may report 0 or nonsense
    known = [t for t in (int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), stream.max_frames)
             if t and t > 0]
    total = min(known) if known else None  # a camera or stream has no frame count
    writer, index = None, 0
    try:
        with tqdm(total=total, desc=name, unit="frame", leave=False) as bar:
            for frames in read_frames(capture, stream.batch, stream.max_frames):
                if writer is None and stream.draw:
                    h, w = frames[0].shape[:2]
                    writer = open_video_writer(out, fps=fps, size=(w, h))
                    print(f"{name} -> {out}: {writer.codec}", flush=True)
                for frame, result in zip(frames, stream.detect(frames)):
                    stream.record(name, result, frame=index)
                    if writer is not None:
                        writer.write(_draw(frame, result, stream.predictor, stream.thresh))
                    index += 1
                bar.update(len(frames))
    except KeyboardInterrupt:  # a camera or stream runs until stopped: keep what was written
        print(f"{name}: stopped after {index} frame(s)", file=sys.stderr)
    finally:
        capture.release()
        if writer is not None:
            writer.close()
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
    write_json(path, entries)
    print(f"{len(entries)} detection(s) -> {path} (COCO results)")
    if unknown:
        print(f"warning: {len(unknown)} image(s) not in {annotations}, left out of {path}: "
              f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}", file=sys.stderr)


def run_images(images: list[Path], stream: Stream, image_ids: Optional[dict[str, int]],
               used: set[str], failed: list[str]) -> tuple[list[dict], list[str]]:
    """Detect in image files, batch by batch; returns the COCO results entries (with
    ``image_ids``) and the names not found in ``image_ids``."""
    coco: list[dict] = []
    unknown: list[str] = []
    with tqdm(total=len(images), desc="images", unit="img", disable=not images) as bar:
        for start in range(0, len(images), stream.batch):
            batch = _decoded(images[start:start + stream.batch], failed)
            results = stream.detect([im for _, im in batch]) if batch else []
            for (path, image), result in zip(batch, results):
                name = _out_name(path, path.suffix, used)  # results keyed like the files
                stream.record(name, result)
                if stream.draw:
                    drawn = cv2.cvtColor(_draw(image, result, stream.predictor, stream.thresh),
                                         cv2.COLOR_RGB2BGR)
                    try:  # a full disk stops the tool (DiskFullError); other errors skip it
                        write_image(stream.out_dir / name, drawn)
                    except DiskFullError:
                        raise
                    except OSError as e:
                        failed.append(f"cannot write {stream.out_dir / name}: {e}")
                if image_ids is not None and path.name in image_ids:
                    coco.extend(coco_results(result, image_ids[path.name]))
                elif image_ids is not None:
                    unknown.append(path.name)
            bar.update(len(images[start:start + stream.batch]))
    return coco, unknown


def _predictor(args: argparse.Namespace) -> Predictor:
    common = dict(device=args.device, score_thresh=args.score_thr, batch_size=args.batch,
                  backend=args.backend, amp=args.amp, threads=args.threads)
    if args.backend != "torch":
        predictor = Predictor(weights=args.onnx or args.weights, **common)
    else:
        predictor = Predictor(run_config(args.config, args.weights, args.set),
                              weights=args.weights, **common)
    print(f"backend {args.backend}: {predictor.precision}")
    return predictor


def run(args: argparse.Namespace) -> int:
    live = [s for s in args.input if is_live(s)]
    files, failed = expand_inputs([s for s in args.input if not is_live(s)])
    missing = len(failed)
    captures = {}
    try:
        image_ids = coco_image_ids(args.annotations) if args.save_coco else None
        predictor = _predictor(args)
        for source in live:  # before any work: a camera or stream that fails stops the tool
            captures[source] = open_capture(source)
    except BaseException:  # tool_main prints a user error as one line
        for capture in captures.values():
            capture.release()
        raise
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    stream = Stream(out_dir, predictor, args)
    used: set[str] = set()
    videos = [f for f in files if f.suffix.lower() in VIDEO_SUFFIXES]
    images = [f for f in files if f.suffix.lower() not in VIDEO_SUFFIXES]
    try:
        coco, unknown = run_images(images, stream, image_ids, used, failed)
        for path in videos:
            try:
                run_video(open_capture(path), path.name,
                          out_dir / _out_name(path, ".mp4", used), stream)
            except (DatasetError, cv2.error) as e:
                failed.append(str(e))
        for source, capture in captures.items():
            name = _out_name(Path(live_name(source)), ".mp4", used)
            try:
                run_video(capture, Path(name).stem, out_dir / name, stream)
            except (DatasetError, cv2.error) as e:
                failed.append(f"{source}: {e}")
    finally:
        stream.close()
    done = len(files) + len(live) - (len(failed) - missing)
    drawn = "drawn, and " if stream.draw else ""
    print(f"{done} of {len(files) + len(live)} input(s) -> {out_dir} ({drawn}{JSONL})")
    if args.save_coco:
        _save_coco(args.save_coco, coco, unknown, args.annotations)
    for message in failed:
        print(f"skipped: {message}", file=sys.stderr)
    if failed:
        raise UserError(f"{len(failed)} input(s) skipped (listed above)")
    return 0


def build_parser(prog: str | None = None) -> ArgumentParser:
    parser = ArgumentParser(prog=prog, description=__doc__)
    model = parser.add_mutually_exclusive_group(required=True)
    add_option(model, "--weights")
    model.add_argument("--onnx", metavar="FILE",
                       help="a file of resdet export, run with ONNX Runtime (the same as "
                            "--weights FILE --backend onnxruntime)")
    add_config_options(parser, required=False)
    parser.add_argument("--input", nargs="+", required=True,
                        help="image / video files, folders, glob patterns, a camera index "
                             "(0) or a stream URL (rtsp://...)")
    parser.add_argument("--output", required=True, metavar="DIR",
                        help="folder for the drawn images and videos and detections.jsonl")
    parser.add_argument("--score-thr", type=float, default=None,
                        help="keep and draw detections scoring at least this (default: keep "
                             "what the model returns, draw those >= test.vis_score_thresh)")
    add_option(parser, "--device")
    add_option(parser, "--backend")
    add_option(parser, "--amp")
    add_option(parser, "--threads")
    parser.add_argument("--batch", type=int, default=4,
                        help="images or frames per forward pass (default: 4)")
    parser.add_argument("--max-frames", type=int, help="stop each video, camera or stream "
                                                        "after this many frames")
    parser.add_argument("--classes", nargs="+", metavar="CLASS",
                        help="keep only the detections of these classes (names or category "
                             "ids; default: all)")
    parser.add_argument("--no-draw", action="store_true",
                        help="write detections.jsonl only: no drawn images or videos")
    parser.add_argument("--save-coco", metavar="FILE",
                        help="write the images' detections as a COCO results list")
    parser.add_argument("--annotations", metavar="JSON",
                        help="COCO json of the input images (image ids for --save-coco)")
    return parser


@tool_main
def main(argv: Optional[list[str]] = None, prog: str | None = None) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.batch < 1 or (args.max_frames is not None and args.max_frames < 1):
        parser.error("--batch and --max-frames must be at least 1")
    if bool(args.save_coco) != bool(args.annotations):
        parser.error("--save-coco and --annotations go together (image ids come from the json)")
    if args.onnx:
        if args.backend not in ("torch", "onnxruntime"):
            parser.error("--onnx runs ONNX Runtime: for OpenVINO use --weights FILE --backend "
                         "openvino")
        args.backend = "onnxruntime"
    if args.backend != "torch" and (args.config or args.set or args.print_config):
        parser.error("--config, --set and --print-config are for a checkpoint: an exported "
                     "file carries its own config")
    if args.print_config:
        from ..config import dump_config

        print(dump_config(run_config(args.config, args.weights, args.set)), end="")
        return 0
    return run(args)
