"""Detection data: COCO and PASCAL VOC datasets, format conversion, transforms, samplers,
loaders, synthetic shapes."""

from .base import DatasetError, DetectionDataset, decode_image
from .classes import (category_id_to_label, classes_from_categories, label_to_category_id,
                      relabel_table)
from .coco import COCODataset, load_coco, read_coco_json
from .loader import collate, make_test_loader, make_train_loader, move_batch
from .samplers import (AspectRatioBatchSampler, InferenceSampler, RepeatFactorTrainingSampler,
                       SkipBatches, TrainingSampler, aspect_ratio_groups, repeat_factors)
from .synthetic import SyntheticCOCO, ensure_synthetic, make_synthetic_coco
from .transforms import DetectionTransform, ResizeShortestEdge, build_transforms, resized_shape
from .voc import VOC_CLASSES, VOCAnnotations, VOCDataset, read_voc

__all__ = [
    "AspectRatioBatchSampler", "COCODataset", "DatasetError", "DetectionDataset",
    "DetectionTransform", "VOC_CLASSES", "VOCAnnotations", "VOCDataset", "read_voc",
    "InferenceSampler", "RepeatFactorTrainingSampler", "ResizeShortestEdge", "SkipBatches",
    "SyntheticCOCO", "TrainingSampler",
    "aspect_ratio_groups", "build_transforms", "category_id_to_label",
    "classes_from_categories", "collate", "decode_image", "ensure_synthetic",
    "label_to_category_id", "load_coco", "make_synthetic_coco", "make_test_loader",
    "make_train_loader", "move_batch",
    "read_coco_json", "relabel_table", "repeat_factors", "resized_shape",
]
