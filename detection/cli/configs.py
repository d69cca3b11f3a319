"""List the shipped configs, each with the number it should reach.

    resdet configs                 # every config a run can start from
    resdet configs coco/msra       # those whose name starts with coco/msra

A config is used by its name: `resdet train --config coco/faster_rcnn_R_50_FPN_1x` (with or
without .yaml) reads the shipped file when no such path exists from the current folder, and a
config of your own may name shipped parts in _base_ (_base_/models/faster_rcnn_R_50_FPN.yaml).
The numbers come from the one home of the figures (docs/results/references.yaml and
quickstart.yaml, shipped with the package): COCO box AP on val2017 from Detectron2's model zoo,
torchvision's weights table or the paper, and the quick start's own measured results; "-" where
a config has none (pretraining, experiments, checks). Most reference numbers have not been
measured with this code yet (they need COCO or VOC and GPUs).
"""
from __future__ import annotations

from typing import Optional

from ..resources import configs_root, list_configs, read_results
from .common import ArgumentParser, tool_main

_SOURCES = {"detectron2": "Detectron2", "detectron2_masks": "Detectron2",
            "torchvision": "torchvision", "torchvision_masks": "torchvision",
            "paper": "the paper"}


def reference(name: str) -> str:
    """The figure a shipped config should reach, in a few words (``-`` when none)."""
    quick = read_results("quickstart.yaml")
    if f"configs/{name}.yaml" == quick["config"]:
        fresh, runs = quick["fresh_run"], quick["seeds"]["runs"]
        return (f"mAP@.5 {fresh['mAP50']}, mAP {fresh['mAP']} on the shapes val split, "
                f"measured here (5 seeds: {min(r['mAP50'] for r in runs)}-"
                f"{max(r['mAP50'] for r in runs)} mAP@.5)")
    refs = read_results("references.yaml")["configs"]
    entry = refs.get(name)
    if entry is None:
        return "-"
    if "as" in entry:
        twin = refs[entry["as"]]
        return (f"box AP {twin['box_ap']} ({_SOURCES[twin['source']]} {twin['model']}, "
                "MSRA's ImageNet weights; expect a little below with torchvision's)")
    if entry.get("box_ap") is not None:
        masks = f", mask AP {entry['mask_ap']}" if entry.get("mask_ap") is not None else ""
        return (f"box AP {entry['box_ap']}{masks} ({_SOURCES[entry['source']]} "
                f"{entry['model']})")
    if entry.get("mAP50") is not None:
        return (f"mAP@.5 {entry['mAP50']}, mAP {entry['mAP']} (the paper, Table "
                f"{entry['table']}, COCO val)")
    if entry.get("voc07_mAP") is not None:
        return (f"VOC 2007 test mAP@.5 {entry['voc07_mAP']} (the paper, Table "
                f"{entry['table']})")
    return entry["note"].split(";")[0].split(" (")[0]


def build_parser(prog: str | None = None) -> ArgumentParser:
    parser = ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("prefix", nargs="?", default="",
                        help="list only the configs whose name starts with this")
    return parser


@tool_main
def main(argv: Optional[list[str]] = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    names = [n for n in list_configs() if n.startswith(args.prefix)]
    if not names:
        print(f"no shipped config starts with {args.prefix!r} (in {configs_root()})")
        return 0
    width = max(len(n) for n in names)
    print(f"{'config':<{width}}  reference (COCO val2017 unless said)")
    for name in names:
        print(f"{name:<{width}}  {reference(name)}")
    print(f"\n{len(names)} configs; use one by name: resdet train --config <name>")
    return 0
