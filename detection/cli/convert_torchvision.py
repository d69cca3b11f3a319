"""Convert a torchvision fasterrcnn_resnet50_fpn or maskrcnn_resnet50_fpn checkpoint into this
project's format.

    resdet convert torchvision fasterrcnn_resnet50_fpn_coco-258fb6c6.pth tv_r50_fpn.pth
    resdet convert torchvision maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth tv_mask_r50_fpn.pth

The output {"model", "config", "classes", "iteration": 0} loads with torch.load(path,
weights_only=True) and runs with `resdet infer --weights` and `resdet eval`; see
detection/convert.py for the mapping. Without --config the model is described by the shipped
coco/faster_rcnn_R_50_FPN_torchvision (every hyperparameter torchvision's), or, for a Mask
R-CNN's checkpoint, coco/mask_rcnn_R_50_FPN_torchvision. The stored config has
model.backbone.weights: null (the checkpoint holds every weight) and model.backbone.norm_eps from
--norm-eps (0: torchvision runs its COCO weights so).
"""
from __future__ import annotations

from ..config import dump_config, load_config
from ..convert import convert_checkpoint, is_mask_rcnn, read_torchvision_checkpoint
from ..engine.checkpoint import save_checkpoint
from .common import ArgumentParser, add_config_options, tool_main

DEFAULT_CONFIG = "coco/faster_rcnn_R_50_FPN_torchvision"  # shipped configs, found by name
DEFAULT_MASK_CONFIG = "coco/mask_rcnn_R_50_FPN_torchvision"


def build_parser(prog: str | None = None) -> ArgumentParser:
    parser = ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("src", help="torchvision checkpoint (.pth state_dict or training ckpt)")
    parser.add_argument("dst", help="the checkpoint file to write (.pth)")
    add_config_options(parser, required=False)
    parser.add_argument("--norm-eps", type=float, default=0.0,
                        help="FrozenBN eps the model ran with: 0 for torchvision's published "
                             "weights (default), 1e-5 for one trained with its references")
    return parser


@tool_main
def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    if args.print_config and not args.config:
        print(dump_config(load_config(DEFAULT_CONFIG, args.set)), end="")
        return 0
    state = read_torchvision_checkpoint(args.src)
    default = DEFAULT_MASK_CONFIG if is_mask_rcnn(state) else DEFAULT_CONFIG
    cfg = load_config(args.config or default, args.set)
    if args.print_config:
        print(dump_config(cfg), end="")
        return 0
    checkpoint = convert_checkpoint(state, cfg, norm_eps=args.norm_eps)
    save_checkpoint(checkpoint, args.dst)  # atomic: a crash leaves no half-written file
    print(f"wrote {args.dst}: {len(checkpoint['model'])} tensors, "
          f"{len(checkpoint['classes'])} classes")
    return 0

