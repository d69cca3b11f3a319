"""Run a trained detector on images: ``Predictor(config, weights=...)(image)``.

The path of one image is the evaluation path: the test-time resize of ``build_transforms``
(shorter side ``data.input.min_size_test``, longer side at most ``max_size_test``), the model,
and the boxes scaled back to the image's original pixels (``original_sizes``), so that::

    boxes_original = boxes_resized * (w / w', h / h', w / w', h / h')

Labels come out as the dataset's own category ids (``classes[label - 1]["id"]`` of the
checkpoint), with their names. A Mask R-CNN's masks come out pasted into the original image
(``detection.masks.paste_masks``), one bool ``(H, W)`` mask per detection.
``backend="onnxruntime"`` runs an exported ``.onnx`` file (``detection.export``) on the same
path: same resize, same outputs; ``backend="openvino"`` an ``.onnx`` or OpenVINO ``.xml`` file.
``amp`` picks the arithmetic (``detection.precision``): ``auto`` runs bf16 where the CPU has
native bf16 (PyTorch: autocast, channels-last; OpenVINO: its bf16 precision hint) and float32
elsewhere; ``off`` forces float32.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Sequence
from typing import Any, Optional, Union

import numpy as np
import torch

from .build import build_model
from .config import Config, checkpoint_config, load_config
from .data.base import decode_image
from .data.classes import label_to_category_id
from .data.transforms import build_transforms
from .engine.checkpoint import load_checkpoint, load_model_weights
from .engine.distributed import resolve_device
from .masks import paste_masks
from .precision import AMP_MODES, inference_precision

__all__ = ["Predictor", "load_trained_model", "load_exported", "BACKENDS"]

BACKENDS = ("torch", "onnxruntime", "openvino")
#: the weights files each backend runs
_SUFFIXES = {"onnxruntime": (".onnx",), "openvino": (".onnx", ".xml")}
logger = logging.getLogger("detection")

PathLike = Union[str, os.PathLike]
ImageLike = Union[np.ndarray, str, os.PathLike, Any]  # an RGB array, an image file, a PIL image


def _is_pil(image: Any) -> bool:
    return type(image).__module__.startswith("PIL.") and hasattr(image, "convert")


def _as_array(image: ImageLike) -> Any:
    """A path is decoded (RGB; a bad file is named), a PIL image converted to RGB; an array is
    returned as it is (checked by ``_check_image``)."""
    if isinstance(image, (str, os.PathLike)):
        return decode_image(os.fspath(image))
    if _is_pil(image):
        return np.asarray(image.convert("RGB"))
    return image


def _check_image(image: Any, index: int) -> None:
    """Raise a clear error unless ``image`` is an (H, W, 3) uint8 RGB array."""
    where = f"image {index}"
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{where}: expected a numpy array (H, W, 3) uint8 RGB, "
                        f"got {type(image).__name__}")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        raise ValueError(f"{where} is grayscale {tuple(image.shape)}; the model takes RGB: "
                         "convert with cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)")
    if image.ndim == 3 and image.shape[2] == 4:
        raise ValueError(f"{where} has 4 channels (RGBA); drop alpha with "
                         "cv2.cvtColor(image, cv2.COLOR_RGBA2RGB)")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{where}: expected shape (H, W, 3), got {tuple(image.shape)}")
    if image.dtype != np.uint8:
        raise TypeError(f"{where}: expected dtype uint8 (0..255), got {image.dtype}; "
                        "for floats in 0..1 use (image * 255).round().astype(np.uint8)")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{where} is empty: shape {tuple(image.shape)}")


def _resolve_config(config: Union[PathLike, Config, None], ckpt: dict, weights: PathLike
                    ) -> Config:
    if isinstance(config, Config):
        return config
    if config is not None:
        return load_config(config)
    return checkpoint_config(ckpt, weights)


def _resolve_classes(cfg: Config, ckpt: dict, weights: PathLike) -> list[dict]:
    classes = ckpt.get("classes")
    if classes is None:
        k = cfg.model.num_classes
        if k is None:
            raise ValueError(f"checkpoint {weights} has no 'classes' and the config sets no "
                             "model.num_classes")
        return [{"id": i, "name": str(i)} for i in range(1, k + 1)]
    if (not isinstance(classes, list) or not classes
            or not all(isinstance(c, dict) and {"id", "name"} <= c.keys() for c in classes)):
        raise ValueError(f"checkpoint {weights}: 'classes' must be a non-empty list of "
                         "{'id', 'name'} dicts")
    k = cfg.model.num_classes
    if k is not None and k != len(classes):
        raise ValueError(f"the config's model.num_classes is {k} but checkpoint {weights} "
                         f"holds {len(classes)} classes")
    return [{"id": int(c["id"]), "name": str(c["name"])} for c in classes]


def load_trained_model(config: Union[PathLike, Config, None], weights: PathLike, *,
                       score_thresh: Optional[float] = None
                       ) -> tuple[Config, torch.nn.Module, list[dict]]:
    """``(cfg, model, classes)`` of a checkpoint: the config (given, or the checkpoint's) with
    ``roi_heads.score_thresh`` replaced when ``score_thresh`` is given, the model in eval mode
    on the CPU with the checkpoint's weights, and its classes."""
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"weights file not found: {weights}")
    ckpt = load_checkpoint(weights)
    cfg = _resolve_config(config, ckpt, weights)
    classes = _resolve_classes(cfg, ckpt, weights)
    m = cfg.model
    if score_thresh is not None and not 0.0 <= score_thresh <= 1.0:
        raise ValueError(f"score_thresh must be in [0, 1], got {score_thresh}")
    thresh = m.roi_heads.score_thresh if score_thresh is None else float(score_thresh)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(
        m, backbone=dataclasses.replace(m.backbone, weights=None),  # all in the checkpoint
        roi_heads=dataclasses.replace(m.roi_heads, score_thresh=thresh)))
    model = build_model(cfg, num_classes=len(classes))
    load_model_weights(model, weights, ckpt)
    return cfg, model.eval(), classes


def load_exported(backend: str, weights: PathLike, *, device: str, threads: Optional[int],
                  score_thresh: Optional[float], amp: str) -> Any:
    """The runtime of an exported file: ONNX Runtime (float32) or OpenVINO (``amp``)."""
    if backend == "onnxruntime":
        from .export.runtime import OnnxDetector

        if amp == "bf16":
            raise ValueError("ONNX Runtime runs the graph in float32: use amp='auto' or 'off', "
                             "or backend='openvino' for bf16")
        return OnnxDetector(weights, device=device, threads=threads, score_thresh=score_thresh)
    from .export.openvino import OpenVINODetector

    if device not in ("cpu", "auto"):
        raise ValueError(f"the OpenVINO backend runs on the CPU, got device {device!r}")
    return OpenVINODetector(weights, threads=threads, score_thresh=score_thresh, amp=amp)


class Predictor:
    """Detections of one image or a list of images, in original pixels and category ids.

    Args:
        config: the YAML config the model was trained with (or a ``Config``); ``None`` uses
            the config stored in the checkpoint (and must be ``None`` with
            ``backend="onnxruntime"`` / ``"openvino"``: the exported file holds its config).
        weights: a checkpoint of ``tools/train.py`` (``last.pth``, ``best.pth``) or of
            ``tools/convert_torchvision.py``, read with ``torch.load(weights_only=True)``;
            with ``backend="onnxruntime"``, a file of ``tools/export.py`` (``model.onnx``); with
            ``backend="openvino"``, ``model.onnx`` or ``model.xml`` (``--format openvino``).
        device: ``"auto"`` (a GPU when there is one, else the CPU), ``"cpu"``, ``"cuda"`` or
            ``"cuda:1"``.
        score_thresh: keep detections scoring at least this (default: the config's
            ``model.roi_heads.score_thresh``, or the one the ``.onnx`` file was exported with).
        batch_size: images per forward pass when given a list.
        backend: ``"torch"`` (the PyTorch model), ``"onnxruntime"`` (needs the ``export``
            extra) or ``"openvino"`` (the ``openvino`` extra); all return the same dicts.
        threads: the CPU threads of torch, ONNX Runtime or OpenVINO (default: one per core).
        amp: ``"auto"`` (bf16 on a CPU with native bf16, else float32; on CUDA as the
            config's ``solver.amp``), ``"off"`` (float32) or ``"bf16"``; default: the config's
            ``test.amp`` (``auto`` for an exported file). ONNX Runtime runs float32 whatever it
            says. ``self.precision`` says what was chosen and why.

    Calling it with an (H, W, 3) uint8 RGB array, an image file path or a PIL image returns
    ``{"boxes": float32 (D, 4) xyxy, "scores": float32 (D,), "labels": int64 (D,) category
    ids, "class_names": list[str]}`` (and, for a model with a mask head, ``"masks": bool (D, H,
    W)`` in the image's pixels); with a list of them, a list of such dicts.
    """

    def __init__(self, config: Union[PathLike, Config, None] = None, *, weights: PathLike,
                 device: str = "auto", score_thresh: Optional[float] = None,
                 batch_size: int = 4, backend: str = "torch",
                 threads: Optional[int] = None, amp: Optional[str] = None) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if amp is not None and amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}, got {amp!r}")
        exported = str(weights).lower().endswith((".onnx", ".xml"))
        if exported != (backend != "torch") or (
                exported and not str(weights).lower().endswith(_SUFFIXES[backend])):
            raise ValueError(f"weights {weights}: an .onnx file runs with backend='onnxruntime' "
                             "or 'openvino', an .xml file with 'openvino', a checkpoint (.pth) "
                             "with 'torch'")
        self.autocast = contextlib.nullcontext
        if backend != "torch":
            if config is not None:
                raise ValueError(f"{weights} carries its own config: pass config=None")
            self.model = load_exported(backend, weights, device=device, threads=threads,
                                       score_thresh=score_thresh, amp=amp or "auto")
            self.precision = self.model.describe()
            self.cfg, self.classes = self.model.cfg, self.model.classes
            self.device = torch.device("cpu")  # inputs go to the runtime as numpy arrays
            min_size, max_size = self.model.min_size, self.model.max_size
        else:
            self.cfg, model, self.classes = load_trained_model(config, weights,
                                                               score_thresh=score_thresh)
            self.device = resolve_device(device)
            if threads:
                torch.set_num_threads(threads)
            amp_ = inference_precision(self.cfg.test.amp if amp is None else amp, self.device,
                                       solver_amp=self.cfg.solver.amp,
                                       amp_dtype=self.cfg.solver.amp_dtype)
            self.model = amp_.prepare(model.to(self.device))
            self.autocast, self.precision = amp_.autocast, amp_.describe()
            min_size, max_size = (self.cfg.data.input.min_size_test,
                                  self.cfg.data.input.max_size_test)
        logger.info("Predictor (%s): %s", backend, self.precision)
        self.backend = backend
        self.transforms = build_transforms(train=False, min_size=min_size, max_size=max_size)
        self.batch_size = max(1, int(batch_size))
        self._names = np.array([c["name"] for c in self.classes], dtype=object)

    @property
    def category_names(self) -> dict[int, str]:
        """``{category id: name}``, e.g. for ``draw_detections``."""
        return {c["id"]: c["name"] for c in self.classes}

    def __call__(self, images: Union[ImageLike, Sequence[ImageLike]]
                 ) -> Union[dict[str, Any], list[dict[str, Any]]]:
        single = isinstance(images, (str, os.PathLike)) or _is_pil(images) or (
            isinstance(images, np.ndarray) and images.ndim != 4)
        batch = [_as_array(image) for image in ([images] if single else images)]
        for i, image in enumerate(batch):
            _check_image(image, i)
        results: list[dict[str, Any]] = []
        for start in range(0, len(batch), self.batch_size):
            results.extend(self._predict(batch[start:start + self.batch_size]))
        return results[0] if single else results

    def _prepare(self, image: np.ndarray) -> torch.Tensor:
        empty = np.zeros((0, 4), np.float32)
        resized, _, _ = self.transforms(image, empty, np.zeros(0, np.int64))
        # (H', W', 3) uint8 -> (3, H', W'); the model normalises and pads
        return torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1)

    @torch.inference_mode()
    def _predict(self, images: list[np.ndarray]) -> list[dict[str, Any]]:
        tensors = [self._prepare(img).to(self.device, non_blocking=True) for img in images]
        sizes = [(int(img.shape[0]), int(img.shape[1])) for img in images]
        with self.autocast():
            outputs = self.model(tensors, original_sizes=sizes)
        results = []
        for out, size in zip(outputs, sizes):
            labels = out["labels"].cpu()
            results.append({
                "boxes": out["boxes"].float().cpu().numpy(),
                "scores": out["scores"].float().cpu().numpy(),
                "labels": label_to_category_id(self.classes, labels).numpy(),
                "class_names": self._names[(labels - 1).numpy()].tolist(),
            })
            if "masks" in out:
                results[-1]["masks"] = paste_masks(out["masks"].float().cpu(),
                                                   out["boxes"].float().cpu(), size).numpy()
        return results
