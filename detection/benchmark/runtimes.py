"""The exported-graph runtimes of ``tools/benchmark.py`` and the hardware header.

``--backend torch,onnxruntime,openvino`` times, besides our PyTorch model (``ours``, in the
precision of ``--amp``) and torchvision's float32 twin, the exported graph in ONNX Runtime
(float32) and in OpenVINO (the precision hint of ``--amp``: bf16 where the CPU has native bf16).
Without ``--weights`` the benchmark's random weights exist only in this process, so they are
first exported to the ``--onnx`` file (default: a file in the system's temporary folder).

Each runtime's detections are compared with our float32 model's on the timed batch: ONNX
Runtime and OpenVINO ``f32`` by the export's equality rule (IoU > 0.99, score within 1e-3),
bf16 paths by the reduced-precision rule (detections above 0.3, IoU > 0.9, score within 0.05).
A file that matches less than half is an error (exported from other weights).
"""
from __future__ import annotations

import os
import platform
import tempfile
from typing import Any, Optional

import torch

from ..config import Config
from ..precision import cpu_bf16_support, resolve_precision
from .models import synthetic_batch

__all__ = ["RUNTIMES", "runtime_detectors", "agreement", "cpu_header"]

RUNTIMES = ("onnxruntime", "openvino")


def cpu_header() -> dict[str, Any]:
    """The CPU's name, torch's CPU capability and whether it has native bf16 (and how)."""
    native, what = cpu_bf16_support()
    name = platform.processor() or platform.machine()
    try:  # the model name as the kernel reports it, for the header only
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            name = next((line.split(":", 1)[1].strip() for line in f
                         if line.startswith("model name")), name)
    except OSError:
        pass
    return {"cpu": name, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "native_bf16": native, "bf16_features": what}


def _onnx_file(model: torch.nn.Module, cfg: Config, path: Optional[str],
               weights: Optional[str]) -> str:
    """The ``.onnx`` file to run: ``path`` as given with ``weights``, else the random weights
    exported to it (or to a temporary file)."""
    from ..export.exporter import export_onnx

    if weights and path:
        return path
    if weights and not path:
        raise ValueError("--backend onnxruntime / openvino with --weights needs --onnx FILE, "
                         "the file exported from those weights (tools/export.py)")
    path = path or os.path.join(tempfile.gettempdir(), "resdet_benchmark.onnx")
    k = model.roi_heads.box_predictor.num_classes
    export_onnx(model, path, cfg=cfg, classes=[{"id": i, "name": f"class {i}"}
                                              for i in range(1, k + 1)])
    return path


def runtime_detectors(model: torch.nn.Module, cfg: Config, backends: tuple[str, ...], *,
                      onnx: Optional[str], weights: Optional[str], threads: Optional[int],
                      amp: str) -> dict[str, Any]:
    """``{"onnxruntime": OnnxDetector, "openvino": OpenVINODetector}`` for those in
    ``backends``."""
    wanted = [b for b in backends if b in RUNTIMES]
    if not wanted:
        return {}
    path = _onnx_file(model, cfg, onnx, weights)
    detectors: dict[str, Any] = {}
    if "onnxruntime" in wanted:
        from ..export.runtime import OnnxDetector

        detectors["onnxruntime"] = OnnxDetector(path, threads=threads)
    if "openvino" in wanted:
        from ..export.openvino import OpenVINODetector

        detectors["openvino"] = OpenVINODetector(path, threads=threads,
                                                 amp="off" if amp in (False, True) else amp)
    return detectors


def agreement(models: dict[str, Any], precision_of: dict[str, str], *, batch: int,
              height: int, width: int) -> dict[str, dict[str, Any]]:
    """Per model other than ``torchvision``: its detections against our float32 model's on
    the timed batch (see the module docstring); ``precision_of[name]`` is ``float32`` or
    ``bf16``."""
    from ..export.runtime import REDUCED_PRECISION_MATCH, compare_detections

    images, _ = synthetic_batch(batch=batch, height=height, width=width, num_classes=1,
                                device=torch.device("cpu"))
    ours = models["ours"]
    device = next(ours.parameters()).device
    with torch.inference_mode():
        reference = [{k: v.float().cpu() for k, v in d.items()}
                     for d in ours.eval()([im.to(device) for im in images])]
    out = {}
    for name, model in models.items():
        if name == "torchvision" or (name == "ours" and precision_of[name] == "float32"):
            continue
        reduced = precision_of[name] != "float32"
        rule = REDUCED_PRECISION_MATCH if reduced else {"iou": 0.99, "score_tol": 1e-3}
        with torch.inference_mode(), _autocast(name, precision_of[name], device):
            result = model([im.to(device) if name == "ours" else im for im in images])
        stats = compare_detections(reference, [{k: v.float().cpu() if v.is_floating_point()
                                                else v.cpu() for k, v in d.items()}
                                               for d in result], **rule)
        if stats["matched"] < 0.5 and name != "ours":
            raise ValueError(f"the {name} graph matches only {100 * stats['matched']:.1f} % of "
                             "the PyTorch model's detections: export it from the same weights "
                             "(tools/export.py --weights ...)")
        out[name] = {**stats, "precision": precision_of[name],
                     "rule": "score > 0.3, IoU > 0.9, score within 0.05" if reduced
                     else "IoU > 0.99, score within 1e-3"}
    return out


def _autocast(name: str, precision: str, device: torch.device):
    if name == "ours" and precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def ours_precision(amp: Any, device: torch.device, amp_dtype: str):
    """The :class:`~detection.precision.Precision` of ``ours``: ``--amp`` alone (``True``:
    the old CUDA flag, autocast to ``solver.amp_dtype``)."""
    return resolve_precision(amp, device, cuda_dtype=amp_dtype if amp is True else None)
