"""Generate the synthetic shapes dataset (COCO format) used by the quickstart and the tests.

    python tools/make_synthetic.py --root datasets/synthetic [--num-train 400 --num-val 100
        --image-size 160 --seed 0]

Writes ``<root>/{train,val}/*.jpg`` and ``<root>/annotations/{train,val}.json``; does nothing if
the same set is already there (an existing folder with other content is an error).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from detection.cli import ArgumentParser, tool_main  # noqa: E402
from detection.data.synthetic import ensure_synthetic  # noqa: E402


@tool_main
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, help="output folder")
    parser.add_argument("--num-train", type=int, default=400)
    parser.add_argument("--num-val", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=160, help="longer image side (px)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-objects", type=int, default=4, help="objects per image, at most")
    parser.add_argument("--empty-fraction", type=float, default=0.08,
                        help="share of images without any object")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    paths = ensure_synthetic(args.root, num_train=args.num_train, num_val=args.num_val,
                             image_size=args.image_size, seed=args.seed,
                             max_objects=args.max_objects, empty_fraction=args.empty_fraction)
    print(f"synthetic COCO set at {paths.root} ({time.perf_counter() - start:.1f} s)")
    for name in ("train_images", "train_annotations", "val_images", "val_annotations"):
        print(f"  {name}: {getattr(paths, name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
