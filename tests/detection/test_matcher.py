"""Matcher: a hand-written IoU matrix, low-quality matches, empty inputs, torchvision's labels."""
import pytest
import torch
from torchvision.models.detection._utils import Matcher as TVMatcher

from detection.matcher import Matcher

# 3 ground-truth boxes (rows) x 5 predictions (columns)
IOU = torch.tensor([
    [0.90, 0.40, 0.10, 0.20, 0.00],
    [0.10, 0.50, 0.25, 0.65, 0.00],
    [0.00, 0.45, 0.20, 0.30, 0.45],
])


def test_thresholds_without_low_quality():
    # column maxima: 0.90 (gt 0), 0.50 (gt 1), 0.25 (gt 1), 0.65 (gt 1), 0.45 (gt 2)
    # >= 0.7 -> gt; [0.3, 0.7) -> -2; < 0.3 -> -1
    m = Matcher(high_threshold=0.7, low_threshold=0.3, allow_low_quality_matches=False)
    assert m(IOU.clone()).tolist() == [0, -2, -1, -2, -2]


def test_low_quality_matches():
    # best IoU per gt: gt 0 -> 0.90 (col 0), gt 1 -> 0.65 (col 3),
    # gt 2 -> 0.45 (cols 1 and 4, a tie)
    # those columns get their own argmax back: col 3 -> 1, col 4 -> 2, and col 1 -> 1 (its best
    # gt is gt 1 at 0.50, not gt 2 whose maximum it attains: torchvision's rule)
    m = Matcher(high_threshold=0.7, low_threshold=0.3, allow_low_quality_matches=True)
    assert m(IOU.clone()).tolist() == [0, 1, -1, 1, 2]


def test_single_threshold_has_no_ignored():
    m = Matcher(high_threshold=0.5, low_threshold=0.5, allow_low_quality_matches=False)
    assert m(IOU.clone()).tolist() == [0, 1, -1, 1, -1]


def test_empty_inputs():
    m = Matcher(high_threshold=0.7, low_threshold=0.3, allow_low_quality_matches=True)
    assert m(torch.zeros(0, 4)).tolist() == [-1, -1, -1, -1]  # no gt: all background
    assert m(torch.zeros(3, 0)).tolist() == []


def test_bad_thresholds():
    with pytest.raises(ValueError, match="low"):
        Matcher(high_threshold=0.3, low_threshold=0.7, allow_low_quality_matches=False)


def test_equals_torchvision_on_random_iou():
    g = torch.Generator().manual_seed(0)
    for low_quality in (False, True):
        ours = Matcher(high_threshold=0.7, low_threshold=0.3, allow_low_quality_matches=low_quality)
        tv = TVMatcher(0.7, 0.3, allow_low_quality_matches=low_quality)
        for _ in range(5):
            iou = (torch.rand(6, 300, generator=g) * 0.9).round(decimals=2)  # with ties
            assert torch.equal(ours(iou.clone()), tv(iou.clone()))
