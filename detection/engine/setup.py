"""Everything but the model, built from the config: data, loaders, solver, evaluator, the run.

``detection/build.py`` turns ``cfg.model`` into a ``FasterRCNN``; this module turns the rest of
the config into the objects a training or evaluation run needs, and :func:`build_trainer`
assembles a ready :class:`~detection.engine.Trainer`. Tools call these functions; nothing else
reads the config.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch

from ..build import build_model
from ..config import Config, config_to_dict, save_config
from . import distributed as du
from .checkpoint import load_checkpoint, seed_all
from .logging import LOGGER_NAME, MetricsWriter
from .schedule import WarmupLRScheduler, param_groups
from .trainer import DatasetInference, Trainer

__all__ = [
    "prepare_data", "build_train_dataset", "build_test_dataset", "with_num_classes",
    "images_per_process", "build_train_loader", "build_test_loader", "build_optimizer",
    "build_lr_scheduler", "build_evaluator", "build_trainer",
]


def prepare_data(cfg: Config) -> Config:
    """Generate the synthetic set when ``data.synthetic.enabled`` (once; safe under torchrun)
    and fill empty ``data.train`` / ``data.test`` paths with its splits. Returns the config."""
    from ..data.synthetic import ensure_synthetic

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
    from ..data.coco import COCODataset
    from ..data.transforms import build_transforms

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
    total, world = cfg.solver.ims_per_batch, du.get_world_size()
    if total % world:
        raise ValueError(f"solver.ims_per_batch {total} is not divisible by the {world} "
                         "processes")
    return total // world


def build_train_loader(cfg: Config, dataset, *, start_iter: int = 0):
    """The endless training loader of this process, resumable at ``start_iter`` with the same
    batches and the same augmentation (see ``detection.data.loader.build_train_loader``)."""
    from ..data.loader import build_train_loader as data_train_loader

    return data_train_loader(dataset, batch_size=images_per_process(cfg),
                             num_workers=cfg.data.num_workers, seed=cfg.seed,
                             start_iter=start_iter, aspect_grouping=cfg.data.aspect_grouping)


def build_test_loader(cfg: Config, dataset):
    """One pass over this process's shard of ``dataset``."""
    from ..data.loader import build_test_loader as data_test_loader

    return data_test_loader(dataset, batch_size=cfg.test.ims_per_batch,
                            num_workers=cfg.data.num_workers)


def build_optimizer(cfg: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    """SGD with momentum; weight decay ``solver.weight_decay`` except on normalisation layers
    (``solver.weight_decay_norm``)."""
    s = cfg.solver
    groups = param_groups(model, weight_decay=s.weight_decay,
                          weight_decay_norm=s.weight_decay_norm)
    return torch.optim.SGD(groups, lr=s.base_lr, momentum=s.momentum)


def build_lr_scheduler(cfg: Config, optimizer: torch.optim.Optimizer) -> WarmupLRScheduler:
    """Linear warm-up times ``solver.lr_schedule`` (multi-step or cosine), stepped per iteration."""
    s = cfg.solver
    return WarmupLRScheduler(optimizer, max_iter=s.max_iter, schedule=s.lr_schedule,
                             steps=s.steps, gamma=s.gamma, warmup_iters=s.warmup_iters,
                             warmup_factor=s.warmup_factor)


def build_evaluator(cfg: Config, classes: list[dict], *, verbose: bool = False):
    """COCO evaluation of ``data.test.annotations`` (results in percent); ``verbose`` prints
    pycocotools' summary and the per-category table."""
    from ..evaluation import COCOEvaluator

    return COCOEvaluator(annotations=cfg.data.test.annotations, classes=classes,
                         output_dir=cfg.output_dir, verbose=verbose)


def build_trainer(cfg: Config, *, device: torch.device, resume: bool = False
                  ) -> tuple[Trainer, Config]:
    """A ready :class:`~detection.engine.Trainer` for ``cfg`` and the resolved config.

    Prepares the data (synthetic set, classes -> ``model.num_classes``), builds model, solver,
    training loader and evaluation, writes ``<output_dir>/config.yaml`` and, with ``resume``,
    continues from ``<output_dir>/last.pth`` (a fresh run when there is none yet).
    """
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
