"""Error analysis of a finished run from its saved detections (the model is not run again).

    resdet analyze output/quickstart [--output DIR] [--score-thr 0.5]

Reads RUN/coco_results.json and the test annotations and images named by RUN/config.yaml (or by
the config its eval.json names; --annotations / --images override). Prints the COCO error
breakdown (C75, C50, Loc, Sim, Oth, BG, FN: the AP if each error type were fixed; of the masks
too for a Mask R-CNN's run, whose analysis.html also shows mask AP and the masks) and the
confusion matrix, and writes into DIR (default RUN/analysis): analysis.json (breakdown overall,
per size and per category, PR curves at IoU .5 / .75 per category, confusion matrix, worst
false positives and missed objects), worst_false_positives.jpg, missed_objects.jpg and
analysis.html (the report page of this run: curves, breakdown, matrix, crops).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..engine.files import write_image, write_text
from ..evaluation.analysis import ERROR_TYPES, analyze_run, draw_crops, read_run
from ..evaluation.report import build_report
from .common import ArgumentParser, add_option, tool_main


def build_parser(prog: str | None = None) -> ArgumentParser:
    p = ArgumentParser(prog=prog, description=__doc__)
    p.add_argument("run", help="a run's output folder (with eval.json, coco_results.json)")
    p.add_argument("--output", metavar="DIR",
                   help="folder for the analysis files (default: RUN/analysis)")
    add_option(p, "--annotations")
    add_option(p, "--images")
    add_option(p, "--score-thr")
    p.add_argument("--top", type=int, default=12, help="crops of each kind (default: 12)")
    add_option(p, "--evaluator")
    return p


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    return build_parser(prog).parse_args(argv)


def format_summary(analysis: dict) -> str:
    """The breakdown per object size (of the masks too, for a Mask R-CNN) and the confusion
    matrix, as text."""
    lines = []
    segm = analysis.get("segm", {}).get("ap")
    for what, ap in (("boxes" if segm else "area", analysis["ap"]), ("masks", segm)):
        if ap is None:
            continue
        lines.append(f"{what:<8}" + "".join(f"{t:>7}" for t in ERROR_TYPES))
        for area, values in ap.items():
            lines.append(f"{area:<8}" + "".join(
                "    n/a" if values[t] is None else f"{values[t]:7.3f}" for t in ERROR_TYPES))
    kinds = analysis["false_positive_kinds"]
    lines.append("false positives at IoU .5: " + ", ".join(f"{k} {v}" for k, v in kinds.items())
                 + f"; missed objects: {analysis['num_missed']}")
    cm = analysis["confusion"]
    width = max(8, *(len(n) for n in cm["labels"] + cm["columns"]))
    lines.append(f"confusion matrix (rows true, columns predicted; score >= "
                 f"{cm['score_thresh']:g}, IoU >= {cm['iou_thresh']:g})")
    lines.append(" " * width + "".join(f" {c:>{width}}" for c in cm["columns"]))
    for label, row in zip(cm["labels"], cm["matrix"]):
        lines.append(f"{label:<{width}}" + "".join(f" {v:>{width}}" for v in row))
    return "\n".join(lines)


@tool_main
def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    run = read_run(args.run, annotations=args.annotations, images=args.images)
    analysis = analyze_run(run, backend=args.evaluator, score_thresh=args.score_thr,
                           top=args.top)
    out = Path(args.output or Path(args.run) / "analysis")
    write_text(out / "analysis.json", json.dumps(analysis, indent=1) + "\n")
    for name, items in (("worst_false_positives", analysis["worst_false_positives"]),
                        ("missed_objects", analysis["missed"])):
        grid = draw_crops(items, run) if Path(run["images"] or "/none").is_dir() else None
        if grid is not None:
            write_image(out / f"{name}.jpg", grid[:, :, ::-1])
    html = build_report([run], analyses=[analysis], title=f"Analysis of {run['name']}",
                        score_thresh=args.score_thr)
    write_text(out / "analysis.html", html)
    print(format_summary(analysis))
    print(f"written to {out}: analysis.json, analysis.html, worst_false_positives.jpg, "
          "missed_objects.jpg")
    return 0

