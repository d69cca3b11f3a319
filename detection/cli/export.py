"""Export a trained detector to ONNX: normalisation, RPN, RoI heads and NMS in one graph.

    resdet export --weights output/quickstart/best.pth --output model.onnx \\
        [--config quickstart] [--opset 17] [--score-thr 0.05]

The file takes a padded uint8 RGB batch `images` (N, 3, H, W) (any N, H and W multiples of
the model's size divisibility; the test-time resize keeps them within the config's max size)
and `image_sizes` (N, 2), and returns `boxes`, `scores`, `labels` and `batch_index`. It
carries the class list, the test-time resize and the config as metadata, so
Predictor(weights="model.onnx", backend="onnxruntime") and `resdet infer --onnx` need nothing
else. Without --config the checkpoint's stored config is used. See detection/export/ for the
graph and the choice of exporter.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Optional

from ..config import dump_config
from ..export.exporter import DEFAULT_OPSET, export_onnx
from ..predictor import load_trained_model
from .common import ArgumentParser, add_config_options, add_option, run_config, tool_main


def build_parser(prog: str | None = None) -> ArgumentParser:
    parser = ArgumentParser(prog=prog, description=__doc__)
    add_option(parser, "--weights", required=True)
    add_config_options(parser, required=False)
    parser.add_argument("--output", required=True, metavar="FILE",
                        help="the .onnx file to write")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                        help="ONNX opset (default: %(default)s; 16 at least)")
    parser.add_argument("--score-thr", type=float, default=None,
                        help="score threshold inside the graph (default: the config's "
                             "model.roi_heads.score_thresh); a Predictor can raise it, not "
                             "lower it")
    parser.add_argument("--score-thresh", type=float, dest="score_thr",
                        help=argparse.SUPPRESS)  # the old spelling, for scripts that use it
    return parser


@tool_main
def main(argv: Optional[list[str]] = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    cfg = run_config(args.config, args.weights, args.set)
    if args.print_config:
        print(dump_config(cfg), end="")
        return 0
    start = time.perf_counter()
    cfg, model, classes = load_trained_model(cfg, args.weights, score_thresh=args.score_thr)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    export_onnx(model, args.output, cfg=cfg, classes=classes, opset=args.opset)
    size_mb = Path(args.output).stat().st_size / 2**20
    print(f"wrote {args.output} ({size_mb:.1f} MB, opset {args.opset}, "
          f"{time.perf_counter() - start:.0f} s): {cfg.model.backbone.name} "
          f"{cfg.model.roi_heads.box_head}, {len(classes)} classes, score_thresh "
          f"{cfg.model.roi_heads.score_thresh}, images resized to "
          f"{cfg.data.input.min_size_test}..{cfg.data.input.max_size_test} px")
    return 0

