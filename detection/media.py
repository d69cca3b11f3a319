"""Where ``tools/infer.py``'s images come from and where its COCO results go.

- :func:`expand_inputs`: image and video files from files, folders and glob patterns;
- :func:`read_frames`: a capture's RGB frames in batches;
- :func:`open_capture`: a video file, a camera index (``"0"``) or a stream URL
  (``rtsp://``, ``http://``, ...) as an opened ``cv2.VideoCapture``, or one clear error;
- :func:`coco_image_ids`: ``{file name: image id}`` of a COCO json's images, for results that
  ``pycocotools.COCO.loadRes`` reads;
- :func:`coco_results`: detections as COCO results entries (``bbox`` xywh, RLE
  ``segmentation`` for masks).
"""
from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional, Union

import cv2
import numpy as np

from .data.base import DatasetError
from .data.masks import encode_masks

__all__ = ["IMAGE_SUFFIXES", "VIDEO_SUFFIXES", "expand_inputs", "read_frames", "is_live",
           "live_name", "open_capture", "coco_image_ids", "coco_results"]

OPEN_TIMEOUT_MS = 10_000  # a stream that does not answer in 10 s is reported, not waited for
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
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


def read_frames(capture: cv2.VideoCapture, batch: int, max_frames: Optional[int] = None
                ) -> Iterator[list[np.ndarray]]:
    """RGB frames in lists of ``batch``, until the source ends or ``max_frames`` are read."""
    frames: list[np.ndarray] = []
    count = 0
    while max_frames is None or count < max_frames:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        count += 1
        if len(frames) == batch:
            yield frames
            frames = []
    if frames:
        yield frames


def is_live(source: str) -> bool:
    """A camera index (digits that are not an existing file) or a URL."""
    return bool(_URL.match(source)) or (source.isdigit() and not os.path.exists(source))


def live_name(source: str) -> str:
    """``camera<i>`` for a camera index, ``stream`` for a URL: the output video's stem."""
    return f"camera{int(source)}" if source.isdigit() else "stream"


@contextmanager
def _quiet_opencv() -> Iterator[None]:
    """OpenCV's and FFmpeg's own warnings off while probing a source (the caller reports)."""
    level = cv2.utils.logging.getLogLevel()
    saved = os.environ.get("OPENCV_FFMPEG_LOGLEVEL")
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    os.environ["OPENCV_FFMPEG_LOGLEVEL"] = "-8"  # AV_LOG_QUIET
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)
        if saved is None:
            os.environ.pop("OPENCV_FFMPEG_LOGLEVEL", None)
        else:
            os.environ["OPENCV_FFMPEG_LOGLEVEL"] = saved


def open_capture(source: Union[str, os.PathLike]) -> cv2.VideoCapture:
    """An opened capture of a video file, camera index or stream URL; ``DatasetError`` naming
    the source if it cannot be opened."""
    source = os.fspath(source)
    if is_live(source) and source.isdigit():
        with _quiet_opencv():
            capture = cv2.VideoCapture(int(source))
        what = f"camera {source} (no such camera, or it is busy)"
    elif is_live(source):
        with _quiet_opencv():
            capture = cv2.VideoCapture(source, cv2.CAP_FFMPEG,
                                       [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS,
                                        cv2.CAP_PROP_READ_TIMEOUT_MSEC, OPEN_TIMEOUT_MS])
        what = f"stream {source} (unreachable, or not a video stream)"
    else:
        capture = cv2.VideoCapture(source)
        what = f"video: {source}"
    if not capture.isOpened():
        capture.release()
        raise DatasetError(f"cannot open {what}")
    return capture


def coco_image_ids(path: Union[str, os.PathLike]) -> dict[str, int]:
    """``{file name: image id}`` of the ``images`` of a COCO json (annotations or image info;
    a ``file_name`` with folders is keyed by its last part). Errors name the file."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise DatasetError(f"annotation file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: not a JSON file: {e}") from None
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise DatasetError(f'{path}: needs an "images" list (a COCO annotation or image-info '
                           "file)")
    ids: dict[str, int] = {}
    for i, image in enumerate(images):
        if not (isinstance(image, dict) and isinstance(image.get("file_name"), str)
                and type(image.get("id")) is int):  # noqa: E721 - bool is not an id
            raise DatasetError(f'{path}: image #{i} needs an integer "id" and a "file_name"')
        name = Path(image["file_name"]).name
        if name in ids:
            raise DatasetError(f"{path}: two images named {name} (ids {ids[name]} and "
                               f"{image['id']})")
        ids[name] = image["id"]
    return ids


def coco_results(result: dict[str, Any], image_id: Optional[int] = None) -> list[dict]:
    """A ``Predictor`` result as COCO results entries: ``category_id``, ``bbox`` [x, y, w, h]
    (0.01 px), ``score`` (and ``segmentation``, compressed RLE, when it has ``masks``); with
    ``image_id`` (for ``loadRes``) or ``category_name`` (for ``detections.jsonl``)."""
    rles = encode_masks(result["masks"]) if "masks" in result else None
    entries = []
    for (x1, y1, x2, y2), s, c, n in zip(result["boxes"], result["scores"], result["labels"],
                                          result["class_names"]):
        entry: dict[str, Any] = {"image_id": image_id} if image_id is not None else {}
        entry.update(category_id=int(c), bbox=[round(float(x1), 2), round(float(y1), 2),
                                               round(float(x2 - x1), 2), round(float(y2 - y1), 2)],
                     score=round(float(s), 5))
        if image_id is None:
            entry["category_name"] = n
        if rles is not None:
            entry["segmentation"] = rles[len(entries)]
        entries.append(entry)
    return entries
