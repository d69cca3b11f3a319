"""Draw detections on an image with OpenCV.

One colour per label from a fixed palette (the same label always gets the same colour), a box
outline and a ``"name 0.97"`` tag (ground truth, drawn without scores: ``"name"``) on a filled
background in the box colour, both scaled with the image; tags stay inside the image and avoid
each other, and a small image can be enlarged first
(``min_size``) so that the drawing can be read. The tag's text is black or white, whichever
contrasts with the background: with the Rec. 601 luma ``Y = 0.299 R + 0.587 G + 0.114 B``
(0..255), text is black when ``Y >= 140``. Instance masks (``masks``, bool ``(n, H, W)``) are
filled in the box colour at ``MASK_ALPHA`` opacity, under the boxes and tags, the best-scoring
mask on top.
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
MASK_ALPHA = 0.5  # opacity of a drawn mask's fill
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


Rect = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)


def _overlap(a: Rect, b: Rect) -> int:
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def _place_tag(size: tuple[int, int], box: Rect, image_hw: tuple[int, int],
               taken: list[Rect]) -> Rect:
    """Where a ``size = (width, height)`` tag goes for ``box``: above it, inside its top,
    below it or inside its bottom, the first that fits in the image without covering a tag
    already placed (else the one covering least); always wholly inside the image."""
    (tw, th), (h, w) = size, image_hw
    x0, y0, x1, y1 = box
    left = min(max(x0, 0), max(w - tw, 0))
    tops = (y0 - th, y0, y1, y1 - th)
    candidates = []
    for top in tops:
        fits = 0 <= top and top + th <= h
        top = min(max(top, 0), max(h - th, 0))
        rect = (left, top, left + tw, top + th)
        covered = sum(_overlap(rect, t) for t in taken)
        candidates.append((not fits, covered > 0, covered, rect))
        if fits and not covered:
            return rect
    return min(candidates)[3]


def _style(h: int, w: int) -> tuple[int, float, int]:
    """Box line width, font scale and text thickness for an image of ``h x w``: lines 1 px per
    300 px of the longer side; text about 3 % of it high (at least 12 px)."""
    longer = max(h, w)
    thickness = max(1, int(round(longer / 300)))
    (_, unit_h), unit_base = cv2.getTextSize("Ag", _FONT, 1.0, 1)
    font_scale = max(12.0, 0.03 * longer) / (unit_h + unit_base)
    return thickness, font_scale, max(1, int(round(font_scale * 1.6)))


def _tag_size(name: str, score: str, scale: float, thickness: int, width: int
              ) -> tuple[str, float, int, int]:
    """Fit the tag ``"name score"`` (``"name"`` when ``score`` is empty) into ``width``: shrink
    the font down to 0.3, then shorten the name down to one letter (it loses its end, ``..``
    marks the cut; the score stays whole). Returns (text, scale, tag width, tag height)."""
    text = f"{name} {score}" if score else name
    while True:
        (tw, th), baseline = cv2.getTextSize(text, _FONT, scale, thickness)
        pad = max(2, th // 4)
        stem = name.removesuffix("..")
        if (tw + 2 * pad <= width or len(text) <= 6
                or (scale <= 0.3 and len(stem) <= 1)):  # nothing left to cut
            return text, scale, min(tw + 2 * pad, width), th + baseline + 2 * pad
        if scale > 0.3:
            scale = max(0.3, scale * 0.85)
        else:  # "a very long name 0.90" -> "a very long nam.. 0.90"
            name = f"{stem[:-1]}.."
            text = f"{name} {score}" if score else name


def _fill_masks(canvas: np.ndarray, masks: np.ndarray, colors: list[tuple[int, int, int]]
                ) -> None:
    """Blend each (H, W) bool mask into ``canvas`` in its colour (in order: later on top)."""
    for mask, color in zip(masks, colors):
        region = canvas[mask].astype(np.float32)
        canvas[mask] = np.round(region * (1 - MASK_ALPHA) + np.float32(color) * MASK_ALPHA
                                ).astype(np.uint8)


def draw_detections(image: np.ndarray, boxes: Any, scores: Any, labels: Any,
                    class_names: ClassNames = None, score_thresh: float = 0.5,
                    min_size: int = 0, masks: Any = None) -> np.ndarray:
    """Return a copy of ``image`` (uint8 H x W x 3 RGB) with the detections drawn on it.

    ``boxes``: (n, 4) absolute xyxy pixels; ``scores``: (n,); ``labels``: (n,) ints (numpy arrays,
    lists or tensors). Only detections with ``score >= score_thresh`` are drawn, the highest
    scores last (on top). ``scores=None`` (ground truth): every box is drawn, in the given order
    (the first on top), each tag the class name alone. ``class_names`` maps a label to its name:
    a dict ``{label: name}``, or a sequence in label order where label ``i`` is entry ``i - 1``;
    a label without a name is written as its number.

    Line width and font grow with the image; each ``"name 0.97"`` tag lies wholly inside the
    image and, where there is room, covers no other tag (the best-scoring detections choose
    first). ``min_size``: an image whose longer side is shorter is first enlarged to it
    (bilinear, boxes scaled alike), so small images come out readable: the returned array then
    has that size. ``masks``: bool (n, H, W) instance masks of the detections in ``image``'s
    pixels, filled translucent in their box colour (module docstring).
    """
    _check_image(image)
    boxes = _as_numpy(boxes, np.float64).reshape(-1, 4)
    shown = scores is not None  # None: ground truth, tagged with its class name alone
    scores = _as_numpy(scores if shown else np.ones(len(boxes)), np.float64).reshape(-1)
    labels = _as_numpy(labels, np.int64).reshape(-1)
    if not len(boxes) == len(scores) == len(labels):
        raise ValueError(f"boxes, scores and labels differ in length: "
                         f"{len(boxes)}, {len(scores)}, {len(labels)}")
    if masks is not None:
        masks = _as_numpy(masks, bool).reshape(-1, *image.shape[:2])
        if len(masks) != len(boxes):
            raise ValueError(f"{len(masks)} masks for {len(boxes)} boxes")
    canvas = np.ascontiguousarray(image).copy()
    h, w = canvas.shape[:2]
    if max(h, w) < min_size:
        factor = min_size / max(h, w)
        h, w = int(round(h * factor)), int(round(w * factor))
        canvas = cv2.resize(canvas, (w, h), interpolation=cv2.INTER_LINEAR)
        boxes = boxes * np.array([w / image.shape[1], h / image.shape[0]] * 2)
        if masks is not None:  # nearest pixel, mask by mask: (n, H, W) -> (n, h, w)
            masks = np.array([cv2.resize(m.astype(np.uint8), (w, h),
                                         interpolation=cv2.INTER_NEAREST) > 0 for m in masks],
                             dtype=bool).reshape(-1, h, w)
    thickness, font_scale, text_thickness = _style(h, w)

    keep = np.nonzero(scores >= score_thresh)[0] if shown else np.arange(len(boxes))
    order = keep[np.argsort(-scores[keep], kind="stable")]  # best first: it places its tag first
    if masks is not None:
        _fill_masks(canvas, masks[order[::-1]], [color_for_label(labels[i]) for i in order[::-1]])
    drawn, taken = [], []
    for i in order:
        x1, y1, x2, y2 = np.round(boxes[i]).astype(int)
        box = (int(np.clip(x1, 0, w - 1)), int(np.clip(y1, 0, h - 1)),
               int(np.clip(x2, 0, w - 1)), int(np.clip(y2, 0, h - 1)))
        text, scale, tw, th = _tag_size(_name_of(int(labels[i]), class_names),
                                        f"{scores[i]:.2f}" if shown else "", font_scale,
                                        text_thickness, w)
        taken.append(_place_tag((tw, th), box, (h, w), taken))
        drawn.append((i, box, text, scale, taken[-1]))
    for i, box, text, scale, tag in reversed(drawn):  # best drawn last, on top
        color = color_for_label(labels[i])
        cv2.rectangle(canvas, box[:2], box[2:], color, thickness=thickness)
        x0, y0, x1, y1 = tag
        cv2.rectangle(canvas, (x0, y0), (x1 - 1, y1 - 1), color, thickness=cv2.FILLED)
        (_, text_h), baseline = cv2.getTextSize(text, _FONT, scale, text_thickness)
        pad = (y1 - y0 - text_h - baseline) // 2
        cv2.putText(canvas, text, (x0 + pad, y0 + pad + text_h), _FONT, scale,
                    text_color_for(color), thickness=text_thickness, lineType=cv2.LINE_AA)
    return canvas


def draw_sample(image: np.ndarray, prediction: Mapping[str, Any],
                class_names: ClassNames = None, score_thresh: Optional[float] = 0.5) -> np.ndarray:
    """``draw_detections`` for a ``{"boxes", "scores", "labels"[, "masks"]}`` dict (a Predictor
    output: masks (n, H, W) in the image's pixels)."""
    return draw_detections(image, prediction["boxes"], prediction["scores"],
                           prediction["labels"], class_names,
                           score_thresh=0.0 if score_thresh is None else score_thresh,
                           masks=prediction.get("masks"))
