"""Check a config's data before training: every image read, every box judged, in parallel.

    resdet data check --config my_data.yaml
    resdet data check --config my_data.yaml --strict --workers 8

Reads every image and annotation of the train and test sets the config names, through the same
decoding a training run uses, and reports what a run would skip: missing, corrupt or unreadable
images (and images of another size than their annotation says), each kind of bad box (a
non-finite coordinate, a negative or zero width or height, wholly outside its image, too small
after clipping) with its annotation named, and images without a box to train on; then boxes per
class and box sizes (COCO's small / medium / large, width and height quartiles in original
pixels). Nothing is trained. The whole report is written as JSON (default:
<output_dir>/data_check.json); --strict exits with status 2 when anything would be skipped.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Optional

from ..config import Config, dump_config, load_config
from ..data.check import check_dataset, problem_count
from ..engine.files import write_text
from ..setup import (build_test_dataset, build_train_dataset, dataset_source, has_test_data,
                     prepare_data)
from .common import ArgumentParser, UserError, add_config_options, tool_main

SHOWN = 5  # names printed per kind; the JSON report has them all


def build_parser(prog: str | None = None) -> ArgumentParser:
    p = ArgumentParser(prog=prog, description=__doc__)
    add_config_options(p, required=True)
    p.add_argument("--output", metavar="FILE",
                   help="the JSON file to write the report to (default: "
                        "<output_dir>/data_check.json)")
    p.add_argument("--workers", type=int, default=2,
                   help="processes reading images (default: 2; 0: this process)")
    p.add_argument("--strict", action="store_true",
                   help="exit with status 2 when a training run would skip anything")
    return p


def checking_config(cfg: Config) -> Config:
    """``cfg`` with every image kept and read, and every bad box recorded (not raised)."""
    return dataclasses.replace(cfg, data=dataclasses.replace(
        cfg.data, filter_empty=False, on_bad_image="error", on_bad_annotation="skip"))


def check_split(cfg: Config, split: str, workers: int) -> dict[str, Any]:
    build = build_train_dataset if split == "train" else build_test_dataset
    dataset = build(checking_config(cfg))
    dataset.transforms = None  # the images as they are on disk
    return {"source": dataset_source(cfg, train=split == "train"),
            **check_dataset(dataset, workers=workers)}


def format_split(split: str, report: dict[str, Any], filter_empty: bool) -> list[str]:
    lines = [f"{split}: {report['source']}: {report['images']} images, {report['boxes']} boxes "
             f"({report['ignored_boxes']} crowd / difficult, {report['clipped_boxes']} clipped "
             "to their image)"]
    bad = report["bad_images"]
    if bad:
        kinds = sorted({b["kind"] for b in bad})
        lines.append(f"  {len(bad)} bad image(s): " + ", ".join(
            f"{sum(b['kind'] == k for b in bad)} {k}" for k in kinds))
        lines += [f"    {b['error']}" for b in bad[:SHOWN]]
    for kind, names in report["bad_boxes"].items():
        if names:
            lines.append(f"  {len(names)} bad box(es), {kind}:")
            lines += [f"    {n}" for n in names[:SHOWN]]
    empty = report["empty_images"]
    if empty["count"]:
        what = "left out of training (data.filter_empty)" if (
            split == "train" and filter_empty) else "kept"
        lines.append(f"  {empty['count']} image(s) without a box, {what}: image ids "
                     f"{empty['image_ids'][:SHOWN]}{' ...' if empty['count'] > SHOWN else ''}")
    sizes = report["box_sizes"]
    lines.append("  boxes per class: " + ", ".join(f"{k} {v}" for k, v in
                                                  report["classes"].items()))
    spread = {k: " / ".join(f"{v:g}" for v in sizes[k].values()) for k in ("width", "height")}
    lines.append(f"  box sizes: {sizes['small']} small, {sizes['medium']} medium, "
                 f"{sizes['large']} large; width {spread['width']} px, height "
                 f"{spread['height']} px (min / quartiles / max)")
    return lines


@tool_main
def main(argv: Optional[list[str]] = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    cfg = load_config(args.config, args.set)
    if args.print_config:
        print(dump_config(cfg), end="")
        return 0
    cfg = prepare_data(cfg)
    splits = ("train", "test") if has_test_data(cfg) else ("train",)
    report = {split: check_split(cfg, split, max(0, args.workers)) for split in splits}
    skipped = 0
    for split, part in report.items():
        filter_empty = cfg.data.filter_empty and split == "train"
        print("\n".join(format_split(split, part, cfg.data.filter_empty)))
        skipped += problem_count(part, filter_empty=filter_empty)
    output = Path(args.output or Path(cfg.output_dir) / "data_check.json")
    write_text(output, json.dumps(report, indent=1) + "\n")
    print(f"{skipped} thing(s) a training run would skip; report: {output}")
    if args.strict and skipped:
        raise UserError(f"--strict: {skipped} image(s) or box(es) would be skipped (listed "
                        f"above and in {output})")
    return 0
