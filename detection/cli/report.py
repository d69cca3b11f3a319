#!/usr/bin/env python
"""Write one self-contained HTML page comparing runs (open it in any browser, offline).

    python tools/report.py output/vgg16 output/r101 --output report.html

Each RUN is a run's output folder (eval.json, metrics.jsonl, coco_results.json; the test
annotations and images come from its config.yaml, or --annotations / --images). The page holds
the metrics side by side as the paper's Table 8, per-category AP bars, loss / lr / mAP curves,
precision-recall curves per category at IoU .5 and .75, the COCO error breakdown, confusion
matrices, the worst false positives and missed objects, and test images with the ground truth
and each run's detections side by side.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no PyPI version check (2 s offline)

from detection.cli import ArgumentParser, tool_main  # noqa: E402
from detection.evaluation.backends import BACKENDS  # noqa: E402
from detection.evaluation.report import write_report  # noqa: E402


@tool_main
def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run output folders")
    p.add_argument("--output", default="report.html", help="HTML file to write")
    p.add_argument("--title", default="Detection report")
    p.add_argument("--annotations", help="test annotations json for every run")
    p.add_argument("--images", help="test image folder for every run")
    p.add_argument("--num-images", type=int, default=6, help="test images shown")
    p.add_argument("--score-thr", type=float, default=0.5,
                   help="confusion-matrix threshold and the image grid's initial one")
    p.add_argument("--backend", choices=BACKENDS, default="faster")
    args = p.parse_args(argv)
    path = write_report(args.runs, args.output, annotations=args.annotations,
                        images=args.images, title=args.title, num_images=args.num_images,
                        score_thresh=args.score_thr, backend=args.backend)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
