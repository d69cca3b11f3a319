"""Write one self-contained HTML page comparing runs (open it in any browser, offline).

    resdet report output/vgg16 output/r101 --output report.html

Each RUN is a run's output folder (eval.json, metrics.jsonl, coco_results.json; the test
annotations and images come from its config.yaml, or --annotations / --images). The page holds
the metrics side by side as the paper's Table 8, per-category AP bars, loss / lr / mAP curves,
precision-recall curves per category at IoU .5 and .75, the COCO error breakdown, confusion
matrices, the worst false positives and missed objects, and test images with the ground truth
and each run's detections side by side.
"""
from __future__ import annotations

from ..evaluation.report import write_report
from .common import ArgumentParser, add_option, tool_main


def build_parser(prog: str | None = None) -> ArgumentParser:
    p = ArgumentParser(prog=prog, description=__doc__)
    p.add_argument("runs", nargs="+", help="run output folders")
    p.add_argument("--output", default="report.html", metavar="FILE",
                   help="the HTML file to write (default: report.html)")
    p.add_argument("--title", default="Detection report",
                   help="the page's title (default: Detection report)")
    add_option(p, "--annotations")
    add_option(p, "--images")
    p.add_argument("--num-images", type=int, default=6,
                   help="test images shown (default: 6)")
    add_option(p, "--score-thr")
    add_option(p, "--evaluator")
    return p


@tool_main
def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    path = write_report(args.runs, args.output, annotations=args.annotations,
                        images=args.images, title=args.title, num_images=args.num_images,
                        score_thresh=args.score_thr, backend=args.evaluator)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0

