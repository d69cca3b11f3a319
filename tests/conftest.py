"""Session-wide fixtures shared by every test package."""

from __future__ import annotations

import logging
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from detection.data.synthetic import SyntheticCOCO, make_synthetic_coco


@pytest.fixture(scope="module")
def one_thread():
    """One thread: these small CPU convolutions gain little from two, and two threads on cores
    shared with other jobs can be 5x slower (OpenMP waits for a descheduled thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def detection_log():
    """The messages of the ``detection`` logger during the test, as a list of strings.

    Its state is restored afterwards, so a tool run in-process (whose ``setup_logger`` would
    print to this test's captured stdout and stop propagation for later tests) leaves no trace.
    """
    logger = logging.getLogger("detection")
    saved = logger.handlers[:], logger.propagate, logger.level
    messages: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: messages.append(record.getMessage())
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    yield messages
    logger.handlers[:], logger.propagate = saved[0], saved[1]
    logger.setLevel(saved[2])


@pytest.fixture(scope="session")
def synthetic_coco(tmp_path_factory: pytest.TempPathFactory) -> SyntheticCOCO:
    """A tiny synthetic COCO set built once per session (read-only for tests: copy to modify).

    24 train / 8 val images, longer side 128 px, 5 shape classes with category ids
    1, 3, 7, 12, 20. Fields: ``root``, ``train_images``, ``train_annotations``, ``val_images``,
    ``val_annotations`` (strings).
    """
    root = tmp_path_factory.mktemp("synthetic_coco")
    return make_synthetic_coco(root, num_train=24, num_val=8, image_size=128, seed=0)


@pytest.fixture(scope="session")
def tiny_model_config():
    """``tiny_model_config()``: a fresh dict of ``model`` keys for R-18-FPN with 32 channels,
    from scratch, for 48-96 px images: a real detector that builds in a fraction of a second
    and trains a step in about 0.1 s."""
    return lambda: {"backbone": {"name": "resnet18", "weights": None, "norm": "BN", "freeze_at": 0},
            "fpn": {"out_channels": 32},
            "anchor_generator": {"sizes": [[16], [32], [64], [128], [256]],
                                 "aspect_ratios": [[1.0]]},
            "rpn": {"pre_nms_topk_train": 200, "post_nms_topk_train": 64,
                    "pre_nms_topk_test": 100, "post_nms_topk_test": 32,
                    "batch_size_per_image": 32},
            "roi_heads": {"fc_dim": 64, "batch_size_per_image": 16, "detections_per_img": 20,
                          "score_thresh": 0.0}}


def _voc_object_xml(obj: dict) -> str:
    """One ``<object>`` as the VOC devkit's files have it (tabs, this element order)."""
    xmin, ymin, xmax, ymax = obj["bbox"]
    parts = "".join(
        f"\t\t<part>\n\t\t\t<name>{name}</name>\n\t\t\t<bndbox>\n\t\t\t\t<xmin>{a}</xmin>\n"
        f"\t\t\t\t<ymin>{b}</ymin>\n\t\t\t\t<xmax>{c}</xmax>\n\t\t\t\t<ymax>{d}</ymax>\n"
        "\t\t\t</bndbox>\n\t\t</part>\n" for name, (a, b, c, d) in obj.get("parts", []))
    difficult = ("" if obj.get("difficult") is None
                 else f"\t\t<difficult>{obj['difficult']}</difficult>\n")
    return (f"\t<object>\n\t\t<name>{obj['name']}</name>\n\t\t<pose>Unspecified</pose>\n"
            f"\t\t<truncated>{obj.get('truncated', 0)}</truncated>\n{difficult}"
            f"\t\t<bndbox>\n\t\t\t<xmin>{xmin}</xmin>\n\t\t\t<ymin>{ymin}</ymin>\n"
            f"\t\t\t<xmax>{xmax}</xmax>\n\t\t\t<ymax>{ymax}</ymax>\n\t\t</bndbox>\n"
            f"{parts}\t</object>\n")


def voc_xml(name: str, width: int, height: int, objects: list[dict]) -> str:
    """An annotation file in the published VOC2007 format (``Annotations/000005.xml``)."""
    return ("<annotation>\n\t<folder>VOC2007</folder>\n"
            f"\t<filename>{name}.jpg</filename>\n"
            "\t<source>\n\t\t<database>The VOC2007 Database</database>\n"
            "\t\t<annotation>PASCAL VOC2007</annotation>\n\t\t<image>flickr</image>\n"
            "\t\t<flickrid>325991873</flickrid>\n\t</source>\n"
            "\t<owner>\n\t\t<flickrid>archintent louisville</flickrid>\n\t\t<name>?</name>\n"
            "\t</owner>\n"
            f"\t<size>\n\t\t<width>{width}</width>\n\t\t<height>{height}</height>\n"
            "\t\t<depth>3</depth>\n\t</size>\n\t<segmented>0</segmented>\n"
            + "".join(_voc_object_xml(o) for o in objects) + "</annotation>\n")


@pytest.fixture(scope="session")
def write_voc():
    """``write_voc(root, split, images, jpeg=True) -> root``: a ``VOCdevkit/VOCyyyy`` tree.

    ``images``: ``{name: (width, height, [{"name", "bbox": (xmin, ymin, xmax, ymax) 1-based,
    "difficult": 0/1 or None (tag left out), "parts": [(name, bbox)]}])}``; written in the
    published layout (``Annotations/<name>.xml``, ``ImageSets/Main/<split>.txt``,
    ``JPEGImages/<name>.jpg`` of a constant colour when ``jpeg``). Adds to an existing tree.
    """
    import cv2
    import numpy as np

    def write(root, split: str, images: dict, jpeg: bool = True):
        root = Path(root)
        for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        for name, (width, height, objects) in images.items():
            (root / "Annotations" / f"{name}.xml").write_text(
                voc_xml(name, width, height, objects))
            if jpeg:
                cv2.imwrite(str(root / "JPEGImages" / f"{name}.jpg"),
                            np.full((height, width, 3), (40, 80, 120), np.uint8))
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text(
            "".join(f"{name}\n" for name in images))
        return root

    return write


EXPORT_EXTRA = 'ONNX export needs the export extra (onnx, onnxruntime): pip install -e ".[export]"'
#: Small models of the three variants, images resized to 128..160 px.
EXPORT_VARIANTS = {
    "fpn": ["model.backbone.name=resnet18"],
    # res5 runs once per RoI: few RoIs, pooled 8 x 8 (the design's 14 x 14 costs 3x more)
    "c4": ["model.backbone.name=resnet18", "model.roi_heads.box_head=c4_res5",
           "model.rpn.post_nms_topk_test=32", "model.roi_heads.pooler_resolution=8"],
    # Detectron2's RoIAlign (aligned=True), as configs/coco/faster_rcnn_R_50_FPN_1x.yaml
    "fpn_v2": ["model.backbone.name=resnet18", "model.roi_heads.pooler_type=ROIAlignV2"],
    "vgg": ["model.backbone.name=vgg16", "model.roi_heads.box_head=vgg_fc",
            "model.roi_heads.pooler_type=ROIPool"],  # as configs/coco/faster_rcnn_VGG16_1x.yaml
    # Mask R-CNN: the FPN mask head (14x14 RoIAlign, 28x28 masks) and C4's (on res5's maps)
    "fpn_mask": ["model.backbone.name=resnet18", "model.mask_head.enabled=true",
                 "model.mask_head.conv_dim=16"],
    "c4_mask": ["model.backbone.name=resnet18", "model.roi_heads.box_head=c4_res5",
                "model.rpn.post_nms_topk_test=32", "model.roi_heads.pooler_resolution=8",
                "model.mask_head.enabled=true", "model.mask_head.conv_dim=16"],
}
_EXPORT_BASE = ["model.backbone.weights=null", "model.num_classes=10",
                "model.fpn.out_channels=32", "model.roi_heads.fc_dim=64",
                "model.rpn.pre_nms_topk_test=200", "model.rpn.post_nms_topk_test=60",
                "data.input.min_size_test=128", "data.input.max_size_test=160"]


def _tiny_exported(variant: str, folder: Path):
    """A variant with like-trained random weights (~100 detections of many classes per image),
    its checkpoint (FPN and C4) and its ONNX file."""
    import types

    import torch
    from torch import nn

    from detection.benchmark import make_like_trained
    from detection.box_heads import BoxPredictor, VGGFCHead
    from detection.build import build_model
    from detection.config import config_to_dict, load_config
    from detection.engine.checkpoint import save_checkpoint
    from detection.export.exporter import export_onnx

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = load_config(None, _EXPORT_BASE + EXPORT_VARIANTS[variant])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    if variant == "vgg":  # VGG-16's conv body and RoIPool, fc6/fc7 narrowed from 4096 to 64
        fc = nn.Sequential(nn.Flatten(), nn.Linear(512 * 7 * 7, 64), nn.ReLU(),
                           nn.Linear(64, 64), nn.ReLU())
        fc.out_channels = 64
        model.roi_heads.box_head = VGGFCHead(fc=fc)
        model.roi_heads.box_predictor = BoxPredictor(in_channels=64, num_classes=10)
    g = torch.Generator().manual_seed(1)
    calibration = [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)
                   for h, w in ((128, 160), (112, 144))]
    # C4 has few RoIs: flatter class scores let more (RoI, class) pairs pass the threshold
    make_like_trained(model.eval(), calibration, logit_std=1.0 if variant == "c4" else 2.0)
    classes = [{"id": 3 * i + 1, "name": f"thing{i}"} for i in range(1, 11)]
    weights = None
    if variant != "vgg":
        weights = folder / "model.pth"
        save_checkpoint({"model": model.state_dict(), "config": config_to_dict(cfg),
                         "classes": classes, "iteration": 0}, weights)
    onnx_path = folder / "model.onnx"
    export_onnx(model, onnx_path, cfg=cfg, classes=classes)
    torch.set_num_threads(threads)
    return types.SimpleNamespace(model=model, cfg=cfg, classes=classes, weights=weights,
                                 onnx=onnx_path)


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory):
    """``exported(variant)``, variant in ``EXPORT_VARIANTS``: ``model`` (eval), ``cfg``,
    ``classes``, ``weights`` (a checkpoint; None for the narrowed VGG) and ``onnx`` (the
    exported file), built once per session; skips when the export extra is absent."""
    pytest.importorskip("onnx", reason=EXPORT_EXTRA)
    pytest.importorskip("onnxruntime", reason=EXPORT_EXTRA)
    cache = {}

    def get(variant: str):
        if variant not in cache:
            cache[variant] = _tiny_exported(variant, tmp_path_factory.mktemp(f"onnx_{variant}"))
        return cache[variant]

    return get


def _merged(base: dict, changes: dict) -> dict:
    """``base`` with ``changes`` merged in, nested dicts key by key."""
    return {**base, **{k: _merged(base[k], v) if isinstance(v, dict) and isinstance(
        base.get(k), dict) else v for k, v in changes.items()}}


@pytest.fixture(scope="session")
def tiny_config(tiny_model_config):
    """``tiny_config(folder, data, **sections) -> folder / "tiny.yaml"``: a training config of
    R-18-FPN with 32 channels on 64 px images (a real model, a second per few iterations) on
    ``data`` (a ``SyntheticCOCO``), output in ``folder / "out"``; ``sections`` are merged into it
    key by key at every depth (``solver={"max_iter": 2}``, ``model={"roi_heads": {...}}``)."""
    import yaml

    def write(folder: Path, data: SyntheticCOCO, **sections) -> Path:
        cfg = {
            "model": tiny_model_config(),
            "data": {"train": {"images": data.train_images,
                               "annotations": data.train_annotations},
                     "test": {"images": data.val_images, "annotations": data.val_annotations},
                     "input": {"min_size_train": [56, 64], "max_size_train": 96,
                               "min_size_test": 64, "max_size_test": 96, "flip_prob": 0.5},
                     "num_workers": 0},
            "solver": {"max_iter": 4, "base_lr": 0.01, "ims_per_batch": 2, "steps": [3],
                       "warmup_iters": 2, "checkpoint_period": 2},
            "test": {"eval_period": 2, "vis_images": 2, "vis_score_thresh": 0.0},
            "output_dir": str(Path(folder) / "out"), "device": "cpu", "log_period": 1,
        }
        path = Path(folder) / "tiny.yaml"
        path.write_text(yaml.safe_dump(_merged(cfg, sections)))
        return path

    return write


class _Python2Pickler(pickle._Pickler):
    """Writes pickles as Python 2's cPickle wrote them at protocol 2 (the published MSRA ``.pkl``
    files and CIFAR-10's python batches): ``bytes`` as Python 2 ``str`` (``SHORT_BINSTRING`` /
    ``BINSTRING``, not ``_codecs.encode`` calls), numpy's functions under numpy 1's module
    names (``numpy.core.multiarray._reconstruct``)."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_bytes(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes

    def save_global(self, obj, name=None) -> None:
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())
        self.memoize(obj)


class RunsCode:
    """Pickles into a call of ``os.system(command)``: what a malicious pickle does."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        import os
        return os.system, (self.command,)


@pytest.fixture(scope="session")
def runs_code():
    """``runs_code(command)``: an object whose pickle runs ``command`` when unpickled."""
    return RunsCode


@pytest.fixture(scope="session")
def py2_pickle():
    """``py2_pickle(obj, path)``: write ``obj`` as a Python 2 pickle (see ``_Python2Pickler``);
    ``bytes`` keys and values stand for Python 2 ``str``."""
    def dump(obj, path) -> Path:
        with open(path, "wb") as f:
            _Python2Pickler(f, protocol=2).dump(obj)
        return Path(path)

    return dump


MSRA_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


def msra_blobs(depth: int, seed: int = 0, tiny: bool = False) -> dict[bytes, np.ndarray]:
    """Random blobs under the published names and shapes of MSRA's ResNet-50/101 (Python 2
    ``str`` keys, so bytes here); ``tiny``: one-element arrays, for name checks only."""
    rng = np.random.default_rng(seed)
    blobs = {}

    def conv(name, c_out, c_in, k):
        shape = (1,) if tiny else (c_out, c_in, k, k)
        blobs[f"{name}_w".encode()] = (rng.standard_normal(shape, dtype=np.float32)
                                       * np.float32((2 / (c_in * k * k)) ** 0.5))

    def affine(name, c):  # a folded BatchNorm: scale s, bias b
        n = 1 if tiny else c
        blobs[f"{name}_s".encode()] = rng.uniform(0.3, 1.0, n).astype(np.float32)
        blobs[f"{name}_b".encode()] = rng.normal(0.0, 0.1, n).astype(np.float32)

    conv("conv1", 64, 3, 7)
    affine("res_conv1_bn", 64)
    c_in = 64
    for stage, n in zip(range(2, 6), MSRA_BLOCKS[depth]):
        width = 64 * 2 ** (stage - 2)
        for i in range(n):
            prefix = f"res{stage}_{i}_branch"
            for branch, (c_out, c, k) in {"2a": (width, c_in, 1), "2b": (width, width, 3),
                                          "2c": (4 * width, width, 1)}.items():
                conv(prefix + branch, c_out, c, k)
                affine(prefix + branch + "_bn", c_out)
            if i == 0:
                conv(prefix + "1", 4 * width, c_in, 1)
                affine(prefix + "1_bn", 4 * width)
            c_in = 4 * width
    blobs[b"fc1000_w"] = rng.normal(0, 0.01, (1,) if tiny else (1000, 2048)).astype(np.float32)
    blobs[b"fc1000_b"] = np.zeros(1 if tiny else 1000, np.float32)
    blobs[b"conv1_w_momentum"] = np.zeros(1, np.float32)  # solver state: dropped
    return blobs


@pytest.fixture(scope="session")
def make_msra_blobs():
    """``make_msra_blobs(depth, seed=0, tiny=False)``: see ``msra_blobs``."""
    return msra_blobs


@pytest.fixture(scope="session")
def msra_r50_pkl(tmp_path_factory, py2_pickle):
    """``(blobs, path)``: random ResNet-50 weights written as MSRA's published ``R-50.pkl``."""
    blobs = msra_blobs(50)
    return blobs, py2_pickle(blobs, tmp_path_factory.mktemp("msra") / "R-50.pkl")


CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
               "truck"]


def _cifar_batches(per_batch: int, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{batch name: (images (n, 32, 32, 3) uint8 RGB, labels (n,))}``; each class shows as a
    brighter colour channel so that a tiny run has something to learn."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = rng.integers(0, 10, per_batch)
        images = rng.integers(0, 128, (per_batch, 32, 32, 3), dtype=np.uint8)
        images[np.arange(per_batch), :, :, labels % 3] += np.uint8(100)
        out[name] = (images, labels)
    return out


@pytest.fixture(scope="session")
def write_cifar10(py2_pickle):
    """``write_cifar10(folder, kind, archive=True, per_batch=4, seed=0) -> (path, batches)``:
    CIFAR-10 in its published layout, ``kind`` "bin" (``cifar-10-batches-bin/data_batch_1.bin``
    ...: records of 1 label byte + 1024 R + 1024 G + 1024 B bytes) or "py"
    (``cifar-10-batches-py/data_batch_1`` ...: Python 2 pickles of ``{"batch_label", "labels",
    "data" (n, 3072) uint8, "filenames"}``); ``archive``: packed as the official ``.tar.gz``.
    ``batches`` as ``_cifar_batches`` returns them."""
    import tarfile

    def write(folder, kind: str, archive: bool = True, per_batch: int = 4, seed: int = 0):
        folder = Path(folder)
        sub = folder / f"cifar-10-batches-{kind}"
        sub.mkdir(parents=True)
        batches = _cifar_batches(per_batch, seed)
        for name, (images, labels) in batches.items():
            planes = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)  # R, G, B planes
            if kind == "bin":
                records = np.concatenate([labels[:, None].astype(np.uint8), planes], axis=1)
                (sub / f"{name}.bin").write_bytes(records.tobytes())
            else:
                py2_pickle({b"batch_label": name.encode(), b"labels": labels.tolist(),
                            b"data": planes, b"filenames": [f"{i}.png".encode()
                                                             for i in range(len(images))]},
                           sub / name)
        if kind == "bin":
            (sub / "batches.meta.txt").write_text("\n".join(CIFAR_NAMES) + "\n\n")
        else:
            py2_pickle({b"label_names": [n.encode() for n in CIFAR_NAMES],
                        b"num_cases_per_batch": per_batch, b"num_vis": 3072},
                       sub / "batches.meta")
        (sub / "readme.html").write_text("<html></html>")
        if not archive:
            return sub, batches
        path = folder / f"cifar-10-{'binary' if kind == 'bin' else 'python'}.tar.gz"
        with tarfile.open(path, "w:gz") as tar:
            tar.add(sub, arcname=sub.name)
        return path, batches

    return write


@pytest.fixture(scope="session")
def write_image_folder():
    """``write_image_folder(root, classes, per_class, size=(40, 48), seed=0, ext=".JPEG")``:
    ``root/<class>/<class>_<i><ext>`` as ILSVRC-2012's ``train/``; the class shows as a colour.
    Returns ``{relative path: label}``."""
    import cv2

    def write(root, classes: list[str], per_class: int, size=(40, 48), seed: int = 0,
              ext: str = ".JPEG") -> dict[str, int]:
        rng = np.random.default_rng(seed)
        files = {}
        for label, name in enumerate(classes):
            (Path(root) / name).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                image = rng.integers(0, 100, (*size, 3), dtype=np.uint8)
                image[:, :, label % 3] += np.uint8(150)
                rel = f"{name}/{name}_{i}{ext}"
                cv2.imwrite(str(Path(root) / rel), image)
                files[rel] = label
        return files

    return write


class SmallDisk:
    """A file system of ``capacity`` bytes under ``folder``, simulated inside this process:
    what ``detection.engine.files`` writes there fails with ``ENOSPC`` once the files in the folder
    plus the bytes being written exceed it, and ``free_bytes`` reports what is left."""

    def __init__(self, folder: Path, capacity: int) -> None:
        self.folder, self.capacity = Path(folder).resolve(), capacity
        self.folder.mkdir(parents=True, exist_ok=True)

    def holds(self, path) -> bool:
        return Path(path).resolve().is_relative_to(self.folder)

    def used(self, skip=None) -> int:
        return sum(p.stat().st_size for p in self.folder.rglob("*")
                   if p.is_file() and p != skip)

    def free(self) -> int:
        return max(0, self.capacity - self.used())


@pytest.fixture
def small_disk(monkeypatch):
    """``small_disk(folder, capacity) -> SmallDisk``: see ``SmallDisk`` (a patched writer, where
    a real small file system cannot be mounted)."""
    import errno
    import os

    import detection.engine.files as files

    disks: list[SmallDisk] = []
    real_write, real_free = files._RecordingFile.write, files.free_bytes

    def write(self, data):
        path = Path(self.file.name)
        for disk in disks:
            if disk.holds(path):
                n = memoryview(data).nbytes
                if disk.used(skip=path) + self.written + n > disk.capacity:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(self, data)

    def free(folder):
        for disk in disks:
            if disk.holds(folder):
                return disk.free()
        return real_free(folder)

    monkeypatch.setattr(files._RecordingFile, "write", write)
    monkeypatch.setattr(files, "free_bytes", free)

    def make(folder, capacity: int) -> SmallDisk:
        disks.append(SmallDisk(folder, capacity))
        return disks[-1]

    return make


def _can_mount_tmpfs() -> bool:
    import shutil
    import subprocess
    import tempfile

    if shutil.which("unshare") is None:
        return False
    with tempfile.TemporaryDirectory() as folder:
        proc = subprocess.run(["unshare", "-rm", "sh", "-c",
                               f"mount -t tmpfs -o size=64k tmpfs {folder}"],
                              capture_output=True, timeout=30)
    return proc.returncode == 0


@pytest.fixture(scope="session")
def tmpfs():
    """``tmpfs(folder, size, command) -> CompletedProcess``: run the shell ``command`` with a
    real tmpfs of ``size`` (``"130m"``) mounted on ``folder``, in a private mount namespace
    (``unshare -rm``: no root needed where user namespaces are allowed; the mount vanishes with
    the command). Skips the test where that is not possible."""
    import subprocess

    if not _can_mount_tmpfs():
        pytest.skip("cannot mount a tmpfs here (unshare -rm not permitted)")

    def run(folder, size: str, command: str, **kwargs) -> subprocess.CompletedProcess:
        Path(folder).mkdir(parents=True, exist_ok=True)
        return subprocess.run(["unshare", "-rm", "sh", "-c",
                               f"mount -t tmpfs -o size={size} tmpfs {folder} && {command}"],
                              capture_output=True, text=True, timeout=300, **kwargs)

    return run
