"""Box evaluation: COCO (pycocotools) and PASCAL VOC (the devkit's AP at IoU 0.5)."""

from .coco_eval import COCOEvaluator, format_table, headline, is_voc_result
from .relabel import Relabelled
from .voc_eval import VOCEvaluator

__all__ = ["COCOEvaluator", "Relabelled", "VOCEvaluator", "format_table", "headline",
           "is_voc_result"]
