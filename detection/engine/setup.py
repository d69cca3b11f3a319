"""Everything but the model, built from the config: data, loaders, solver, evaluator, the run.

``detection/build.py`` turns ``cfg.model`` into a ``FasterRCNN``; this module turns the rest of
the config into the objects a training or evaluation run needs, and :func:`build_trainer`
assembles a ready :class:`~detection.engine.Trainer`. Tools call these functions; nothing else
reads the config.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from pathlib import Path

import torch

from ..build import build_model, check_trainable_norm
from ..config import Config, config_to_dict, save_config
from . import distributed as du
from .checkpoint import load_checkpoint, seed_all
from .logging import LOGGER_NAME, MetricsWriter
from .schedule import WarmupLRScheduler, param_groups
from .trainer import DatasetInference, Trainer

__all__ = [
    "prepare_data", "build_train_dataset", "build_test_dataset", "with_num_classes",
    "images_per_process", "build_train_loader", "build_test_loader", "build_optimizer",
    "build_lr_scheduler", "build_evaluator", "build_trainer", "check_before_data",
    "check_data_paths", "prepare_output_dir",
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


def check_data_paths(cfg: Config, split: str) -> None:
    """Raise ``DatasetError`` naming the config key when ``data.<split>``'s image folder or
    annotation file is unset or missing: ``data.train.images: folder not found: <path>``."""
    from ..data.base import DatasetError

    paths = getattr(cfg.data, split)
    for name, exists, what in (("images", os.path.isdir, "folder"),
                               ("annotations", os.path.isfile, "file")):
        key, path = f"data.{split}.{name}", getattr(paths, name)
        if not path:
            raise DatasetError(f"{key} is empty: set it in the config, or enable "
                               "data.synthetic")
        if not exists(path):
            raise DatasetError(f"{key}: {what} not found: {path}")


def _dataset(cfg: Config, *, train: bool):
    from ..data.coco import COCODataset
    from ..data.transforms import build_transforms

    d, inp = cfg.data, cfg.data.input
    split = d.train if train else d.test
    check_data_paths(cfg, "train" if train else "test")
    transforms = build_transforms(
        train=train, min_size=inp.min_size_train if train else inp.min_size_test,
        max_size=inp.max_size_train if train else inp.max_size_test,
        flip_prob=inp.flip_prob, photometric=inp.photometric)
    return COCODataset(images=split.images, annotations=split.annotations,
                       transforms=transforms, train=train, filter_empty=d.filter_empty,
                       on_bad_image=d.on_bad_image, on_bad_annotation=d.on_bad_annotation)


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


RUN_FILES = ("last.pth", "best.pth", "metrics.jsonl", "eval.json", "coco_results.json",
             "config.yaml", "log.txt")
RUN_FOLDERS = ("vis", "tensorboard")


def prepare_output_dir(output_dir: str | os.PathLike, *, resume: bool, force: bool,
                       delete: bool = True) -> list[str]:
    """Refuse to train into a folder that holds a previous run (``last.pth`` or
    ``metrics.jsonl``) unless ``resume`` (continue it) or ``force`` (start over: the previous
    run's files, ``RUN_FILES`` and ``RUN_FOLDERS``, are deleted; nothing else in the folder).

    Raises ``FileExistsError`` naming the folder and both ways on. Under torchrun every process
    checks (so all stop alike) and only the main one deletes (``delete``). Returns the names
    deleted.
    """
    out = Path(output_dir)
    found = [name for name in ("last.pth", "metrics.jsonl") if (out / name).is_file()]
    if not found or resume:
        return []
    if not force:
        raise FileExistsError(
            f"{out} already holds a run ({', '.join(found)}): pass --resume to continue it, "
            "or --force to start over (its run files are deleted), or choose another --output")
    deleted = [name for name in (*RUN_FILES, *RUN_FOLDERS) if (out / name).exists()]
    if not delete:
        return []
    for name in deleted:
        if (out / name).is_dir():
            shutil.rmtree(out / name)
        else:
            (out / name).unlink()
    return deleted


def check_before_data(cfg: Config) -> None:
    """What can fail before the (slow) dataset loading: the backbone weights file (looked up,
    or downloaded, now) and a norm that cannot train from scratch."""
    from backbones.weights import resolve_weights

    b = cfg.model.backbone
    if b.weights is not None:
        resolve_weights(b.weights, arch=b.name)
    check_trainable_norm(cfg)


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
    check_before_data(cfg)
    cfg = prepare_data(cfg)
    for split in ("train", "test"):
        check_data_paths(cfg, split)
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
        for split, dataset in (("train", train_set), ("test", test_set)):
            writer.write({"type": "data", "iteration": start, "split": split, **dataset.stats})
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
