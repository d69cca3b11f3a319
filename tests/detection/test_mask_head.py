"""detection/mask_head.py and the mask branch of the RoI heads: shapes, losses by hand, targets
read at the sampled RoIs, masks of the detections' classes."""
import math

import numpy as np
import pytest
import torch

from detection.box_coder import BoxCoder
from detection.box_heads import BoxPredictor, TwoFCHead
from detection.mask_head import MaskHead
from detection.masks import InstanceMasks
from detection.matcher import Matcher
from detection.poolers import RoIPooler
from detection.roi_heads import RoIHeads
from detection.roi_sampling import BalancedSampler


def test_shapes_of_the_variants():
    x = torch.randn(3, 8, 14, 14)
    assert MaskHead(in_channels=8, num_classes=4, conv_dim=6)(x).shape == (3, 5, 28, 28)
    agnostic = MaskHead(in_channels=8, num_classes=4, conv_dim=6, class_agnostic=True)
    assert agnostic(x).shape == (3, 1, 28, 28)
    c4 = MaskHead(in_channels=8, num_classes=4, conv_dim=6, num_convs=0)  # on res5's 7x7 maps
    assert c4(torch.randn(3, 8, 7, 7)).shape == (3, 5, 14, 14)
    assert [n for n, _ in c4.named_children()] == ["conv5_mask", "mask_fcn_logits"]
    assert MaskHead(in_channels=8, num_classes=4)(x[:0]).shape == (0, 5, 28, 28)


def test_loss_by_hand_on_the_ground_truth_channel():
    head = MaskHead(in_channels=2, num_classes=3, conv_dim=2)
    targets = torch.zeros(2, 2, 2)
    targets[0, 0, 0] = 1.0
    logits = torch.full((2, 4, 2, 2), 5.0)  # every other channel confidently wrong
    logits[0, 2] = torch.tensor([[2.0, -2.0], [-2.0, -2.0]])  # RoI 0, label 2: right by 2
    logits[1, 1] = 0.0  # RoI 1, label 1: unsure, log 2 per cell
    loss = head.losses(logits, torch.tensor([2, 1]), targets)["loss_mask"]
    expected = (4 * math.log1p(math.exp(-2.0)) + 4 * math.log(2.0)) / 8
    assert math.isclose(loss.item(), expected, rel_tol=1e-6)
    agnostic = MaskHead(in_channels=2, num_classes=3, conv_dim=2, class_agnostic=True)
    loss = agnostic.losses(torch.zeros(2, 1, 2, 2), torch.tensor([2, 1]), targets)
    assert math.isclose(loss["loss_mask"].item(), math.log(2.0), rel_tol=1e-6)


def test_no_foreground_roi_gives_an_exact_zero_with_a_graph():
    head = MaskHead(in_channels=2, num_classes=3, conv_dim=2)
    logits = head(torch.randn(0, 2, 4, 4))
    loss = head.losses(logits, torch.zeros(0, dtype=torch.int64), torch.zeros(0, 8, 8))
    assert loss["loss_mask"].item() == 0.0 and loss["loss_mask"].requires_grad
    loss["loss_mask"].backward()
    assert head.mask_fcn_logits.weight.grad is not None


def _heads(mask_pooler: RoIPooler | None = RoIPooler(output_size=7, strides=[4],
                                                    sampling_ratio=2)) -> RoIHeads:
    return RoIHeads(
        in_features=["p2"], pooler=RoIPooler(output_size=7, strides=[4], sampling_ratio=2),
        box_head=TwoFCHead(in_channels=4, resolution=7, fc_dim=16),
        box_predictor=BoxPredictor(in_channels=16, num_classes=2),
        box_coder=BoxCoder(weights=(10.0, 10.0, 5.0, 5.0)),
        matcher=Matcher(high_threshold=0.5, low_threshold=0.5, allow_low_quality_matches=False),
        sampler=BalancedSampler(batch_size_per_image=16, positive_fraction=0.5),
        score_thresh=0.0, detections_per_img=5,
        mask_head=MaskHead(in_channels=4, num_classes=2, conv_dim=4, num_convs=1),
        mask_pooler=mask_pooler)


def test_targets_are_the_matched_objects_masks_inside_each_roi():
    """Two objects, each the left half of its box; a proposal equal to a box reads that half."""
    heads = _heads().train()
    bitmap = np.zeros((2, 32, 32), np.uint8)
    bitmap[0, 0:14, 0:7] = 1  # object 0: box (0, 0, 14, 14), left half on
    bitmap[1, 16:30, 16:23] = 1  # object 1: box (16, 16, 30, 30)
    from pycocotools import mask as mask_utils

    from detection.data.masks import rle_counts_from_string
    counts = [rle_counts_from_string(mask_utils.encode(np.asfortranarray(b))["counts"])
              for b in bitmap]
    target = {"boxes": torch.tensor([[0.0, 0.0, 14.0, 14.0], [16.0, 16.0, 30.0, 30.0]]),
              "labels": torch.tensor([1, 2]), "masks": InstanceMasks(counts, (32, 32))}
    seen = {}
    losses = heads.mask_head.losses
    heads.mask_head.losses = lambda lg, labels, t: seen.update(labels=labels, t=t) or losses(
        lg, labels, t)
    features = {"p2": torch.randn(1, 4, 8, 8)}
    out = heads(features, [torch.tensor([[16.0, 16.0, 30.0, 30.0], [20.0, 0.0, 31.0, 9.0]])],
                [(32, 32)], [target])[1]
    assert set(out) == {"loss_cls", "loss_box", "loss_mask"}
    # foreground RoIs: the proposal on object 1 and both appended ground-truth boxes
    assert sorted(seen["labels"].tolist()) == [1, 2, 2]
    half = torch.tensor([[1.0] * 7 + [0.0] * 7] * 14)
    for t in seen["t"]:
        assert torch.equal(t, half)


def test_inference_adds_the_masks_of_each_detections_class():
    torch.manual_seed(0)
    heads = _heads().eval()
    features = {"p2": torch.randn(2, 4, 8, 8)}
    proposals = [torch.tensor([[0.0, 0.0, 20.0, 20.0], [4.0, 4.0, 30.0, 28.0]]),
                 torch.zeros(0, 4)]
    with torch.no_grad():
        detections, _ = heads(features, proposals, [(32, 32), (32, 32)])
        assert detections[1]["masks"].shape == (0, 1, 14, 14)
        det = detections[0]
        assert len(det["boxes"]) > 0 and det["masks"].shape == (len(det["boxes"]), 1, 14, 14)
        logits = heads.mask_head(heads.mask_pooler([features["p2"]], [det["boxes"]]))
    for k, label in enumerate(det["labels"].tolist()):
        torch.testing.assert_close(det["masks"][k, 0], logits[k, label].sigmoid())


def test_a_mask_head_without_a_pooler_needs_the_box_heads_maps():
    """Only the C4 box head (Res5Head.features) can feed the mask head its own maps."""
    with pytest.raises(ValueError, match="features"):
        _heads(mask_pooler=None)
