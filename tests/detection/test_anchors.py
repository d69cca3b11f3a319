"""Anchors: one level by hand, torchvision's generator on several levels, caching."""
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList

from detection.anchors import AnchorGenerator, cell_anchors


def test_cell_anchors_by_hand():
    # size 32: ratio 0.5 -> w = 32 * sqrt(2) = 45.25, h = 32 / sqrt(2) = 22.63, halves rounded
    # (22.63, 11.31) -> (23, 11); ratio 1 -> (16, 16); ratio 2 -> (11, 23)
    base = cell_anchors([32], [0.5, 1.0, 2.0])
    expected = [[-23, -11, 23, 11], [-16, -16, 16, 16], [-11, -23, 11, 23]]
    assert base.tolist() == expected
    # ratio-major order: all sizes of ratio 0.5 first
    assert cell_anchors([16, 32], [0.5, 1.0]).tolist() == [
        [-11, -6, 11, 6], [-23, -11, 23, 11], [-8, -8, 8, 8], [-16, -16, 16, 16]]


def test_one_level_by_hand():
    gen = AnchorGenerator(sizes=[[32]], aspect_ratios=[[0.5, 1.0, 2.0]])
    # a 2x2 map of a 32x32 padded image: stride 16, cells at x, y in {0, 16}, order (y, x, a)
    (anchors,) = gen([(2, 2)], (32, 32))
    base = [[-23, -11, 23, 11], [-16, -16, 16, 16], [-11, -23, 11, 23]]
    expected = [[x1 + sx, y1 + sy, x2 + sx, y2 + sy]
                for sy in (0, 16) for sx in (0, 16) for x1, y1, x2, y2 in base]
    assert anchors.shape == (12, 4)
    assert anchors.tolist() == expected
    assert anchors[3].tolist() == [-7.0, -11.0, 39.0, 11.0]  # ratio 0.5 at (x=16, y=0)
    assert anchors[11].tolist() == [5.0, -7.0, 27.0, 39.0]  # ratio 2 at (x=16, y=16)


def test_equals_torchvision_fpn_levels():
    sizes = [[32], [64], [128], [256], [512]]
    ratios = [[0.5, 1.0, 2.0]] * 5
    ours = AnchorGenerator(sizes=sizes, aspect_ratios=ratios)
    tv = TVAnchorGenerator(tuple(tuple(s) for s in sizes), tuple(tuple(r) for r in ratios))
    # 800 x 1216 padded batch: p6 is 13 x 19, whose stride torchvision takes as 800 // 13 = 61
    grids = [(200, 304), (100, 152), (50, 76), (25, 38), (13, 19)]
    feats = [torch.zeros(1, 1, h, w) for h, w in grids]
    expected = tv(ImageList(torch.zeros(1, 3, 800, 1216), [(800, 1216)]), feats)[0]
    assert torch.equal(torch.cat(ours(grids, (800, 1216))), expected)


def test_cached_per_size():
    gen = AnchorGenerator(sizes=[[32]], aspect_ratios=[[1.0]])
    a = gen([(4, 4)], (64, 64))
    assert gen([(4, 4)], (64, 64))[0] is a[0]
    assert gen([(4, 5)], (64, 80))[0].shape == (20, 4)
