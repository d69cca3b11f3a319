"""Backbone pretraining as image classification (``tools/pretrain.py``): any ``backbones`` model
plus global average pooling and an fc, trained by the detection engine on image folders
(ILSVRC-2012's layout), CIFAR-10's archives or the synthetic shape crops, evaluated by top-1 /
top-5 error (single or 10 crops); the trained backbone is exported in the layout
``build_backbone(name, weights=PATH)`` loads.
"""

from .config import PretrainConfig, load_pretrain_config
from .data import ArrayDataset, ImageFolderDataset, read_cifar10
from .evaluation import ClassificationEvaluator, classify_dataset
from .model import ImageClassifier, export_backbone, label_ranks
from .transforms import build_transforms

__all__ = ["ArrayDataset", "ClassificationEvaluator", "ImageClassifier", "ImageFolderDataset",
           "PretrainConfig", "build_transforms", "classify_dataset", "export_backbone",
           "label_ranks", "load_pretrain_config", "read_cifar10"]
