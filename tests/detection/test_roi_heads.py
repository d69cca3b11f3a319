"""RoI heads: sampling, losses, post-processing by hand; torchvision's RoIHeads on random data."""
import math

import torch
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.roi_heads import RoIHeads as TVRoIHeads
from torchvision.ops import MultiScaleRoIAlign

from detection.box_coder import BoxCoder
from detection.box_heads import BoxPredictor, TwoFCHead
from detection.matcher import Matcher
from detection.poolers import RoIPooler
from detection.roi_heads import RoIHeads
from detection.roi_sampling import BalancedSampler


def _heads(*, num_classes=2, channels=4, batch=512, detections=100, fc_dim=16, beta=1 / 9):
    return RoIHeads(
        in_features=["p2", "p3"],
        pooler=RoIPooler(output_size=7, strides=[4, 8], sampling_ratio=2),
        box_head=TwoFCHead(in_channels=channels, resolution=7, fc_dim=fc_dim),
        box_predictor=BoxPredictor(in_channels=fc_dim, num_classes=num_classes),
        box_coder=BoxCoder(weights=(10.0, 10.0, 5.0, 5.0)),
        matcher=Matcher(high_threshold=0.5, low_threshold=0.5, allow_low_quality_matches=False),
        sampler=BalancedSampler(batch_size_per_image=batch, positive_fraction=0.25),
        smooth_l1_beta=beta, score_thresh=0.05, nms_thresh=0.5, detections_per_img=detections,
    )


def test_sampling_appends_ground_truth():
    heads = _heads()
    proposals = [torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 11.0, 10.0],
                               [30.0, 30.0, 40.0, 40.0]]), torch.tensor([[0.0, 0.0, 5.0, 5.0]])]
    gt_boxes = [torch.tensor([[0.0, 0.0, 10.0, 10.0]]), torch.zeros(0, 4)]
    gt_labels = [torch.tensor([2]), torch.zeros(0, dtype=torch.int64)]
    rois, labels, targets = heads.label_and_sample_proposals(proposals, gt_boxes, gt_labels)
    # image 0: IoU with gt 1, 0.82, 0 and the appended gt itself (1) -> labels 2, 2, 0, 2
    assert rois[0].tolist() == proposals[0].tolist() + [[0.0, 0.0, 10.0, 10.0]]
    assert rois[1].tolist() == [[0.0, 0.0, 5.0, 5.0]]  # no gt: background only
    assert labels.tolist() == [2, 2, 0, 2, 0]
    # targets of the foreground RoIs: proposal 1 -> gt is t_x = 10 * (5 - 6) / 10 = -1
    torch.testing.assert_close(targets, torch.tensor([[0.0, 0, 0, 0], [-1.0, 0, 0, 0],
                                                      [0.0, 0, 0, 0]]))


def test_losses_by_hand():
    heads = _heads()
    logits = torch.zeros(3, 3)  # K + 1 = 3: cross entropy log 3 for every RoI
    deltas = torch.zeros(3, 12)
    deltas[0, 4] = 0.1  # RoI 0, class 1, t_x
    labels = torch.tensor([1, 0, 2])
    targets = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])  # RoIs 0 and 2
    losses = heads.losses(logits, deltas, labels, targets)
    assert math.isclose(losses["loss_cls"].item(), math.log(3), rel_tol=1e-6)
    # smooth L1 (beta 1/9): 0.5 * 0.1^2 * 9 = 0.045 and 1 - 0.5 / 9 = 0.94444, over 3 RoIs
    assert math.isclose(losses["loss_box"].item(), (0.045 + 1 - 0.5 / 9) / 3, rel_tol=1e-5)


def test_beta_zero_is_exactly_l1():
    heads = _heads(beta=0.0)
    deltas = torch.zeros(3, 12)
    deltas[0, 4:8] = torch.tensor([0.1, -0.05, 0.0, 0.02])  # RoI 0, class 1
    deltas[1, 0:4] = 7.0  # RoI 1 is background: its deltas never count
    labels = torch.tensor([1, 0, 2])
    targets = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])  # RoIs 0 and 2
    losses = heads.losses(torch.zeros(3, 3), deltas, labels, targets)
    # |0.1| + |-0.05| + |0.02| + |0 - 1| over 3 RoIs (smooth L1 would give 0.045 + ... instead)
    assert math.isclose(losses["loss_box"].item(), (0.17 + 1.0) / 3, rel_tol=1e-6)


def test_postprocess_by_hand():
    heads = _heads(detections=2)
    p0, p1, p2 = [0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 11.0, 10.0], [15.0, 15.0, 25.0, 25.0]
    proposals = [torch.tensor([p0, p1, p2]), torch.tensor([p0])]
    probs = torch.tensor([[0.1, 0.6, 0.3], [0.2, 0.7, 0.1], [0.5, 0.04, 0.46], [0.1, 0.6, 0.3]])
    dets = heads.postprocess(probs.log(), torch.zeros(4, 12), proposals, [(20, 20), (20, 20)])
    # image 0, class 1: p1 (0.7) suppresses p0 (0.6, IoU 0.82); p2 (0.04) is below 0.05.
    # class 2: p2 (0.46, clipped to 20 x 20), p0 (0.3) suppresses p1 (0.1). Best 2 kept.
    assert dets[0]["labels"].tolist() == [1, 2]
    torch.testing.assert_close(dets[0]["scores"], torch.tensor([0.7, 0.46]))
    assert dets[0]["boxes"].tolist() == [p1, [15.0, 15.0, 20.0, 20.0]]
    # image 1: the same box for two classes is kept twice
    assert dets[1]["labels"].tolist() == [1, 2]
    torch.testing.assert_close(dets[1]["scores"], torch.tensor([0.6, 0.3]))
    assert dets[1]["boxes"].tolist() == [p0, p0]


def test_image_without_boxes_has_zero_box_loss():
    torch.manual_seed(0)
    heads = _heads().train()
    features = {"p2": torch.randn(1, 4, 16, 16), "p3": torch.randn(1, 4, 8, 8)}
    proposals = [torch.tensor([[0.0, 0.0, 20.0, 20.0], [10.0, 10.0, 50.0, 40.0]])]
    targets = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    _, losses = heads(features, proposals, [(64, 64)], targets)
    assert losses["loss_box"].item() == 0.0
    assert losses["loss_cls"] > 0
    sum(losses.values()).backward()
    assert heads.box_predictor.cls_score.weight.grad.abs().sum() > 0


def test_equals_torchvision_roi_heads():
    torch.manual_seed(0)
    ours = _heads(num_classes=3, batch=100000, detections=20)
    for p in ours.box_predictor.parameters():
        torch.nn.init.normal_(p, std=0.5)
    tv = TVRoIHeads(
        MultiScaleRoIAlign(["p2", "p3"], 7, 2), TwoMLPHead(4 * 49, 16), FastRCNNPredictor(16, 4),
        0.5, 0.5, 100000, 0.25, (10.0, 10.0, 5.0, 5.0), 0.05, 0.5, 20,
    )
    tv.box_head.load_state_dict(ours.box_head.state_dict())
    tv.box_predictor.load_state_dict(ours.box_predictor.state_dict())
    features = {"p2": torch.randn(2, 4, 16, 16), "p3": torch.randn(2, 4, 8, 8)}
    xy = torch.rand(2, 40, 2) * 40
    proposals = [torch.cat([xy[i], xy[i] + 4 + torch.rand(40, 2) * 30], 1) for i in range(2)]
    sizes = [(64, 64), (56, 60)]
    targets = [{"boxes": torch.tensor([[5.0, 5.0, 30.0, 40.0]]), "labels": torch.tensor([3])},
               {"boxes": torch.tensor([[20.0, 10.0, 50.0, 30.0], [0.0, 0.0, 20.0, 20.0]]),
                "labels": torch.tensor([1, 2])}]
    ours.eval(), tv.eval()
    dets, _ = ours(features, proposals, sizes)
    tv_dets, _ = tv(features, proposals, sizes)
    assert sum(len(d["labels"]) for d in dets) > 10
    for d, t in zip(dets, tv_dets):
        assert d["labels"].tolist() == t["labels"].tolist()
        torch.testing.assert_close(d["boxes"], t["boxes"])
        torch.testing.assert_close(d["scores"], t["scores"])
    ours.train(), tv.train()  # every proposal sampled: deterministic losses
    _, losses = ours(features, proposals, sizes, targets)
    _, tv_losses = tv(features, proposals, sizes, targets)
    torch.testing.assert_close(losses["loss_cls"], tv_losses["loss_classifier"])
    torch.testing.assert_close(losses["loss_box"], tv_losses["loss_box_reg"])
    assert losses["loss_box"] > 0


def test_no_rois_give_empty_detections():
    """Post-processing with no proposal for one image, and for the whole batch (R = 0)."""
    heads = _heads().eval()
    features = {"p2": torch.randn(2, 4, 16, 16), "p3": torch.randn(2, 4, 8, 8)}
    empty = torch.zeros(0, 4)
    with torch.no_grad():
        none, _ = heads(features, [empty, empty], [(64, 64), (64, 64)])
        boxes = torch.tensor([[0.0, 0.0, 20.0, 20.0], [10.0, 10.0, 50.0, 40.0]])
        one, _ = heads(features, [empty, boxes], [(64, 64), (64, 64)])
        alone, _ = heads({k: v[1:] for k, v in features.items()}, [boxes], [(64, 64)])
    for det in [*none, one[0]]:
        assert det["boxes"].shape == (0, 4) and det["scores"].shape == (0,)
        assert det["labels"].shape == (0,) and det["labels"].dtype == torch.int64
    assert len(one[1]["boxes"]) > 0
    for key in ("boxes", "scores", "labels"):
        torch.testing.assert_close(one[1][key], alone[0][key])


def test_no_rois_and_no_boxes_train_with_zero_losses():
    heads = _heads().train()
    features = {"p2": torch.randn(2, 4, 16, 16, requires_grad=True),
                "p3": torch.randn(2, 4, 8, 8)}
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    _, losses = heads(features, [torch.zeros(0, 4)] * 2, [(64, 64)] * 2, [empty, empty])
    assert losses["loss_cls"].item() == 0.0 and losses["loss_box"].item() == 0.0
    sum(losses.values()).backward()  # the graph is kept: a training step goes on
    assert heads.box_predictor.cls_score.weight.grad.abs().sum() == 0
