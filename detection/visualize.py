"""Draw detections on an image with OpenCV.

One colour per label from a fixed palette (the same label always gets the same colour), a box
outline whose thickness grows with the image, and a ``"name 0.97"`` tag on a filled background in
the box colour. The tag's text is black or white, whichever contrasts with the background: with
the Rec. 601 luma ``Y = 0.299 R + 0.587 G + 0.114 B`` (0..255), text is black when ``Y >= 140``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

import cv2
import numpy as np

__all__ = [
    "PALETTE", "color_for_label", "text_color_for", "draw_detections", "draw_sample",
]

# RGB, 0..255; chosen to be told apart from each other and to stay visible on photographs.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
)

_LUMA_THRESHOLD = 140.0
_FONT = cv2.FONT_HERSHEY_SIMPLEX

ClassNames = Union[Mapping[int, str], Sequence[str], None]


def color_for_label(label: int) -> tuple[int, int, int]:
    """The palette colour (RGB) of ``label``; labels past the palette wrap around."""
    return PALETTE[int(label) % len(PALETTE)]


def text_color_for(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black on light backgrounds, white on dark ones (Rec. 601 luma of the RGB ``background``)."""
    r, g, b = background
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    return (0, 0, 0) if luma >= _LUMA_THRESHOLD else (255, 255, 255)


def _as_numpy(x: Any, dtype: type) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch.Tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _name_of(label: int, class_names: ClassNames) -> str:
    """``class_names``: a mapping label -> name, or a sequence where label ``i`` is entry ``i-1``
    (the order of a checkpoint's ``classes``: labels are 1..K)."""
    if class_names is None:
        return str(label)
    if isinstance(class_names, Mapping):
        return str(class_names.get(label, label))
    if 1 <= label <= len(class_names):
        return str(class_names[label - 1])
    return str(label)


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise TypeError(f"image must be uint8, got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be H x W x 3 (RGB), got shape {tuple(image.shape)}")


def _draw_tag(canvas: np.ndarray, text: str, x1: int, y1: int, color: tuple[int, int, int],
              scale: float, thickness: int) -> None:
    """The tag sits on top of the box, or just inside it when the box touches the top edge."""
    h, w = canvas.shape[:2]
    (tw, th), baseline = cv2.getTextSize(text, _FONT, scale, thickness)
    pad = max(1, thickness)
    box_h = th + baseline + 2 * pad
    top = y1 - box_h if y1 - box_h >= 0 else y1
    left = min(max(x1, 0), max(w - tw - 2 * pad, 0))
    cv2.rectangle(canvas, (left, top), (left + tw + 2 * pad, min(top + box_h, h - 1)), color,
                  thickness=cv2.FILLED)
    cv2.putText(canvas, text, (left + pad, top + pad + th), _FONT, scale, text_color_for(color),
                thickness=thickness, lineType=cv2.LINE_AA)


def draw_detections(image: np.ndarray, boxes: Any, scores: Any, labels: Any,
                    class_names: ClassNames = None, score_thresh: float = 0.5) -> np.ndarray:
    """Return a copy of ``image`` (uint8 H x W x 3 RGB) with the detections drawn on it.

    ``boxes``: (n, 4) absolute xyxy pixels; ``scores``: (n,); ``labels``: (n,) ints (numpy arrays,
    lists or tensors). Only detections with ``score >= score_thresh`` are drawn, the highest
    scores last (on top). ``class_names`` maps a label to its name: a dict ``{label: name}``, or a
    sequence in label order where label ``i`` is entry ``i - 1``; a label without a name is
    written as its number.
    """
    _check_image(image)
    boxes = _as_numpy(boxes, np.float64).reshape(-1, 4)
    scores = _as_numpy(scores, np.float64).reshape(-1)
    labels = _as_numpy(labels, np.int64).reshape(-1)
    if not len(boxes) == len(scores) == len(labels):
        raise ValueError(f"boxes, scores and labels differ in length: "
                         f"{len(boxes)}, {len(scores)}, {len(labels)}")
    canvas = np.ascontiguousarray(image).copy()
    h, w = canvas.shape[:2]
    thickness = max(1, int(round(max(h, w) / 400)))  # 1 px up to 600 px, 3 px at 1333 px
    font_scale = max(0.35, 0.3 * thickness + 0.15)
    text_thickness = max(1, thickness - 1)

    keep = np.nonzero(scores >= score_thresh)[0]
    order = keep[np.argsort(scores[keep], kind="stable")]  # ascending: best drawn last
    for i in order:
        x1, y1, x2, y2 = np.round(boxes[i]).astype(int)
        x1, x2 = int(np.clip(x1, 0, w - 1)), int(np.clip(x2, 0, w - 1))
        y1, y2 = int(np.clip(y1, 0, h - 1)), int(np.clip(y2, 0, h - 1))
        color = color_for_label(labels[i])
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness=thickness)
        text = f"{_name_of(int(labels[i]), class_names)} {scores[i]:.2f}"
        _draw_tag(canvas, text, x1, y1, color, font_scale, text_thickness)
    return canvas


def draw_sample(image: np.ndarray, prediction: Mapping[str, Any],
                class_names: ClassNames = None, score_thresh: Optional[float] = 0.5) -> np.ndarray:
    """``draw_detections`` for a ``{"boxes", "scores", "labels"}`` dict (a model or Predictor
    output)."""
    return draw_detections(image, prediction["boxes"], prediction["scores"],
                           prediction["labels"], class_names,
                           score_thresh=0.0 if score_thresh is None else score_thresh)
