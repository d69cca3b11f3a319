"""Box evaluation: COCO (pycocotools) and PASCAL VOC (the devkit's AP at IoU 0.5), and the
inference over a dataset that feeds them."""

from .coco_eval import COCOEvaluator, format_table, headline, is_voc_result
from .inference import DatasetInference, inference_on_dataset, save_visualizations
from .relabel import Relabelled
from .voc_eval import VOCEvaluator

__all__ = ["COCOEvaluator", "DatasetInference", "Relabelled", "VOCEvaluator", "format_table",
           "headline", "inference_on_dataset", "is_voc_result", "save_visualizations"]
