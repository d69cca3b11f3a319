"""COCO box evaluation."""

from .coco_eval import COCOEvaluator, format_table
from .relabel import Relabelled

__all__ = ["COCOEvaluator", "Relabelled", "format_table"]
