"""COCO box evaluation."""

from .coco_eval import COCOEvaluator, format_table

__all__ = ["COCOEvaluator", "format_table"]
