"""Writing a video of drawn frames: H.264 in MP4 that browsers play, or mp4v without PyAV.

``open_video_writer(path, fps=..., size=(w, h))`` returns a writer with ``write(rgb_frame)``,
``close()`` and ``codec`` (for the log line). With PyAV installed (the ``video`` extra,
``pip install -e ".[video]"``) the file is H.264 (``libx264``, yuv420p) in a *fragmented* MP4:
a fragment is complete at every key frame, so a run that is killed keeps a playable video up to
its last fragment, and browsers play it as it is. Without PyAV, OpenCV writes MPEG-4 Part 2
(``mp4v``), which desktop players read but browsers do not; the caller says so in its log.

A disk that fills while a video is written: a write error of the disk is one ``DiskFullError``
(``engine/files.py``) naming the file; and as OpenCV's writer reports no failed write, each
writer checks on ``close()`` that the file is whole (:func:`mp4_complete`: its top-level boxes
fill it exactly and it has its index), so a video cut short is found there. The file is not
written atomically: a run that is stopped keeps what it wrote (fragments that play).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Protocol, Union

import cv2
import numpy as np

from .data.base import DatasetError
from .engine.files import disk_full_error, free_bytes, is_disk_full

__all__ = ["VideoWriter", "check_video", "h264_available", "mp4_complete", "open_video_writer"]

FULL_DISK_BYTES = 2**20  # a video cut short with less free than this: the disk filled up

# x264 options: constant quality (crf 23, its default) at a fast preset; a key frame (and so a
# complete MP4 fragment) at least every 2 s of video
_X264 = {"crf": "23", "preset": "veryfast"}
# a fragment at every key frame, each written out as soon as it is complete
_FRAGMENTED = {"movflags": "frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"}


def mp4_complete(path: Union[str, os.PathLike]) -> bool:
    """Whether the MP4 file at ``path`` is whole: its top-level boxes (``ftyp``, ``moov``,
    ``moof``, ``mdat``, ...) fill the file exactly and the index (``moov``) is there. Reads the
    box headers only."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        pos, index = 0, False
        while pos + 8 <= size:
            f.seek(pos)
            header = f.read(16)
            length, kind = int.from_bytes(header[:4], "big"), header[4:8]
            if length == 1:  # a 64-bit size follows the type
                length = int.from_bytes(header[8:16], "big")
            elif length == 0:  # the box runs to the end of the file
                length = size - pos
            if length < 8 or pos + length > size:
                return False
            index |= kind == b"moov"
            pos += length
    return index and pos == size


def check_video(path: Union[str, os.PathLike]) -> None:
    """Raise unless the MP4 video just written at ``path`` is whole (:func:`mp4_complete`): cut
    short with the disk (almost) full, a ``DiskFullError``; otherwise a ``DatasetError``."""
    if mp4_complete(path):
        return
    free = free_bytes(Path(path).parent)
    stops = f"the video is cut short after {os.path.getsize(path):,} bytes"
    if free is not None and free < FULL_DISK_BYTES:
        raise disk_full_error(path, needed=None, note=f"; {stops}")
    raise DatasetError(f"cannot write video: {path} ({stops})")


@contextmanager
def _disk_errors(path: str) -> Iterator[None]:
    """An ``OSError`` of a full disk while writing ``path`` as one ``DiskFullError``."""
    try:
        yield
    except OSError as e:
        if is_disk_full(e):
            raise disk_full_error(path, needed=None) from None
        raise


class VideoWriter(Protocol):
    codec: str

    def write(self, frame: np.ndarray) -> None: ...

    def close(self) -> None: ...


def h264_available() -> bool:
    """Whether PyAV with an H.264 encoder is installed."""
    try:
        import av
    except ImportError:
        return False
    return "libx264" in av.codecs_available


class _PyAVWriter:
    codec = "H.264 (PyAV, libx264)"

    def __init__(self, path: str, fps: float, size: tuple[int, int]) -> None:
        import av

        w, h = size
        self.path = path
        self._pad = (w % 2, h % 2)  # yuv420p needs even sides: one black column / row added
        self._container = av.open(path, "w", options=_FRAGMENTED)
        self._stream = self._container.add_stream(
            "libx264", rate=Fraction(fps).limit_denominator(1001), options=dict(
                _X264, g=str(max(1, round(2 * fps)))))
        self._stream.width, self._stream.height = w + self._pad[0], h + self._pad[1]
        self._stream.pix_fmt = "yuv420p"

    def write(self, frame: np.ndarray) -> None:
        import av

        if any(self._pad):
            frame = cv2.copyMakeBorder(frame, 0, self._pad[1], 0, self._pad[0],
                                       cv2.BORDER_CONSTANT, value=0)
        with _disk_errors(self.path):
            for packet in self._stream.encode(av.VideoFrame.from_ndarray(frame,
                                                                         format="rgb24")):
                self._container.mux(packet)

    def close(self) -> None:
        with _disk_errors(self.path):
            for packet in self._stream.encode():  # flush the encoder's delayed frames
                self._container.mux(packet)
            self._container.close()
        check_video(self.path)


class _OpenCVWriter:
    codec = "mp4v (OpenCV; browsers do not play it: pip install -e \".[video]\" for H.264)"

    def __init__(self, path: str, fps: float, size: tuple[int, int]) -> None:
        self.path = path
        self._writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
        if not self._writer.isOpened():
            raise DatasetError(f"cannot write video: {path}")

    def write(self, frame: np.ndarray) -> None:
        self._writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        self._writer.release()
        check_video(self.path)  # OpenCV reports no failed write: a full disk shows here


def open_video_writer(path: Union[str, os.PathLike], *, fps: float, size: tuple[int, int],
                      h264: bool | None = None) -> VideoWriter:
    """A writer of RGB ``(h, w, 3)`` uint8 frames of ``size = (w, h)`` into ``path`` (.mp4):
    H.264 when PyAV is installed (``h264=None``: whenever it is), else mp4v."""
    use_h264 = h264_available() if h264 is None else h264
    try:
        if use_h264:
            return _PyAVWriter(os.fspath(path), fps, size)
    except OSError as e:
        raise DatasetError(f"cannot write video: {path}: {e}") from None
    return _OpenCVWriter(os.fspath(path), fps, size)
