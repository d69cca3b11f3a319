"""Convert detection annotations: PASCAL VOC or YOLO to COCO json, COCO json to YOLO.

    resdet convert dataset voc2coco --root datasets/VOCdevkit/VOC2007 \\
        --root datasets/VOCdevkit/VOC2012 --split trainval --out datasets/voc0712_trainval.json
    resdet convert dataset yolo2coco --images data/images/train \\
        --labels data/labels/train --names data/classes.txt --out data/train.json
    resdet convert dataset coco2yolo --annotations data/train.json \\
        --labels data/labels/train --names data/classes.txt

Input files are only read; an output that exists already is refused. The COCO json then trains
with data.train.images set to the image folder printed here.
"""
from __future__ import annotations

import argparse

from ..data.formats import coco_to_yolo, read_class_names, voc_to_coco, write_json, yolo_to_coco
from ..data.voc import VOC_CLASSES
from .common import ArgumentParser, tool_main


def build_parser(prog: str | None = None) -> ArgumentParser:
    p = ArgumentParser(prog=prog, description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, metavar="{voc2coco,yolo2coco,coco2yolo}",
                           parser_class=ArgumentParser)
    voc = sub.add_parser("voc2coco", help="VOCdevkit folder(s) -> COCO json")
    voc.add_argument("--root", action="append", required=True,
                     help="a VOCdevkit/VOCyyyy folder; repeat to concatenate (07+12)")
    voc.add_argument("--split", action="append", required=True,
                     help="ImageSets/Main/<split>.txt: once for every root, or once per root")
    voc.add_argument("--classes", help="class names file (default: the 20 VOC classes)")
    voc.add_argument("--keep-difficult", action="store_true",
                     help="write difficult objects as ordinary boxes (default: iscrowd 1)")
    voc.add_argument("--out", required=True, metavar="FILE", help="the COCO json file to write")
    yolo = sub.add_parser("yolo2coco", help="YOLO txt labels + class names -> COCO json")
    yolo.add_argument("--images", required=True, help="image folder (searched recursively)")
    yolo.add_argument("--labels", required=True, help="label folder, same relative paths")
    yolo.add_argument("--names", required=True, help="class names: one a line, or data.yaml")
    yolo.add_argument("--out", required=True, metavar="FILE",
                      help="the COCO json file to write")
    coco = sub.add_parser("coco2yolo", help="COCO json -> YOLO txt labels + class names")
    coco.add_argument("--annotations", required=True, help="the COCO json to read")
    coco.add_argument("--labels", required=True, metavar="DIR",
                      help="folder for the label files")
    coco.add_argument("--names", required=True, metavar="FILE",
                      help="the class names file to write")
    return p


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    return build_parser(prog).parse_args(argv)


def _summary(data: dict, out: str, images: str) -> str:
    return (f"wrote {out}: {len(data['images'])} images, {len(data['annotations'])} boxes, "
            f"{len(data['categories'])} classes; image folder: {images}")


def run(args: argparse.Namespace) -> str:
    if args.command == "voc2coco":
        splits = args.split[0] if len(args.split) == 1 else args.split
        names = read_class_names(args.classes) if args.classes else VOC_CLASSES
        data, images = voc_to_coco(args.root, splits, class_names=names,
                                   keep_difficult=args.keep_difficult)
        write_json(data, args.out)
        return _summary(data, args.out, images)
    if args.command == "yolo2coco":
        data = yolo_to_coco(args.images, args.labels, args.names)
        write_json(data, args.out)
        return _summary(data, args.out, args.images)
    stats = coco_to_yolo(args.annotations, args.labels, args.names)
    return (f"wrote {stats['images']} label files under {args.labels} ({stats['boxes']} boxes; "
            f"left out: {stats['crowd_skipped']} crowd, {stats['bad_skipped']} bad boxes: "
            f"NaN, empty or outside the image) and {args.names}")


@tool_main
def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    print(run(parse_args(argv, prog)))
    return 0

