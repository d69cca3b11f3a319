"""Writing output files: atomically, and a full disk as one clear error.

Every file a run or a tool writes (checkpoints, ``eval.json``, COCO results, drawn images,
videos, ONNX files, reports) goes through :func:`atomic_write` or :func:`atomic_path`: the bytes
go to a temporary file beside the target (``.<stem>.tmp-<pid><suffix>``), which replaces the
target (``os.replace``) only once complete. So a crash, a kill or a full disk at any point
leaves either the previous file or the new one, never a half-written one, and no temporary file
is left behind when Python can still clean up.

A full disk (``ENOSPC``, or ``EDQUOT``: the user's quota) while writing raises
:class:`DiskFullError`, an ``OSError`` whose one-line message names the file, the bytes it
needs and the bytes free on its file system::

    cannot write out/last.pth: no space left on device (it needs about 148,310,528 bytes =
    141.4 MiB; 100,663,296 bytes = 96.0 MiB are free in out)

When the size is known before writing (a payload in memory, or an estimate from the tensors of a
checkpoint), it is checked against the free space first, and nothing is written when it cannot
fit. Libraries that report a failed write only through a later exception (``torch.save``'s zip
writer raises ``RuntimeError: ... unexpected pos`` after the ``OSError``) are covered too: the
error chain and the file object's own record of failed writes are both examined.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Optional, Union

__all__ = ["DiskFullError", "atomic_path", "atomic_write", "disk_full_error", "format_size",
           "free_bytes", "is_disk_full", "temporary_name", "write_bytes", "write_image",
           "write_json", "write_text"]

PathLike = Union[str, os.PathLike]
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class DiskFullError(OSError):
    """No space left (or the quota reached) while writing ``path``; ``needed`` and ``free`` in
    bytes (``None`` where unknown). The message is one line."""

    def __init__(self, message: str, *, path: Path, needed: Optional[int],
                 free: Optional[int], note: str = "") -> None:
        super().__init__(message)
        self.path, self.needed, self.free, self.note = path, needed, free, note

    def __str__(self) -> str:
        return str(self.args[0])


def format_size(num_bytes: int) -> str:
    """``148310528`` -> ``"148,310,528 bytes = 141.4 MiB"``."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if num_bytes >= scale:
            return f"{num_bytes:,} bytes = {num_bytes / scale:.1f} {unit}"
    return f"{num_bytes:,} bytes"


def free_bytes(folder: PathLike) -> Optional[int]:
    """Bytes available to this user in the file system holding ``folder`` (None if unknown)."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` or an exception it was raised from / during is ``ENOSPC`` / ``EDQUOT``."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, DiskFullError) or (
                isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS):
            return True
        error = error.__cause__ or error.__context__
    return False


def disk_full_error(path: PathLike, *, needed: Optional[int], approximate: bool = False,
                    note: str = "") -> DiskFullError:
    """The :class:`DiskFullError` of ``path`` with the free space measured now."""
    path = Path(path)
    folder = path.parent
    free = free_bytes(folder)
    need = ("" if needed is None else
            f"it needs {'about ' if approximate else ''}{format_size(needed)}; ")
    have = "" if free is None else f"{format_size(free)} are free in {folder}"
    detail = f" ({need}{have})" if need or have else ""
    return DiskFullError(f"cannot write {path}: no space left on device{detail}{note}",
                         path=path, needed=needed, free=free, note=note)


def temporary_name(path: PathLike) -> Path:
    """``dir/.<stem>.tmp-<pid><suffix>``: hidden, this process's, the target's suffix (so
    writers that choose a format by suffix, such as OpenCV's, still see it)."""
    path = Path(path)
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. a platform without directory file descriptors
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _check_space(path: Path, size: Optional[int], approximate: bool) -> None:
    free = free_bytes(path.parent)
    if size is not None and free is not None and size > free:
        raise disk_full_error(path, needed=size, approximate=approximate)


@contextmanager
def atomic_path(path: PathLike, *, size: Optional[int] = None, approximate: bool = False,
                fsync: bool = True) -> Iterator[Path]:
    """A temporary path beside ``path`` for a writer that opens files itself (OpenCV's
    ``VideoWriter``, ``onnx.save``); it replaces ``path`` when the block ends without error and
    is removed otherwise. ``size``: the bytes it will need when known (``approximate``: an
    estimate), checked against the free space first. A full disk raises :class:`DiskFullError`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _check_space(path, size, approximate)
    tmp = temporary_name(path)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if is_disk_full(e):  # measured again now that the temporary file is gone
            note = e.note if isinstance(e, DiskFullError) else ""
            raise disk_full_error(path, needed=size, approximate=approximate,
                                  note=note) from None
        raise
    if fsync:
        _fsync_dir(path.parent)


class _RecordingFile:
    """A binary file that counts the bytes written and keeps the first ``OSError`` of a write
    (some writers, such as ``torch.save``'s, replace it by their own error)."""

    def __init__(self, file: BinaryIO) -> None:
        self.file, self.written, self.error = file, 0, None

    def write(self, data: Any) -> int:
        try:
            n = self.file.write(data)
        except OSError as e:
            self.error = self.error or e
            raise
        self.written += n
        return n

    def flush(self) -> None:
        try:
            self.file.flush()
        except OSError as e:
            self.error = self.error or e
            raise

    def fileno(self) -> int:
        return self.file.fileno()

    def __getattr__(self, name: str) -> Any:  # tell, seek, ... of the real file
        return getattr(self.file, name)


@contextmanager
def atomic_write(path: PathLike, *, size: Optional[int] = None, approximate: bool = False,
                 fsync: bool = True) -> Iterator[BinaryIO]:
    """A binary file object whose contents replace ``path`` when the block ends without error
    (module docstring). ``size``: the bytes it will need when known (``approximate``: an
    estimate, e.g. a checkpoint's tensor bytes), checked against the free space first and named
    in the error of a full disk; otherwise the error names the bytes written until it filled.
    ``fsync``: flush to the disk before the replace (and the folder after it), so that even a
    power cut leaves one whole file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _check_space(path, size, approximate)
    tmp = temporary_name(path)
    f = _RecordingFile(open(tmp, "wb"))
    try:
        yield f  # type: ignore[misc]
        f.flush()
        if fsync:
            os.fsync(f.fileno())
        f.file.close()
        os.replace(tmp, path)
    except BaseException as e:
        try:
            f.file.close()
        except OSError:
            pass
        tmp.unlink(missing_ok=True)
        if f.error is not None and f.error.errno in DISK_FULL_ERRNOS or is_disk_full(e):
            known = size is not None
            raise disk_full_error(path, needed=size if known else f.written,
                                  approximate=approximate or not known) from None
        raise
    if fsync:
        _fsync_dir(path.parent)


def write_bytes(path: PathLike, data: bytes, *, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`); returns the path."""
    with atomic_write(path, size=len(data), fsync=fsync) as f:
        f.write(data)
    return Path(path)


def write_text(path: PathLike, text: str, *, fsync: bool = True) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes(path, text.encode("utf-8"), fsync=fsync)


def write_json(path: PathLike, obj: Any, *, fsync: bool = True, **dump_kwargs: Any) -> Path:
    """``json.dumps(obj, **dump_kwargs)`` written to ``path`` atomically."""
    return write_text(path, json.dumps(obj, **dump_kwargs), fsync=fsync)


def write_image(path: PathLike, image_bgr: Any, params: tuple[int, ...] = (),
                *, fsync: bool = False) -> Path:
    """An OpenCV image (BGR) encoded by ``path``'s suffix and written atomically (not synced
    to the disk by default: drawn images are many, and cheap to redraw)."""
    import cv2

    suffix = Path(path).suffix or ".jpg"
    ok, encoded = cv2.imencode(suffix, image_bgr, list(params))
    if not ok:
        raise OSError(f"cannot encode an image as {suffix}: {path}")
    return write_bytes(path, encoded.tobytes(), fsync=fsync)
