"""Export a trained detector to ONNX or OpenVINO: normalisation, RPN, RoI heads and NMS in one
graph.

    resdet export --weights output/quickstart/best.pth --output model.onnx \\
        [--config quickstart] [--opset 17] [--score-thr 0.05]
    resdet export --weights output/quickstart/best.pth --format openvino --output model.xml \\
        [--int8 --calib 300]

The file takes a padded uint8 RGB batch `images` (N, 3, H, W) (any N, H and W multiples of
the model's size divisibility; the test-time resize keeps them within the config's max size)
and `image_sizes` (N, 2), and returns `boxes`, `scores`, `labels` and `batch_index` (and
`masks` (D, 1, M, M) at RoI resolution for a Mask R-CNN; pasted outside the graph). It
carries the class list, the test-time resize and the config as metadata, so
Predictor(weights="model.onnx", backend="onnxruntime") and `resdet infer --onnx` need nothing
else. Without --config the checkpoint's stored config is used. See detection/export/ for the
graph and the choice of exporter.

--format openvino writes the ONNX file beside (model.onnx) and OpenVINO's IR (model.xml +
model.bin) with the same metadata, for --backend openvino. --int8 quantizes the IR with NNCF on
--calib images of the training set (data.train) and then evaluates the float32 graph and the
INT8 IR on data.test: the change in mAP and the share of float32 detections (score > 0.3) it
keeps are printed and stored in the IR (int8).
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
                        help="the file to write: .onnx, or .xml with --format openvino")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                        help="ONNX opset (default: %(default)s; 16 at least)")
    parser.add_argument("--score-thr", type=float, default=None,
                        help="score threshold inside the graph (default: the config's "
                             "model.roi_heads.score_thresh); a Predictor can raise it, not "
                             "lower it")
    parser.add_argument("--score-thresh", type=float, dest="score_thr",
                        help=argparse.SUPPRESS)  # the old spelling, for scripts that use it
    parser.add_argument("--format", choices=("onnx", "openvino"), default="onnx",
                        help="onnx (default) or openvino (IR .xml + .bin, and the .onnx)")
    parser.add_argument("--int8", action="store_true",
                        help="--format openvino: INT8 by NNCF post-training quantization")
    parser.add_argument("--calib", type=int, default=300, metavar="N",
                        help="--int8: calibration images from data.train (default: 300)")
    add_option(parser, "--threads")
    return parser


@tool_main
def main(argv: Optional[list[str]] = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    cfg = run_config(args.config, args.weights, args.set)
    if args.print_config:
        print(dump_config(cfg), end="")
        return 0
    if args.int8 and args.format != "openvino":
        raise ValueError("--int8 is for --format openvino")
    if args.calib < 1:
        raise ValueError("--calib must be at least 1")
    start = time.perf_counter()
    cfg, model, classes = load_trained_model(cfg, args.weights, score_thresh=args.score_thr)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    onnx_path = output if args.format == "onnx" else output.with_suffix(".onnx")
    export_onnx(model, onnx_path, cfg=cfg, classes=classes, opset=args.opset)
    if args.format == "openvino":
        _openvino(args, onnx_path, output, cfg, classes, model.size_divisibility)
    size_mb = sum(p.stat().st_size for p in {onnx_path, output, output.with_suffix(".bin")}
                  if p.is_file()) / 2**20
    print(f"wrote {output} ({size_mb:.1f} MB in all, opset {args.opset}, "
          f"{time.perf_counter() - start:.0f} s): {cfg.model.backbone.name} "
          f"{cfg.model.roi_heads.box_head}{' with masks' if cfg.model.mask_head.enabled else ''}"
          f", {len(classes)} classes, score_thresh "
          f"{cfg.model.roi_heads.score_thresh}, images resized to "
          f"{cfg.data.input.min_size_test}..{cfg.data.input.max_size_test} px")
    return 0


def _openvino(args, onnx_path: Path, output: Path, cfg, classes: list[dict],
              size_divisibility: int) -> None:
    """The IR of ``onnx_path`` at ``output``; with ``--int8``, quantized, evaluated, recorded."""
    from ..export.openvino import export_openvino

    if output.suffix.lower() != ".xml":
        raise ValueError(f"--format openvino writes an IR: --output must end in .xml, got "
                         f"{output}")
    if not args.int8:
        export_openvino(onnx_path, output)
        return
    from ..evaluation import Relabelled
    from ..export.quantize import (accuracy_change, calibration_inputs, quantize_openvino,
                                   record_accuracy)
    from ..setup import build_evaluator, build_split_for_test, build_test_loader

    train = build_split_for_test(cfg, "train")
    quantize_openvino(onnx_path, output, inputs=calibration_inputs(
        train, args.calib, size_divisibility=size_divisibility))
    test = build_split_for_test(cfg, "test")
    evaluator = build_evaluator(cfg, test.classes)
    if classes != test.classes:
        evaluator = Relabelled(evaluator, model_classes=classes, data_classes=test.classes)
    report = accuracy_change(onnx_path, output, loader=build_test_loader(cfg, test),
                             evaluator=evaluator, threads=args.threads)
    record_accuracy(output, report, args.calib)
    f32, int8, change = report["float32"], report["int8"], report["change"]
    print("INT8 accuracy on data.test (float32 -> INT8): " + ", ".join(
        f"{k} {f32[k]:.2f} -> {int8[k]:.2f} ({change[k]:+.2f} points)" for k in f32)
        + f"; {100 * report['matched']:.1f} % of the {report['detections']} float32 "
        "detections above 0.3 kept (IoU > 0.9, score within 0.05); "
        f"calibrated on {args.calib} data.train images")
