"""COCO category names by category id (torchvision's 91-way COCO detectors use label == id).

``COCO_CATEGORY_NAMES[i]`` is the name of COCO category id ``i``; index 0 is the background and
the ten ids that COCO 2017 does not use are ``"N/A"``.
"""
from __future__ import annotations

__all__ = ["COCO_CATEGORY_NAMES", "coco_id_classes"]

COCO_CATEGORY_NAMES = [
    "__background__", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train",
    "truck", "boat", "traffic light", "fire hydrant", "N/A", "stop sign", "parking meter",
    "bench", "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra",
    "giraffe", "N/A", "backpack", "umbrella", "N/A", "N/A", "handbag", "tie", "suitcase",
    "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove",
    "skateboard", "surfboard", "tennis racket", "bottle", "N/A", "wine glass", "cup", "fork",
    "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot",
    "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed", "N/A",
    "dining table", "N/A", "N/A", "toilet", "N/A", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "N/A",
    "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
]


def coco_id_classes() -> list[dict]:
    """``classes`` for a model whose label ``i`` is COCO category id ``i`` (labels 1..90)."""
    return [{"id": i, "name": COCO_CATEGORY_NAMES[i]} for i in range(1, len(COCO_CATEGORY_NAMES))]
