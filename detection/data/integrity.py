"""Whether an image file is whole: truncation found from the bytes already read.

A JPEG cut short (a copy interrupted, a download stopped, a full disk) still decodes in OpenCV:
libjpeg fills the missing rows with grey and only prints ``Premature end of JPEG file`` on
stderr, so the image would be trained on and evaluated as if whole. A cut PNG may decode too.
:func:`truncation` looks at the bytes a reader has already read:

- **JPEG**: the data must hold the end-of-image marker ``FF D9`` after the start of the first
  scan (``FF DA``) of the image itself. Fast path: the file ends with ``FF D9`` once trailing
  padding (``00``, ``FF``, whitespace) is left out, which only looks at its tail. Otherwise
  (data appended after the image, as some phones do, or a cut file) the marker segments are
  walked from the start: an ``APPn`` segment is skipped whole, so an EXIF thumbnail's own
  ``FF D9`` does not count, and in entropy-coded data ``FF D9`` can only be that marker.
- **PNG**: the ``IEND`` chunk must be there: at the tail (fast path), else found by walking the
  chunks by their lengths.
- **WebP**: the RIFF header's size must fit in the file.

Other formats are left to the decoder. Ultralytics' label scan checks a JPEG's last two bytes
(and re-saves the file); this check does not modify files, and tells a cut file from one that
merely carries padding or appended data.

Reusable by a data check (``resdet data check``): :func:`check_image_file` reads a file once and
returns its problem, as :func:`detection.data.base.decode_image` would report it, or ``None``.
"""
from __future__ import annotations

import os
from typing import Optional, Union

__all__ = ["truncation", "check_image_file"]

_PADDING = b"\x00\xff \t\r\n"
_TAIL = 256  # bytes looked at by the fast paths
_APP_OR_COMMENT = set(range(0xE0, 0xF0)) | {0xFE}


def truncation(data: bytes) -> Optional[str]:
    """Why the image file whose bytes are ``data`` is cut short, or ``None`` (whole, or a format
    this does not check). The reason reads ``"JPEG without its end-of-image marker FF D9; the
    file stops after 3,000 bytes"``."""
    size = len(data)
    if data.startswith(b"\xff\xd8"):
        whole = _jpeg_whole(data)
        what = "JPEG without its end-of-image marker FF D9"
    elif data.startswith(b"\x89PNG\r\n\x1a\n"):
        whole = _png_whole(data)
        what = "PNG without its IEND chunk"
    elif data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        declared = int.from_bytes(data[4:8], "little") + 8
        whole = size >= declared
        what = f"WebP of {declared:,} bytes by its header"
    else:
        return None
    return None if whole else f"{what}; the file stops after {size:,} bytes"


def _jpeg_whole(data: bytes) -> bool:
    if data[-_TAIL:].rstrip(_PADDING).endswith(b"\xff\xd9"):
        return True  # the usual case: only the tail looked at
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return True  # not a marker where one must be: damaged, the decoder will say
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
        elif marker == 0xD9:
            return True
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
        elif marker == 0xDA:  # start of scan: the image's end marker must follow somewhere
            return data.find(b"\xff\xd9", i + 2) != -1
        else:  # a segment with its length (APPn, DQT, SOFn, DHT, comment, ...): skipped whole
            i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return False  # cut inside the headers


def _png_whole(data: bytes) -> bool:
    tail = data[-_TAIL:].rstrip(b"\x00")
    if tail[-8:-4] == b"IEND":
        return True
    i, n = 8, len(data)
    while i + 12 <= n:
        end = i + 12 + int.from_bytes(data[i:i + 4], "big")  # length, type, data, CRC
        if data[i + 4:i + 8] == b"IEND":
            return end <= n
        i = end
    return False


def check_image_file(path: Union[str, os.PathLike], *, decode: bool = False) -> Optional[str]:
    """The problem of the image file at ``path`` as one line naming it (not found, unreadable,
    empty, truncated; with ``decode`` also what decoding finds), or ``None`` if it is fine.
    The file is read once; without ``decode`` nothing is decoded."""
    from .base import DatasetError, decode_image, read_image_file

    path = os.fspath(path)
    try:
        if decode:
            decode_image(path)
        else:
            read_image_file(path)
    except DatasetError as e:
        return str(e)
    return None
