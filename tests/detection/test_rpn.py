"""RPN: proposal selection and losses by hand, and torchvision's RPN on random features."""
import math

import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead as TVRPNHead

from detection.anchors import AnchorGenerator
from detection.box_coder import BoxCoder
from detection.matcher import Matcher
from detection.rpn import RPN, RPNHead
from detection.roi_sampling import BalancedSampler

A, B = [0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 11.0, 10.0]  # IoU 90 / 110 = 0.82
C, D = [20.0, 20.0, 30.0, 30.0], [0.0, 0.0, 0.0005, 10.0]  # D is 0.0005 px wide


def _rpn(*, levels=1, num_anchors=1, channels=4, pre=1000, post=1000, batch=256, beta=1 / 9,
         ignore_cross_boundary=False):
    return RPN(
        in_features=[f"p{i}" for i in range(levels)],
        head=RPNHead(in_channels=channels, num_anchors=num_anchors),
        anchor_generator=AnchorGenerator(sizes=[[32]] * levels, aspect_ratios=[[1.0]] * levels),
        box_coder=BoxCoder(),
        matcher=Matcher(high_threshold=0.7, low_threshold=0.3, allow_low_quality_matches=True),
        sampler=BalancedSampler(batch_size_per_image=batch, positive_fraction=0.5),
        pre_nms_topk_train=pre, pre_nms_topk_test=pre, post_nms_topk_train=post,
        post_nms_topk_test=post, nms_thresh=0.7, min_box_size=1e-3, score_thresh=0.0,
        smooth_l1_beta=beta, ignore_cross_boundary=ignore_cross_boundary,
    ).eval()


def _proposals(rpn, logits, sizes):
    anchors = torch.tensor([A, B, C, D])
    n = len(logits)
    return rpn.find_proposals([anchors], [torch.tensor(logits)], [torch.zeros(n, 4, 4)], sizes)


def test_proposals_by_hand():
    # image 0 (32 x 32): D is too thin; B (logit 5) suppresses A (4, IoU 0.82 > 0.7); C stays.
    # image 1 (5 x 5): clipped, C = (5, 5, 5, 5) is empty, B' = (1, 0, 5, 5) suppresses
    # A' = (0, 0, 5, 5) (IoU 20 / 25 = 0.8).
    props = _proposals(_rpn(), [[4.0, 5.0, 1.0, 6.0]] * 2, [(32, 32), (5, 5)])
    assert props[0].tolist() == [B, C]
    assert props[1].tolist() == [[1.0, 0.0, 5.0, 5.0]]


def test_pre_and_post_nms_topk():
    # top 3 before NMS: D, B, A (C is gone); then D removed, A suppressed
    assert _proposals(_rpn(pre=3), [[4.0, 5.0, 1.0, 6.0]], [(32, 32)])[0].tolist() == [B]
    assert _proposals(_rpn(post=1), [[4.0, 5.0, 1.0, 6.0]], [(32, 32)])[0].tolist() == [B]


def test_nms_is_per_level():
    rpn = _rpn(levels=2)
    anchors = [torch.tensor([A]), torch.tensor([A])]
    logits = [torch.tensor([[2.0]]), torch.tensor([[1.0]])]
    props = rpn.find_proposals(anchors, logits, [torch.zeros(1, 1, 4)] * 2, [(32, 32)])
    assert props[0].tolist() == [A, A]  # the same box on two levels: both kept


def test_losses_by_hand():
    rpn = _rpn()
    anchors = torch.tensor([A, B, C, D])
    gt = [torch.tensor([A])]
    # IoU with gt A: 1, 0.82 (positives), 0, ~0 (negatives); all 4 are sampled
    labels, matched = rpn.label_anchors(anchors, gt)
    assert labels.tolist() == [[1, 1, 0, 0]]
    logits = torch.tensor([[2.0, 0.0, -1.0, 1.0]])
    losses = rpn.losses(anchors, logits, torch.zeros(1, 4, 4), labels, matched)
    # BCE: log(1 + e^-2) + log 2 + log(1 + e^-1) + log(1 + e^1), over 4 sampled anchors
    bce = (math.log1p(math.exp(-2)) + math.log(2) + math.log1p(math.exp(-1))
           + math.log1p(math.exp(1))) / 4
    assert math.isclose(losses["loss_rpn_cls"].item(), bce, rel_tol=1e-6)
    # box: anchor B -> gt A is t_x = (5 - 6) / 10 = -0.1 (|x| < beta = 1/9), anchor A -> 0:
    # smooth_l1 = 0.5 * 0.1^2 / (1/9) = 0.045, summed and divided by 4 sampled anchors
    assert math.isclose(losses["loss_rpn_box"].item(), 0.045 / 4, rel_tol=1e-5)


def test_beta_zero_is_exactly_l1():
    rpn = _rpn(beta=0.0)
    anchors = torch.tensor([A, B, C, D])
    labels, matched = rpn.label_anchors(anchors, [torch.tensor([A])])
    deltas = torch.zeros(1, 4, 4)
    deltas[0, 0] = torch.tensor([0.03, -0.2, 0.0, 0.5])  # anchor A, target 0
    losses = rpn.losses(anchors, torch.zeros(1, 4), deltas, labels, matched)
    # |0.03| + |-0.2| + |0.5| (anchor A) + |0 - (-0.1)| (anchor B, t_x = -0.1), over 4 sampled:
    # with beta 1/9 the terms below 1/9 would be 0.5 * x^2 * 9 instead
    assert math.isclose(losses["loss_rpn_box"].item(), (0.73 + 0.1) / 4, rel_tol=1e-6)


def test_cross_boundary_anchors_ignored_in_training():
    """Image 30 wide, 20 high; gt (0, 0, 10, 10). X crosses the left border (IoU 100/110 =
    0.909), Y is inside (IoU 80/120 = 0.667, between the thresholds), Z is inside and far
    (IoU 0), W crosses the right border (x2 = 35 > 30), V touches it (x2 = 30: inside)."""
    anchors = torch.tensor([[-1.0, 0.0, 10.0, 10.0], [2.0, 0.0, 12.0, 10.0],
                            [15.0, 0.0, 25.0, 10.0], [25.0, 5.0, 35.0, 15.0],
                            [20.0, 10.0, 30.0, 20.0]])
    gt = [torch.tensor([[0.0, 0.0, 10.0, 10.0]]), torch.zeros(0, 4)]
    labels, _ = _rpn().label_anchors(anchors, gt)
    # X positive (>= 0.7), Y ignored (between 0.3 and 0.7, not the gt's best), Z, W, V negative
    assert labels.tolist() == [[1, -1, 0, 0, 0], [0, 0, 0, 0, 0]]
    labels, matched = _rpn(ignore_cross_boundary=True).label_anchors(anchors, gt,
                                                                     [(20, 30), (20, 30)])
    # X and W ignored (in the image without boxes too); Y is now the gt's best anchor inside
    # the image: positive (low-quality match, py-faster-rcnn matches inside anchors only)
    assert labels.tolist() == [[-1, 1, 0, -1, 0], [-1, 0, 0, -1, 0]]
    assert matched[0, 1].tolist() == [0.0, 0.0, 10.0, 10.0]


def test_image_without_boxes_has_zero_box_loss():
    torch.manual_seed(0)
    rpn = _rpn(channels=8, num_anchors=1).train()
    features = {"p0": torch.randn(2, 8, 8, 8)}
    gt = [torch.zeros(0, 4), torch.zeros(0, 4)]
    _, losses = rpn(features, [(128, 128), (100, 128)], (128, 128), gt)
    assert losses["loss_rpn_box"].item() == 0.0
    assert torch.isfinite(losses["loss_rpn_cls"]) and losses["loss_rpn_cls"] > 0
    losses["loss_rpn_cls"].backward()
    assert rpn.head.cls_logits.weight.grad.abs().sum() > 0


def _tv_rpn(ours: RPN, sizes, ratios, training_batch: int):
    tv_head = TVRPNHead(ours.head.conv.in_channels, ours.head.cls_logits.out_channels)
    tv_head.load_state_dict({
        "conv.0.0.weight": ours.head.conv.weight, "conv.0.0.bias": ours.head.conv.bias,
        "cls_logits.weight": ours.head.cls_logits.weight,
        "cls_logits.bias": ours.head.cls_logits.bias,
        "bbox_pred.weight": ours.head.bbox_pred.weight, "bbox_pred.bias": ours.head.bbox_pred.bias,
    })
    return RegionProposalNetwork(
        TVAnchorGenerator(sizes, ratios), tv_head, 0.7, 0.3, training_batch, 0.5,
        {"training": 300, "testing": 300}, {"training": 200, "testing": 200}, 0.7,
    )


def test_equals_torchvision_rpn():
    torch.manual_seed(0)
    sizes, ratios = ((16,), (32,)), ((0.5, 1.0, 2.0),) * 2
    ours = RPN(
        in_features=["p2", "p3"], head=RPNHead(in_channels=8, num_anchors=3),
        anchor_generator=AnchorGenerator(sizes=sizes, aspect_ratios=ratios),
        box_coder=BoxCoder(),
        matcher=Matcher(high_threshold=0.7, low_threshold=0.3, allow_low_quality_matches=True),
        # a sample larger than all anchors takes every one: deterministic losses
        sampler=BalancedSampler(batch_size_per_image=100000, positive_fraction=0.5),
        pre_nms_topk_train=300, pre_nms_topk_test=300, post_nms_topk_train=200,
        post_nms_topk_test=200, nms_thresh=0.7,
    )
    for p in ours.head.parameters():  # non-trivial outputs
        torch.nn.init.normal_(p, std=0.3)
    tv = _tv_rpn(ours, sizes, ratios, training_batch=100000)
    features = {"p2": torch.randn(2, 8, 16, 20), "p3": torch.randn(2, 8, 8, 10)}
    image_sizes = [(64, 80), (50, 70)]
    gt = [torch.tensor([[5.0, 5.0, 30.0, 40.0], [40.0, 10.0, 70.0, 30.0]]), torch.zeros(0, 4)]
    images = ImageList(torch.zeros(2, 3, 64, 80), image_sizes)
    for training in (False, True):
        ours.train(training), tv.train(training)
        props, losses = ours(features, image_sizes, (64, 80), gt if training else None)
        tv_props, tv_losses = tv(images, dict(features), [{"boxes": b} for b in gt])
        for p, q in zip(props, tv_props):
            torch.testing.assert_close(p, q)
    torch.testing.assert_close(losses["loss_rpn_cls"], tv_losses["loss_objectness"])
    torch.testing.assert_close(losses["loss_rpn_box"], tv_losses["loss_rpn_box_reg"])
