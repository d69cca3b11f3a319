"""The model tasks of ``tools/benchmark.py``: inference and a training step, side by side.

Inputs are ``N`` random RGB images of ``S x round(4 S / 3)`` pixels (already at the test scale, as
the data transforms leave them) and, for training, random boxes. Per model and task: median,
90th percentile and minimum time, the median CPU time of the process (see ``timing.py``),
images/s, FLOPs per image (``torch.utils.flop_counter.FlopCounterMode``: a multiply-add counts
2) and the achieved rate ``FLOPs per batch / median time``, and the peak allocated memory on
CUDA.

Without ``weights`` the model gets random weights made to behave like a trained model's where it
matters for speed: FrozenBN statistics away from the identity and a classifier whose scores are
peaky, so that a few thousand (RoI, class) pairs pass ``score_thresh`` and post-processing and NMS
do their real work (an untrained classifier scores every class ~1/K, below the threshold); a mask
head's predictor gives masks with shape (logits of a few units around 0).

With ``compare_torchvision`` torchvision's ``FasterRCNN`` (``MaskRCNN`` for a model with a mask
head: training then reads an ellipse mask inside each random box) with the same weights and
hyperparameters (``detection.convert.torchvision_twin``) runs in the same process, alternating
call by call; torchvision gets float images in 0..1, ours uint8 in 0..255. The SGD steps use
``lr = 0``: the arithmetic of a step runs, but the weights stay equal, so both models keep seeing
the same proposals.
"""
from __future__ import annotations

import statistics
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count, flop_registry, \
    register_flop_formula
from torchvision.ops import FrozenBatchNorm2d

from ..data.masks import encode_masks, rle_counts_from_string
from ..masks import InstanceMasks
from .timing import summarize, time_alternating

__all__ = ["synthetic_batch", "make_like_trained", "measure_models"]

_FUSED_CONV = getattr(getattr(torch.ops, "mkldnn", None), "_convolution_pointwise", None)
if _FUSED_CONV is not None and _FUSED_CONV not in flop_registry:
    # the one-call convolution of a prepared model (backbones.layers.conv_norm): the FLOPs of
    # its convolution, which FlopCounterMode does not know (the ReLU and sum count 0, as for
    # aten's ops). ``.default`` takes (X, W, ...) and 9 arguments after X, ``.binary``
    # (X, other, W, ...) and 12.
    @register_flop_formula(_FUSED_CONV)
    def _fused_conv_flop(x_shape, *args, out_shape=None, **kwargs) -> int:
        return conv_flop_count(x_shape, args[1] if len(args) == 12 else args[0], out_shape)


def synthetic_batch(*, batch: int, height: int, width: int, num_classes: int, device: torch.device,
                    boxes_per_image: int = 8, seed: int = 0, masks: bool = False
                    ) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """``batch`` random uint8 (3, H, W) images and targets of random boxes (>= 16 px sides);
    ``masks``: each object's mask too, the ellipse inscribed in its box, as torchvision takes
    it (uint8 (n, H, W); ``instance_masks`` turns it into ours)."""
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
        if masks:
            targets[-1]["masks"] = _ellipses(boxes, height, width).to(device)
    return [im.to(device) for im in images], targets


def _ellipses(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 (n, H, W): the ellipse inscribed in each box (n, 4), at the pixel centres."""
    ys = torch.arange(height, dtype=torch.float32) + 0.5
    xs = torch.arange(width, dtype=torch.float32) + 0.5
    centre, half = (boxes[:, :2] + boxes[:, 2:]) / 2, (boxes[:, 2:] - boxes[:, :2]) / 2
    dx = (xs[None, None, :] - centre[:, None, None, 0]) / half[:, None, None, 0]  # (n, 1, W)
    dy = (ys[None, :, None] - centre[:, None, None, 1]) / half[:, None, None, 1]  # (n, H, 1)
    return (dx ** 2 + dy ** 2 <= 1).to(torch.uint8)


def instance_masks(bitmaps: torch.Tensor) -> InstanceMasks:
    """uint8 (n, H, W) masks as our compact ``InstanceMasks`` (via their RLE)."""
    counts = [rle_counts_from_string(r["counts"]) for r in encode_masks(bitmaps.cpu().bool())]
    return InstanceMasks(counts, tuple(bitmaps.shape[-2:]), device=bitmaps.device)


@torch.no_grad()
def make_like_trained(model: nn.Module, images: list[torch.Tensor], *, logit_std: float = 2.0,
                      seed: int = 0) -> nn.Module:
    """Random FrozenBN statistics (as a trained backbone's), then a classifier calibrated on
    ``images`` so that its logits vary by ``logit_std`` around 0 over the RoIs: peaky softmax
    scores over several classes, neither uniform (nothing passes ``score_thresh``) nor
    saturated (one class everywhere). In place; returns ``model``."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, FrozenBatchNorm2d):
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 1.5 + 0.5)
            m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5 + 0.5)
    was_training = model.training
    model.eval()
    batch, sizes = model.preprocess(images)
    features = model.backbone(batch)
    proposals, _ = model.rpn(features, sizes, batch.shape[-2:])
    heads = model.roi_heads
    x = heads.box_head(heads.pooler([features[f] for f in heads.in_features], proposals))
    x = x.double()  # (R, D)
    cls_score = heads.box_predictor.cls_score
    weight = torch.randn(cls_score.weight.shape, generator=g, dtype=torch.float64)
    weight *= logit_std / (float(x.std(0).mean()) * x.shape[1] ** 0.5 + 1e-12)
    cls_score.weight.copy_(weight)
    cls_score.bias.copy_(-(weight @ x.mean(0)))
    if heads.mask_head is not None:
        _calibrate_mask_head(model, images, logit_std=2.0 * logit_std, generator=g)
    model.train(was_training)
    return model


def _calibrate_mask_head(model: nn.Module, images: list[torch.Tensor], *, logit_std: float,
                         generator: torch.Generator) -> None:
    """Mask logits varying by ``logit_std`` around 0 over the detections' mask features: masks
    with shape, few cells near the 0.5 threshold (random weights give ~0.5 everywhere)."""
    heads = model.roi_heads
    detections = model(images)
    boxes = [d["boxes"] for d in detections]
    maps = [model.backbone(model.preprocess(images)[0])[f] for f in heads.in_features]
    pooled = heads.mask_pooler(maps, boxes) if heads.mask_pooler is not None else (
        heads.box_head.features(heads.pooler(maps, boxes)))
    x = heads.mask_head.features(pooled).double()  # (D, C, M, M)
    x = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])  # (D, C, M, M) -> (D*M*M, C)
    logits = heads.mask_head.mask_fcn_logits
    weight = torch.randn(logits.weight.shape[:2], generator=generator, dtype=torch.float64)
    weight *= logit_std / (float(x.std(0).mean()) * x.shape[1] ** 0.5 + 1e-12)
    logits.weight.copy_(weight[:, :, None, None])
    logits.bias.copy_(-(weight @ x.mean(0)))


class _Runner:
    """One model's inference call and training step on fixed inputs."""

    def __init__(self, model: nn.Module, images: list[torch.Tensor], targets: list[dict],
                 autocast: Callable[[], Any], scaler: torch.amp.GradScaler | None) -> None:
        self.model, self.images, self.targets = model, images, targets
        self.autocast, self.scaler = autocast, scaler
        params = [p for p in getattr(model, "parameters", list)() if p.requires_grad]
        self.optimizer = torch.optim.SGD(params, lr=0.0, momentum=0.9, weight_decay=1e-4
                                         ) if params else None  # None: an ONNX Runtime session

    def inference(self) -> Any:
        if isinstance(self.model, nn.Module):  # not an ONNX Runtime session
            self.model.eval()
        with torch.inference_mode(), self.autocast():
            return self.model(self.images)

    def train(self) -> None:
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

    def flops(self, task: str) -> int | None:
        """FLOPs of one call (training: forward + backward; the SGD update is not counted);
        ``None`` for ONNX Runtime, which torch cannot count."""
        if not isinstance(self.model, nn.Module):
            return None
        with FlopCounterMode(display=False) as counter:
            if task == "inference":
                self.inference()
            else:
                self.model.train()
                with self.autocast():
                    losses = self.model(self.images, self.targets)
                sum(losses.values()).backward()
        self.optimizer.zero_grad(set_to_none=True)
        return counter.get_total_flops()


def measure_models(models: dict[str, nn.Module], *, task: str, batch: int, height: int,
                   width: int, num_classes: int, iters: int, warmup: int, device: torch.device,
                   amp_dtype: torch.dtype | None = None,
                   dtypes: dict[str, torch.dtype | None] | None = None
                   ) -> dict[str, dict[str, Any]]:
    """Time ``task`` ("inference" or "train") of each model, alternating; see the docstring.

    ``models``: ``{"ours": ..., "torchvision": ..., "onnxruntime": ..., "openvino": ...}``
    (all but ``ours`` optional) on ``device``; the runtimes of the exported graph
    (``OnnxDetector``, ``OpenVINODetector``) run inference only. Each model autocasts to
    ``dtypes[name]`` when given, else to ``amp_dtype`` (None: float32).
    """
    masks = models["ours"].roi_heads.mask_head is not None
    images, targets = synthetic_batch(batch=batch, height=height, width=width,
                                      num_classes=num_classes, device=device, masks=masks)
    runners = {}
    for name, model in models.items():
        dtype = (dtypes or {}).get(name, amp_dtype)
        autocast = nullcontext if dtype is None else (
            lambda dtype=dtype: torch.autocast(device_type=device.type, dtype=dtype))
        # torchvision takes floats in 0..1 and full-image masks; ours and the ONNX graph uint8
        # images in 0..255, ours compact masks
        inputs = [im.float().div_(255) for im in images] if name == "torchvision" else images
        given = targets if name == "torchvision" or not masks else [
            {**t, "masks": instance_masks(t["masks"])} for t in targets]
        scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
        runners[name] = _Runner(model, inputs, given, autocast, scaler)
    timing = time_alternating({n: getattr(r, task) for n, r in runners.items()}, iters=iters,
                              warmup=warmup, device=device)
    results = {}
    for name, runner in runners.items():
        stats = summarize(timing[name]["times"])
        flops = runner.flops(task)
        module = isinstance(runner.model, nn.Module)
        results[name] = {
            **stats, "cpu_median_ms": 1000 * statistics.median(timing[name]["cpu_times"]),
            "images_per_s": 1000 * batch / stats["median_ms"],
            "gflops_per_image": flops / batch / 1e9 if module else None,
            "achieved_gflops_per_s": flops / 1e9 / (stats["median_ms"] / 1000) if module else None,
            "peak_memory_mb": timing[name]["peak_mb"],
            "params_m": sum(p.numel() for p in runner.model.parameters()) / 1e6 if module else None,
        }
    return results
