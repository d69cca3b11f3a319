#!/usr/bin/env python
"""Inference latency, training step time, memory, FLOPs and data-loader speed of a config.

    python tools/benchmark.py --config configs/coco/faster_rcnn_R_50_FPN_torchvision.yaml \\
        --device cuda --amp --batch 2 --iters 20 --size 800 --compare-torchvision \\
        --output bench.json

``--compare-torchvision`` (R-xx-FPN configs) measures torchvision's FasterRCNN carrying the same
weights side by side, alternating, and prints the ratios ours / torchvision. Weights are random
(speed does not depend on them). See ``detection/benchmarking.py`` for what each number means.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from detection.benchmarking import format_table, run_benchmark  # noqa: E402
from detection.config import ConfigError, load_config  # noqa: E402


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="YAML config file")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--amp", action="store_true", help="autocast to solver.amp_dtype (CUDA)")
    p.add_argument("--batch", type=int, default=2, help="images per batch (default: 2)")
    p.add_argument("--iters", type=int, default=10, help="timed iterations (default: 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed iterations first")
    p.add_argument("--size", type=int, help="shorter image side (default: min_size_test); "
                                           "images are size x 4/3 size")
    p.add_argument("--compare-torchvision", action="store_true",
                   help="also measure torchvision's FasterRCNN with the same weights")
    p.add_argument("--output", help="write the measurements to this JSON file")
    p.add_argument("--set", nargs="+", default=[], action="extend", metavar="KEY=VALUE",
                   help="override config keys, e.g. data.num_workers=4")
    args = p.parse_args(argv)
    too_small = args.size is not None and args.size < 32
    if min(args.batch, args.iters) < 1 or args.warmup < 0 or too_small:
        p.error("need --batch >= 1, --iters >= 1, --warmup >= 0 and --size >= 32")
    try:
        cfg = load_config(args.config, args.set)
        result = run_benchmark(cfg, device=args.device, amp=args.amp, batch=args.batch,
                               iters=args.iters, warmup=args.warmup, size=args.size,
                               compare_torchvision=args.compare_torchvision,
                               config_path=args.config)
    except (ConfigError, ValueError, RuntimeError) as e:
        print(f"benchmark.py: {e}", file=sys.stderr)
        return 2
    print(format_table(result))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
