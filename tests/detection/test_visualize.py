import cv2
import numpy as np
import pytest
import torch

from detection.visualize import (PALETTE, _overlap, _place_tag, _style, _tag_size,
                                 color_for_label, draw_detections, draw_sample, text_color_for)


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


def test_small_image_is_enlarged_before_drawing():
    """A 128 x 171 validation image comes out 383 x 512, its box scaled by 512 / 171."""
    out = draw_detections(_gray(128, 171), [[30, 40, 90, 100]], [0.9], [2], min_size=512)
    assert out.shape == (383, 512, 3)
    color = np.array(color_for_label(2))
    x_right, y_mid = round(90 * 512 / 171), round(70 * 383 / 128)
    assert (out[y_mid, x_right] == color).all() and (out[y_mid, x_right + 8] == 100).all()
    assert draw_detections(_gray(600, 800), [], [], [], min_size=512).shape == (600, 800, 3)


def test_text_and_lines_scale_with_the_image():
    (t_small, f_small, _), (t_large, f_large, _) = _style(383, 512), _style(1000, 1333)
    assert (t_small, t_large) == (2, 4)
    assert f_large / f_small == pytest.approx(1333 / 512, rel=1e-6)
    (_, text_h), base = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, f_small, 1)
    assert text_h + base == pytest.approx(0.03 * 512, abs=1.5)  # ~15 px on a 512 px image


def test_tags_stay_inside_the_image_and_do_not_cover_each_other():
    """Three boxes stacked tightly at the top-left and one in the bottom-right corner: the
    stacked tags go above, inside and below; every tag lies wholly in the image."""
    h, w, tag = 383, 512, (140, 20)
    boxes = [(0, 0, 100, 30), (0, 32, 100, 62), (0, 64, 100, 94), (400, 350, 511, 382)]
    taken: list = []
    for box in boxes:
        taken.append(_place_tag(tag, box, (h, w), taken))
    for i, (x0, y0, x1, y1) in enumerate(taken):
        assert 0 <= x0 and x1 <= w and 0 <= y0 and y1 <= h and (x1 - x0, y1 - y0) == tag
        assert all(_overlap(taken[i], other) == 0 for other in taken[i + 1:])
    assert taken[0] == (0, 0, 140, 20)  # no room above the top box: inside its top
    assert taken[3] == (372, 330, 512, 350)  # above, shifted left to stay in the image


def test_a_tag_wider_than_the_image_is_shrunk_to_fit():
    out = draw_detections(_gray(40, 60), [[5, 5, 30, 30]], [0.9], [1],
                          {1: "a very long class name"})
    assert out.shape == (40, 60, 3)
    text, scale, tw, th = _tag_size("a very long class name", "0.90", 0.5, 1, 60)
    assert tw <= 60 and scale == 0.3 and text.endswith(".. 0.90") and text.startswith("a ve")
    assert cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.3, 1)[0][0] <= 60
    # without a score the name alone is cut, its inner space kept ("traffic light" is no
    # "traffic" scored "light")
    text, scale, tw, _ = _tag_size("traffic light", "", 0.5, 1, 40)
    assert text == "traffic li.." and scale == 0.3 and tw <= 40
    assert cv2.getTextSize("traffic lig..", cv2.FONT_HERSHEY_SIMPLEX, 0.3, 1)[0][0] + 4 > 40
    # narrower than any tag: the name cut down to one letter (or the text to 6 characters),
    # then returned, the tag clipped to the width (this looped for ever before)
    assert _tag_size("a very long class name", "0.90", 0.5, 1, 20)[0] == "a.. 0.90"
    assert _tag_size("a very long class name", "", 0.5, 1, 4)[0] == "a ve.."
    assert _tag_size("a very long class name", "", 0.5, 1, 4)[2] == 4


def _tags(monkeypatch) -> list[str]:
    """The texts that ``cv2.putText`` writes from now on, in drawing order."""
    texts, put = [], cv2.putText
    monkeypatch.setattr(cv2, "putText", lambda img, text, *a, **k: (
        texts.append(text), put(img, text, *a, **k))[1])
    return texts


def test_ground_truth_is_tagged_with_its_class_name_alone(monkeypatch):
    """scores=None: every box drawn whatever score_thresh, the first given on top (drawn last),
    each tag its class name without a score; the same boxes with scores carry them."""
    texts = _tags(monkeypatch)
    boxes, names = [[10, 30, 50, 70], [90, 30, 150, 100]], {1: "cat", 2: "traffic light"}
    gt = draw_detections(_gray(), boxes, None, [1, 2], names, score_thresh=0.9)
    assert texts == ["traffic light", "cat"]
    assert (gt[50, 10] == np.array(color_for_label(1))).all()
    assert (gt[60, 90] == np.array(color_for_label(2))).all()
    texts.clear()
    draw_detections(_gray(), boxes, [1.0, 0.8], [1, 2], names, score_thresh=0.5)
    assert texts == ["traffic light 0.80", "cat 1.00"]


def test_masks_are_filled_translucent_under_boxes_in_their_class_colour():
    """Pixel-wise: inside a drawn mask (away from its box and tag) the image blended with the
    label's colour at MASK_ALPHA; a mask below the threshold and pixels outside unchanged; where
    two overlap the best-scoring one is blended last (on top); an enlarged image enlarges its
    masks."""
    from detection.visualize import MASK_ALPHA

    image = np.full((120, 160, 3), 100, np.uint8)
    masks = np.zeros((3, 120, 160), bool)
    masks[0, 60:100, 20:60] = True
    masks[1, 80:110, 40:90] = True  # overlaps mask 0, scores higher
    masks[2, 10:30, 120:150] = True  # below the threshold
    boxes = [[18, 58, 62, 102], [38, 78, 92, 112], [118, 8, 152, 32]]
    out = draw_detections(image, boxes, [0.6, 0.9, 0.2], [1, 2, 3], score_thresh=0.5,
                          masks=masks)
    def blend(label, under=100.0):
        return np.round(under * (1 - MASK_ALPHA) + np.array(color_for_label(label)) * MASK_ALPHA)

    assert out[75, 30].tolist() == blend(1).tolist()  # mask 0 only
    assert out[95, 50].tolist() == blend(2, under=blend(1)).tolist()  # the better one on top
    assert out[20, 135].tolist() == [100, 100, 100]  # below the threshold: not drawn
    assert out[5, 5].tolist() == [100, 100, 100]
    small = np.zeros((1, 60, 80), bool)
    small[0, 30:60, 10:30] = True
    big = draw_detections(image[:60, :80], [[8, 28, 32, 60]], [0.6], [1], masks=small,
                          min_size=320)  # 4x: the mask covers rows 120..239, columns 40..119
    assert big.shape == (240, 320, 3) and big[200, 80].tolist() == blend(1).tolist()
    assert big[200, 130].tolist() == [100, 100, 100]
    none = draw_detections(image[:60, :80], np.zeros((0, 4)), [], [], masks=np.zeros(
        (0, 60, 80), bool), min_size=320)  # an image without detections, enlarged
    assert none.shape == (240, 320, 3) and (none == 100).all()
    with pytest.raises(ValueError, match="2 masks for 3 boxes"):
        draw_detections(image, boxes, [0.6, 0.9, 0.2], [1, 2, 3], masks=masks[:2])
