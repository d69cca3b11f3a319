"""Generate the synthetic shapes dataset (COCO format) of the quick start and the tests.

    resdet data synthetic --root datasets/synthetic [--num-train 400 --num-val 100
        --image-size 160 --seed 0]

Writes <root>/{train,val}/*.jpg and <root>/annotations/{train,val}.json; does nothing if the
same set is already there (an existing folder with other content is an error).
"""
from __future__ import annotations

import time

from ..data.synthetic import ensure_synthetic
from .common import ArgumentParser, tool_main


def build_parser(prog: str | None = None) -> ArgumentParser:
    parser = ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("--root", required=True, metavar="DIR",
                        help="the folder to write the set into")
    parser.add_argument("--num-train", type=int, default=400,
                        help="training images (default: 400)")
    parser.add_argument("--num-val", type=int, default=100,
                        help="validation images (default: 100)")
    parser.add_argument("--image-size", type=int, default=160,
                        help="longer image side in px (default: 160)")
    parser.add_argument("--seed", type=int, default=0,
                        help="the set's seed: another seed, another set (default: 0)")
    parser.add_argument("--max-objects", type=int, default=4,
                        help="objects per image, at most (default: 4)")
    parser.add_argument("--empty-fraction", type=float, default=0.08,
                        help="share of images without any object (default: 0.08)")
    return parser


@tool_main
def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    start = time.perf_counter()
    paths = ensure_synthetic(args.root, num_train=args.num_train, num_val=args.num_val,
                             image_size=args.image_size, seed=args.seed,
                             max_objects=args.max_objects, empty_fraction=args.empty_fraction)
    print(f"synthetic COCO set at {paths.root} ({time.perf_counter() - start:.1f} s)")
    for name in ("train_images", "train_annotations", "val_images", "val_annotations"):
        print(f"  {name}: {getattr(paths, name)}")
    return 0

