"""Write images of a config's data with their boxes drawn, as training sees them (augmented).

    resdet data browse --config my_data.yaml --output browse/ [--num 20] [--split test]

Each image goes through the same dataset and transforms as in a training run (data.augment's
transforms, such as LSJ's crops, or else a resize to a training scale, flip and photometric
changes as data.input says) and is written with its ground-truth boxes drawn, each tagged with
its class name alone (no score: it is no prediction), so a box that moved wrongly under
augmentation, a class mix-up or a bad annotation shows before any training. Images are drawn at
random (--seed), named <index>_<image id>_<file name>.jpg; --split test shows the test set after
the test-time resize.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from ..config import dump_config, load_config
from ..engine.files import write_image
from ..setup import build_test_dataset, build_train_dataset, prepare_data
from ..visualize import draw_detections
from .common import ArgumentParser, UserError, add_config_options, tool_main


def build_parser(prog: str | None = None) -> ArgumentParser:
    p = ArgumentParser(prog=prog, description=__doc__)
    add_config_options(p, required=True)
    p.add_argument("--output", required=True, metavar="DIR",
                   help="folder for the drawn images")
    p.add_argument("--num", type=int, default=20, help="images to write (default: 20)")
    p.add_argument("--split", choices=("train", "test"), default="train",
                   help="the training set with its augmentation, or the test set (default: "
                        "train)")
    p.add_argument("--seed", type=int, default=0,
                   help="which images and augmentations are drawn (default: 0)")
    return p


def browse(dataset, output: Path, *, num: int, seed: int) -> list[Path]:
    """Draw ``num`` random samples of ``dataset`` (transformed) into ``output``."""
    rng = np.random.default_rng(seed)
    if hasattr(dataset.transforms, "set_random_seed"):
        dataset.transforms.set_random_seed(seed)
    names = {i + 1: c["name"] for i, c in enumerate(dataset.classes)}
    output.mkdir(parents=True, exist_ok=True)
    written = []
    for n, index in enumerate(rng.permutation(len(dataset))[:num]):
        sample = dataset[int(index)]
        if sample is None:  # a bad image, skipped with a warning by the dataset
            continue
        image = sample["image"].permute(1, 2, 0).numpy()
        drawn = draw_detections(image, sample["boxes"], None, sample["labels"], names)
        path = output / f"{n:03d}_{sample['image_id']}_{Path(sample['file_name']).stem}.jpg"
        write_image(path, cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
        written.append(path)
    return written


@tool_main
def main(argv: Optional[list[str]] = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    if args.num < 1:
        raise UserError("--num must be at least 1")
    cfg = load_config(args.config, args.set)
    if args.print_config:
        print(dump_config(cfg), end="")
        return 0
    cfg = prepare_data(cfg)
    if args.split == "train":  # every image, empty ones too: they are what training skips
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, filter_empty=False))
    dataset = (build_train_dataset if args.split == "train" else build_test_dataset)(cfg)
    dataset.train = False  # a bad image is skipped (named in a warning), not replaced
    written = browse(dataset, Path(args.output), num=args.num, seed=args.seed)
    print(f"{len(written)} {args.split} image(s) with their boxes drawn -> {args.output}")
    return 0
