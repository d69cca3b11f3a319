"""Everything but the model, built from the config: data, loaders, solver, evaluator, the run.

``detection/build.py`` turns ``cfg.model`` into a ``FasterRCNN``; this module turns the rest of
the config into the objects a training or evaluation run needs, and :func:`build_trainer`
hands them to the task-neutral engine (``detection.engine.run.assemble_trainer``) for a ready
:class:`~detection.engine.Trainer`. Tools call these functions; nothing else reads the config.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch

from backbones.weights import IMAGENET_WEIGHTS

from .build import build_model, check_trainable_norm
from .config import Config, config_to_dict, existing_path, save_config
from .data.loader import move_batch
from .engine import distributed as du
from .engine.checkpoint import seed_all
from .engine.epochs import convert_epochs
from .engine.epochs import describe as describe_epochs
from .engine.run import assemble_trainer, images_per_process, read_resume
from .engine.runlog import LOGGER_NAME
from .engine.schedule import WarmupLRScheduler, param_groups
from .engine.trainer import Trainer
from .evaluation.inference import DatasetInference
from .precision import inference_precision, training_precision

__all__ = [
    "prepare_data", "has_test_data", "dataset_source", "voc_splits", "build_train_dataset",
    "build_test_dataset", "build_split_for_test", "with_num_classes", "build_train_sampler",
    "build_train_loader", "build_test_loader", "build_optimizer", "build_lr_scheduler",
    "build_evaluator", "build_model_for_training", "build_trainer", "check_before_data",
    "check_data_paths", "build_augment_transforms",
]


def prepare_data(cfg: Config) -> Config:
    """Generate the synthetic set when ``data.synthetic.enabled`` (once; safe under torchrun)
    and fill empty ``data.train`` / ``data.test`` paths with its splits. Returns the config."""
    from .data.synthetic import ensure_synthetic

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


def has_test_data(cfg: Config) -> bool:
    """Whether ``data.test`` names a test set (after :func:`prepare_data`); without one a run
    trains without evaluating."""
    t = cfg.data.test
    return bool(t.roots or t.splits) if cfg.data.format == "voc" else bool(
        t.images or t.annotations)


def dataset_source(cfg: Config, *, train: bool) -> str:
    """The split's files in a few words, for log lines: the COCO json, or the VOC roots."""
    split = cfg.data.train if train else cfg.data.test
    if cfg.data.format == "voc":
        return ", ".join(f"{root} ({s})" for root, s in zip(split.roots, voc_splits(split)))
    return split.annotations


def voc_splits(split) -> list[str]:
    """One split name per root (a single split applies to every root)."""
    return split.splits * len(split.roots) if len(split.splits) == 1 else split.splits


def check_data_paths(cfg: Config, split: str) -> None:
    """The keys of ``data.<split>`` (``train`` or ``test``) fit ``data.format`` and name existing
    paths, errors naming the key: ``data.train.images: folder not found: <path>`` (relative paths
    resolve from the current directory, as everywhere)."""
    d = cfg.data
    key = f"data.{split}"
    split = getattr(d, split)
    if d.format == "voc":
        used, unused = ("roots", "splits"), ("images", "annotations")
        if d.synthetic.enabled:
            raise ValueError("data.synthetic generates a COCO-format set: set data.format: coco "
                             "or data.synthetic.enabled: false")
    else:
        used, unused = ("images", "annotations"), ("roots", "splits")
        if d.class_names is not None:
            raise ValueError("data.class_names is for data.format voc; a COCO json names its "
                             "categories itself")
    stray = [f"{key}.{name}" for name in unused if getattr(split, name)]
    if stray:
        raise ValueError(f"{', '.join(stray)} set but data.format is {d.format!r}, which reads "
                         f"{key}.{used[0]} and {key}.{used[1]}")
    for name in used:
        if not getattr(split, name):
            hint = " or enable data.synthetic" if d.format == "coco" else ""
            raise ValueError(f"{key}.{name} is empty: set it in the config{hint}")
    if d.format == "voc":
        if len(split.splits) not in (1, len(split.roots)):
            raise ValueError(f"{key}.splits: need one split for all roots or one per root, got "
                             f"{len(split.splits)} for {len(split.roots)} roots")
        for i, root in enumerate(split.roots):
            existing_path(root, f"{key}.roots[{i}]", kind="folder")
    else:
        existing_path(split.images, f"{key}.images", kind="folder")
        existing_path(split.annotations, f"{key}.annotations")


def build_augment_transforms(cfg: Config):
    """The training transforms of ``data.augment`` (``detection.data.augment``: presets,
    albumentations transforms by name), or ``None`` when the list is empty (``data.input``'s
    resize and flip, :func:`~detection.data.transforms.build_transforms`). Every entry is
    checked here, before any data is read; the error names ``data.augment[i]``."""
    from .data.augment import build_augment
    from .data.transforms import DetectionTransform

    d, inp = cfg.data, cfg.data.input
    if not d.augment:
        return None
    defaults = {"resize_flip": {"sizes": inp.min_size_train, "max_size": inp.max_size_train,
                                "flip_prob": inp.flip_prob, "photometric": inp.photometric},
                "lsj": {"size": inp.min_size_test, "flip_prob": inp.flip_prob}}
    masks = cfg.model.mask_head.enabled  # compact masks follow axis-aligned maps only
    ops = build_augment(d.augment, defaults=defaults, masks=masks)
    return DetectionTransform(ops, masks=masks, min_visibility=d.box_min_visibility)


def _dataset(cfg: Config, *, train: bool):
    from .data.coco import COCODataset
    from .data.transforms import build_transforms
    from .data.voc import VOCDataset

    d, inp = cfg.data, cfg.data.input
    split = d.train if train else d.test
    check_data_paths(cfg, "train" if train else "test")
    masks = train and cfg.model.mask_head.enabled  # evaluation reads the json's masks itself
    transforms = build_augment_transforms(cfg) if train else None
    if transforms is None:
        transforms = build_transforms(
            train=train, min_size=inp.min_size_train if train else inp.min_size_test,
            max_size=inp.max_size_train if train else inp.max_size_test,
            flip_prob=inp.flip_prob, photometric=inp.photometric, masks=masks)
    if d.format == "voc" and cfg.model.mask_head.enabled:
        raise ValueError("model.mask_head.enabled needs instance masks: data.format coco (a "
                         "COCO json with segmentation); VOC's XML files have none")
    if d.format == "voc":
        return VOCDataset(roots=split.roots, splits=voc_splits(split),
                          class_names=d.class_names, transforms=transforms, train=train,
                          keep_difficult=d.keep_difficult, filter_empty=d.filter_empty,
                          on_bad_image=d.on_bad_image, on_bad_annotation=d.on_bad_annotation)
    return COCODataset(images=split.images, annotations=split.annotations,
                       transforms=transforms, train=train, filter_empty=d.filter_empty,
                       on_bad_image=d.on_bad_image, on_bad_annotation=d.on_bad_annotation,
                       masks=masks)


def build_train_dataset(cfg: Config):
    """``COCODataset`` or ``VOCDataset`` (``data.format``) of ``data.train`` with the training
    transforms."""
    return _dataset(cfg, train=True)


def build_test_dataset(cfg: Config):
    """``COCODataset`` or ``VOCDataset`` (``data.format``) of ``data.test`` with the test
    transforms."""
    return _dataset(cfg, train=False)


def build_split_for_test(cfg: Config, split: str):
    """The dataset of ``data.<split>`` (``train`` or ``test``) with the test transforms: what
    INT8 calibration reads of the training set (the synthetic set is generated first)."""
    cfg = prepare_data(cfg)
    data = dataclasses.replace(cfg.data, test=getattr(cfg.data, split))
    return build_test_dataset(dataclasses.replace(cfg, data=data))


def with_num_classes(cfg: Config, classes: list[dict]) -> Config:
    """``cfg`` with ``model.num_classes`` taken from ``classes`` (the annotations) unless set;
    a set value that disagrees with the annotations is an error naming both."""
    k = cfg.model.num_classes
    if k is not None and k != len(classes):
        raise ValueError(f"model.num_classes is {k} but the annotations have {len(classes)} "
                         f"categories: {[c['name'] for c in classes]}")
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model,
                                                              num_classes=len(classes)))


def build_train_sampler(cfg: Config, dataset):
    """The stream of training indices: ``TrainingSampler`` (``data.sampler: uniform``) or
    ``RepeatFactorTrainingSampler`` over the dataset's repeat factors (``repeat_factor``, with
    ``data.repeat_threshold``). Both are pure functions of the seed, so resuming stays exact."""
    from .data.samplers import RepeatFactorTrainingSampler, TrainingSampler, repeat_factors

    if cfg.data.sampler == "uniform":
        return TrainingSampler(len(dataset), seed=cfg.seed)
    offsets, labels = dataset.box_labels
    factors = repeat_factors(offsets, labels, threshold=cfg.data.repeat_threshold)
    logging.getLogger(LOGGER_NAME).info(
        "repeat-factor sampling (threshold %g): %d of %d images repeated (factor up to %.2f), "
        "an epoch draws %.0f images", cfg.data.repeat_threshold, int((factors > 1).sum()),
        len(factors), float(factors.max()), float(factors.sum()))
    return RepeatFactorTrainingSampler(factors, seed=cfg.seed)


def build_train_loader(cfg: Config, dataset, *, start_iter: int = 0):
    """The endless training loader of this process, resumable at ``start_iter`` with the same
    batches and the same augmentation (see ``detection.data.loader.build_train_loader``)."""
    from .data.loader import make_train_loader

    return make_train_loader(dataset, batch_size=images_per_process(cfg.solver.ims_per_batch,
                                                                    "solver.ims_per_batch"),
                             num_workers=cfg.data.num_workers, seed=cfg.seed,
                             start_iter=start_iter, aspect_grouping=cfg.data.aspect_grouping,
                             sampler=build_train_sampler(cfg, dataset))


def build_test_loader(cfg: Config, dataset):
    """One pass over this process's shard of ``dataset``."""
    from .data.loader import make_test_loader

    return make_test_loader(dataset, batch_size=cfg.test.ims_per_batch,
                            num_workers=cfg.data.num_workers)


def build_optimizer(cfg: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    """``solver.optimizer``: SGD with momentum, or AdamW (decoupled weight decay); weight decay
    ``solver.weight_decay`` except on normalisation layers (``solver.weight_decay_norm``)."""
    s = cfg.solver
    groups = param_groups(model, weight_decay=s.weight_decay,
                          weight_decay_norm=s.weight_decay_norm)
    if s.optimizer == "AdamW":
        try:  # one fused kernel over all tensors (torch >= 2.4 on the CPU), not a per-tensor loop
            return torch.optim.AdamW(groups, lr=s.base_lr, betas=tuple(s.betas), fused=True)
        except RuntimeError:  # a device (or torch) without it
            return torch.optim.AdamW(groups, lr=s.base_lr, betas=tuple(s.betas))
    return torch.optim.SGD(groups, lr=s.base_lr, momentum=s.momentum)


def build_lr_scheduler(cfg: Config, optimizer: torch.optim.Optimizer) -> WarmupLRScheduler:
    """Linear warm-up times ``solver.lr_schedule`` (multi-step or cosine), stepped per iteration."""
    s = cfg.solver
    return WarmupLRScheduler(optimizer, max_iter=s.max_iter, schedule=s.lr_schedule,
                             steps=s.steps, gamma=s.gamma, warmup_iters=s.warmup_iters,
                             warmup_factor=s.warmup_factor)


def build_evaluator(cfg: Config, classes: list[dict], *, verbose: bool = False):
    """The evaluation of ``data.test`` (results in percent): COCO mAP of
    ``data.test.annotations`` (``test.evaluator_backend``; box and, with
    ``model.mask_head.enabled``, mask AP), or VOC AP at IoU .5 of
    ``data.test.roots`` / ``splits`` (``test.use_07_metric``); ``verbose`` prints the summary and
    the per-category table."""
    from .evaluation import COCOEvaluator, VOCEvaluator

    t = cfg.data.test
    if cfg.data.format == "voc":
        return VOCEvaluator(roots=t.roots, splits=voc_splits(t), classes=classes,
                            use_07_metric=cfg.test.use_07_metric, output_dir=cfg.output_dir,
                            verbose=verbose)
    return COCOEvaluator(annotations=t.annotations, classes=classes,
                         output_dir=cfg.output_dir, verbose=verbose,
                         backend=cfg.test.evaluator_backend,
                         masks=cfg.model.mask_head.enabled)


def build_model_for_training(cfg: Config, classes: list[dict], *, resuming: bool):
    """``build_model(cfg)`` initialised from ``model.weights`` when set (the log lists what was
    loaded, re-initialised and ignored); ``resuming`` (``--resume`` found ``last.pth``) wins:
    the weights then come from there. With ``model.weights`` the backbone file
    (``model.backbone.weights``) is not read: every tensor comes from the checkpoint."""
    from .transfer import load_detector_weights

    log = logging.getLogger(LOGGER_NAME)
    m = cfg.model
    if m.backbone.weights not in (None, *IMAGENET_WEIGHTS) and not m.weights:
        existing_path(m.backbone.weights, "model.backbone.weights")
    if not m.weights or resuming:
        if m.weights:
            log.info("--resume: continuing from last.pth, model.weights %s not used", m.weights)
        return build_model(cfg, num_classes=len(classes))
    path = existing_path(m.weights, "model.weights")
    model = build_model(dataclasses.replace(cfg, model=dataclasses.replace(
        m, backbone=dataclasses.replace(m.backbone, weights=None))), num_classes=len(classes))
    report = load_detector_weights(model, path, classes=classes,
                                   weights_classes=m.weights_classes)
    for line in report.lines():
        log.info("%s", line)
    return model


def _build_inference(cfg: Config, train_set, device: torch.device):
    """``(DatasetInference, test set)`` over ``data.test``, or ``(None, None)`` (with a log line)
    without one."""
    if not has_test_data(cfg):
        logging.getLogger(LOGGER_NAME).info(
            "no data.test in the config: training without evaluation (no eval.json, no "
            "best.pth; last.pth is the result)")
        return None, None
    test_set = build_test_dataset(cfg)
    if test_set.classes != train_set.classes:
        raise ValueError(f"{dataset_source(cfg, train=False)} has other categories than "
                         f"{dataset_source(cfg, train=True)}: {test_set.classes} vs "
                         f"{train_set.classes}")
    amp = inference_precision(cfg.test.amp, device, solver_amp=cfg.solver.amp,
                              amp_dtype=cfg.solver.amp_dtype)
    logging.getLogger(LOGGER_NAME).info("evaluation runs in %s", amp.describe())
    return DatasetInference(
        data_loader=build_test_loader(cfg, test_set),
        evaluator=build_evaluator(cfg, train_set.classes), device=device,
        keep=cfg.test.vis_images, prepare=amp.prepare, **amp.trainer_args()), test_set


def check_before_data(cfg: Config) -> None:
    """What can fail before the (slow) dataset loading: the backbone weights file (looked up,
    or downloaded, now) and a norm that cannot train from scratch."""
    from backbones.weights import resolve_weights

    b = cfg.model.backbone
    if b.weights is not None:
        resolve_weights(b.weights, arch=b.name)
    check_trainable_norm(cfg)
    build_augment_transforms(cfg)  # data.augment's entries, each checked by name


def build_trainer(cfg: Config, *, device: torch.device, resume: bool = False
                  ) -> tuple[Trainer, Config]:
    """A ready :class:`~detection.engine.Trainer` for ``cfg`` and the resolved config.

    Prepares the data (synthetic set, classes -> ``model.num_classes``), builds model, solver,
    training loader and evaluation, writes ``<output_dir>/config.yaml`` and, with ``resume``,
    continues from ``<output_dir>/last.pth`` (a fresh run when there is none yet).
    """
    ckpt = read_resume(cfg.output_dir, resume=resume)
    check_before_data(cfg)
    cfg = prepare_data(cfg)
    for split in ("train", "test") if has_test_data(cfg) else ("train",):
        check_data_paths(cfg, split)
    train_set = build_train_dataset(cfg)
    cfg = with_num_classes(cfg, train_set.classes)
    cfg = convert_epochs(cfg, images=len(train_set))  # lengths in epochs -> iterations
    line = describe_epochs(cfg, images=len(train_set))
    if line:
        logging.getLogger(LOGGER_NAME).info("%s", line)
    seed_all(cfg.seed)  # the same initial weights on every process
    model = build_model_for_training(cfg, train_set.classes, resuming=ckpt is not None)
    model = model.to(device)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer)
    inference, test_set = _build_inference(cfg, train_set, device)
    if du.is_main_process():
        save_config(cfg, Path(cfg.output_dir) / "config.yaml")
    stats = {split: d.stats for split, d in (("train", train_set), ("test", test_set))
             if d is not None}
    amp = training_precision(cfg.solver.amp, cfg.solver.amp_dtype, device)
    logging.getLogger(LOGGER_NAME).info("training runs in %s", amp.describe())
    trainer = assemble_trainer(
        cfg, model=model, optimizer=optimizer, scheduler=scheduler,
        train_loader=lambda start: build_train_loader(cfg, train_set, start_iter=start),
        device=device, evaluate=inference, prepare_batch=move_batch, ckpt=ckpt,
        extra_state={"config": config_to_dict(cfg), "classes": train_set.classes},
        amp=amp.trainer_args(), best_metric=cfg.solver.best_metric, data_stats=stats,
        val_loader=inference.data_loader if inference is not None else None)
    return trainer, cfg
