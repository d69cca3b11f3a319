"""Box evaluation: COCO (pycocotools) and PASCAL VOC (the devkit's AP at IoU 0.5)."""

from .coco_eval import COCOEvaluator, format_table
from .voc_eval import VOCEvaluator

__all__ = ["COCOEvaluator", "VOCEvaluator", "format_table"]
