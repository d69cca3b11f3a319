#!/usr/bin/env python
"""Convert a torchvision ``fasterrcnn_resnet50_fpn`` or ``maskrcnn_resnet50_fpn`` checkpoint into
this project's format.

    python tools/convert_torchvision.py fasterrcnn_resnet50_fpn_coco-258fb6c6.pth \\
        output/tv_r50_fpn.pth [--config configs/coco/faster_rcnn_R_50_FPN_torchvision.yaml]
    python tools/convert_torchvision.py maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth \\
        output/tv_mask_r50_fpn.pth     # configs/coco/mask_rcnn_R_50_FPN_torchvision.yaml

The output ``{"model", "config", "classes", "iteration": 0}`` loads with
``torch.load(path, weights_only=True)``; see ``detection/convert.py`` for the mapping. The
stored config has ``model.backbone.weights: null`` (the checkpoint holds every weight) and
``model.backbone.norm_eps`` from ``--norm-eps`` (0: torchvision runs its COCO weights so).
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout, uninstalled

from detection.cli import ArgumentParser, tool_main  # noqa: E402
from detection.config import load_config  # noqa: E402
from detection.convert import (convert_checkpoint, is_mask_rcnn,  # noqa: E402
                               read_torchvision_checkpoint)
from detection.engine.checkpoint import save_checkpoint  # noqa: E402

DEFAULT_CONFIG = ROOT / "configs" / "coco" / "faster_rcnn_R_50_FPN_torchvision.yaml"
DEFAULT_MASK_CONFIG = ROOT / "configs" / "coco" / "mask_rcnn_R_50_FPN_torchvision.yaml"


@tool_main
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="torchvision checkpoint (.pth state_dict or training ckpt)")
    parser.add_argument("dst", help="output checkpoint path")
    parser.add_argument("--config", help="config describing torchvision's model (default: "
                                          f"{DEFAULT_CONFIG.name}, or {DEFAULT_MASK_CONFIG.name} "
                                          "for a Mask R-CNN)")
    parser.add_argument("--norm-eps", type=float, default=0.0,
                        help="FrozenBN eps the model ran with: 0 for torchvision's published "
                             "weights (default), 1e-5 for one trained with its references")
    args = parser.parse_args(argv)
    state = read_torchvision_checkpoint(args.src)
    config = args.config or (DEFAULT_MASK_CONFIG if is_mask_rcnn(state) else DEFAULT_CONFIG)
    checkpoint = convert_checkpoint(state, load_config(config), norm_eps=args.norm_eps)
    save_checkpoint(checkpoint, args.dst)  # atomic: a crash leaves no half-written file
    print(f"wrote {args.dst}: {len(checkpoint['model'])} tensors, "
          f"{len(checkpoint['classes'])} classes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
