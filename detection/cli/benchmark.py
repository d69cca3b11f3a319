"""Speed, memory and FLOPs of a config's detector and data loader, optionally against torchvision.

    resdet benchmark --config coco/faster_rcnn_R_50_FPN_torchvision --task model train \\
        --device cpu --size 512 --batch 1 --threads 2 --compare-torchvision --output bench.json
    resdet benchmark --config quickstart --task data
    resdet benchmark --task eval --eval-images 5000 --iters 3
    resdet benchmark --config coco/faster_rcnn_R_50_FPN_1x --task model --size 512 --batch 1 \\
        --threads 2 --onnx output/r50_fpn_bench.onnx
    resdet benchmark --config coco/faster_rcnn_R_50_FPN_torchvision --task model train \\
        --size 512 --batch 1 --threads 2 --compare-torchvision \\
        --backend torch,onnxruntime,openvino --amp auto --set model.backbone.weights=null
    OMP_NUM_THREADS=1 resdet benchmark --config quickstart --task soak --output soak.json

Tasks: model (inference latency), train (one training step), data (training-loader throughput),
eval (COCO evaluation of a COCO-val-sized synthetic result set by faster-coco-eval and
pycocotools, alternating, --iters runs each, every number compared; see
detection/evaluation/speed.py; needs no config), soak (resident memory of the main process and
of each loader worker every --soak-period iterations of a --soak-iters training run, then every
--soak-period images of a --soak-images synthetic evaluation, or of --weights W with
--soak-iters 0; detection/benchmark/soak.py and
docs/long_runs.md). --compare-torchvision (R-xx-FPN configs) times
torchvision's FasterRCNN carrying the same weights side by side, alternating, and prints the
ratios ours / torchvision; for a Mask R-CNN config (coco/mask_rcnn_R_50_FPN_torchvision)
torchvision's MaskRCNN, masks included in inference and training. Without --weights the weights
are random, made like a trained model's so that post-processing does its real work; see
detection/benchmark/ for what each number means. --onnx FILE also times that file in ONNX
Runtime (CPU execution provider) with the same threads, alternating with PyTorch, and prints how
much faster it is and how well its detections match: give the --weights it was exported from, or
none (the random weights are then exported to FILE). --backend torch,onnxruntime,openvino times
the exported graph in both runtimes beside our model (a comma-separated list here, where the
other subcommands take one backend); --amp (default: the config's test.amp, auto) runs our model
(and OpenVINO's precision hint) in bf16 where the CPU has native bf16, torchvision's twin
staying float32; the header names the CPU and its bf16 support, and each runtime's detections
are compared with our float32 model's (detection/benchmark/).
"""
from __future__ import annotations

import argparse
from typing import Optional

from ..benchmark import TASKS, format_report, run_benchmark
from ..config import dump_config, load_config
from ..engine.distributed import resolve_device
from ..engine.files import write_json
from .common import ArgumentParser, add_config_options, add_option, tool_main


def build_parser(prog: str | None = None) -> ArgumentParser:
    p = ArgumentParser(prog=prog, description=__doc__)
    add_config_options(p, required=False)
    p.add_argument("--task", nargs="+", choices=(*TASKS, "eval", "soak"), default=list(TASKS),
                   help="what to measure (default: model train data)")
    p.add_argument("--eval-images", type=int, default=5000,
                   help="--task eval: images in the result set (COCO val2017: 5000)")
    add_option(p, "--device")
    add_option(p, "--amp")
    p.add_argument("--backend", default="torch", type=lambda v: tuple(v.split(",")),
                   help="comma-separated: torch (always) and any of onnxruntime, openvino "
                        "(--task model, CPU) (default: torch)")
    p.add_argument("--batch", type=int, default=2, help="images per batch (default: 2)")
    p.add_argument("--iters", type=int, default=10, help="timed iterations (default: 10)")
    p.add_argument("--warmup", type=int, default=2,
                   help="untimed iterations first (default: 2)")
    p.add_argument("--size", type=int, help="shorter image side (default: min_size_test); "
                                           "images are size x 4/3 size")
    add_option(p, "--threads")
    add_option(p, "--weights")
    p.add_argument("--compare-torchvision", action="store_true",
                   help="also time torchvision's FasterRCNN with the same weights")
    p.add_argument("--onnx", metavar="FILE",
                   help="the exported model for --backend onnxruntime / openvino (alone: "
                        "--backend torch,onnxruntime); without --weights, the benchmark's "
                        "random weights are exported to it")
    p.add_argument("--output", metavar="FILE", help="JSON file to write the measurements to")
    _soak_options(p)
    return p


def _soak_options(p: ArgumentParser) -> None:
    p.add_argument("--soak-iters", type=int, default=3000,
                   help="--task soak: training iterations (0: evaluation only; default: 3000)")
    p.add_argument("--soak-images", type=int, default=5000,
                   help="--task soak: images evaluated (0: training only; default: 5000)")
    p.add_argument("--soak-period", type=int, default=100,
                   help="--task soak: sample memory every this many iterations / images")
    p.add_argument("--soak-workers", type=int, default=2,
                   help="--task soak: loader workers (default: 2)")
    p.add_argument("--soak-dir", help="--task soak: folder for the run and the data "
                                      "(default: a new temporary folder)")


def parse_args(argv: Optional[list[str]] = None, prog: str | None = None) -> argparse.Namespace:
    p = build_parser(prog)
    args = p.parse_args(argv)
    too_small = args.size is not None and args.size < 32
    if min(args.batch, args.iters) < 1 or args.warmup < 0 or too_small or (
            args.threads is not None and args.threads < 1):
        p.error("need --batch >= 1, --iters >= 1, --warmup >= 0, --size >= 32, --threads >= 1")
    if args.config is None and set(args.task) - {"eval"}:
        p.error("--config is required for --task model, train, data and soak")
    if min(args.soak_iters, args.soak_images, args.soak_workers) < 0 or args.soak_period < 1:
        p.error("need --soak-iters, --soak-images, --soak-workers >= 0, --soak-period >= 1")
    return args


@tool_main
def main(argv: Optional[list[str]] = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    if args.print_config:
        print(dump_config(load_config(args.config, args.set)), end="")
        return 0
    result: dict = {"results": {}}
    tasks = tuple(t for t in args.task if t not in ("eval", "soak"))
    if tasks:
        device = str(resolve_device(args.device))
        cfg = load_config(args.config, args.set)
        result = run_benchmark(cfg, tasks=tasks, device=device, backends=args.backend,
                               amp=cfg.test.amp if args.amp is None else args.amp,
                               batch=args.batch,
                               iters=args.iters, warmup=args.warmup, size=args.size,
                               threads=args.threads, weights=args.weights,
                               compare_torchvision=args.compare_torchvision,
                               config_path=args.config, onnx=args.onnx)
        print(format_report(result))
    if "eval" in args.task:
        result["results"]["eval"] = _eval_speed(args.eval_images, args.iters)
    if "soak" in args.task:
        result["results"]["soak"] = _soak(args)
    if args.output:
        write_json(args.output, result, indent=2)
        print(f"wrote {args.output}")
    return 0


def _eval_speed(images: int, repeats: int) -> dict:
    from ..evaluation.speed import compare_backends, format_comparison, synthetic_coco

    gt, detections = synthetic_coco(num_images=images)
    print(f"eval: {len(gt['images'])} images, {len(gt['annotations'])} boxes, "
          f"{len(detections)} detections; {repeats} run(s) per backend", flush=True)
    out = compare_backends(gt, detections, repeats=repeats)
    print(f"eval: {format_comparison(out)}")
    return out



def _soak(args: argparse.Namespace) -> dict:
    from ..benchmark.soak import format_soak, run_soak

    out = run_soak(load_config(args.config, args.set), iters=args.soak_iters,
                   images=args.soak_images, num_workers=args.soak_workers,
                   period=args.soak_period, folder=args.soak_dir, weights=args.weights,
                   log=lambda line: print(line, flush=True))
    print(format_soak(out))
    return out
