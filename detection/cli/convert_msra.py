"""Convert MSRA's ImageNet ResNet weights (Detectron2's R-50.pkl, R-101.pkl) for a backbone.

    resdet convert msra R-50.pkl datasets/pretrained/R-50.pth [--rgb]

The output loads with build_backbone(name, weights=DST, stride_in_1x1=True) and as
model.backbone.weights. The .pkl is read with a restricted unpickler (numpy arrays and plain
data only; a file that asks for anything else is refused without running it). The weights
expect BGR input minus the mean (103.53, 116.28, 123.675) with std 1; --rgb reverses conv1's
input channels so they take RGB input (mean (123.675, 116.28, 103.53), std 1). See
backbones/msra.py.
"""
from __future__ import annotations

from backbones.msra import convert_msra_weights

from ..engine.checkpoint import save_checkpoint
from .common import ArgumentParser, tool_main


def build_parser(prog: str | None = None) -> ArgumentParser:
    parser = ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("src", help="Caffe2 / Detectron .pkl of ImageNet ResNet weights")
    parser.add_argument("dst", help="the .pth file to write")
    parser.add_argument("--rgb", action="store_true",
                        help="reverse conv1's input channels: the weights then take RGB images")
    return parser


@tool_main
def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    state, meta = convert_msra_weights(args.src, rgb=args.rgb)
    save_checkpoint({"model": state, **meta}, args.dst)  # atomic: no half-written file
    mean = ", ".join(f"{v:g}" for v in meta["pixel_mean"])
    fmt = "" if args.rgb else "model.input_format: BGR, "
    print(f"wrote {args.dst}: {meta['arch']} (MSRA, stride in the 1x1 conv), "
          f"{meta['input_format']} input\n"
          f"  use: model.backbone.name: {meta['arch']}, model.backbone.weights: {args.dst}, "
          f"model.backbone.stride_in_1x1: true, {fmt}model.pixel_mean: [{mean}], "
          "model.pixel_std: [1, 1, 1]")
    return 0

