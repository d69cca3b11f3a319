import numpy as np
import pytest
import torch

from detection.visualize import (PALETTE, color_for_label, draw_detections, draw_sample,
                                 text_color_for)


def _gray(h=120, w=160):
    return np.full((h, w, 3), 100, dtype=np.uint8)


def test_box_outline_drawn_in_label_colour_and_input_untouched():
    image = _gray()
    out = draw_detections(image, [[20, 40, 100, 90]], [0.9], [3], ["a", "b", "c"])
    assert (image == 100).all()  # a copy, the input is not modified
    assert out.shape == image.shape and out.dtype == np.uint8
    color = np.array(color_for_label(3))
    # left, right and bottom edges of the outline carry the label colour
    assert (out[60, 20] == color).all() and (out[60, 100] == color).all()
    assert (out[90, 60] == color).all()
    # inside the box and far outside it nothing changed
    assert (out[70, 60] == 100).all() and (out[110, 150] == 100).all()
    # the tag: a filled rectangle above the box, in the label colour, holding text pixels
    tag = out[20:40, 20:60].reshape(-1, 3)
    assert (tag == color).all(axis=1).sum() > 100
    assert (tag == np.array(text_color_for(tuple(color)))).all(axis=1).sum() > 5


def test_score_threshold_and_tensor_inputs():
    image = _gray()
    boxes = torch.tensor([[10.0, 30.0, 50.0, 70.0], [90.0, 30.0, 150.0, 100.0]])
    out = draw_detections(image, boxes, torch.tensor([0.3, 0.8]), torch.tensor([1, 2]),
                          {1: "cat", 2: "dog"}, score_thresh=0.5)
    assert (out[50, 10] == 100).all()  # below threshold: not drawn
    assert (out[60, 90] == np.array(color_for_label(2))).all()
    same = draw_sample(image, {"boxes": boxes, "scores": [0.3, 0.8], "labels": [1, 2]},
                       {1: "cat", 2: "dog"}, score_thresh=0.5)
    assert (same == out).all()


def test_box_at_top_edge_puts_tag_inside_and_clips_outside_boxes():
    image = _gray(64, 64)
    out = draw_detections(image, [[-10, 0, 80, 40]], [1.0], [0], None, score_thresh=0.0)
    color = np.array(color_for_label(0))
    assert (out[0, 63] == color).all()  # box clipped to the right edge
    assert (out[2:10, 2:10].reshape(-1, 3) == color).all(axis=1).any()  # tag below the top edge


def test_no_detections_returns_equal_copy():
    image = _gray()
    out = draw_detections(image, np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=int), [])
    assert out is not image and (out == image).all()


def test_text_colour_follows_luminance():
    assert text_color_for((255, 225, 25)) == (0, 0, 0)  # yellow: black text
    assert text_color_for((0, 0, 128)) == (255, 255, 255)  # navy: white text
    for color in PALETTE:  # every palette entry gets a readable contrast (> 3:1 in luma)
        luma = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
        text = text_color_for(color)
        assert abs(luma - (0 if text == (0, 0, 0) else 255)) >= 85


def test_thickness_grows_with_image_size():
    small = draw_detections(np.zeros((100, 100, 3), np.uint8), [[10, 50, 90, 90]], [1], [1])
    large = draw_detections(np.zeros((1200, 1200, 3), np.uint8), [[100, 500, 900, 900]], [1], [1])
    small_w = int((small[70, :, :].sum(axis=1) > 0)[:20].sum())
    large_w = int((large[700, :, :].sum(axis=1) > 0)[:200].sum())
    assert small_w == 1 and large_w >= 3  # thickness 1 vs 3 (OpenCV widens thick lines)


@pytest.mark.parametrize("image, error", [
    (np.zeros((10, 10), np.uint8), ValueError),
    (np.zeros((10, 10, 4), np.uint8), ValueError),
    (np.zeros((10, 10, 3), np.float32), TypeError),
])
def test_bad_images_raise(image, error):
    with pytest.raises(error):
        draw_detections(image, [], [], [])


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError, match="differ in length"):
        draw_detections(_gray(), [[0, 0, 5, 5]], [0.9, 0.8], [1])
