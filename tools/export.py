#!/usr/bin/env python
"""Export a trained detector to ONNX: normalisation, RPN, RoI heads and NMS in one graph.

    python tools/export.py --weights output/quickstart/best.pth --output model.onnx \\
        [--config configs/quickstart.yaml] [--opset 17] [--score-thresh 0.05]

The file takes a padded uint8 RGB batch ``images`` (N, 3, H, W) (any N, H and W multiples of
the model's size divisibility; the test-time resize keeps them within the config's max size)
and ``image_sizes`` (N, 2), and returns ``boxes``, ``scores``, ``labels`` and ``batch_index``
(and ``masks`` (D, 1, M, M) at RoI resolution for a Mask R-CNN; pasted outside the graph).
It carries the class list, the test-time resize and the config as metadata, so
``Predictor(weights="model.onnx", backend="onnxruntime")`` and ``tools/infer.py --onnx`` need
nothing else. See ``detection/export/`` for the graph and the choice of exporter.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no PyPI version check (2 s offline)

from detection.cli import ArgumentParser, tool_main  # noqa: E402
from detection.export.exporter import DEFAULT_OPSET, export_onnx  # noqa: E402
from detection.predictor import load_trained_model  # noqa: E402


@tool_main
def main(argv: Optional[list[str]] = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, help="checkpoint (.pth)")
    parser.add_argument("--config", help="YAML config (default: the one in the checkpoint)")
    parser.add_argument("--output", required=True, help="the .onnx file to write")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                        help="ONNX opset (default: %(default)s; 16 at least)")
    parser.add_argument("--score-thresh", type=float, default=None,
                        help="score threshold inside the graph (default: the config's "
                             "model.roi_heads.score_thresh); a Predictor can raise it, not "
                             "lower it")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    cfg, model, classes = load_trained_model(args.config, args.weights,
                                             score_thresh=args.score_thresh)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    export_onnx(model, args.output, cfg=cfg, classes=classes, opset=args.opset)
    size_mb = Path(args.output).stat().st_size / 2**20
    print(f"wrote {args.output} ({size_mb:.1f} MB, opset {args.opset}, "
          f"{time.perf_counter() - start:.0f} s): {cfg.model.backbone.name} "
          f"{cfg.model.roi_heads.box_head}{' with masks' if cfg.model.mask_head.enabled else ''}"
          f", {len(classes)} classes, score_thresh "
          f"{cfg.model.roi_heads.score_thresh}, images resized to "
          f"{cfg.data.input.min_size_test}..{cfg.data.input.max_size_test} px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
