"""The build layer of pretraining: a :class:`PretrainConfig` becomes the classifier, data,
solver and a ready :class:`detection.engine.Trainer` (the detection engine, unchanged: DDP, AMP,
atomic checkpoints, exact resume, NaN guard, ``metrics.jsonl``, ETA). Only this module reads the
config; ``tools/pretrain.py`` calls :func:`build_pretrainer`, trains, then :func:`export`.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch

from backbones import build_backbone

from ..config import config_to_dict, save_config
from ..data.loader import make_test_loader, make_train_loader
from ..engine import distributed as du
from ..engine.checkpoint import seed_all, unwrap_model
from ..engine.epochs import convert_epochs
from ..engine.epochs import describe as describe_epochs
from ..engine.run import assemble_trainer, images_per_process, read_resume
from ..engine.runlog import LOGGER_NAME
from ..engine.schedule import WarmupLRScheduler
from ..engine.trainer import Trainer
from ..precision import training_precision
from ..setup import build_optimizer
from .config import PretrainConfig
from .data import ArrayDataset, ImageFolderDataset, read_cifar10
from .evaluation import ClassificationEvaluator, ClassificationInference, classify_dataset
from .model import ImageClassifier, classification_inputs, export_backbone
from .transforms import build_transforms

__all__ = ["backbone_options", "build_classifier", "build_datasets", "build_pretrainer",
           "export", "final_test", "prepare_data"]

# the name under which the fc goes into the exported file (torchvision's layout)
_FC_PREFIX = {"vgg16": "classifier.6"}


def backbone_options(cfg: PretrainConfig) -> dict[str, Any]:
    """The options ``build_backbone`` takes for ``model.backbone.name``'s family."""
    b = cfg.model.backbone
    if b.name.startswith("resnet"):
        return {"shortcut": b.shortcut, "stride_in_1x1": b.stride_in_1x1}
    if b.name.startswith("plain"):
        return {"stride_in_1x1": b.stride_in_1x1}
    if b.name.startswith("cifar_resnet"):
        return {"shortcut": b.shortcut}
    return {}


def build_classifier(cfg: PretrainConfig, *, num_classes: int) -> ImageClassifier:
    """``model.backbone`` + global average pool (VGG-16: pool5, fc6/fc7) + a ``num_classes`` fc."""
    m, b = cfg.model, cfg.model.backbone
    backbone = build_backbone(b.name, weights=b.weights, norm=b.norm, freeze_at=b.freeze_at,
                              **backbone_options(cfg))
    head = backbone.split_head() if b.name == "vgg16" else None
    return ImageClassifier(backbone=backbone, num_classes=num_classes, pixel_mean=m.pixel_mean,
                           pixel_std=m.pixel_std, head=head,
                           head_channels=head.out_channels if head is not None else None)


def prepare_data(cfg: PretrainConfig) -> PretrainConfig:
    """Generate the shape-crops set when ``data.synthetic.enabled`` (rank 0 first) and fill empty
    ``data.train`` / ``data.val`` with its splits."""
    from .synthetic import ensure_shape_crops

    syn = cfg.data.synthetic
    if not syn.enabled:
        return cfg
    kwargs = dict(num_train_images=syn.num_train_images, num_val_images=syn.num_val_images,
                  crop_size=syn.crop_size, image_size=syn.image_size, seed=syn.seed)
    if du.is_main_process():
        paths = ensure_shape_crops(syn.root, **kwargs)
    du.synchronize()
    if not du.is_main_process():
        paths = ensure_shape_crops(syn.root, **kwargs)
    data = dataclasses.replace(cfg.data, train=cfg.data.train or paths.train,
                               val=cfg.data.val or paths.val)
    return dataclasses.replace(cfg, data=data)


def build_datasets(cfg: PretrainConfig):
    """``(train, val)`` datasets with their transforms (module docstring of ``data.py``); the
    validation images are centre-cropped (see :func:`final_test` for 10 crops)."""
    d, inp = cfg.data, cfg.data.input
    train_tf = build_transforms(train=True, scale=inp.scale, crop=inp.crop, pad=inp.pad,
                                flip_prob=inp.flip_prob, lighting_std=inp.lighting_std)
    test_tf = build_transforms(train=False, crop=inp.crop, test_size=inp.test_size)
    if not d.train:
        raise ValueError("data.train is empty: set it in the config, or enable data.synthetic")
    if d.format == "cifar10":
        images, labels, names = read_cifar10(d.train, train=True)
        n = len(images)
        if not 0 <= d.holdout < n:
            raise ValueError(f"data.holdout {d.holdout} must be in 0..{n - 1}")
        train = ArrayDataset(images=images, labels=labels, class_names=names,
                             transforms=train_tf, indices=range(n - d.holdout),
                             source=f"{d.train} (train)")
        if d.holdout:
            val = ArrayDataset(images=images, labels=labels, class_names=names,
                               transforms=test_tf, indices=range(n - d.holdout, n),
                               source=f"{d.train} (held out)")
        else:
            images, labels, names = read_cifar10(d.train, train=False)
            val = ArrayDataset(images=images, labels=labels, class_names=names,
                               transforms=test_tf, source=f"{d.train} (test)")
        return train, val
    if d.holdout:
        raise ValueError("data.holdout splits CIFAR-10's training batches; an image folder set "
                         "takes its validation images from data.val")
    train = ImageFolderDataset(root=d.train, transforms=train_tf, train=True,
                               on_bad_image=d.on_bad_image)
    if not d.val:
        raise ValueError("data.val is empty: set it to a folder of class folders, or a flat "
                         "folder with data.val_labels")
    names = [c["name"] for c in train.classes]
    val = ImageFolderDataset(root=d.val, transforms=test_tf, train=False, class_names=names,
                             label_file=d.val_labels or None, on_bad_image=d.on_bad_image)
    return train, val


def build_pretrainer(cfg: PretrainConfig, *, device: torch.device, resume: bool = False
                     ) -> tuple[Trainer, PretrainConfig]:
    """A ready trainer for ``cfg`` and the resolved config (``model.num_classes`` from the
    data); writes ``<output_dir>/config.yaml``; with ``resume`` continues from ``last.pth``."""
    ckpt = read_resume(cfg.output_dir, resume=resume)
    cfg = prepare_data(cfg)
    train_set, val_set = build_datasets(cfg)
    k = cfg.model.num_classes
    if k is not None and k != len(train_set.classes):
        raise ValueError(f"model.num_classes is {k} but {cfg.data.train} has "
                         f"{len(train_set.classes)} classes")
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model,
                                                             num_classes=len(train_set.classes)))
    cfg = convert_epochs(cfg, images=len(train_set))  # lengths in epochs -> iterations
    line = describe_epochs(cfg, images=len(train_set))
    if line:
        logging.getLogger(LOGGER_NAME).info("%s", line)
    seed_all(cfg.seed)  # the same initial weights on every process
    model = build_classifier(cfg, num_classes=cfg.model.num_classes).to(device)
    s = cfg.solver
    amp = training_precision(s.amp, s.amp_dtype, device)  # solver.amp: bool, "bf16", "auto"
    optimizer = build_optimizer(cfg, model)  # solver.optimizer: SGD or AdamW, as for detection
    scheduler = WarmupLRScheduler(optimizer, max_iter=s.max_iter, schedule=s.lr_schedule,
                                  steps=s.steps, gamma=s.gamma, warmup_iters=s.warmup_iters,
                                  warmup_factor=s.warmup_factor, warmup_method=s.warmup_method)
    test_loader = make_test_loader(
        val_set, batch_size=images_per_process(cfg.test.ims_per_batch, "test.ims_per_batch"),
        num_workers=cfg.data.num_workers)
    evaluate = ClassificationInference(
        data_loader=test_loader, device=device, **amp.trainer_args(),
        evaluator=ClassificationEvaluator(num_classes=cfg.model.num_classes))
    if du.is_main_process():
        save_config(cfg, Path(cfg.output_dir) / "config.yaml")
    batch = images_per_process(s.ims_per_batch, "solver.ims_per_batch")
    trainer = assemble_trainer(
        cfg, model=model, optimizer=optimizer, scheduler=scheduler,
        train_loader=lambda start: make_train_loader(
            train_set, batch_size=batch, num_workers=cfg.data.num_workers, seed=cfg.seed,
            start_iter=start, aspect_grouping=False),
        device=device, evaluate=evaluate, prepare_batch=classification_inputs, ckpt=ckpt,
        extra_state={"config": config_to_dict(cfg), "classes": train_set.classes},
        amp=amp.trainer_args(), best_metric=cfg.solver.best_metric, val_loader=test_loader)
    return trainer, cfg


def final_test(trainer: Trainer, cfg: PretrainConfig) -> dict[str, Any]:
    """The final test of ``data.input.test_crops``: the trainer's last (centre-crop) result, or,
    for 10 crops, the trained model over the validation set again with 10 crops per image."""
    results = dict(trainer.last_results or {})
    inp = cfg.data.input
    if inp.test_crops == 1:
        return {**results, "crops": 1}
    inference = trainer.evaluate_fn
    val_set = copy.copy(inference.data_loader.dataset)
    val_set.transforms = build_transforms(train=False, crop=inp.crop, test_size=inp.test_size,
                                          test_crops=inp.test_crops)
    loader = make_test_loader(val_set, batch_size=max(1, cfg.test.ims_per_batch
                                                       // du.get_world_size() // 10),
                               num_workers=cfg.data.num_workers)
    ten = classify_dataset(unwrap_model(trainer.model), loader, inference.evaluator,
                           device=inference.device, amp=inference.amp,
                           amp_dtype=inference.amp_dtype)
    center = {f"center_crop_{k}": v for k, v in results.items() if k != "num_images"}
    return {**ten, "crops": inp.test_crops, **center}


def export(trainer: Trainer, cfg: PretrainConfig, path: str | Path) -> None:
    """Write the backbone's weights (``backbone.pth``) in the layout ``build_backbone(name,
    weights=path)`` and ``model.backbone.weights: path`` load, with the run's config, classes
    and iteration."""
    name = cfg.model.backbone.name
    export_backbone(unwrap_model(trainer.model), path, fc_prefix=_FC_PREFIX.get(name, "fc"),
                    arch=name, backbone_options=backbone_options(cfg),
                    config=config_to_dict(cfg), classes=trainer.extra_state["classes"],
                    iteration=trainer.iteration)
