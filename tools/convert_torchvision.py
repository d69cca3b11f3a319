"""Convert a torchvision ``fasterrcnn_resnet50_fpn`` checkpoint into this project's format.

    python tools/convert_torchvision.py fasterrcnn_resnet50_fpn_coco-258fb6c6.pth \\
        output/tv_r50_fpn.pth [--config configs/coco/faster_rcnn_R_50_FPN_torchvision.yaml]

The output ``{"model", "config", "classes", "iteration": 0}`` loads with
``torch.load(path, weights_only=True)``. torchvision's COCO model has 91 outputs with label ==
COCO category id; the 91-way classifier is kept as is (``num_classes = 90``, ``classes[i - 1] =
{"id": i, "name": ...}``, "N/A" for the ten unused ids), so scores are unchanged. The stored config
has ``model.backbone.weights: null``: the checkpoint holds every weight.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
from torch import Tensor

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from detection.build import build_model  # noqa: E402
from detection.coco_names import coco_id_classes  # noqa: E402
from detection.config import config_to_dict, load_config  # noqa: E402

DEFAULT_CONFIG = ROOT / "configs" / "coco" / "faster_rcnn_R_50_FPN_torchvision.yaml"

# torchvision prefix -> ours (first match wins)
_PREFIXES = [
    ("backbone.body.", "backbone.bottom_up."),
    ("backbone.fpn.", "backbone.fpn."),
    ("rpn.head.conv.0.0.", "rpn.head.conv."),  # Conv2dNormActivation inside a Sequential
    ("rpn.head.conv.", "rpn.head.conv."),  # torchvision < 0.13 checkpoints
    ("rpn.head.", "rpn.head."),
    ("roi_heads.box_head.", "roi_heads.box_head."),
    ("roi_heads.box_predictor.", "roi_heads.box_predictor."),
]


def convert_state_dict(tv_state: dict[str, Tensor]) -> dict[str, Tensor]:
    """torchvision FasterRCNN state_dict -> ours (BN ``num_batches_tracked`` dropped)."""
    out = {}
    for key, value in tv_state.items():
        if key.endswith("num_batches_tracked"):
            continue
        for old, new in _PREFIXES:
            if key.startswith(old):
                out[new + key[len(old):]] = value
                break
        else:
            raise KeyError(f"torchvision key {key!r} has no counterpart in our Faster R-CNN "
                           "(only fasterrcnn_resnet50_fpn-style models convert)")
    return out


def _read_torchvision(src: str | os.PathLike) -> dict[str, Tensor]:
    try:
        state = torch.load(src, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"torchvision checkpoint not found: {src}") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # torchvision's references/detection training checkpoint
    if not isinstance(state, dict) or "roi_heads.box_predictor.cls_score.weight" not in state:
        raise ValueError(f"{src}: not a torchvision Faster R-CNN state_dict "
                         "(no roi_heads.box_predictor.cls_score.weight)")
    return state


def convert_checkpoint(
    tv_state: dict[str, Tensor], config_path: str | os.PathLike = DEFAULT_CONFIG
) -> dict:
    """Our checkpoint dict from a torchvision state_dict, checked by loading it (strict)."""
    num_outputs = tv_state["roi_heads.box_predictor.cls_score.weight"].shape[0]
    num_classes = num_outputs - 1
    cfg = load_config(config_path, [f"model.num_classes={num_classes}",
                                    "model.backbone.weights=null"])
    if num_outputs == 91:
        classes = coco_id_classes()
    else:  # a fine-tuned torchvision model: no names known
        classes = [{"id": i, "name": f"class_{i}"} for i in range(1, num_outputs)]
    state = convert_state_dict(tv_state)
    try:
        build_model(cfg).load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"converted weights do not fit the model of {config_path}: {e}") from None
    return {"model": state, "config": config_to_dict(cfg), "classes": classes, "iteration": 0}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="torchvision checkpoint (.pth state_dict or training ckpt)")
    parser.add_argument("dst", help="output checkpoint path")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG),
                        help="config describing torchvision's model (default: %(default)s)")
    args = parser.parse_args(argv)
    checkpoint = convert_checkpoint(_read_torchvision(args.src), args.config)
    Path(args.dst).parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, args.dst)
    print(f"wrote {args.dst}: {len(checkpoint['model'])} tensors, "
          f"{len(checkpoint['classes'])} classes")


if __name__ == "__main__":
    main()
