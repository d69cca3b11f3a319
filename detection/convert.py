"""torchvision's Faster R-CNN <-> ours: checkpoint conversion and a torchvision twin of a model.

- :func:`convert_checkpoint` turns a torchvision ``fasterrcnn_resnet50_fpn``-style state_dict
  (or ``maskrcnn_resnet50_fpn``'s: :func:`is_mask_rcnn`; its config needs ``model.mask_head``)
  into our checkpoint ``{"model", "config", "classes", "iteration": 0}`` (loadable with
  ``torch.load(weights_only=True)``); ``tools/convert_torchvision.py`` is its command line.
  torchvision's COCO model has 91 outputs with label == COCO category id; the 91-way classifier is
  kept as is (``num_classes = 90``, ``classes[i - 1] = {"id": i, "name": ...}``, "N/A" for the
  ten unused ids), so scores are unchanged. The stored config has ``model.backbone.norm_eps``
  0.0 by default: torchvision runs its published COCO detectors' FrozenBatchNorm2d with eps 0
  (its builders call ``overwrite_eps(model, 0.0)``; the weights were trained that way); with
  the default 1e-5 the scores of a model whose running variances are small drift by more than
  1e-3 (``tests/detection/test_torchvision_equivalence.py`` measures it).
- :func:`torchvision_twin` builds torchvision's ``FasterRCNN`` (``MaskRCNN`` for a model with a
  mask head) with every hyperparameter and weight of one of our R-xx-FPN models, read from the
  model itself (not from a config): the reference of the equivalence tests and of
  ``tools/benchmark.py --compare-torchvision``.

Parameter names map by prefix (``_PREFIXES``); torchvision's BN ``num_batches_tracked`` counters
are dropped (FrozenBN has none).
"""
from __future__ import annotations

import math
import os
from dataclasses import replace
from functools import partial

import torch
from torch import Tensor, nn

from .box_heads import TwoFCHead
from .build import build_model
from .coco_names import coco_id_classes
from .config import Config, config_to_dict
from .faster_rcnn import FasterRCNN
from .fpn import FPN

__all__ = ["TORCHVISION_COCO_FILE", "TORCHVISION_COCO_URL", "convert_state_dict",
           "to_torchvision_state_dict", "read_torchvision_checkpoint", "convert_checkpoint",
           "is_mask_rcnn", "torchvision_twin"]

# torchvision prefix -> ours (first match wins)
#: torchvision's published COCO detector (FasterRCNN_ResNet50_FPN_Weights.COCO_V1): the file to
#: obtain for detections without training (docs/inference.md), and where it is published
TORCHVISION_COCO_FILE = "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth"
TORCHVISION_COCO_URL = f"https://download.pytorch.org/models/{TORCHVISION_COCO_FILE}"


_PREFIXES = [
    ("backbone.body.", "backbone.bottom_up."),
    ("backbone.fpn.", "backbone.fpn."),
    ("rpn.head.conv.0.0.", "rpn.head.conv."),  # Conv2dNormActivation inside a Sequential
    ("rpn.head.conv.", "rpn.head.conv."),  # torchvision < 0.13 checkpoints
    ("rpn.head.", "rpn.head."),
    ("roi_heads.box_head.", "roi_heads.box_head."),
    ("roi_heads.box_predictor.", "roi_heads.box_predictor."),
    # Mask R-CNN: MaskRCNNHeads' Conv2dNormActivation blocks (mask_fcn1.. in checkpoints saved
    # before its version 2, as the published maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth), then
    # MaskRCNNPredictor's conv5_mask and mask_fcn_logits: all one MaskHead here
    *((f"roi_heads.mask_head.{i}.0.", f"roi_heads.mask_head.mask_fcn{i + 1}.") for i in range(8)),
    ("roi_heads.mask_head.mask_fcn", "roi_heads.mask_head.mask_fcn"),
    ("roi_heads.mask_predictor.", "roi_heads.mask_head."),
]
_OLD_NAMES = ("rpn.head.conv.", "roi_heads.mask_head.mask_fcn")  # read, never written


def _rename(key: str, prefixes: list[tuple[str, str]]) -> str | None:
    for old, new in prefixes:
        if key.startswith(old):
            return new + key[len(old):]
    return None


def convert_state_dict(tv_state: dict[str, Tensor]) -> dict[str, Tensor]:
    """torchvision FasterRCNN state_dict -> ours (BN ``num_batches_tracked`` dropped)."""
    out = {}
    for key, value in tv_state.items():
        if key.endswith("num_batches_tracked"):
            continue
        new = _rename(key, _PREFIXES)
        if new is None:
            raise KeyError(f"torchvision key {key!r} has no counterpart in our Faster R-CNN "
                           "(only fasterrcnn_resnet50_fpn- and maskrcnn_resnet50_fpn-style "
                           "models convert)")
        out[new] = value
    return out


def to_torchvision_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Ours -> today's torchvision names (the inverse of :func:`convert_state_dict`)."""
    inverse = [(new, old) for old, new in _PREFIXES if old not in _OLD_NAMES]
    return {_rename(key, inverse): value for key, value in state.items()}


def is_mask_rcnn(tv_state: dict[str, Tensor]) -> bool:
    """Whether a torchvision state_dict is a Mask R-CNN's (it has a mask predictor)."""
    return "roi_heads.mask_predictor.mask_fcn_logits.weight" in tv_state


def read_torchvision_checkpoint(src: str | os.PathLike) -> dict[str, Tensor]:
    """A torchvision Faster / Mask R-CNN state_dict (or references/detection training
    checkpoint)."""
    if not os.path.isfile(src):
        raise FileNotFoundError(
            f"torchvision checkpoint not found: {src} (nothing is downloaded here: get "
            f"torchvision's COCO detector, {TORCHVISION_COCO_URL}, where there is a network, "
            f"then: resdet convert torchvision {TORCHVISION_COCO_FILE} tv_r50_fpn.pth; "
            "resdet infer --weights tv_r50_fpn.pth --input photo.jpg --output out/)")
    try:
        state = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated file, a pickle of arbitrary objects, ...
        raise ValueError(f"{src}: cannot read as a weights-only checkpoint: {e}") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # torchvision's references/detection training checkpoint
    if not isinstance(state, dict) or "roi_heads.box_predictor.cls_score.weight" not in state:
        raise ValueError(f"{src}: not a torchvision Faster R-CNN state_dict "
                         "(no roi_heads.box_predictor.cls_score.weight)")
    return state


def convert_checkpoint(tv_state: dict[str, Tensor], cfg: Config, *,
                       norm_eps: float = 0.0) -> dict:
    """Our checkpoint dict from a torchvision state_dict, checked by loading it (strict).

    ``cfg`` describes torchvision's model (``configs/coco/faster_rcnn_R_50_FPN_torchvision.yaml``);
    ``model.num_classes`` is set from the checkpoint, ``model.backbone.weights`` to null and
    ``model.backbone.norm_eps`` to ``norm_eps``: 0.0 for torchvision's published detectors, 1e-5
    for one trained with torchvision's references/detection today (FrozenBatchNorm2d's default).
    """
    num_outputs = tv_state["roi_heads.box_predictor.cls_score.weight"].shape[0]
    m = cfg.model
    backbone = replace(m.backbone, weights=None, norm_eps=float(norm_eps))
    cfg = replace(cfg, model=replace(m, num_classes=num_outputs - 1, backbone=backbone))
    if num_outputs == 91:
        classes = coco_id_classes()
    else:  # a fine-tuned torchvision model: no names known
        classes = [{"id": i, "name": f"class_{i}"} for i in range(1, num_outputs)]
    if is_mask_rcnn(tv_state) != m.mask_head.enabled:
        raise ValueError("a torchvision Mask R-CNN converts with a config whose "
                         "model.mask_head.enabled is true, a Faster R-CNN with one where it is "
                         f"false; got a {'Mask' if is_mask_rcnn(tv_state) else 'Faster'} R-CNN "
                         f"and model.mask_head.enabled {m.mask_head.enabled}")
    state = convert_state_dict(tv_state)
    try:
        build_model(cfg).load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"converted weights do not fit the model of the config: {e}") from None
    return {"model": state, "config": config_to_dict(cfg), "classes": classes, "iteration": 0}


# ------------------------------------------------------------------------------------- twin
def _check_twin(model: FasterRCNN) -> None:
    """Raise unless ``model`` is an R-xx-FPN that torchvision's ``FasterRCNN`` can express."""
    problems = []
    body = getattr(model.backbone, "bottom_up", None)
    if not isinstance(model.backbone, FPN) or not isinstance(model.roi_heads.box_head,
                                                             TwoFCHead):
        problems.append("need an FPN backbone and the fpn_2fc box head")
    elif not (getattr(body, "residual", False) and body.shortcut == "B"
              and not body.stride_in_1x1 and body.norm == "FrozenBN"):
        problems.append("need a ResNet with shortcut B, stride_in_1x1 false and FrozenBN")
    elif len(_norm_eps(model)) != 1:
        problems.append(f"need one FrozenBN eps, got {sorted(_norm_eps(model))}")
    if model.input_format != "RGB":
        problems.append("need input_format RGB")
    rpn, rh = model.rpn, model.roi_heads
    if rpn.in_features != ["p2", "p3", "p4", "p5", "p6"] or rh.in_features != [
            "p2", "p3", "p4", "p5"]:
        problems.append("need rpn.in_features p2..p6 and roi_heads.in_features p2..p5")
    if rh.pooler.pooler_type != "ROIAlign":
        problems.append("need roi_heads.pooler_type ROIAlign (aligned=False)")
    if rpn.min_box_size != 1e-3 or not math.isclose(rpn.smooth_l1_beta, 1 / 9) or (
            not math.isclose(rh.smooth_l1_beta, 1 / 9)) or rh.min_box_size != 1e-2:
        problems.append("torchvision fixes rpn.min_box_size 1e-3 and smooth_l1_beta 1/9")
    mask = rh.mask_head
    if mask is not None and (mask.class_agnostic or rh.mask_pooler is None
                             or rh.mask_pooler.pooler_type != "ROIAlign"):
        problems.append("need a class-specific mask head on its own ROIAlign pooler")
    if problems:
        raise ValueError("torchvision's FasterRCNN cannot express this model (it needs an "
                         "R-xx-FPN like fasterrcnn_resnet50_fpn): " + "; ".join(problems))


def _norm_eps(model: nn.Module) -> set[float]:
    from torchvision.ops import FrozenBatchNorm2d

    return {m.eps for m in model.modules() if isinstance(m, FrozenBatchNorm2d)}


def _mask_parts(rh) -> dict:
    """torchvision ``MaskRCNN``'s mask arguments for our RoI heads' mask head (none without)."""
    if rh.mask_head is None:
        return {}
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.ops import MultiScaleRoIAlign

    head, pooler = rh.mask_head, rh.mask_pooler
    dims = [head.conv5_mask.out_channels] * head.num_convs
    channels = head.mask_fcn1.in_channels if head.num_convs else head.conv5_mask.in_channels
    return {"mask_roi_pool": MultiScaleRoIAlign(["0", "1", "2", "3"], pooler.output_size,
                                                pooler.sampling_ratio),
            "mask_head": MaskRCNNHeads(channels, dims, 1),
            "mask_predictor": MaskRCNNPredictor(dims[-1] if dims else channels,
                                                head.conv5_mask.out_channels,
                                                head.num_masks)}


def torchvision_twin(model: FasterRCNN, *, min_size: int, max_size: int) -> nn.Module:
    """torchvision's ``FasterRCNN`` with ``model``'s hyperparameters and a copy of its weights.

    ``min_size``/``max_size`` set torchvision's internal resize; pass the input's sides to make
    it the identity (our model expects images already resized by the data transforms). The twin
    takes float images in 0..1 (ours: 0..255).
    """
    import torchvision
    from torchvision.models.detection import FasterRCNN as TVFasterRCNN
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    _check_twin(model)
    body, rpn, rh = model.backbone.bottom_up, model.rpn, model.roi_heads
    twin_class = TVFasterRCNN if rh.mask_head is None else MaskRCNN
    (eps,) = _norm_eps(model)
    tv_body = getattr(torchvision.models, f"resnet{body.depth}")(
        weights=None, norm_layer=partial(FrozenBatchNorm2d, eps=eps))
    backbone = BackboneWithFPN(
        tv_body, {f"layer{k}": str(k - 1) for k in range(1, 5)},
        [body.stage_channels[f"res{k}"] for k in range(2, 6)],
        model.backbone.out_channels["p2"], extra_blocks=LastLevelMaxPool())
    anchors = rpn.anchor_generator
    pooler, head = rh.pooler, rh.box_head
    twin = twin_class(
        backbone, min_size=min_size, max_size=max_size,
        image_mean=(model.pixel_mean.flatten() / 255).tolist(),
        image_std=(model.pixel_std.flatten() / 255).tolist(),
        rpn_anchor_generator=AnchorGenerator(tuple(tuple(s) for s in anchors.sizes),
                                             tuple(tuple(a) for a in anchors.aspect_ratios)),
        rpn_pre_nms_top_n_train=rpn.pre_nms_topk[True],
        rpn_pre_nms_top_n_test=rpn.pre_nms_topk[False],
        rpn_post_nms_top_n_train=rpn.post_nms_topk[True],
        rpn_post_nms_top_n_test=rpn.post_nms_topk[False], rpn_nms_thresh=rpn.nms_thresh,
        rpn_fg_iou_thresh=rpn.matcher.high_threshold, rpn_bg_iou_thresh=rpn.matcher.low_threshold,
        rpn_batch_size_per_image=rpn.sampler.batch_size_per_image,
        rpn_positive_fraction=rpn.sampler.positive_fraction, rpn_score_thresh=rpn.score_thresh,
        box_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], pooler.output_size,
                                        pooler.sampling_ratio),
        box_head=TwoMLPHead(head.fc6.in_features, head.out_channels),
        box_predictor=FastRCNNPredictor(head.out_channels, rh.box_predictor.num_classes + 1),
        box_score_thresh=rh.score_thresh, box_nms_thresh=rh.nms_thresh,
        box_detections_per_img=rh.detections_per_img,
        box_fg_iou_thresh=rh.matcher.high_threshold, box_bg_iou_thresh=rh.matcher.low_threshold,
        box_batch_size_per_image=rh.sampler.batch_size_per_image,
        box_positive_fraction=rh.sampler.positive_fraction,
        bbox_reg_weights=tuple(rh.box_coder.weights), **_mask_parts(rh),
    )
    like = next(model.parameters())
    twin.to(like.device, like.dtype)
    twin.load_state_dict(to_torchvision_state_dict(model.state_dict()), strict=True)
    ours = dict(model.named_parameters())  # the same frozen stages (no gradient)
    for name, param in twin.named_parameters():
        param.requires_grad_(ours[_rename(name, _PREFIXES)].requires_grad)
    return twin
