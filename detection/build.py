"""The one place where the model config becomes constructor arguments.

``build_model(cfg)`` assembles Faster R-CNN from ``cfg.model``; the variant follows from
``backbone.name``, ``fpn.enabled`` and ``roi_heads.box_head``:

=================  ==============  ===========  ==========================================
variant            backbone.name   fpn.enabled  roi_heads.box_head (pooler)
=================  ==============  ===========  ==========================================
R-18..152-FPN      resnetXX        true         fpn_2fc (ROIAlign 7x7 on p2..p5)
R-50/101/152-C4    resnetXX        false        c4_res5 (ROIAlign 14x14 on res4, then res5)
VGG-16             vgg16           false        vgg_fc (ROIPool 7x7 on conv5, then fc6/fc7)
=================  ==============  ===========  ==========================================

(``plainXX`` backbones work wherever ``resnetXX`` does.) ``mask_head.enabled`` adds Mask R-CNN's
mask branch to any of them: 4 convolutions on 14x14 RoIs pooled from ``roi_heads.in_features``
(fpn_2fc, vgg_fc: 28x28 masks), or none on the res5 maps of the box head (c4_res5: 14x14).
The RPN runs on ``rpn.in_features`` (``p2..p6`` with FPN, ``res4`` for C4, ``conv5`` for
VGG-16) and the RoI heads pool from ``roi_heads.in_features``; inconsistent combinations raise
``ValueError`` naming the keys.
``roi_heads.box_head`` alone is enough to pick a variant: the config fills the other keys from
it (``detection.config.VARIANT_DEFAULTS``) unless they are set.

Data, solver, evaluation and the training run are built from the config in
``detection/setup.py``; this module needs only the model's parts (no data stack).
"""
from __future__ import annotations

import os

from backbones import build_backbone

from .anchors import AnchorGenerator
from .box_coder import BoxCoder
from .box_heads import BoxPredictor, Res5Head, TwoFCHead, VGGFCHead
from .config import Config, ModelConfig
from .faster_rcnn import FasterRCNN
from .fpn import FPN
from .mask_head import MaskHead
from .matcher import Matcher
from .poolers import RoIPooler
from .roi_heads import RoIHeads
from .rpn import RPN, RPNHead
from .roi_sampling import BalancedSampler

__all__ = ["build_model", "check_trainable_norm"]

FPN_IN_FEATURES = ["res2", "res3", "res4", "res5"]


def build_model(cfg: Config, *, num_classes: int | None = None) -> FasterRCNN:
    """Faster R-CNN for ``cfg.model``; ``num_classes`` (foreground) overrides
    ``cfg.model.num_classes``, which is otherwise required."""
    m = cfg.model
    k = num_classes if num_classes is not None else m.num_classes
    if k is None or k < 1:
        raise ValueError(
            f"model.num_classes is {k!r}: set it in the config or pass num_classes= "
            "(the number of foreground classes of the dataset)"
        )
    _check_variant(m)
    _check_weights_file(m)
    backbone, box_head = _build_backbone_and_box_head(m)
    return FasterRCNN(
        backbone=backbone,
        rpn=_build_rpn(m, backbone),
        roi_heads=_build_roi_heads(m, backbone, box_head, k),
        pixel_mean=m.pixel_mean,
        pixel_std=m.pixel_std,
        size_divisibility=m.size_divisibility,
        input_format=m.input_format,
    )


#: Where Detectron2 publishes MSRA's original ImageNet ResNets (stride in the 1x1 conv, BGR).
MSRA_URL = "https://dl.fbaipublicfiles.com/detectron2/ImageNetPretrained/MSRA/{}.pkl"


def _check_weights_file(m: ModelConfig) -> None:
    """A ``model.backbone.weights`` path that does not exist: one error naming the file and,
    for MSRA's models (``stride_in_1x1``), how to make it."""
    weights = m.backbone.weights
    if weights in (None, "imagenet", "imagenet_v2") or os.path.isfile(weights):
        return
    message = f"model.backbone.weights: file not found: {weights}"
    depth = m.backbone.name.removeprefix("resnet")
    if m.backbone.stride_in_1x1 and depth in ("50", "101"):
        src = f"R-{depth}.pkl"
        message += (f". It holds MSRA's ImageNet {m.backbone.name} converted to this project's "
                    f"format: download {MSRA_URL.format(f'R-{depth}')} (on a machine with "
                    f"internet), then run: python tools/convert_pretrained.py {src} {weights}")
    raise FileNotFoundError(message)


def check_trainable_norm(cfg: Config) -> None:
    """Refuse to *train* ``norm: FrozenBN`` without pretrained weights.

    FrozenBN keeps the statistics it was loaded with; from scratch those are the identity
    (mean 0, var 1), so a deep ResNet's activations grow stage by stage until the losses
    overflow. We stop with an error rather than switch the norm behind the user's back: BN, GN
    and SyncBN differ in batch-size dependence and multi-GPU behaviour, which is the user's choice.
    (Inference builds with ``weights=None`` too, as a checkpoint holds the statistics: this check
    is for training only.)
    """
    b = cfg.model.backbone
    pretrained = b.weights is not None or getattr(cfg.model, "weights", None)
    if b.norm == "FrozenBN" and not pretrained and not b.name.startswith("vgg"):
        raise ValueError(
            "model.backbone.norm is FrozenBN but model.backbone.weights is null: frozen "
            "BatchNorm keeps identity statistics when training from scratch and the activations "
            "of a deep ResNet overflow; set model.backbone.norm to BN, GN or SyncBN (and "
            "model.backbone.freeze_at: 0), or give pretrained model.backbone.weights")


def _check_variant(m: ModelConfig) -> None:
    name, head, fpn = m.backbone.name, m.roi_heads.box_head, m.fpn.enabled
    is_vgg = name == "vgg16"
    key = f"model.roi_heads.box_head {head!r}"
    if head == "c4_res5" and is_vgg:
        raise ValueError(f"{key} runs the ResNet res5 stage on pooled res4 maps: it needs a "
                         f"ResNet backbone, got model.backbone.name {name!r}")
    if head == "c4_res5" and fpn:
        raise ValueError(f"{key} pools single-level res4 maps: set model.fpn.enabled: false")
    if head == "vgg_fc" and not is_vgg:
        raise ValueError(f"{key} reuses VGG-16's fc6/fc7: it needs model.backbone.name "
                         f"'vgg16', got {name!r}")
    if head == "vgg_fc" and fpn:
        raise ValueError(f"{key} pools VGG-16's conv5: set model.fpn.enabled: false")
    if head == "vgg_fc" and m.roi_heads.pooler_resolution != 7:
        raise ValueError(f"model.roi_heads.pooler_resolution must be 7 for {key} (fc6 takes "
                         f"512x7x7), got {m.roi_heads.pooler_resolution}")
    if head == "fpn_2fc" and is_vgg:
        raise ValueError(f"{key} needs the FPN of a ResNet backbone (res2..res5), got "
                         f"model.backbone.name {name!r}; VGG-16 uses 'vgg_fc'")
    if head == "fpn_2fc" and not fpn:
        raise ValueError(f"{key} needs model.fpn.enabled: true; without FPN use 'c4_res5'")


def _build_backbone_and_box_head(m: ModelConfig):
    b, rh = m.backbone, m.roi_heads
    options = {}
    if b.name.startswith("resnet"):
        options = {"shortcut": b.shortcut, "stride_in_1x1": b.stride_in_1x1,
                   "norm_eps": b.norm_eps}
    elif b.name.startswith("plain"):
        options = {"stride_in_1x1": b.stride_in_1x1, "norm_eps": b.norm_eps}
    if rh.box_head == "fpn_2fc":
        out_features = FPN_IN_FEATURES
    elif rh.box_head == "c4_res5":
        out_features = ["res4"]
    else:
        out_features = ["conv5"]
    body = build_backbone(b.name, weights=b.weights, norm=b.norm, freeze_at=b.freeze_at,
                          out_features=out_features, **options)
    if rh.box_head == "fpn_2fc":
        backbone = FPN(bottom_up=body, in_features=FPN_IN_FEATURES,
                       out_channels=m.fpn.out_channels)
        box_head = TwoFCHead(in_channels=m.fpn.out_channels, resolution=rh.pooler_resolution,
                             fc_dim=rh.fc_dim)
        return backbone, box_head
    if rh.box_head == "c4_res5":
        return body, Res5Head(res5=body.split_head())
    return body, VGGFCHead(fc=body.split_head())


def _check_features(key: str, wanted: list[str], backbone) -> None:
    missing = [f for f in wanted if f not in backbone.out_channels]
    if not wanted or missing:
        raise ValueError(
            f"{key} {wanted} must name maps the backbone produces: {list(backbone.out_channels)}"
        )


def _per_level(key: str, values: list[list[float]], num_levels: int) -> list[list[float]]:
    if len(values) == 1:
        return [list(values[0]) for _ in range(num_levels)]
    if len(values) != num_levels:
        raise ValueError(
            f"{key} has {len(values)} entries but model.rpn.in_features has {num_levels} "
            "levels: give one list per level, or a single list for all levels"
        )
    return [list(v) for v in values]


def _build_rpn(m: ModelConfig, backbone) -> RPN:
    r, a = m.rpn, m.anchor_generator
    _check_features("model.rpn.in_features", r.in_features, backbone)
    channels = {backbone.out_channels[f] for f in r.in_features}
    if len(channels) != 1:
        raise ValueError(f"model.rpn.in_features {r.in_features} must have equal channels "
                         f"for the shared RPN head, got {sorted(channels)}")
    levels = len(r.in_features)
    anchors = AnchorGenerator(
        sizes=_per_level("model.anchor_generator.sizes", a.sizes, levels),
        aspect_ratios=_per_level("model.anchor_generator.aspect_ratios", a.aspect_ratios, levels),
    )
    num_anchors = set(anchors.num_anchors_per_location)
    if len(num_anchors) != 1:
        raise ValueError(f"every level needs the same number of anchors for the shared RPN "
                         f"head; model.anchor_generator gives {anchors.num_anchors_per_location}")
    return RPN(
        in_features=r.in_features,
        head=RPNHead(in_channels=channels.pop(), num_anchors=num_anchors.pop()),
        anchor_generator=anchors,
        box_coder=BoxCoder(weights=(1.0, 1.0, 1.0, 1.0)),
        matcher=Matcher(high_threshold=r.fg_iou_thresh, low_threshold=r.bg_iou_thresh,
                        allow_low_quality_matches=True),
        sampler=BalancedSampler(batch_size_per_image=r.batch_size_per_image,
                                positive_fraction=r.positive_fraction),
        pre_nms_topk_train=r.pre_nms_topk_train, pre_nms_topk_test=r.pre_nms_topk_test,
        post_nms_topk_train=r.post_nms_topk_train, post_nms_topk_test=r.post_nms_topk_test,
        nms_thresh=r.nms_thresh, min_box_size=r.min_box_size, score_thresh=r.score_thresh,
        smooth_l1_beta=r.smooth_l1_beta, ignore_cross_boundary=r.ignore_cross_boundary,
    )


def _build_roi_heads(m: ModelConfig, backbone, box_head, num_classes: int) -> RoIHeads:
    rh = m.roi_heads
    _check_features("model.roi_heads.in_features", rh.in_features, backbone)
    if rh.box_head != "fpn_2fc" and len(rh.in_features) != 1:
        raise ValueError(f"model.roi_heads.in_features must be one map for {rh.box_head!r}, "
                         f"got {rh.in_features}")
    pooler = RoIPooler(
        output_size=rh.pooler_resolution,
        strides=[backbone.strides[f] for f in rh.in_features],
        pooler_type=rh.pooler_type,
        sampling_ratio=rh.sampling_ratio,
    )
    return RoIHeads(
        in_features=rh.in_features,
        pooler=pooler,
        box_head=box_head,
        box_predictor=BoxPredictor(in_channels=box_head.out_channels, num_classes=num_classes),
        box_coder=BoxCoder(weights=rh.box_reg_weights),
        matcher=Matcher(high_threshold=rh.fg_iou_thresh, low_threshold=rh.bg_iou_thresh,
                        allow_low_quality_matches=False),
        sampler=BalancedSampler(batch_size_per_image=rh.batch_size_per_image,
                                positive_fraction=rh.positive_fraction),
        smooth_l1_beta=rh.smooth_l1_beta,
        score_thresh=rh.score_thresh,
        nms_thresh=rh.nms_thresh,
        detections_per_img=rh.detections_per_img,
        **_build_mask_head(m, backbone, box_head, num_classes),
    )


def _build_mask_head(m: ModelConfig, backbone, box_head, num_classes: int) -> dict:
    """``{"mask_head", "mask_pooler"}`` for RoIHeads: empty without ``model.mask_head``."""
    mh, rh = m.mask_head, m.roi_heads
    if not mh.enabled:
        return {}
    if rh.box_head == "c4_res5":
        if mh.pooler_resolution is not None or mh.pooler_type is not None:
            raise ValueError("model.mask_head.pooler_resolution / pooler_type must be null with "
                             "c4_res5: its masks come from the box head's res5 maps")
        pooler, channels = None, box_head.out_channels
    else:
        pooler = RoIPooler(output_size=mh.pooler_resolution,
                           strides=[backbone.strides[f] for f in rh.in_features],
                           pooler_type=mh.pooler_type or rh.pooler_type,
                           sampling_ratio=rh.sampling_ratio)
        channels = backbone.out_channels[rh.in_features[0]]
    head = MaskHead(in_channels=channels, num_classes=num_classes, conv_dim=mh.conv_dim,
                    num_convs=mh.num_convs, class_agnostic=mh.class_agnostic)
    return {"mask_head": head, "mask_pooler": pooler}
