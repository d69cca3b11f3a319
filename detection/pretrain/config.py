"""The pretraining config: a root dataclass read by ``detection.config.loader`` (YAML with
``_base_``, ``--set`` overrides, unknown keys and wrong types named with the closest valid key).

    cfg = load_pretrain_config("configs/pretrain/cifar10_resnet20.yaml", ["solver.max_iter=100"])

``model.backbone`` and ``solver`` have the detection config's keys (their dataclasses extend
detection's) with pretraining's defaults: trainable BN, nothing frozen, no weights; the paper's
ImageNet solver. ``data`` and ``test`` are the classification ones below.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from ..config import (BackboneConfig, SolverConfig, TrackersConfig, choice_field, list_field,
                      load_config)

__all__ = ["ClassificationDataConfig", "ClassificationInputConfig", "ClassifierConfig",
           "PretrainBackboneConfig", "PretrainConfig", "PretrainSolverConfig",
           "PretrainTestConfig",
           "ShapeCropsConfig", "load_pretrain_config"]


@dataclass
class PretrainBackboneConfig(BackboneConfig):
    """The detection config's backbone keys; pretraining trains everything from scratch."""

    weights: Optional[str] = None
    norm: str = choice_field("FrozenBN", "BN", "GN", "SyncBN", default="BN")
    freeze_at: int = 0


@dataclass
class ClassifierConfig:
    backbone: PretrainBackboneConfig = field(default_factory=PretrainBackboneConfig)
    num_classes: Optional[int] = None  # None: the number of classes in the training data
    pixel_mean: list[float] = list_field(123.675, 116.28, 103.53)  # RGB, 0..255 units
    pixel_std: list[float] = list_field(58.395, 57.12, 57.375)


@dataclass
class ClassificationInputConfig:
    scale: list[int] = list_field(256, 480)  # train: shorter side random in [lo, hi]; [] no resize
    crop: int = 224  # train crop, and test crop(s)
    pad: int = 0  # zero pixels on each side before the train crop (CIFAR: 4)
    flip_prob: float = 0.5
    lighting_std: float = 0.1  # AlexNet's PCA colour augmentation; 0: off
    test_size: int = 256  # test: shorter side resized to it; 0: the image as it is
    # the final test: 1 centre crop, or 10 (corners + centre, and mirrored); evaluations during
    # training always take the centre crop (the paper's curves)
    test_crops: int = choice_field(1, 10, default=1)


@dataclass
class ShapeCropsConfig:
    """Generate the shape-crops set (``detection.pretrain.synthetic``) at ``root`` on
    first use; empty ``data.train`` / ``data.val`` then default to its splits."""

    enabled: bool = False
    root: str = "datasets/shape_crops"
    num_train_images: int = 2000
    num_val_images: int = 200
    crop_size: int = 64
    image_size: int = 160
    seed: int = 1


@dataclass
class ClassificationDataConfig:
    format: str = choice_field("folder", "cifar10", default="folder")
    train: str = ""  # folder: class folders; cifar10: the archive or its folder
    val: str = ""  # folder: class folders, or flat with val_labels; cifar10: unused (test batch)
    val_labels: str = ""  # label file of a flat val folder
    holdout: int = 0  # > 0: the last N training images are the validation set (CIFAR: 5000)
    synthetic: ShapeCropsConfig = field(default_factory=ShapeCropsConfig)
    input: ClassificationInputConfig = field(default_factory=ClassificationInputConfig)
    num_workers: int = 4
    on_bad_image: str = choice_field("skip", "error", default="skip")


@dataclass
class PretrainSolverConfig(SolverConfig):
    """The detection config's solver keys (plus ``warmup_method``), with the paper's ImageNet
    recipe as defaults: SGD momentum 0.9, weight decay 1e-4 on every weight, batch 256, lr 0.1
    divided by 10 at 30 and 60 of 90 epochs (5005 iterations each), no warm-up."""

    max_iter: int = 450_000
    base_lr: float = 0.1
    ims_per_batch: int = 256
    weight_decay_norm: float = 1e-4
    steps: list[int] = list_field(150_000, 300_000)
    warmup_iters: int = 0
    warmup_method: str = choice_field("linear", "constant", default="linear")
    best_metric: str = "top1"  # best.pth: the best top-1 accuracy


@dataclass
class PretrainTestConfig:
    eval_period: int = 0  # 0: evaluate only at the end
    eval_period_epochs: Optional[float] = None  # replaces eval_period (solver's epoch keys)
    val_loss: bool = False  # at each evaluation, the training loss on the validation images
    ims_per_batch: int = 64


@dataclass
class PretrainConfig:
    model: ClassifierConfig = field(default_factory=ClassifierConfig)
    data: ClassificationDataConfig = field(default_factory=ClassificationDataConfig)
    solver: PretrainSolverConfig = field(default_factory=PretrainSolverConfig)
    test: PretrainTestConfig = field(default_factory=PretrainTestConfig)
    output_dir: str = "output/pretrain"
    seed: int = 0
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    log_period: int = 20
    tensorboard: bool = True  # scalars in <output_dir>/tensorboard, as detection's key
    trackers: TrackersConfig = field(default_factory=TrackersConfig)  # as detection's key
    hooks: list[dict[str, Any]] = list_field()  # your own hooks, as detection's key


def load_pretrain_config(path: Union[str, os.PathLike, None] = None,
                         overrides: Optional[list[str]] = None) -> PretrainConfig:
    """Read a pretraining YAML file (with ``_base_``) and ``overrides``; see the module
    docstring."""
    return load_config(path, overrides, schema=PretrainConfig)
