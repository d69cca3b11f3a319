"""Print several runs' COCO or VOC results side by side, as Tables 7/8 of He et al. (2016).

    resdet compare output/vgg16 output/r101 [--markdown]
    resdet compare output/vgg16/eval.json output/r101/eval.json

Each argument is a run's output folder (its eval.json is read) or an eval.json file. Rows:
mAP@.5, mAP@[.5, .95] for COCO results, VOC mAP@.5 (11-point, all-point) for VOC results (a run
of the other kind shows - there), then the AP of every category (percent); one column per run,
headed by its backbone (with the run's folder name when two runs share a backbone).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional

from .common import ArgumentParser, tool_main

SUMMARY_ROWS = (("mAP@.5", "mAP50"), ("mAP@[.5, .95]", "mAP"))
VOC_ROWS = (("VOC mAP@.5 (11-point)", "mAP_11point"), ("VOC mAP@.5 (all-point)", "mAP_allpoint"))


def _is_voc(result: dict) -> bool:
    return "mAP_11point" in result  # VOCEvaluator's (detection.evaluation.is_voc_result)


def summary_rows(evals: list[dict]) -> list[tuple[str, str, bool]]:
    """``(label, key, voc)`` of the summary rows the runs need: COCO's, VOC's or both."""
    kinds = {_is_voc(e) for e in evals}
    return ([(label, key, False) for label, key in SUMMARY_ROWS] * (False in kinds)
            + [(label, key, True) for label, key in VOC_ROWS] * (True in kinds))


def load_eval(path: str | Path) -> dict:
    """Read ``path`` (an eval.json, or a folder holding one); raise naming the file on error."""
    path = Path(path)
    file = path / "eval.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"no eval.json at {file}")
    try:
        result = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{file} is not valid JSON: {e}") from None
    if not isinstance(result, dict):
        raise ValueError(f"{file}: expected a JSON object, got {type(result).__name__}")
    missing = [key for _, key in SUMMARY_ROWS if key not in result]
    if missing:
        raise ValueError(f"{file}: missing key(s) {missing}; is this an eval.json of a run?")
    result["_source"] = file
    return result


def _headers(evals: list[dict]) -> list[str]:
    names = [str(e.get("backbone") or e["_source"].parent.name) for e in evals]
    return [f"{n} ({e['_source'].parent.name})" if names.count(n) > 1 else n
            for n, e in zip(names, evals)]


def _fmt(value: Any) -> str:
    if value is None or isinstance(value, str):
        return "-" if value is None else value
    value = float(value)
    if not math.isfinite(value) or value < 0:  # COCOeval writes -1 for "no ground truth"
        return "n/a"
    return f"{value:.1f}"


def build_rows(evals: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Header and body rows: the summary metrics, then per-category AP (union of categories in
    the order first seen; ``-`` where a run lacks that category)."""
    header = ["metric", *_headers(evals)]
    rows = [[label, *(_fmt(e.get(key)) if _is_voc(e) == voc else "-" for e in evals)]
            for label, key, voc in summary_rows(evals)]
    categories: list[str] = []
    for e in evals:
        for name in (e.get("per_category") or {}):
            if name not in categories:
                categories.append(name)
    for name in categories:
        rows.append([name, *(_fmt((e.get("per_category") or {}).get(name)) for e in evals)])
    return header, rows


def format_text(header: list[str], rows: list[list[str]],
                num_summary: int = len(SUMMARY_ROWS)) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(  # noqa: E731 - metric names left, numbers right-aligned
        c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    sep = "  ".join("-" * w for w in widths)
    body = [line(r) for r in rows[:num_summary]]
    if len(rows) > num_summary:
        body += [sep, *(line(r) for r in rows[num_summary:])]
    return "\n".join([line(header), sep, *body])


def format_markdown(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |",
           "| " + " | ".join([":---"] + ["---:"] * (len(header) - 1)) + " |"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def build_parser(prog: str | None = None) -> ArgumentParser:
    parser = ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("runs", nargs="+", help="run output folders or eval.json files")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    return parser


@tool_main
def main(argv: Optional[list[str]] = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    evals = [load_eval(p) for p in args.runs]
    header, rows = build_rows(evals)
    print(format_markdown(header, rows) if args.markdown
          else format_text(header, rows, len(summary_rows(evals))))
    return 0

