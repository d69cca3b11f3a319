"""DetectorGraph in PyTorch: the model's detections, from flat tensors; its building blocks."""
import torch

from detection.anchors import AnchorGenerator
from detection.benchmark import make_like_trained
from detection.build import build_model
from detection.config import load_config
from detection.export.graph import DetectorGraph, grid_anchors, nms_in_groups, topk_per_image


def test_graph_equals_the_model_on_a_padded_batch(one_thread):
    cfg = load_config(None, ["model.backbone.name=resnet18", "model.backbone.weights=null",
                             "model.num_classes=6", "model.fpn.out_channels=16",
                             "model.roi_heads.fc_dim=32", "model.rpn.pre_nms_topk_test=100",
                             "model.rpn.post_nms_topk_test=40"])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 96, 128), generator=g, dtype=torch.uint8),
              torch.randint(0, 256, (3, 70, 90), generator=g, dtype=torch.uint8)]
    make_like_trained(model, images)
    batch = torch.full((2, 3, 96, 128), 255, dtype=torch.uint8)  # padding is never seen
    batch[0] = images[0]
    batch[1, :, :70, :90] = images[1]
    with torch.inference_mode():
        ref = model(images)
        boxes, scores, labels, index = DetectorGraph(model)(batch, torch.tensor([[96, 128],
                                                                                 [70, 90]]))
    assert index.tolist() == sorted(index.tolist())  # image 0 first
    for i, r in enumerate(ref):
        mine = index == i
        assert len(r["boxes"]) > 20 and int(mine.sum()) == len(r["boxes"])
        torch.testing.assert_close(boxes[mine], r["boxes"], atol=1e-3, rtol=0)
        torch.testing.assert_close(scores[mine], r["scores"], atol=1e-5, rtol=0)
        assert torch.equal(labels[mine], r["labels"])


def test_grid_anchors_equal_the_anchor_generator():
    gen = AnchorGenerator(sizes=[[32.0], [64.0]], aspect_ratios=[[0.5, 1.0, 2.0]] * 2)
    # a 96 x 160 batch: p5 is 3 x 5 (stride 32), p6 2 x 3 (stride 96 // 2 = 48, 160 // 3 = 53)
    grids, padded = [(3, 5), (2, 3)], (96, 160)
    expected = gen(grids, padded)
    for cell, (h, w), exp in zip(gen.cell_anchors, grids, expected):
        got = grid_anchors(cell, torch.zeros(1, 1, h, w), padded)
        assert torch.equal(got, exp)
    assert float(expected[1][3, 0]) - float(expected[1][0, 0]) == 53  # the integer stride


def test_topk_per_image_orders_by_image_then_score():
    # keep: indices in decreasing score order; their images: 1, 0, 1, 1, 0, 2
    keep = torch.tensor([5, 2, 7, 1, 0, 3])
    image_ids = torch.zeros(8, dtype=torch.int64)
    image_ids[[5, 7, 1]] = 1
    image_ids[[2, 0]] = 0
    image_ids[3] = 2
    assert topk_per_image(keep, image_ids, 2, 3).tolist() == [2, 0, 5, 7, 3]
    assert topk_per_image(keep, image_ids, 5, 4).tolist() == [2, 0, 5, 7, 1, 3]
    assert topk_per_image(keep[:0], image_ids, 2, 3).tolist() == []


def test_nms_in_groups_keeps_groups_apart():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10.5], [0, 0, 10, 10], [50, 50, 60, 60]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    groups = torch.tensor([0, 0, 1, 0])
    keep = nms_in_groups(boxes, scores, groups, 0.5, torch.tensor(60.0))
    assert keep.tolist() == [0, 2, 3]  # box 1 overlaps box 0 in its group; box 2 is alone
