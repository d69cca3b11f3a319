"""Writing a video of drawn frames: H.264 in MP4 that browsers play, or mp4v without PyAV.

``open_video_writer(path, fps=..., size=(w, h))`` returns a writer with ``write(rgb_frame)``,
``close()`` and ``codec`` (for the log line). With PyAV installed (the ``video`` extra,
``pip install -e ".[video]"``) the file is H.264 (``libx264``, yuv420p) in a *fragmented* MP4:
a fragment is complete at every key frame, so a run that is killed keeps a playable video up to
its last fragment, and browsers play it as it is. Without PyAV, OpenCV writes MPEG-4 Part 2
(``mp4v``), which desktop players read but browsers do not; the caller says so in its log.
"""
from __future__ import annotations

import os
from fractions import Fraction
from typing import Protocol, Union

import cv2
import numpy as np

from .data.base import DatasetError

__all__ = ["VideoWriter", "h264_available", "open_video_writer"]

# x264 options: constant quality (crf 23, its default) at a fast preset; a key frame (and so a
# complete MP4 fragment) at least every 2 s of video
_X264 = {"crf": "23", "preset": "veryfast"}
# a fragment at every key frame, each written out as soon as it is complete
_FRAGMENTED = {"movflags": "frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"}


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
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            self._container.mux(packet)

    def close(self) -> None:
        for packet in self._stream.encode():  # flush the encoder's delayed frames
            self._container.mux(packet)
        self._container.close()


class _OpenCVWriter:
    codec = "mp4v (OpenCV; browsers do not play it: pip install -e \".[video]\" for H.264)"

    def __init__(self, path: str, fps: float, size: tuple[int, int]) -> None:
        self._writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
        if not self._writer.isOpened():
            raise DatasetError(f"cannot write video: {path}")

    def write(self, frame: np.ndarray) -> None:
        self._writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        self._writer.release()


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
