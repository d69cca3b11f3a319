"""Classification data: image folders (ILSVRC-2012's layout, any class-per-folder set) and
CIFAR-10's official archives, as datasets of samples::

    {"image": uint8 Tensor (3, H, W) RGB after transforms (10-crop testing: (10, 3, H, W)),
     "label": int64 Tensor () in 0..K-1, "index": int, "file_name": str}

``dataset.classes`` is ``[{"id": label, "name": folder or class name}, ...]`` ordered by label,
the form detection checkpoints keep.

* Image folders: ``root/<class>/<image>`` (ILSVRC-2012 ``train/n01440764/*.JPEG``); classes are
  the sorted folder names unless given (a validation set takes the training set's). A flat
  folder takes a label file, one image a line: ``<file> <class name | class index>``
  (Caffe's ``val.txt``) or the Kaggle CSV ``ImageId,PredictionString`` (its first word is the
  class); a file name without extension matches the folder's file of that stem.
* CIFAR-10, binary version (``cifar-10-binary.tar.gz`` / ``cifar-10-batches-bin/``): records of
  1 label byte + 3072 pixel bytes (1024 red, 1024 green, 1024 blue, rows of 32); python version
  (``cifar-10-python.tar.gz`` / ``cifar-10-batches-py/``): Python 2 pickles of ``{"data": (N,
  3072) uint8, "labels": [...]}``, read with the restricted unpickler. Either the archive itself
  (read in place, nothing extracted) or the extracted folder, or a folder holding one of them.
"""

from __future__ import annotations

import logging
import os
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from backbones.safe_pickle import safe_load
from ..data.base import DatasetError, decode_image

__all__ = ["ArrayDataset", "ImageFolderDataset", "read_cifar10", "read_label_file"]

logger = logging.getLogger(__name__)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
CIFAR_ARCHIVES = {"bin": "cifar-10-binary.tar.gz", "py": "cifar-10-python.tar.gz"}
CIFAR_FOLDERS = {"bin": "cifar-10-batches-bin", "py": "cifar-10-batches-py"}
_CIFAR_FILES = {
    "bin": {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"],
            "meta": "batches.meta.txt"},
    "py": {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"],
           "meta": "batches.meta"},
}
Transform = Callable[[np.ndarray], np.ndarray]


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    # (H, W, 3) -> (3, H, W); 10 crops (10, H, W, 3) -> (10, 3, H, W)
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(image, -1, -3)))


def _classes(names: list[str]) -> list[dict]:
    return [{"id": i, "name": str(n)} for i, n in enumerate(names)]


class ArrayDataset(torch.utils.data.Dataset):
    """Images held in memory, ``(N, H, W, 3)`` uint8 RGB, with labels ``(N,)`` in 0..K-1.

    Workers share the arrays copy-on-write. ``indices`` selects a subset (a held-out split)."""

    def __init__(self, *, images: np.ndarray, labels: np.ndarray, class_names: list[str],
                 transforms: Transform | None, indices: np.ndarray | None = None,
                 source: str = "arrays") -> None:
        if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
            raise DatasetError(f"{source}: images must be (N, H, W, 3) uint8, got "
                               f"{images.shape} {images.dtype}")
        self.images, self.labels = images, np.asarray(labels, dtype=np.int64)
        self.indices = np.arange(len(images)) if indices is None else np.asarray(indices)
        self.classes, self.transforms, self.source = _classes(class_names), transforms, source

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        index = int(self.indices[i])
        image = self.images[index]
        if self.transforms is not None:
            image = self.transforms(image)
        return {"image": _to_tensor(image), "label": torch.tensor(self.labels[index]),
                "index": index, "file_name": f"{self.source}[{index}]"}


def read_label_file(path: str | os.PathLike, class_names: list[str]) -> list[tuple[str, int]]:
    """``[(file, label)]`` of a label file (module docstring); errors name the file and line."""
    index = {name: i for i, name in enumerate(class_names)}
    out = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        fields = line.replace(",", " ").split()
        if not fields or (number == 1 and fields[0] == "ImageId"):
            continue
        if len(fields) < 2:
            raise DatasetError(f"{path}:{number}: expected '<file> <label>', got {line!r}")
        name, label = fields[0], fields[1]
        if label in index:
            out.append((name, index[label]))
        elif label.isdigit() and int(label) < len(class_names):
            out.append((name, int(label)))
        else:
            raise DatasetError(f"{path}:{number}: label {label!r} is neither a class name "
                               f"nor an index below {len(class_names)}")
    return out


def _image_files(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder)
                  if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS))


class ImageFolderDataset(torch.utils.data.Dataset):
    """An image folder set (module docstring); decoding and transforms run in the workers.

    A missing or corrupt image raises ``DatasetError`` naming it with ``on_bad_image="error"``;
    with ``"skip"`` it is logged once and replaced by the next good image (training) or left out
    (``None``, which ``collate`` drops; evaluation).
    """

    def __init__(self, *, root: str | os.PathLike, transforms: Transform | None, train: bool,
                 class_names: list[str] | None = None, label_file: str | None = None,
                 on_bad_image: str = "skip") -> None:
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(f"image folder not found: {root}")
        files, labels = (self._from_label_file(root, label_file, class_names) if label_file
                         else self._from_folders(root, class_names))
        if not files:
            raise DatasetError(f"{root} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        self.root, self.transforms, self.train = root, transforms, train
        self.files = np.array(files)  # one numpy array: workers share it without refcounts
        self.labels = np.array(labels, dtype=np.int64)
        self.on_bad_image, self._warned = on_bad_image, set()

    def _from_folders(self, root: Path, class_names: list[str] | None):
        found = sorted(e.name for e in os.scandir(root) if e.is_dir())
        names = list(class_names) if class_names is not None else found
        extra = sorted(set(found) - set(names))
        if extra:
            raise DatasetError(f"{root} has class folders the training set lacks: {extra[:10]}")
        self.classes = _classes(names)
        files, labels = [], []
        for label, name in enumerate(names):
            if (root / name).is_dir():
                found_files = _image_files(root / name)
                files += [f"{name}/{f}" for f in found_files]
                labels += [label] * len(found_files)
        return files, labels

    def _from_label_file(self, root: Path, label_file: str, class_names: list[str] | None):
        if class_names is None:
            raise DatasetError(f"a flat folder with a label file ({label_file}) needs the class "
                               "names of the training set")
        self.classes = _classes(class_names)
        present = _image_files(root)
        by_stem = {os.path.splitext(f)[0]: f for f in present}
        files, labels = [], []
        for name, label in read_label_file(label_file, class_names):
            file = name if name in by_stem.values() else by_stem.get(name)
            if file is None:
                raise DatasetError(f"{label_file}: image {name!r} is not in {root}")
            files.append(file)
            labels.append(label)
        return files, labels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict[str, Any] | None:
        for attempt in range(10 if self.train else 1):
            index = (i + attempt) % len(self)
            path = os.path.join(self.root, str(self.files[index]))
            try:
                image = decode_image(path)
            except DatasetError as error:
                if self.on_bad_image == "error":
                    raise
                if path not in self._warned:
                    self._warned.add(path)
                    logger.warning("skipping bad image: %s", error)
                continue
            if self.transforms is not None:
                image = self.transforms(image)
            return {"image": _to_tensor(image), "label": torch.tensor(self.labels[index]),
                    "index": index, "file_name": str(self.files[index])}
        if self.train:
            raise DatasetError(f"10 bad images in a row from {self.files[i]} in {self.root}")
        return None


# ------------------------------------------------------------------------------------- CIFAR-10
def _cifar_source(path: Path) -> tuple[str, Callable[[str], bytes], str]:
    """``(kind, read(file name) -> bytes, where)`` for an archive, an extracted folder, or a
    folder holding one of them."""
    candidates = [path] if path.is_file() else [path, *(path / n for n in CIFAR_FOLDERS.values()),
                                               *(path / n for n in CIFAR_ARCHIVES.values())]
    for candidate in candidates:
        for kind, folder in CIFAR_FOLDERS.items():
            if candidate.is_dir() and (candidate / _CIFAR_FILES[kind]["test"][0]).is_file():
                return kind, _folder_reader(candidate), str(candidate)
            if candidate.is_file() and tarfile.is_tarfile(candidate):
                members = _tar_members(candidate, folder)
                if _CIFAR_FILES[kind]["test"][0] in members:
                    return kind, _member_reader(members, candidate), str(candidate)
    raise DatasetError(
        f"no CIFAR-10 data at {path}: expected {' or '.join(CIFAR_ARCHIVES.values())} (from "
        "https://www.cs.toronto.edu/~kriz/cifar.html) or its extracted folder "
        f"({' or '.join(CIFAR_FOLDERS.values())})")


def _tar_members(archive: Path, folder: str) -> dict[str, bytes]:
    """The regular files directly under ``folder/`` in ``archive``, read in one pass (a .tar.gz
    cannot seek: reading members one by one would decompress it again each time)."""
    out = {}
    with tarfile.open(archive) as tar:
        for member in tar:
            parent, _, name = member.name.rpartition("/")
            if member.isfile() and parent == folder:
                out[name] = tar.extractfile(member).read()
    return out


def _folder_reader(folder: Path) -> Callable[[str], bytes]:
    def read(name: str) -> bytes:
        if not (folder / name).is_file():
            raise DatasetError(f"{folder} has no file {name}")
        return (folder / name).read_bytes()
    return read


def _member_reader(members: dict[str, bytes], archive: Path) -> Callable[[str], bytes]:
    def read(name: str) -> bytes:
        if name not in members:
            raise DatasetError(f"{archive} has no file {name}")
        return members[name]
    return read


def _read_cifar_bin(data: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    if len(data) % 3073:
        raise DatasetError(f"{where}: {len(data)} bytes is not a whole number of 3073-byte "
                           "records (1 label + 3072 pixels)")
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3073)
    return records[:, 1:], records[:, 0].astype(np.int64)


def _read_cifar_py(data: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    batch = safe_load(data, source=where)
    if not isinstance(batch, dict) or "data" not in batch or "labels" not in batch:
        raise DatasetError(f"{where}: not a CIFAR-10 batch (a dict with 'data' and 'labels')")
    pixels = np.asarray(batch["data"])
    if pixels.dtype != np.uint8 or pixels.ndim != 2 or pixels.shape[1] != 3072:
        raise DatasetError(f"{where}: 'data' must be (N, 3072) uint8, got {pixels.shape} "
                           f"{pixels.dtype}")
    return pixels, np.asarray(batch["labels"], dtype=np.int64)


def read_cifar10(path: str | os.PathLike, *, train: bool
                 ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(images (N, 32, 32, 3) uint8 RGB, labels (N,) int64, class names)`` of the training
    batches (50000 images) or the test batch (10000) of either official version."""
    kind, read, where = _cifar_source(Path(path))
    files = _CIFAR_FILES[kind]
    parse = _read_cifar_bin if kind == "bin" else _read_cifar_py
    parts = [parse(read(name), f"{where}:{name}") for name in files["train" if train else "test"]]
    pixels = np.concatenate([p for p, _ in parts])
    labels = np.concatenate([lab for _, lab in parts])
    meta = read(files["meta"])
    if kind == "bin":
        names = [n.strip() for n in meta.decode("latin1").splitlines() if n.strip()]
    else:
        names = list(safe_load(meta, source=f"{where}:{files['meta']}")["label_names"])
    if len(pixels) != len(labels) or labels.min() < 0 or labels.max() >= len(names):
        raise DatasetError(f"{where}: {len(labels)} labels for {len(pixels)} images, labels "
                           f"must be in 0..{len(names) - 1}")
    # (N, 3072) = (N, 3 colours, 32 rows, 32 columns) -> (N, 32, 32, 3)
    images = pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels, names
