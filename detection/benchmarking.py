"""Speed, memory and FLOPs of a detector, optionally side by side with torchvision's.

What is measured (``run_benchmark``), on ``N`` random RGB images of ``S x round(4 S / 3)``
pixels (already at the test scale, as the data transforms leave them):

- inference latency of one batch (median and 90th percentile, ms) and throughput (images/s);
- one training step (forward, backward, SGD step) on random boxes, same statistics;
- peak memory: ``torch.cuda.max_memory_allocated`` per model and phase on CUDA, the process's
  peak resident set size (``resource.getrusage``) on the CPU;
- FLOPs per image (``torch.utils.flop_counter.FlopCounterMode``: a multiply-add counts 2) of
  inference and of a training forward + backward, and the achieved rate
  ``FLOPs per batch / median time`` (GFLOP/s);
- the training data loader's throughput (images/s with ``data.num_workers`` workers).

With ``compare_torchvision`` a torchvision ``FasterRCNN`` with the same hyperparameters gets our
model's weights (``tools/convert_torchvision.py``'s ``convert_state_dict``); the two run in the
same process, alternating call by call (which one goes first alternates too), so a slower or
busier machine affects both alike. ``ratios`` are ours / torchvision (< 1: ours is faster or
smaller). The SGD steps use ``lr = 0``: the arithmetic of a step runs, but the weights stay
equal, so both models keep seeing the same proposals.
"""
from __future__ import annotations

import copy
import dataclasses
import importlib.util
import math
import resource
import statistics
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .build import build_model
from .config import Config

__all__ = ["run_benchmark", "build_torchvision_twin", "format_table", "synthetic_batch",
           "time_alternating", "measure_data_loader"]

ROOT = Path(__file__).resolve().parents[1]
_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
MODEL_FIELDS = (
    "params_m", "inference_ms_median", "inference_ms_p90", "inference_images_per_s",
    "train_step_ms_median", "train_step_ms_p90", "train_images_per_s",
    "inference_peak_memory_mb", "train_peak_memory_mb", "inference_gflops_per_image",
    "train_gflops_per_image", "inference_achieved_gflops_per_s", "train_achieved_gflops_per_s",
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_batch(*, batch: int, height: int, width: int, num_classes: int, device: torch.device,
                    boxes_per_image: int = 8, seed: int = 0
                    ) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """``batch`` random uint8 (3, H, W) images and targets of random boxes (>= 16 px sides)."""
    g = torch.Generator().manual_seed(seed)
    images = [torch.randint(0, 256, (3, height, width), generator=g, dtype=torch.uint8)
              for _ in range(batch)]
    targets = []
    for _ in range(batch):
        xy = torch.rand(boxes_per_image, 2, generator=g) * torch.tensor([width - 17, height - 17])
        wh = 16 + torch.rand(boxes_per_image, 2, generator=g) * (
            torch.tensor([width, height]) - 17 - xy)  # x2 <= W - 1, y2 <= H - 1
        boxes = torch.cat([xy, xy + wh], dim=1)
        labels = torch.randint(1, num_classes + 1, (boxes_per_image,), generator=g)
        targets.append({"boxes": boxes.to(device), "labels": labels.to(device)})
    return [im.to(device) for im in images], targets


# ---------------------------------------------------------------------------------- torchvision
def _check_twin(cfg: Config) -> None:
    m = cfg.model
    problems = []
    if not m.backbone.name.startswith("resnet"):
        problems.append(f"model.backbone.name is {m.backbone.name!r} (need resnetXX)")
    if not m.fpn.enabled or m.roi_heads.box_head != "fpn_2fc":
        problems.append("need model.fpn.enabled: true and model.roi_heads.box_head: fpn_2fc")
    if m.backbone.norm != "FrozenBN" or m.backbone.shortcut != "B" or m.backbone.stride_in_1x1:
        problems.append("need model.backbone norm FrozenBN, shortcut B, stride_in_1x1 false")
    if m.roi_heads.pooler_type != "ROIAlign":
        problems.append("need model.roi_heads.pooler_type: ROIAlign")
    if (m.rpn.in_features != ["p2", "p3", "p4", "p5", "p6"]
            or m.roi_heads.in_features != ["p2", "p3", "p4", "p5"]):
        problems.append("need rpn.in_features p2..p6 and roi_heads.in_features p2..p5")
    if m.rpn.min_box_size != 1e-3 or not math.isclose(m.rpn.smooth_l1_beta, 1 / 9) or (
            not math.isclose(m.roi_heads.smooth_l1_beta, 1 / 9)):
        problems.append("torchvision fixes rpn.min_box_size 1e-3 and smooth_l1_beta 1/9")
    if problems:
        raise ValueError("--compare-torchvision needs an R-xx-FPN config like torchvision's "
                         "fasterrcnn_resnet50_fpn: " + "; ".join(problems))


def build_torchvision_twin(cfg: Config, *, num_classes: int, min_size: int, max_size: int
                           ) -> nn.Module:
    """torchvision's ``FasterRCNN`` with every hyperparameter of ``cfg.model`` (R-xx-FPN only).

    ``min_size``/``max_size`` set its internal resize; pass the input's sides to make it the
    identity (our model expects images already resized by the data transforms).
    """
    import torchvision
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign

    _check_twin(cfg)
    m, rpn, rh = cfg.model, cfg.model.rpn, cfg.model.roi_heads
    body = getattr(torchvision.models, m.backbone.name)(weights=None,
                                                        norm_layer=FrozenBatchNorm2d)
    backbone = _resnet_fpn_extractor(body, 5 - m.backbone.freeze_at)
    if m.fpn.out_channels != backbone.out_channels:
        raise ValueError(f"torchvision's FPN has {backbone.out_channels} channels; "
                         f"model.fpn.out_channels is {m.fpn.out_channels}")
    levels = 5
    sizes = m.anchor_generator.sizes * (levels if len(m.anchor_generator.sizes) == 1 else 1)
    ratios = m.anchor_generator.aspect_ratios * (
        levels if len(m.anchor_generator.aspect_ratios) == 1 else 1)
    c, r = backbone.out_channels, rh.pooler_resolution
    return FasterRCNN(
        backbone, min_size=min_size, max_size=max_size,
        image_mean=[v / 255 for v in m.pixel_mean], image_std=[v / 255 for v in m.pixel_std],
        rpn_anchor_generator=AnchorGenerator(tuple(tuple(s) for s in sizes),
                                             tuple(tuple(a) for a in ratios)),
        rpn_pre_nms_top_n_train=rpn.pre_nms_topk_train,
        rpn_pre_nms_top_n_test=rpn.pre_nms_topk_test,
        rpn_post_nms_top_n_train=rpn.post_nms_topk_train,
        rpn_post_nms_top_n_test=rpn.post_nms_topk_test, rpn_nms_thresh=rpn.nms_thresh,
        rpn_fg_iou_thresh=rpn.fg_iou_thresh, rpn_bg_iou_thresh=rpn.bg_iou_thresh,
        rpn_batch_size_per_image=rpn.batch_size_per_image,
        rpn_positive_fraction=rpn.positive_fraction, rpn_score_thresh=rpn.score_thresh,
        box_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], r, rh.sampling_ratio),
        box_head=TwoMLPHead(c * r * r, rh.fc_dim),
        box_predictor=FastRCNNPredictor(rh.fc_dim, num_classes + 1),
        box_score_thresh=rh.score_thresh, box_nms_thresh=rh.nms_thresh,
        box_detections_per_img=rh.detections_per_img, box_fg_iou_thresh=rh.fg_iou_thresh,
        box_bg_iou_thresh=rh.bg_iou_thresh, box_batch_size_per_image=rh.batch_size_per_image,
        box_positive_fraction=rh.positive_fraction, bbox_reg_weights=tuple(rh.box_reg_weights),
    )


def _convert_state_dict() -> Callable[[dict], dict]:
    """``convert_state_dict`` of tools/convert_torchvision.py (torchvision keys -> ours)."""
    path = ROOT / "tools" / "convert_torchvision.py"
    spec = importlib.util.spec_from_file_location("_resdet_convert_torchvision", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.convert_state_dict


# ------------------------------------------------------------------------------------- timing
class _Runner:
    """One model's inference call and training step on fixed inputs."""

    def __init__(self, model: nn.Module, images: list[torch.Tensor], targets: list[dict],
                 autocast: Callable[[], Any], scaler: Optional[torch.amp.GradScaler]) -> None:
        self.model, self.images, self.targets = model, images, targets
        self.autocast, self.scaler = autocast, scaler
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(params, lr=0.0, momentum=0.9, weight_decay=1e-4)

    def infer(self) -> Any:
        self.model.eval()
        with torch.inference_mode(), self.autocast():
            return self.model(self.images)

    def train_step(self) -> None:
        self.model.train()
        with self.autocast():
            losses = self.model(self.images, self.targets)
        loss = sum(losses.values())
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()

    def train_flops(self) -> int:
        """FLOPs of one training forward + backward (the SGD update is not counted)."""
        self.model.train()
        with FlopCounterMode(display=False) as counter:
            with self.autocast():
                losses = self.model(self.images, self.targets)
            sum(losses.values()).backward()
        self.optimizer.zero_grad(set_to_none=True)
        return counter.get_total_flops()

    def infer_flops(self) -> int:
        with FlopCounterMode(display=False) as counter:
            self.infer()
        return counter.get_total_flops()


def time_alternating(fns: dict[str, Callable[[], Any]], *, iters: int, warmup: int,
                     device: torch.device) -> dict[str, dict[str, Any]]:
    """Call each function ``warmup`` times, then ``iters`` times in turn (the order reversed
    every other round); returns per name the seconds of each call and, on CUDA, the peak
    allocated memory (MB) over its calls."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    out = {name: {"times": [], "peak_mb": 0.0 if device.type == "cuda" else None}
           for name in names}
    for i in range(iters):
        for name in (names if i % 2 == 0 else names[::-1]):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            _sync(device)
            start = time.perf_counter()
            fns[name]()
            _sync(device)
            out[name]["times"].append(time.perf_counter() - start)
            if device.type == "cuda":
                peak = torch.cuda.max_memory_allocated(device) / 2**20
                out[name]["peak_mb"] = max(out[name]["peak_mb"], peak)
    return out


def _stats(times: list[float]) -> tuple[float, float]:
    """Median and 90th percentile (nearest rank), in ms."""
    ordered = sorted(times)
    p90 = ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)]
    return 1000 * statistics.median(ordered), 1000 * p90


def _process_peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# ----------------------------------------------------------------------------------------- data
def measure_data_loader(cfg: Config, *, batch: int, size: int, batches: int) -> dict[str, Any]:
    """Images/s of the training loader (``data.num_workers`` workers) at shorter side ``size``.

    Uses ``data.train`` when its annotation file exists (or ``data.synthetic`` is enabled),
    else a small synthetic set of 480-pixel images (COCO's typical size) in the system's
    temporary folder.
    """
    import tempfile

    from .build import build_train_dataset, build_train_loader, prepare_data

    max_size = int(round(size * cfg.data.input.max_size_train / cfg.data.input.min_size_train[0]))
    cfg = dataclasses.replace(cfg, solver=dataclasses.replace(cfg.solver, ims_per_batch=batch))
    cfg.data = dataclasses.replace(cfg.data, input=dataclasses.replace(
        cfg.data.input, min_size_train=[size], max_size_train=max_size))
    source = "data.train"
    if not cfg.data.synthetic.enabled and not Path(cfg.data.train.annotations).is_file():
        source = "synthetic (data.train not found)"
        root = Path(tempfile.gettempdir()) / "resdet_benchmark_shapes"
        cfg.data = dataclasses.replace(
            cfg.data, train=dataclasses.replace(cfg.data.train, images="", annotations=""),
            synthetic=dataclasses.replace(cfg.data.synthetic, enabled=True, root=str(root),
                                          num_train=64, num_val=1, image_size=480))
    loader = build_train_loader(cfg, build_train_dataset(prepare_data(cfg)))
    it = iter(loader)
    next(it)  # starts the workers
    start, images = time.perf_counter(), 0
    for _ in range(batches):
        images += len(next(it))
    elapsed = time.perf_counter() - start
    del it, loader
    return {"images_per_s": images / elapsed, "num_workers": cfg.data.num_workers,
            "batch": batch, "batches": batches, "source": source}


# ---------------------------------------------------------------------------------------- main
def _models(cfg: Config, *, num_classes: int, compare: bool, height: int, width: int,
            device: torch.device) -> dict[str, nn.Module]:
    cfg = copy.deepcopy(cfg)
    cfg.model.backbone.weights = None  # random weights: speed does not depend on them
    torch.manual_seed(0)
    ours = build_model(cfg, num_classes=num_classes)
    models = {"ours": ours}
    if compare:
        tv = build_torchvision_twin(cfg, num_classes=num_classes, min_size=min(height, width),
                                    max_size=max(height, width))
        ours.load_state_dict(_convert_state_dict()(tv.state_dict()), strict=True)
        models["torchvision"] = tv
    return {name: m.to(device) for name, m in models.items()}


def _autocast(device: torch.device, amp: bool, dtype: torch.dtype) -> Callable[[], Any]:
    if not amp:
        return nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def _model_result(runner: _Runner, timing: dict, train_timing: dict, batch: int) -> dict:
    inf_med, inf_p90 = _stats(timing["times"])
    tr_med, tr_p90 = _stats(train_timing["times"])
    inf_flops, train_flops = runner.infer_flops(), runner.train_flops()
    return {
        "params_m": sum(p.numel() for p in runner.model.parameters()) / 1e6,
        "inference_ms_median": inf_med, "inference_ms_p90": inf_p90,
        "inference_images_per_s": 1000 * batch / inf_med,
        "train_step_ms_median": tr_med, "train_step_ms_p90": tr_p90,
        "train_images_per_s": 1000 * batch / tr_med,
        "inference_peak_memory_mb": timing["peak_mb"],
        "train_peak_memory_mb": train_timing["peak_mb"],
        "inference_gflops_per_image": inf_flops / batch / 1e9,
        "train_gflops_per_image": train_flops / batch / 1e9,
        "inference_achieved_gflops_per_s": inf_flops / 1e9 / (inf_med / 1000),
        "train_achieved_gflops_per_s": train_flops / 1e9 / (tr_med / 1000),
    }


def run_benchmark(cfg: Config, *, device: str = "cpu", amp: bool = False, batch: int = 2,
                  iters: int = 10, warmup: int = 2, size: Optional[int] = None,
                  compare_torchvision: bool = False, data_batches: Optional[int] = None,
                  config_path: Optional[str] = None) -> dict[str, Any]:
    """Measure as described in the module docstring; returns a JSON-ready dict."""
    dev = torch.device(device)
    if amp and dev.type != "cuda":
        raise ValueError("--amp is for CUDA (solver.amp is CUDA only); drop it on the CPU")
    if compare_torchvision:
        _check_twin(cfg)  # before any model is built
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: pick the fastest kernels
    height = size or cfg.data.input.min_size_test
    width = int(round(height * 4 / 3))
    num_classes = cfg.model.num_classes or 80
    models = _models(cfg, num_classes=num_classes, compare=compare_torchvision, height=height,
                     width=width, device=dev)
    images, targets = synthetic_batch(batch=batch, height=height, width=width,
                                      num_classes=num_classes, device=dev)
    dtype = _AMP_DTYPES[cfg.solver.amp_dtype]
    autocast = _autocast(dev, amp, dtype)
    runners = {}
    for name, model in models.items():
        inputs = images if name == "ours" else [im.float().div_(255) for im in images]
        scaler = torch.amp.GradScaler("cuda") if amp and dtype == torch.float16 else None
        runners[name] = _Runner(model, inputs, targets, autocast, scaler)
    infer = time_alternating({n: r.infer for n, r in runners.items()}, iters=iters,
                             warmup=warmup, device=dev)
    train = time_alternating({n: r.train_step for n, r in runners.items()}, iters=iters,
                             warmup=warmup, device=dev)
    results = {n: _model_result(r, infer[n], train[n], batch) for n, r in runners.items()}
    ratios = None
    if compare_torchvision:
        ours, tv = results["ours"], results["torchvision"]
        ratios = {k: (ours[k] / tv[k] if ours[k] is not None and tv[k] else None)
                  for k in MODEL_FIELDS}
    data = measure_data_loader(cfg, batch=batch, size=height,
                               batches=data_batches or max(2, iters))
    import torchvision
    return {
        "config": config_path, "device": str(dev),
        "device_name": (torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"),
        "torch": torch.__version__, "torchvision": torchvision.__version__,
        "threads": torch.get_num_threads(), "amp": amp,
        "amp_dtype": cfg.solver.amp_dtype if amp else None,
        "batch": batch, "iters": iters, "warmup": warmup, "input_hw": [height, width],
        "num_classes": num_classes,
        "memory": "torch.cuda.max_memory_allocated" if dev.type == "cuda" else "process RSS",
        "process_peak_rss_mb": _process_peak_rss_mb(),
        "models": results, "ratios": ratios, "data_loader": data,
    }


_ROWS = (
    ("inference ms (median)", "inference_ms_median", "{:.1f}"),
    ("inference ms (p90)", "inference_ms_p90", "{:.1f}"),
    ("inference images/s", "inference_images_per_s", "{:.2f}"),
    ("train step ms (median)", "train_step_ms_median", "{:.1f}"),
    ("train step ms (p90)", "train_step_ms_p90", "{:.1f}"),
    ("train images/s", "train_images_per_s", "{:.2f}"),
    ("inference peak memory MB", "inference_peak_memory_mb", "{:.0f}"),
    ("train peak memory MB", "train_peak_memory_mb", "{:.0f}"),
    ("inference GFLOPs/image", "inference_gflops_per_image", "{:.1f}"),
    ("train GFLOPs/image", "train_gflops_per_image", "{:.1f}"),
    ("inference achieved GFLOP/s", "inference_achieved_gflops_per_s", "{:.1f}"),
    ("train achieved GFLOP/s", "train_achieved_gflops_per_s", "{:.1f}"),
    ("parameters (M)", "params_m", "{:.2f}"),
)


def format_table(result: dict[str, Any]) -> str:
    """The measurements as a text table: one column per model (and ours/torchvision)."""
    names = list(result["models"])
    header = ["", *names] + (["ours/torchvision"] if result.get("ratios") else [])
    rows = []
    for label, key, fmt in _ROWS:
        cells = [fmt.format(v) if v is not None else "-"
                 for v in (result["models"][n][key] for n in names)]
        if result.get("ratios"):
            ratio = result["ratios"][key]
            cells.append(f"{ratio:.3f}" if ratio is not None else "-")
        rows.append([label, *cells])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(r, widths))) for r in [header, *rows]]
    h, w = result["input_hw"]
    d = result["data_loader"]
    title = (f"{result['device_name']} ({result['device']}, {result['threads']} threads), "
             f"batch {result['batch']} x {h}x{w}, amp {result['amp_dtype'] or 'off'}, "
             f"{result['iters']} timed iterations, torch {result['torch']}")
    tail = (f"data loader: {d['images_per_s']:.1f} images/s ({d['num_workers']} workers, "
            f"{d['source']}); process peak RSS {result['process_peak_rss_mb']:.0f} MB")
    return "\n".join([title, *lines, tail])
