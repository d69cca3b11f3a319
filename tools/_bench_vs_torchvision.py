"""Our R-50-FPN Faster R-CNN against torchvision's with the same weights: inference and training.

    python tools/_bench_vs_torchvision.py --height 512 --width 672 --batch 1 --train-batch 2 \\
        --repeats 7 --threads 2

Both models are built to torchvision's ``fasterrcnn_resnet50_fpn`` hyperparameters
(``configs/coco/faster_rcnn_R_50_FPN_torchvision.yaml``); torchvision's gets random non-trivial
weights and ours the converted copy. Inputs are sized so that torchvision's internal resize is the
identity (its ``min_size``/``max_size`` set to the image size); torchvision gets float images in
0..1 as its data pipeline gives them, ours uint8 in 0..255. The two run alternately in one process,
after warm-up, and the medians are compared: ``ratio = ours / torchvision`` (< 1: ours is faster).
``compare_with_torchvision`` is the reusable function.
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _convert_tool():
    spec = importlib.util.spec_from_file_location("convert_torchvision",
                                                  ROOT / "tools" / "convert_torchvision.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_pair(*, height: int, width: int, seed: int = 0,
               ) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(ours, torchvision's) R-50-FPN COCO models carrying the same random weights."""
    from torchvision.models.detection import FasterRCNN as TVFasterRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.ops import FrozenBatchNorm2d

    from detection.build import build_model
    from detection.config import config_from_dict

    torch.manual_seed(seed)
    backbone = resnet_fpn_backbone(backbone_name="resnet50", weights=None,
                                   norm_layer=FrozenBatchNorm2d, trainable_layers=3)
    tv = TVFasterRCNN(backbone, num_classes=91, min_size=min(height, width),
                      max_size=max(height, width))
    with torch.no_grad():  # statistics like a trained model's, so that NMS sees real work
        for m in tv.modules():
            if isinstance(m, FrozenBatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.0)
        # peaky class scores: a few thousand (RoI, class) candidates above score_thresh 0.05,
        # as a trained model gives, so post-processing and NMS do their real work
        tv.roi_heads.box_predictor.cls_score.weight.normal_(0.0, 1.0)
    checkpoint = _convert_tool().convert_checkpoint(tv.state_dict())
    ours = build_model(config_from_dict(checkpoint["config"]))
    ours.load_state_dict(checkpoint["model"])
    return ours, tv


def time_alternating(fns: dict[str, Callable[[], object]], *, repeats: int,
                     warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each function, called in turn ``repeats`` times after ``warmup``."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(warmup + repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def _inputs(*, batch: int, height: int, width: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    images = [torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=g)
              for _ in range(batch)]
    targets = []
    for _ in range(batch):
        xy = torch.rand(5, 2, generator=g) * torch.tensor([width * 0.6, height * 0.6])
        wh = 16 + torch.rand(5, 2, generator=g) * torch.tensor([width * 0.4, height * 0.4])
        targets.append({"boxes": torch.cat([xy, xy + wh], dim=1),
                        "labels": torch.randint(1, 91, (5,), generator=g)})
    return images, targets


def compare_with_torchvision(*, height: int = 512, width: int = 672, batch: int = 1,
                             train_batch: int = 2, repeats: int = 5, threads: int | None = None,
                             ) -> dict[str, dict[str, float]]:
    """Median seconds of ours and torchvision's for ``inference`` and ``train_step``
    (forward + backward), and their ratio ours / torchvision."""
    if threads:
        torch.set_num_threads(threads)
    ours, tv = build_pair(height=height, width=width)
    images, _ = _inputs(batch=batch, height=height, width=width)
    tv_images = [img.float() / 255 for img in images]
    ours.eval(), tv.eval()

    def infer(model, imgs):
        with torch.inference_mode():
            return model(imgs)

    result = {}
    times = time_alternating({"ours": lambda: infer(ours, images),
                              "torchvision": lambda: infer(tv, tv_images)}, repeats=repeats)
    result["inference"] = _summary(times)

    images, targets = _inputs(batch=train_batch, height=height, width=width)
    tv_images = [img.float() / 255 for img in images]
    ours.train(), tv.train()

    def step(model, imgs):
        model.zero_grad(set_to_none=True)
        sum(model(imgs, targets).values()).backward()

    times = time_alternating({"ours": lambda: step(ours, images),
                              "torchvision": lambda: step(tv, tv_images)}, repeats=repeats)
    result["train_step"] = _summary(times)
    return result


def _summary(times: dict[str, list[float]]) -> dict[str, float]:
    ours, tv = statistics.median(times["ours"]), statistics.median(times["torchvision"])
    return {"ours_s": ours, "torchvision_s": tv, "ratio": ours / tv}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--width", type=int, default=672)
    p.add_argument("--batch", type=int, default=1, help="images per inference call")
    p.add_argument("--train-batch", type=int, default=2, help="images per training step")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = p.parse_args(argv)
    result = compare_with_torchvision(height=args.height, width=args.width, batch=args.batch,
                                      train_batch=args.train_batch, repeats=args.repeats,
                                      threads=args.threads)
    print(f"{args.height}x{args.width}, inference batch {args.batch}, training batch "
          f"{args.train_batch}, {torch.get_num_threads()} threads, median of {args.repeats}")
    for what, r in result.items():
        print(f"{what:10s} ours {r['ours_s']:.3f} s  torchvision {r['torchvision_s']:.3f} s  "
              f"ratio {r['ratio']:.3f}")


if __name__ == "__main__":
    main()
