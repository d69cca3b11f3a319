#!/usr/bin/env python
"""Speed, memory and FLOPs of a config's detector and data loader, optionally against torchvision.

    python tools/benchmark.py --config configs/coco/faster_rcnn_R_50_FPN_torchvision.yaml \\
        --task model train --device cpu --size 512 --batch 1 --threads 2 \\
        --compare-torchvision --output bench.json
    python tools/benchmark.py --config configs/quickstart.yaml --task data
    python tools/benchmark.py --task eval --eval-images 5000 --iters 3
    python tools/benchmark.py --config configs/coco/faster_rcnn_R_50_FPN_1x.yaml --task model \\
        --size 512 --batch 1 --threads 2 --onnx output/r50_fpn_bench.onnx

Tasks: ``model`` (inference latency), ``train`` (one training step), ``data`` (training-loader
throughput), ``eval`` (COCO evaluation of a COCO-val-sized synthetic result set by
faster-coco-eval and pycocotools, alternating, ``--iters`` runs each, every number compared; see
``detection/evaluation/speed.py``; needs no config). ``--compare-torchvision`` (R-xx-FPN
configs) times torchvision's FasterRCNN carrying the same weights side by side, alternating, and
prints the ratios ours / torchvision; for a Mask R-CNN config
(``configs/coco/mask_rcnn_R_50_FPN_torchvision.yaml``) torchvision's MaskRCNN, masks included in
inference and training. Without
``--weights`` the weights are random, made like a trained model's so that post-processing does
its real work; see ``detection/benchmark/`` for what each number means. ``--onnx FILE`` also
times that file in ONNX Runtime (CPU execution provider) with the same threads, alternating
with PyTorch, and prints how much faster it is and how well its detections match: give the
``--weights`` it was exported from, or none (the random weights are then exported to FILE).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no PyPI version check (2 s offline)

from detection.benchmark import TASKS, format_report, run_benchmark  # noqa: E402
from detection.cli import ArgumentParser, tool_main  # noqa: E402
from detection.config import load_config  # noqa: E402


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="YAML config file (all tasks but eval)")
    p.add_argument("--task", nargs="+", choices=(*TASKS, "eval"), default=list(TASKS),
                   help="what to measure (default: model train data)")
    p.add_argument("--eval-images", type=int, default=5000,
                   help="--task eval: images in the result set (COCO val2017: 5000)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--amp", action="store_true", help="autocast to solver.amp_dtype (CUDA)")
    p.add_argument("--batch", type=int, default=2, help="images per batch (default: 2)")
    p.add_argument("--iters", type=int, default=10, help="timed iterations (default: 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed iterations first")
    p.add_argument("--size", type=int, help="shorter image side (default: min_size_test); "
                                           "images are size x 4/3 size")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--weights", help="a checkpoint to time instead of random weights")
    p.add_argument("--compare-torchvision", action="store_true",
                   help="also time torchvision's FasterRCNN with the same weights")
    p.add_argument("--onnx", metavar="FILE",
                   help="also time this exported model in ONNX Runtime (--task model); "
                        "without --weights, the benchmark's random weights are exported to it")
    p.add_argument("--output", help="write the measurements to this JSON file")
    p.add_argument("--set", nargs="+", default=[], action="extend", metavar="KEY=VALUE",
                   help="override config keys, e.g. data.num_workers=4")
    args = p.parse_args(argv)
    too_small = args.size is not None and args.size < 32
    if min(args.batch, args.iters) < 1 or args.warmup < 0 or too_small or (
            args.threads is not None and args.threads < 1):
        p.error("need --batch >= 1, --iters >= 1, --warmup >= 0, --size >= 32, --threads >= 1")
    if args.config is None and set(args.task) - {"eval"}:
        p.error("--config is required for --task model, train and data")
    return args


@tool_main
def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    result: dict = {"results": {}}
    tasks = tuple(t for t in args.task if t != "eval")
    if tasks:
        result = run_benchmark(load_config(args.config, args.set), tasks=tasks,
                               device=args.device, amp=args.amp, batch=args.batch,
                               iters=args.iters, warmup=args.warmup, size=args.size,
                               threads=args.threads, weights=args.weights,
                               compare_torchvision=args.compare_torchvision,
                               config_path=args.config, onnx=args.onnx)
        print(format_report(result))
    if "eval" in args.task:
        result["results"]["eval"] = _eval_speed(args.eval_images, args.iters)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.output}")
    return 0


def _eval_speed(images: int, repeats: int) -> dict:
    from detection.evaluation.speed import compare_backends, format_comparison, synthetic_coco

    gt, detections = synthetic_coco(num_images=images)
    print(f"eval: {len(gt['images'])} images, {len(gt['annotations'])} boxes, "
          f"{len(detections)} detections; {repeats} run(s) per backend", flush=True)
    out = compare_backends(gt, detections, repeats=repeats)
    print(f"eval: {format_comparison(out)}")
    return out


if __name__ == "__main__":
    sys.exit(main())
