"""The detection config: the dataclass tree that ``detection/build.py`` and ``detection/setup.py``
read (the generic loading, ``_base_`` and ``--set`` are ``detection.config.loader``'s).

YAML keys equal constructor argument names. ``detection/build.py`` is the only code that turns a
:class:`Config`'s model into objects; ``detection/setup.py`` the rest; everything else receives
plain arguments.

The model variant follows from one key, ``model.roi_heads.box_head`` (``fpn_2fc``, ``c4_res5``,
``vgg_fc``): the keys that depend on it (``fpn.enabled``, ``anchor_generator.sizes``,
``rpn.in_features``, ``roi_heads.in_features``, ``roi_heads.pooler_resolution``) default to
``null`` and are filled from ``VARIANT_DEFAULTS`` when the config is built; a value given in a
file or an override wins. ``model.pixel_mean`` / ``pixel_std`` follow ``model.input_format`` in
the same way (``INPUT_FORMAT_DEFAULTS``).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from .loader import choice_field, list_field

__all__ = [
    "AnchorGeneratorConfig", "BackboneConfig", "Config", "DataConfig", "DatasetConfig",
    "EarlyStopConfig", "FPNConfig", "INPUT_FORMAT_DEFAULTS", "InputConfig",
    "MASK_VARIANT_DEFAULTS", "MaskHeadConfig", "MLflowConfig", "ModelConfig", "RPNConfig",
    "RoIHeadsConfig", "SolverConfig", "SyntheticConfig", "TestConfig", "TrackersConfig",
    "VARIANT_DEFAULTS", "WandbConfig",
]


# ----------------------------------------------------------------------------------------- model
@dataclass
class BackboneConfig:
    # resnet18/34/50/101/152, plain18..152 (the same without shortcuts) or vgg16 (needs
    # roi_heads.box_head vgg_fc)
    name: str = "resnet50"
    weights: Optional[str] = "imagenet"  # "imagenet", "imagenet_v2", a file path, or null
    norm: str = choice_field("FrozenBN", "BN", "GN", "SyncBN", default="FrozenBN")
    # what is frozen (no gradient, kept in eval mode): 0 nothing; 1 the stem; k >= 2 the
    # stem and res2..res(k) (VGG-16: conv1..k); Detectron2's MODEL.BACKBONE.FREEZE_AT
    freeze_at: int = 2
    shortcut: str = choice_field("A", "B", "C", default="B")
    stride_in_1x1: bool = False  # true for MSRA's original weights (Detectron2's R-50.pkl)
    norm_eps: float = 1e-5  # eps of the norm layers; 0.0 for torchvision's COCO detectors


@dataclass
class FPNConfig:
    enabled: Optional[bool] = None  # None: derived from roi_heads.box_head (fpn_2fc: true)
    out_channels: int = 256  # channels of every FPN map (p2..p6)


@dataclass
class AnchorGeneratorConfig:
    sizes: Optional[list[list[float]]] = None  # None: derived from roi_heads.box_head
    # height / width; one list for all levels or one per level
    aspect_ratios: list[list[float]] = list_field([0.5, 1.0, 2.0])


@dataclass
class RPNConfig:
    in_features: Optional[list[str]] = None  # None: derived from roi_heads.box_head
    # training: the anchors of highest objectness kept per image and level
    # before NMS (Detectron2's MODEL.RPN.PRE_NMS_TOPK_TRAIN)
    pre_nms_topk_train: int = 2000
    pre_nms_topk_test: int = 1000  # the same at inference
    post_nms_topk_train: int = 2000  # training: the proposals kept per image after NMS
    post_nms_topk_test: int = 1000  # the same at inference
    nms_thresh: float = 0.7  # IoU of the NMS among proposals (per level)
    min_box_size: float = 1e-3  # proposals with a side shorter than this (px) are dropped
    score_thresh: float = 0.0  # proposals of objectness (sigmoid) below this are dropped; 0: none
    # an anchor of IoU >= this with a box is positive, and so is each box's best anchor
    # (Detectron2's MODEL.RPN.IOU_THRESHOLDS: [bg_iou_thresh, fg_iou_thresh])
    fg_iou_thresh: float = 0.7
    # an anchor of IoU < this with every box is negative; between the two: ignored
    bg_iou_thresh: float = 0.3
    batch_size_per_image: int = 256  # anchors sampled per image for the RPN losses
    positive_fraction: float = 0.5  # at most this share of them positive; negatives fill the rest
    smooth_l1_beta: float = 1.0 / 9.0  # 0: exactly L1 (Detectron2)
    ignore_cross_boundary: bool = False  # true: anchors crossing the image border are ignored


@dataclass
class RoIHeadsConfig:
    in_features: Optional[list[str]] = None  # None: derived from box_head
    box_head: str = choice_field("fpn_2fc", "c4_res5", "vgg_fc", default="fpn_2fc")
    # ROIAlignV2: RoIAlign with aligned=True (half-pixel shift), Detectron2's default
    pooler_type: str = choice_field("ROIAlign", "ROIAlignV2", "ROIPool", default="ROIAlign")
    pooler_resolution: Optional[int] = None  # None: derived from box_head (c4_res5: 14, else 7)
    # RoIAlign's sample points per bin and axis; 0: adaptive, ceil(RoI side / pooler_resolution)
    # (Detectron2's default is 0, torchvision's 2)
    sampling_ratio: int = 2
    fc_dim: int = 1024  # width of fpn_2fc's two hidden fc layers
    # training: a proposal of IoU >= this with a box takes the box's class
    fg_iou_thresh: float = 0.5
    # training: a proposal of IoU < this with every box is background; between the two: ignored
    bg_iou_thresh: float = 0.5
    # training: RoIs sampled per image (among its proposals and its boxes) for the box losses
    batch_size_per_image: int = 512
    # at most this share of them foreground; background fills the rest
    positive_fraction: float = 0.25
    # (wx, wy, ww, wh): factors of the encoded box deltas (dx, dy, dw, dh)
    box_reg_weights: list[float] = list_field(10.0, 10.0, 5.0, 5.0)
    smooth_l1_beta: float = 1.0 / 9.0  # 0: exactly L1 (Detectron2)
    score_thresh: float = 0.05  # inference: (box, class) pairs scoring at most this are dropped
    nms_thresh: float = 0.5  # inference: IoU of the NMS per image and class
    detections_per_img: int = 100  # inference: at most this many detections per image (the best)


# ------------------------------------------------------------------- masks (Mask R-CNN, issue 26)
@dataclass
class MaskHeadConfig:
    """A mask branch beside the box head (``detection/mask_head.py``); masks of
    ``2 x pooler_resolution`` cells (c4_res5: of the box head's res5 maps, 14x14)."""

    enabled: bool = False  # Mask R-CNN; training needs COCO annotations with segmentation
    num_convs: Optional[int] = None  # None: derived from roi_heads.box_head (4; c4_res5: 0)
    conv_dim: int = 256  # channels of the mask head's convolutions and its 2x deconvolution
    # the mask pooler (c4_res5 has none: leave both null); null type: roi_heads.pooler_type
    pooler_resolution: Optional[int] = None  # None: derived (14; c4_res5: none)
    pooler_type: Optional[str] = choice_field("ROIAlign", "ROIAlignV2", "ROIPool", None,
                                              default=None)
    class_agnostic: bool = False  # one mask per RoI instead of one per class


@dataclass
class ModelConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    fpn: FPNConfig = field(default_factory=FPNConfig)
    num_classes: Optional[int] = None  # None: taken from the training annotations
    # the channel order the backbone's weights expect; images always come in RGB, and with
    # BGR the model reverses their channels first
    input_format: str = choice_field("RGB", "BGR", default="RGB")
    pixel_mean: Optional[list[float]] = None  # None: from input_format (INPUT_FORMAT_DEFAULTS)
    pixel_std: Optional[list[float]] = None  # in input_format's channel order, 0..255 units
    # the padded batch's height and width: multiples of this (<= 1: none)
    size_divisibility: int = 32
    anchor_generator: AnchorGeneratorConfig = field(default_factory=AnchorGeneratorConfig)
    rpn: RPNConfig = field(default_factory=RPNConfig)
    roi_heads: RoIHeadsConfig = field(default_factory=RoIHeadsConfig)
    mask_head: MaskHeadConfig = field(default_factory=MaskHeadConfig)  # Mask R-CNN
    # the whole detector from a checkpoint of this toolkit (or a converted torchvision one);
    # tensors matching by name and shape are loaded (detection/transfer.py); --resume wins
    weights: Optional[str] = None
    # class-dependent predictor rows: copied for the classes of equal name (case-insensitive),
    # or "none": the predictor is loaded only when its shape fits and re-initialised otherwise
    weights_classes: str = choice_field("by_name", "none", default="by_name")

    def __post_init__(self) -> None:
        """Fill the keys left ``None`` from the one key that names the variant,
        ``roi_heads.box_head`` (see ``VARIANT_DEFAULTS``), and the pixel mean/std from
        ``input_format`` (``INPUT_FORMAT_DEFAULTS``); values set explicitly are kept."""
        derived = VARIANT_DEFAULTS[self.roi_heads.box_head]
        if self.mask_head.enabled:
            derived = {**derived, **MASK_VARIANT_DEFAULTS[self.roi_heads.box_head]}
        for dotted, value in derived.items():
            section, key = dotted.split(".")
            node = getattr(self, section)
            if getattr(node, key) is None:
                setattr(node, key, copy.deepcopy(value))
        for key, value in INPUT_FORMAT_DEFAULTS[self.input_format].items():
            if getattr(self, key) is None:
                setattr(self, key, list(value))


#: Pixel mean/std (0..255 units, in the format's channel order) for each ``input_format``:
#: RGB is torchvision's ImageNet normalisation; BGR is MSRA's original ResNets (Detectron2's
#: ``R-50.pkl``/``R-101.pkl``): the mean pixel only, std 1 (absorbed into conv1's weights).
INPUT_FORMAT_DEFAULTS: dict[str, dict[str, list[float]]] = {
    "RGB": {"pixel_mean": [123.675, 116.28, 103.53], "pixel_std": [58.395, 57.12, 57.375]},
    "BGR": {"pixel_mean": [103.53, 116.28, 123.675], "pixel_std": [1.0, 1.0, 1.0]},
}


_SINGLE_LEVEL = {"fpn.enabled": False,
                 "anchor_generator.sizes": [[32.0, 64.0, 128.0, 256.0, 512.0]],
                 "roi_heads.pooler_resolution": 7}
#: What ``model.roi_heads.box_head`` implies for the keys left unset (``null``).
VARIANT_DEFAULTS: dict[str, dict[str, Any]] = {
    "fpn_2fc": {"fpn.enabled": True,
                "anchor_generator.sizes": [[32.0], [64.0], [128.0], [256.0], [512.0]],
                "rpn.in_features": ["p2", "p3", "p4", "p5", "p6"],
                "roi_heads.in_features": ["p2", "p3", "p4", "p5"],
                "roi_heads.pooler_resolution": 7},
    "c4_res5": {**_SINGLE_LEVEL, "rpn.in_features": ["res4"], "roi_heads.in_features": ["res4"],
                "roi_heads.pooler_resolution": 14},
    "vgg_fc": {**_SINGLE_LEVEL, "rpn.in_features": ["conv5"],
               "roi_heads.in_features": ["conv5"]},
}


#: What ``model.roi_heads.box_head`` implies for the mask head's keys left unset, when enabled.
MASK_VARIANT_DEFAULTS: dict[str, dict[str, Any]] = {
    "fpn_2fc": {"mask_head.num_convs": 4, "mask_head.pooler_resolution": 14},
    "c4_res5": {"mask_head.num_convs": 0},
    "vgg_fc": {"mask_head.num_convs": 4, "mask_head.pooler_resolution": 14},
}


# ------------------------------------------------------------------------------------------ data
@dataclass
class DatasetConfig:
    images: str = ""  # data.format coco: folder of image files
    annotations: str = ""  # data.format coco: COCO-format json
    roots: list[str] = list_field()  # data.format voc: VOCdevkit/VOCyyyy folders, concatenated
    splits: list[str] = list_field()  # data.format voc: ImageSets/Main/<split>.txt, one or per root


@dataclass
class SyntheticConfig:
    """Generate the synthetic shapes dataset at ``root`` on first use (when enabled); empty
    ``data.train`` / ``data.test`` paths then default to its train / val splits."""

    enabled: bool = False  # generate (once) and use the shapes set
    # where the set is written; reused when its synthetic.json holds these parameters,
    # an error when the folder holds anything else
    root: str = "datasets/shapes"
    num_train: int = 400  # training images
    num_val: int = 100  # validation images
    # longer image side in px (the shorter one: 75-100 % of it, drawn per image)
    image_size: int = 160
    seed: int = 0  # the set's own seed: image i depends only on (seed, split, i)
    max_objects: int = 4  # objects per image: 1 to this, drawn per image
    empty_fraction: float = 0.08  # probability that an image holds no object


@dataclass
class InputConfig:
    min_size_train: list[int] = list_field(800)  # a random choice per image: multi-scale training
    max_size_train: int = 1333  # training resize: the longer side at most this (px)
    min_size_test: int = 800  # test resize: the shorter side (px); also lsj's default size
    max_size_test: int = 1333  # test resize: the longer side at most this (px)
    flip_prob: float = 0.5  # training: probability of a horizontal flip (also the presets')
    # training: colour jitter with probability 0.8 (brightness, contrast and
    # saturation +-20 %, hue +-0.02)
    photometric: bool = False


@dataclass
class DataConfig:
    format: str = choice_field("coco", "voc", default="coco")
    train: DatasetConfig = field(default_factory=DatasetConfig)
    test: DatasetConfig = field(default_factory=DatasetConfig)  # empty: train, no evaluation
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    input: InputConfig = field(default_factory=InputConfig)
    # data-loading processes of the train and test loaders (0: the main process)
    num_workers: int = 2
    # training leaves out images without a usable box (test sets keep them)
    filter_empty: bool = True
    on_bad_image: str = choice_field("skip", "error", default="skip")
    on_bad_annotation: str = choice_field("skip", "error", default="skip")  # NaN/negative/... boxes
    aspect_grouping: bool = True  # a training batch holds only landscape or only portrait images
    keep_difficult: bool = False  # voc: train on "difficult" objects too
    class_names: Optional[list[str]] = None  # voc: the label order (default: the 20 VOC ones)
    # "repeat_factor": images holding rare classes are drawn more often (LVIS, Gupta et al.
    # 2019): r(image) = max over its classes c of max(1, sqrt(repeat_threshold / f(c)))
    sampler: str = choice_field("uniform", "repeat_factor", default="uniform")
    # sampler repeat_factor's t: classes in fewer than this share of the images are repeated
    repeat_threshold: float = 0.001
    # training augmentations (docs/training.md): albumentations transforms by class name with
    # their arguments, ours (ResizeShortestEdge, ResizeScale) and the presets resize_flip
    # (data.input's resize, flip and colour jitter: what an empty list means) and lsj
    # (large-scale jitter); e.g. [{name: lsj, size: 1024}]
    augment: list[dict[str, Any]] = list_field()
    # after a crop, a box keeping less than this fraction of its area is dropped, the others
    # are clipped to the image (0: only boxes left wholly outside are dropped)
    box_min_visibility: float = 0.0


# ---------------------------------------------------------------------------------------- solver
@dataclass
class EarlyStopConfig:
    """Stop training when the evaluation's ``metric`` has not improved by more than
    ``min_delta`` for ``patience`` evaluations in a row; needs a periodic evaluation."""

    patience: int = 0  # evaluations without improvement before stopping; 0: never stop early
    metric: Optional[str] = None  # null: solver.best_metric
    min_delta: float = 0.0  # an improvement must exceed this, in the metric's units


@dataclass
class SolverConfig:
    max_iter: int = 90000  # training length in iterations (optimizer steps)
    # learning rate after warm-up, before decay (not rescaled with ims_per_batch)
    base_lr: float = 0.02
    ims_per_batch: int = 16  # total over all processes
    optimizer: str = choice_field("SGD", "AdamW", default="SGD")
    momentum: float = 0.9  # SGD's momentum
    betas: list[float] = list_field(0.9, 0.999)  # AdamW's
    weight_decay: float = 1e-4  # on every trainable parameter but the norm layers'
    weight_decay_norm: float = 0.0  # on the weights and biases of trainable norm layers (BN, GN)
    lr_schedule: str = choice_field("multistep", "cosine", default="multistep")
    # multistep: iterations from which the learning rate is multiplied by gamma
    steps: list[int] = list_field(60000, 80000)
    gamma: float = 0.1  # multistep: the learning rate's factor at each of steps
    # the learning rate rises linearly over these first iterations (0: no warm-up)
    warmup_iters: int = 1000
    warmup_factor: float = 0.001  # the warm-up's first learning rate, as a fraction of base_lr
    # clip the total L2 norm of all gradients to this; null or 0: no clipping
    clip_grad_norm: Optional[float] = None
    # reduced precision (detection/precision.py): "auto" (default): bf16 autocast on a CPU with
    # native bf16 (AMX / AVX512-BF16), float32 elsewhere and on CUDA (docs/speed.md: the quick
    # start loses nothing over three seeds); false / off: float32; true: CUDA autocast to
    # amp_dtype; "bf16": bf16 autocast on any device
    amp: Union[bool, str] = choice_field(False, True, "off", "bf16", "auto", default="auto")
    amp_dtype: str = choice_field("bf16", "fp16", default="bf16")  # CUDA's, with amp: true
    # last.pth every this many iterations and at the end (0: at the end only)
    checkpoint_period: int = 5000
    # lengths in epochs (one pass over the training set at ims_per_batch images a step): a key
    # set here replaces its twin in iterations, converted when the run starts (and printed)
    max_epochs: Optional[float] = None  # replaces max_iter
    step_epochs: Optional[list[float]] = None  # replaces steps
    warmup_epochs: Optional[float] = None  # replaces warmup_iters
    checkpoint_period_epochs: Optional[float] = None  # replaces checkpoint_period
    # best.pth keeps the evaluation with the best value of this result key (a key naming a
    # loss or an error, holding "loss" or "err", e.g. val_loss, is minimised, others maximised)
    best_metric: str = "mAP"
    early_stop: EarlyStopConfig = field(default_factory=EarlyStopConfig)


@dataclass
class TestConfig:
    eval_period: int = 0  # 0: evaluate only at the end
    eval_period_epochs: Optional[float] = None  # replaces eval_period (solver's epoch keys)
    # at each evaluation, the training loss terms on the test set (val_loss, val_loss_cls, ...)
    # with norm layers and dropout in inference mode
    val_loss: bool = False
    ims_per_batch: int = 1  # images per inference batch at evaluation, per process
    vis_images: int = 4  # images drawn with detections into <output_dir>/vis
    # detections scoring at least this are drawn (<output_dir>/vis; resdet infer's default)
    vis_score_thresh: float = 0.5
    use_07_metric: bool = True  # voc: mAP is the VOC2007 11-point AP (else all-point)
    # COCOEvaluator(backend=...): faster-coco-eval, or the reference pycocotools (same numbers)
    evaluator_backend: str = choice_field("faster", "pycocotools", default="faster")
    # inference precision (detection/precision.py): "auto" = bf16 autocast on a CPU with native
    # bf16 (AMX / AVX512-BF16), float32 elsewhere (CUDA: as solver.amp); off; "bf16" (YAML
    # reads a bare off as false: both mean float32)
    amp: Union[bool, str] = choice_field("auto", "off", False, "bf16", default="auto")


# -------------------------------------------------------------------------------------- trackers
@dataclass
class MLflowConfig:
    """Log the run to MLflow (the ``mlflow`` extra): params = the resolved config, metrics =
    what metrics.jsonl holds, the run folder as artifacts at the end."""

    enabled: bool = False  # log this run to MLflow
    # null: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the current folder (where
    # `mlflow ui` looks); a team's server: http://host:5000
    tracking_uri: Optional[str] = None
    experiment: str = "resdet"  # the MLflow experiment's name (created when missing)
    run_name: Optional[str] = None  # null: the output folder's name
    artifacts: bool = True  # upload the run folder (checkpoints included) when training ends


@dataclass
class WandbConfig:
    """Log the run to Weights & Biases (the ``wandb`` extra): config and metrics.jsonl's numbers."""

    enabled: bool = False  # log this run to Weights & Biases
    project: str = "resdet"  # the W&B project's name
    entity: Optional[str] = None  # null: your default W&B entity
    # offline: files under <output_dir>/wandb, no account needed (`wandb sync` uploads them)
    mode: str = choice_field("offline", "online", default="offline")
    run_name: Optional[str] = None  # null: the output folder's name


@dataclass
class TrackersConfig:
    mlflow: MLflowConfig = field(default_factory=MLflowConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    test: TestConfig = field(default_factory=TestConfig)
    # the run's folder (config.yaml, metrics.jsonl, log.txt, checkpoints, eval.json, vis/);
    # a relative path is from the current folder
    output_dir: str = "output"
    # seeds the initial weights, the order of the training images and their augmentation
    # (process r's other random draws: seed + r)
    seed: int = 0
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    # the progress line and metrics.jsonl's train record every this many iterations
    log_period: int = 20
    tensorboard: bool = True  # scalars of metrics.jsonl in <output_dir>/tensorboard (a hook)
    trackers: TrackersConfig = field(default_factory=TrackersConfig)
    # your own training hooks: [{class: my_package.MyHook, <its keyword arguments>}], imported
    # from this config only, never from a checkpoint's (docs/training.md)
    hooks: list[dict[str, Any]] = list_field()
