"""Speed, memory and FLOPs of a config's detector and data loader (``tools/benchmark.py``).

Tasks: ``model`` (inference), ``train`` (one training step), ``data`` (training-loader
throughput) and ``eval`` (COCO evaluation backends); see ``models.py`` and ``data.py`` for what
each number means. With ``compare_torchvision`` the model tasks time torchvision's
``FasterRCNN`` carrying the same weights side by side and report ``ratio = ours / torchvision``
(< 1: ours is faster or smaller). With ``onnx`` the inference task also times that exported
file in ONNX Runtime (CPU execution provider, the same threads) and reports
``speedup = ours / onnxruntime`` (median time) and how well its detections match ours.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional, Union

import torch

from ..build import build_model
from ..config import Config
from ..engine.runlog import peak_rss_mb
from .data import measure_loader
from .models import instance_masks, make_like_trained, measure_models, synthetic_batch
from .runtimes import RUNTIMES, agreement, cpu_header, ours_precision, runtime_detectors
from .timing import summarize, time_alternating

__all__ = ["TASKS", "run_benchmark", "format_report", "build_models", "measure_models",
           "measure_loader", "make_like_trained", "synthetic_batch", "instance_masks",
           "summarize", "time_alternating", "RUNTIMES"]

TASKS = ("model", "train", "data")
_MODEL_TASKS = {"model": "inference", "train": "train"}


def build_models(cfg: Config, *, compare_torchvision: bool, height: int, width: int,
                 device: torch.device, weights: Optional[str] = None) -> dict[str, Any]:
    """``{"ours": model, ["torchvision": twin]}`` on ``device``: a checkpoint's weights, or random
    weights made like a trained model's (``make_like_trained``)."""
    from ..convert import torchvision_twin
    from ..engine.checkpoint import load_checkpoint, load_model_weights

    m = cfg.model
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(
        m, backbone=dataclasses.replace(m.backbone, weights=None)))
    torch.manual_seed(0)
    if weights:
        ckpt = load_checkpoint(weights)
        classes = ckpt.get("classes")
        ours = build_model(cfg, num_classes=len(classes) if classes else m.num_classes)
        load_model_weights(ours, weights, ckpt)
    else:
        ours = build_model(cfg, num_classes=m.num_classes or 80)
        images, _ = synthetic_batch(batch=1, height=height, width=width, num_classes=1,
                                    device=torch.device("cpu"), seed=1)
        make_like_trained(ours, images)
    models = {"ours": ours}
    if compare_torchvision:
        models["torchvision"] = torchvision_twin(ours, min_size=min(height, width),
                                                 max_size=max(height, width))
    return {name: model.to(device) for name, model in models.items()}


def run_benchmark(cfg: Config, *, tasks: tuple[str, ...] = TASKS, device: str = "cpu",
                  amp: Union[bool, str] = False, batch: int = 2, iters: int = 10,
                  warmup: int = 2, size: Optional[int] = None, threads: Optional[int] = None,
                  compare_torchvision: bool = False, weights: Optional[str] = None,
                  config_path: Optional[str] = None, onnx: Optional[str] = None,
                  backends: tuple[str, ...] = ("torch",)) -> dict[str, Any]:
    """Measure ``tasks``; returns a JSON-ready dict (``results[task]`` per task).

    ``amp``: ``False`` / ``"off"`` float32; ``True`` autocast every PyTorch model to
    ``solver.amp_dtype`` (CUDA); ``"auto"`` / ``"bf16"`` our model (and OpenVINO's precision
    hint) as ``detection.precision`` picks, torchvision's twin staying float32.
    """
    import torchvision

    dev = torch.device(device)
    if amp is True and dev.type != "cuda":
        raise ValueError("--amp is for CUDA (solver.amp is CUDA only); on the CPU use "
                         "--amp auto or --amp bf16")
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; choose from {list(TASKS)}")
    backends = tuple(dict.fromkeys((*backends, *(["onnxruntime"] if onnx else []))))
    bad = [b for b in backends if b not in ("torch", *RUNTIMES)]
    if bad or "torch" not in backends:
        raise ValueError(f"--backend takes torch (always timed) and any of {list(RUNTIMES)}, "
                         f"got {list(backends)}")
    runtimes = [b for b in backends if b in RUNTIMES]
    if runtimes and (dev.type != "cpu" or "model" not in tasks):
        raise ValueError("--onnx / --backend onnxruntime,openvino time the exported graph "
                         "on the CPU against the inference task: use them with --task model "
                         "--device cpu")
    if threads:
        torch.set_num_threads(threads)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: pick the fastest kernels
    height = size or cfg.data.input.min_size_test
    width = int(round(height * 4 / 3))
    ours_amp = ours_precision(amp, dev, cfg.solver.amp_dtype)
    results: dict[str, Any] = {}
    model_tasks = [t for t in tasks if t in _MODEL_TASKS]
    if model_tasks:
        models = build_models(cfg, compare_torchvision=compare_torchvision, height=height,
                              width=width, device=dev, weights=weights)
        num_classes = models["ours"].roi_heads.box_predictor.num_classes
        models.update(runtime_detectors(models["ours"], cfg, backends, onnx=onnx,
                                        weights=weights, threads=threads, amp=amp))
        precision_of = {"ours": ours_amp.name, "onnxruntime": "float32",
                        "openvino": "float32" if "openvino" not in models
                        else {"f32": "float32"}.get(models["openvino"].precision, "bf16")}
        agree = agreement(models, precision_of, batch=batch, height=height, width=width) \
            if runtimes or ours_amp.enabled else {}
        # the old CUDA --amp autocasts torchvision too; --amp auto / bf16 our model only
        dtypes = {"ours": ours_amp.dtype,
                  "torchvision": ours_amp.dtype if amp is True else None}
        for task in model_tasks:
            timed = {n: m for n, m in models.items() if task == "model" or n not in RUNTIMES}
            per_model = measure_models(
                timed, task=_MODEL_TASKS[task], batch=batch, height=height, width=width,
                num_classes=num_classes, iters=iters, warmup=warmup, device=dev,
                dtypes=dtypes)
            results[task] = {"models": per_model, "ratio": _ratios(per_model),
                             "speedup": _speedups(per_model)}
            if task == "model" and agree:
                results[task]["agreement"] = agree
    if "data" in tasks:
        results["data"] = measure_loader(cfg, batch=batch, batches=max(2, iters))
    return {
        "config": config_path, "tasks": list(tasks), "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "torch": torch.__version__, "torchvision": torchvision.__version__,
        "threads": torch.get_num_threads(), "amp": ours_amp.describe(),
        "amp_dtype": ours_amp.name if ours_amp.enabled else None, **cpu_header(),
        "backends": list(backends), "batch": batch, "iters": iters, "warmup": warmup,
        "input_hw": [height, width], "weights": weights,
        "process_peak_rss_mb": peak_rss_mb(), "results": results,
    }


def _speedups(per_model: dict[str, dict[str, Any]]) -> Optional[dict[str, float]]:
    """Images/s of each model over torchvision's (> 1: faster than torchvision)."""
    if "torchvision" not in per_model:
        return None
    tv = per_model["torchvision"]["median_ms"]
    return {n: tv / m["median_ms"] for n, m in per_model.items() if n != "torchvision"}


def _ratios(per_model: dict[str, dict[str, Any]]) -> Optional[dict[str, float]]:
    if "torchvision" not in per_model:
        return None
    ours, tv = per_model["ours"], per_model["torchvision"]
    return {k: ours[k] / tv[k] for k in ours if ours[k] is not None and tv[k]}


_ROWS = (("median ms", "median_ms", "{:.1f}"), ("p90 ms", "p90_ms", "{:.1f}"),
         ("median CPU ms", "cpu_median_ms", "{:.1f}"),
         ("images/s", "images_per_s", "{:.2f}"), ("GFLOPs/image", "gflops_per_image", "{:.1f}"),
         ("achieved GFLOP/s", "achieved_gflops_per_s", "{:.1f}"),
         ("peak memory MB", "peak_memory_mb", "{:.0f}"), ("parameters (M)", "params_m", "{:.2f}"))


def _table(title: str, per_model: dict[str, dict], ratio: Optional[dict]) -> list[str]:
    names = list(per_model)
    header = [title, *names] + (["ours/torchvision"] if ratio else [])
    rows = []
    for label, key, fmt in _ROWS:
        cells = [fmt.format(v) if v is not None else "-"
                 for v in (per_model[n][key] for n in names)]
        if ratio:
            cells.append(f"{ratio[key]:.3f}" if key in ratio else "-")
        rows.append([label, *cells])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                      for i, (c, w) in enumerate(zip(r, widths))) for r in [header, *rows]]


def format_report(result: dict[str, Any]) -> str:
    """The measurements as text: one table per model task, one line for the loader."""
    h, w = result["input_hw"]
    lines = [f"{result['device_name']} ({result['device']}, {result['threads']} threads), "
             f"batch {result['batch']} x {h}x{w}, ours in {result['amp']}, "
             f"{result['iters']} timed iterations, torch {result['torch']}",
             f"CPU: {result['cpu']} ({result['cpu_capability']}; native bf16: "
             f"{'yes' if result['native_bf16'] else 'no'}, {result['bf16_features']})"]
    for task, title in (("model", "inference"), ("train", "training step")):
        if task in result["results"]:
            r = result["results"][task]
            lines += _table(title, r["models"], r["ratio"])
            if r.get("speedup"):
                lines.append("images/s over torchvision's: " + ", ".join(
                    f"{n} {v:.2f}x" for n, v in r["speedup"].items()))
            for name, a in r.get("agreement", {}).items():
                lines.append(f"{name} ({a['precision']}) matches {100 * a['matched']:.1f} % of "
                             f"our float32 model's {a['detections']} detections ({a['rule']}), "
                             f"counts within {a['max_count_diff']}")
    if "data" in result["results"]:
        d = result["results"]["data"]
        lines.append(f"data loader: {d['images_per_s']:.1f} images/s ({d['num_workers']} "
                     f"workers, batch {d['batch']}, {d['source']}); one sample in process "
                     f"{d['sample_ms_in_process']:.1f} ms")
    lines.append(f"process peak RSS {result['process_peak_rss_mb']:.0f} MB")
    return "\n".join(lines)
