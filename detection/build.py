"""The one place where the config becomes constructor arguments.

``build_model(cfg)`` assembles Faster R-CNN from ``cfg.model``; the variant follows from
``backbone.name``, ``fpn.enabled`` and ``roi_heads.box_head``:

=================  ==============  ===========  ==========================================
variant            backbone.name   fpn.enabled  roi_heads.box_head (pooler)
=================  ==============  ===========  ==========================================
R-18..152-FPN      resnetXX        true         fpn_2fc (ROIAlign 7x7 on p2..p5)
R-50/101/152-C4    resnetXX        false        c4_res5 (ROIAlign 14x14 on res4, then res5)
VGG-16             vgg16           false        vgg_fc (ROIPool 7x7 on conv5, then fc6/fc7)
=================  ==============  ===========  ==========================================

(``plainXX`` backbones work wherever ``resnetXX`` does.) The RPN runs on ``rpn.in_features``
(``p2..p6`` with FPN, ``res4`` for C4, ``conv5`` for VGG-16) and the RoI heads pool from
``roi_heads.in_features``; inconsistent combinations raise ``ValueError`` naming the keys.
"""
from __future__ import annotations

import dataclasses

import torch

from backbones import build_backbone

from .anchors import AnchorGenerator
from .box_coder import BoxCoder
from .box_heads import BoxPredictor, Res5Head, TwoFCHead, VGGFCHead
from .config import Config, ModelConfig
from .faster_rcnn import FasterRCNN
from .fpn import FPN
from .matcher import Matcher
from .poolers import RoIPooler
from .roi_heads import RoIHeads
from .rpn import RPN, RPNHead
from .sampler import BalancedSampler

__all__ = [
    "build_model", "prepare_data", "build_train_dataset", "build_test_dataset",
    "with_num_classes", "build_train_loader", "build_test_loader", "build_optimizer",
    "build_lr_scheduler", "build_evaluator", "build_trainer",
]

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
    backbone, box_head = _build_backbone_and_box_head(m)
    return FasterRCNN(
        backbone=backbone,
        rpn=_build_rpn(m, backbone),
        roi_heads=_build_roi_heads(m, backbone, box_head, k),
        pixel_mean=m.pixel_mean,
        pixel_std=m.pixel_std,
        size_divisibility=m.size_divisibility,
    )


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
        options = {"shortcut": b.shortcut, "stride_in_1x1": b.stride_in_1x1}
    elif b.name.startswith("plain"):
        options = {"stride_in_1x1": b.stride_in_1x1}
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
        smooth_l1_beta=r.smooth_l1_beta,
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
    )


# ------------------------------------------------------------------------------------------------
# Data, solver, evaluation and the training run (the engine's part of this file).
# ------------------------------------------------------------------------------------------------
def prepare_data(cfg: Config) -> Config:
    """Generate the synthetic set when ``data.synthetic.enabled`` (once; safe under torchrun)
    and fill empty ``data.train`` / ``data.test`` paths with its splits. Returns the config."""
    from .data.synthetic import ensure_synthetic
    from .engine import distributed as du

    syn = cfg.data.synthetic
    if not syn.enabled:
        return cfg
    kwargs = dict(num_train=syn.num_train, num_val=syn.num_val, image_size=syn.image_size,
                  seed=syn.seed, max_objects=syn.max_objects, empty_fraction=syn.empty_fraction)
    if du.is_main_process():
        paths = ensure_synthetic(syn.root, **kwargs)
    du.synchronize()
    if not du.is_main_process():
        paths = ensure_synthetic(syn.root, **kwargs)  # finds rank 0's complete set
    train, test = cfg.data.train, cfg.data.test
    data = dataclasses.replace(
        cfg.data,
        train=dataclasses.replace(train, images=train.images or paths.train_images,
                                  annotations=train.annotations or paths.train_annotations),
        test=dataclasses.replace(test, images=test.images or paths.val_images,
                                 annotations=test.annotations or paths.val_annotations))
    return dataclasses.replace(cfg, data=data)


def _dataset(cfg: Config, *, train: bool):
    from .data.coco import COCODataset
    from .data.transforms import build_transforms

    d, inp = cfg.data, cfg.data.input
    split = d.train if train else d.test
    key = "data.train" if train else "data.test"
    for name in ("images", "annotations"):
        if not getattr(split, name):
            raise ValueError(f"{key}.{name} is empty: set it in the config, or enable "
                             "data.synthetic")
    transforms = build_transforms(
        train=train, min_size=inp.min_size_train if train else inp.min_size_test,
        max_size=inp.max_size_train if train else inp.max_size_test,
        flip_prob=inp.flip_prob, photometric=inp.photometric)
    return COCODataset(images=split.images, annotations=split.annotations,
                       transforms=transforms, train=train, filter_empty=d.filter_empty,
                       on_bad_image=d.on_bad_image)


def build_train_dataset(cfg: Config):
    """``COCODataset`` of ``data.train`` with the training transforms."""
    return _dataset(cfg, train=True)


def build_test_dataset(cfg: Config):
    """``COCODataset`` of ``data.test`` with the test transforms."""
    return _dataset(cfg, train=False)


def with_num_classes(cfg: Config, classes: list[dict]) -> Config:
    """``cfg`` with ``model.num_classes`` taken from ``classes`` (the annotations) unless set;
    a set value that disagrees with the annotations is an error naming both."""
    k = cfg.model.num_classes
    if k is not None and k != len(classes):
        raise ValueError(f"model.num_classes is {k} but the annotations have {len(classes)} "
                         f"categories: {[c['name'] for c in classes]}")
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model,
                                                              num_classes=len(classes)))


def images_per_process(cfg: Config) -> int:
    """``solver.ims_per_batch`` (the global batch) split evenly over the processes."""
    from .engine.distributed import get_world_size

    total, world = cfg.solver.ims_per_batch, get_world_size()
    if total % world:
        raise ValueError(f"solver.ims_per_batch {total} is not divisible by the {world} "
                         "processes")
    return total // world


def build_train_loader(cfg: Config, dataset, *, start_iter: int = 0):
    """The endless training loader, resumable at ``start_iter`` with the same batches *and*
    the same augmentation: each sample's transform RNG is seeded from (seed, rank, iteration,
    slot), so neither resuming nor ``num_workers`` changes what a batch holds."""
    from torch.utils.data import DataLoader

    from .data.loader import build_train_loader as data_train_loader
    from .engine.distributed import get_rank

    base = data_train_loader(dataset, batch_size=images_per_process(cfg),
                             num_workers=cfg.data.num_workers, seed=cfg.seed,
                             start_iter=start_iter, aspect_grouping=cfg.data.aspect_grouping)
    return DataLoader(
        _SeededSamples(dataset), num_workers=base.num_workers, collate_fn=base.collate_fn,
        batch_sampler=_SeededBatches(base.batch_sampler, seed=cfg.seed, rank=get_rank(),
                                     start_iter=start_iter),
        pin_memory=base.pin_memory, persistent_workers=base.persistent_workers,
        worker_init_fn=base.worker_init_fn)


class _SeededBatches:
    """Batch ``k``'s indices as ``(index, seed)`` pairs, the seed fixed by its position."""

    def __init__(self, batches, *, seed: int, rank: int, start_iter: int):
        self.batches, self.seed, self.rank, self.start_iter = batches, seed, rank, start_iter

    def __iter__(self):
        import numpy as np

        for k, batch in enumerate(self.batches, start=self.start_iter):
            seeds = np.random.SeedSequence([self.seed, self.rank, k]).generate_state(len(batch))
            yield [(int(i), int(s)) for i, s in zip(batch, seeds)]


class _SeededSamples(torch.utils.data.Dataset):
    """``dataset[index]`` with the transforms reseeded by the pair's seed first."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        transforms = getattr(self.dataset, "transforms", None)
        if hasattr(transforms, "set_random_seed"):
            transforms.set_random_seed(seed)
        return self.dataset[index]


def build_test_loader(cfg: Config, dataset):
    """One pass over this process's shard of ``dataset``."""
    from .data.loader import build_test_loader as data_test_loader

    return data_test_loader(dataset, batch_size=cfg.test.ims_per_batch,
                            num_workers=cfg.data.num_workers)


def build_optimizer(cfg: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    """SGD with momentum; weight decay ``solver.weight_decay`` except on normalisation layers
    (``solver.weight_decay_norm``)."""
    from .engine.schedule import param_groups

    s = cfg.solver
    groups = param_groups(model, weight_decay=s.weight_decay,
                          weight_decay_norm=s.weight_decay_norm)
    return torch.optim.SGD(groups, lr=s.base_lr, momentum=s.momentum)


def build_lr_scheduler(cfg: Config, optimizer: torch.optim.Optimizer):
    """Linear warm-up times ``solver.lr_schedule`` (multi-step or cosine), stepped per iteration."""
    from .engine.schedule import WarmupLRScheduler

    s = cfg.solver
    return WarmupLRScheduler(optimizer, max_iter=s.max_iter, schedule=s.lr_schedule,
                             steps=s.steps, gamma=s.gamma, warmup_iters=s.warmup_iters,
                             warmup_factor=s.warmup_factor)


def build_evaluator(cfg: Config, classes: list[dict], *, verbose: bool = False):
    """COCO evaluation of ``data.test.annotations`` (results in percent); ``verbose`` prints
    pycocotools' summary and the per-category table."""
    from .evaluation import COCOEvaluator

    return COCOEvaluator(annotations=cfg.data.test.annotations, classes=classes,
                         output_dir=cfg.output_dir, verbose=verbose)


def build_trainer(cfg: Config, *, device: torch.device, resume: bool = False):
    """A ready :class:`~detection.engine.Trainer` for ``cfg`` and the resolved config.

    Prepares the data (synthetic set, classes -> ``model.num_classes``), builds model, solver,
    training loader and evaluation, writes ``<output_dir>/config.yaml`` and, with ``resume``,
    continues from ``<output_dir>/last.pth`` (a fresh run when there is none yet).
    """
    import logging
    from pathlib import Path

    from .config import config_to_dict, save_config
    from .engine import distributed as du
    from .engine.checkpoint import load_checkpoint, seed_all
    from .engine.logging import LOGGER_NAME, MetricsWriter
    from .engine.trainer import DatasetInference, Trainer

    log = logging.getLogger(LOGGER_NAME)
    out = Path(cfg.output_dir)
    ckpt = None
    if resume and (out / "last.pth").is_file():
        ckpt = load_checkpoint(out / "last.pth")
        log.info("resuming from %s at iteration %d", out / "last.pth", ckpt["iteration"])
    elif resume:
        log.info("--resume: no %s yet, starting from iteration 0", out / "last.pth")
    cfg = prepare_data(cfg)
    train_set = build_train_dataset(cfg)
    cfg = with_num_classes(cfg, train_set.classes)
    seed_all(cfg.seed)  # the same initial weights on every process
    model = build_model(cfg).to(device)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer)
    test_set = build_test_dataset(cfg)
    if test_set.classes != train_set.classes:
        raise ValueError(f"{cfg.data.test.annotations} has other categories than "
                         f"{cfg.data.train.annotations}: {test_set.classes} vs "
                         f"{train_set.classes}")
    inference = DatasetInference(
        data_loader=build_test_loader(cfg, test_set),
        evaluator=build_evaluator(cfg, train_set.classes), device=device,
        amp=cfg.solver.amp, amp_dtype=cfg.solver.amp_dtype, keep=cfg.test.vis_images)
    start = int(ckpt["iteration"]) if ckpt else 0
    seed_all(cfg.seed + du.get_rank())  # each process's own sampling noise
    writer = None
    if du.is_main_process():
        save_config(cfg, out / "config.yaml")
        writer = MetricsWriter(out, truncate_after=start)
    trainer = Trainer(
        model=model, optimizer=optimizer, scheduler=scheduler,
        data_loader=build_train_loader(cfg, train_set, start_iter=start),
        max_iter=cfg.solver.max_iter, output_dir=out, device=device, evaluate=inference,
        checkpoint_period=cfg.solver.checkpoint_period, eval_period=cfg.test.eval_period,
        log_period=cfg.log_period, amp=cfg.solver.amp, amp_dtype=cfg.solver.amp_dtype,
        clip_grad_norm=cfg.solver.clip_grad_norm, writer=writer,
        extra_state={"config": config_to_dict(cfg), "classes": train_set.classes})
    if ckpt is not None:
        trainer.load_state_dict(ckpt)
    return trainer, cfg
