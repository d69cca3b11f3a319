"""FasterRCNN: input batching, one training step of every variant, empty images, batches without
proposals, FrozenBN folding and channels-last layout, over-fitting."""
import copy
import io

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d, box_iou

from detection import build_model
from detection.benchmark import make_like_trained
from detection.config import load_config
from detection.faster_rcnn import rescale_boxes

# name -> config overrides; small RoI/proposal budgets keep a CPU step short
VARIANTS = {
    "R-50-C4": ["model.backbone.name=resnet50"],
    "R-101-C4": ["model.backbone.name=resnet101"],
    "R-152-C4": ["model.backbone.name=resnet152"],
    "R-18-FPN": ["model.backbone.name=resnet18"],
    "R-34-FPN": ["model.backbone.name=resnet34"],
    "R-50-FPN": ["model.backbone.name=resnet50"],
    "R-101-FPN": ["model.backbone.name=resnet101"],
    "VGG-16": ["model.backbone.name=vgg16"],
}
C4 = ["model.fpn.enabled=false", "model.roi_heads.box_head=c4_res5",
      "model.rpn.in_features=[res4]", "model.roi_heads.in_features=[res4]",
      "model.anchor_generator.sizes=[[32, 64, 128, 256, 512]]",
      "model.roi_heads.pooler_resolution=14"]
VGG = ["model.fpn.enabled=false", "model.roi_heads.box_head=vgg_fc",
       "model.rpn.in_features=[conv5]", "model.roi_heads.in_features=[conv5]",
       "model.anchor_generator.sizes=[[32, 64, 128, 256, 512]]",
       "model.roi_heads.pooler_type=ROIPool"]
SMALL = ["model.backbone.weights=null", "model.rpn.pre_nms_topk_train=200",
         "model.rpn.post_nms_topk_train=50", "model.roi_heads.batch_size_per_image=16",
         "model.roi_heads.fc_dim=64", "model.fpn.out_channels=64"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _config(name: str, extra=()):
    overrides = SMALL + VARIANTS[name]
    overrides += C4 if name.endswith("C4") else VGG if name == "VGG-16" else []
    return load_config(None, overrides + list(extra))


def _targets():
    return [{"boxes": torch.tensor([[10.0, 20.0, 60.0, 70.0], [50.0, 5.0, 90.0, 40.0]]),
             "labels": torch.tensor([1, 3])},
            {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]


@pytest.mark.parametrize("name", list(VARIANTS))
def test_training_step_of_every_variant(name):
    torch.manual_seed(0)
    model = build_model(_config(name), num_classes=3).train()
    images = [torch.randint(0, 256, (3, 96, 128), dtype=torch.uint8),
              torch.randint(0, 256, (3, 112, 80), dtype=torch.uint8)]
    losses = model(images, _targets())
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box"}
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    sum(losses.values()).backward()

    frozen = ("conv1.", "layer1.") if name != "VGG-16" else ("features.0.", "features.2.",
                                                             "features.5.", "features.7.")
    for pname, p in model.named_parameters():
        stem = pname.replace("backbone.bottom_up.", "").replace("backbone.", "")
        if pname.startswith("backbone") and stem.startswith(frozen):
            assert not p.requires_grad and p.grad is None, pname
        else:
            assert p.requires_grad and p.grad is not None, pname
            assert torch.isfinite(p.grad).all(), pname
    # every trainable part learns: the backbone's last trained stage, the RPN, the box head
    groups = {"backbone": 0.0, "rpn": 0.0, "roi_heads.box_head": 0.0, "roi_heads.box_pred": 0.0}
    for pname, p in model.named_parameters():
        for g in groups:
            if pname.startswith(g) and p.grad is not None:
                groups[g] += float(p.grad.abs().sum())
    assert all(v > 0 for v in groups.values()), groups


@pytest.mark.parametrize("name", ["R-50-C4", "R-18-FPN", "VGG-16"])
def test_mask_rcnn_of_every_variant_trains_and_predicts_masks(name):
    """The mask head on each box head: a finite loss_mask whose gradient reaches the mask head
    and the layers under it (C4: res5, shared with the box head), and masks of each detection
    at the variant's resolution (FPN, VGG-16: 28x28 from 14x14 RoIAlign; C4: 14x14 from the 7x7
    res5 maps)."""
    from detection.benchmark import instance_masks

    torch.manual_seed(0)
    extra = ["model.mask_head.enabled=true", "model.mask_head.conv_dim=16",
             "model.rpn.post_nms_topk_test=50", "model.roi_heads.detections_per_img=10"]
    if name == "VGG-16":
        extra.append("model.mask_head.pooler_type=ROIAlign")  # VGG's box pooler is RoIPool
    model = build_model(_config(name, extra), num_classes=3).train()
    images = [torch.randint(0, 256, (3, 96, 128), dtype=torch.uint8),
              torch.randint(0, 256, (3, 112, 80), dtype=torch.uint8)]
    targets = _targets()
    for t, (h, w) in zip(targets, ((96, 128), (112, 80))):
        x1, y1, x2, y2 = t["boxes"].round().long().T.tolist() or ([], [], [], [])
        bitmaps = torch.zeros(len(t["boxes"]), h, w, dtype=torch.uint8)
        for k in range(len(bitmaps)):
            bitmaps[k, y1[k]:y2[k], x1[k]:(x1[k] + x2[k]) // 2] = 1  # the box's left half
        t["masks"] = instance_masks(bitmaps)
    losses = model(images, targets)
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box", "loss_mask"}
    model.zero_grad()
    losses["loss_mask"].backward()
    assert 0 < float(losses["loss_mask"]) < 10
    under = "roi_heads.box_head.res5" if name.endswith("C4") else "backbone"
    for part in ("roi_heads.mask_head.", under):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(part)]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), part
    with pytest.raises(ValueError, match="target 0 needs 'masks'"):
        model(images, _targets())
    model.eval()
    with torch.no_grad():
        detections = model(images)
    size = 14 if name.endswith("C4") else 28
    for det in detections:
        assert det["masks"].shape == (len(det["boxes"]), 1, size, size)
        assert ((det["masks"] >= 0) & (det["masks"] <= 1)).all()


def test_c4_res5_is_the_box_head():
    model = build_model(_config("R-50-C4"), num_classes=3)
    assert model.backbone.out_features == ["res4"] and model.backbone.layer4 is None
    assert model.roi_heads.box_head.out_channels == 2048
    assert model.roi_heads.box_predictor.bbox_pred.out_features == 4 * 4


def test_preprocess_normalises_and_pads():
    model = build_model(_config("R-18-FPN"), num_classes=2)
    a = torch.full((3, 30, 40), 255, dtype=torch.uint8)
    b = torch.zeros(3, 50, 20)
    batch, sizes = model.preprocess([a, b])
    assert batch.shape == (2, 3, 64, 64) and sizes == [(30, 40), (50, 20)]
    mean = torch.tensor([123.675, 116.28, 103.53])
    std = torch.tensor([58.395, 57.12, 57.375])
    torch.testing.assert_close(batch[0, :, 0, 0], (255 - mean) / std)
    torch.testing.assert_close(batch[1, :, 49, 19], -mean / std)
    assert batch[0, :, 30:].abs().sum() == 0 and batch[1, :, :, 20:].abs().sum() == 0


def test_bgr_input_format_equals_rgb_with_channels_and_mean_std_swapped():
    """A BGR model (channels reversed before normalising, mean/std in BGR order) whose conv1
    has the RGB model's weights with the input channels reversed is the same function of the
    RGB images: the same normalised batch, channels swapped, and the same detections."""
    torch.manual_seed(0)
    rgb = build_model(_config("R-18-FPN", ["model.roi_heads.score_thresh=0.0"]),
                      num_classes=3).eval()
    mean, std = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
    bgr = build_model(_config("R-18-FPN", ["model.input_format=BGR", "model.roi_heads."
                                           "score_thresh=0.0", f"model.pixel_mean={mean[::-1]}",
                                           f"model.pixel_std={std[::-1]}"]), num_classes=3).eval()
    state = rgb.state_dict()
    key = "backbone.bottom_up.conv1.weight"
    state[key] = state[key].flip(1)  # (64, 3, 7, 7): input channels RGB -> BGR
    bgr.load_state_dict(state)
    images = [torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8),
              torch.randint(0, 256, (3, 80, 64), dtype=torch.uint8)]
    assert torch.equal(bgr.preprocess(images)[0], rgb.preprocess(images)[0].flip(1))
    with torch.no_grad():
        for a, b in zip(bgr(images), rgb(images)):
            assert len(a["labels"]) > 10 and a["labels"].tolist() == b["labels"].tolist()
            torch.testing.assert_close(a["boxes"], b["boxes"], atol=1e-3, rtol=0)
            torch.testing.assert_close(a["scores"], b["scores"], atol=1e-5, rtol=0)
    # and the BGR model is not the RGB one on RGB input: the flip happens
    bgr.input_format = "RGB"
    assert not torch.equal(bgr.preprocess(images)[0], rgb.preprocess(images)[0].flip(1))


def test_rescale_to_original_size():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 40.0]])
    # an 800 x 1000 original resized to 400 x 500: everything doubles
    assert rescale_boxes(boxes, (400, 500), (800, 1000)).tolist() == [[20.0, 40.0, 60.0, 80.0]]


def test_eval_output_and_original_sizes():
    torch.manual_seed(0)
    model = build_model(_config("R-18-FPN"), num_classes=2).eval()
    images = [torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8)]
    with torch.no_grad():
        (det,) = model(images)
        (big,) = model(images, original_sizes=[(128, 192)])
    assert set(det) == {"boxes", "scores", "labels"}
    torch.testing.assert_close(big["boxes"], det["boxes"] * 2)
    assert bool((det["labels"] >= 1).all()) and bool((det["labels"] <= 2).all())


def test_bf16_autocast_keeps_boxes_in_float32():
    torch.manual_seed(0)
    model = build_model(_config("R-18-FPN"), num_classes=3)
    images = [torch.randint(0, 256, (3, 96, 128), dtype=torch.uint8)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model.train()(images, _targets()[:1])
        assert all(torch.isfinite(v) for v in losses.values())
        with torch.no_grad():
            (det,) = model.eval()(images)
    # a bf16 box would sit on a grid of 0.5..1 px at these coordinates
    assert det["boxes"].dtype == torch.float32 and det["scores"].dtype == torch.float32
    assert len(det["boxes"]) > 0


def test_bad_targets_are_named():
    model = build_model(_config("R-18-FPN"), num_classes=2).train()
    image = [torch.zeros(3, 64, 64)]
    with pytest.raises(ValueError, match="target 0: box 0 .* no area"):
        model(image, [{"boxes": torch.tensor([[10.0, 10.0, 5.0, 20.0]]),
                       "labels": torch.tensor([1])}])
    with pytest.raises(ValueError, match=r"target 0: labels must be in 1..2"):
        model(image, [{"boxes": torch.tensor([[1.0, 1.0, 5.0, 5.0]]), "labels": torch.tensor([3])}])
    with pytest.raises(ValueError, match="one target per image"):
        model(image)


def test_image_without_boxes_trains_on_background_only():
    torch.manual_seed(0)
    model = build_model(_config("R-18-FPN"), num_classes=2).train()
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    losses = model([torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8)], [empty])
    assert losses["loss_rpn_box"].item() == 0.0 and losses["loss_box"].item() == 0.0
    assert losses["loss_rpn_cls"] > 0 and losses["loss_cls"] > 0
    sum(losses.values()).backward()
    assert model.roi_heads.box_predictor.cls_score.weight.grad.abs().sum() > 0


def _shapes_batch():
    """Two 64x64 images with drawn rectangles (class 1 red, class 2 green) on grey noise."""
    g = torch.Generator().manual_seed(0)
    boxes = [torch.tensor([[5.0, 7.0, 32.0, 27.0], [35.0, 33.0, 59.0, 60.0]]),
             torch.tensor([[13.0, 16.0, 51.0, 43.0]])]
    labels = [torch.tensor([1, 2]), torch.tensor([2])]
    colours = {1: (220, 30, 30), 2: (30, 200, 40)}
    images = []
    for bxs, lbs in zip(boxes, labels):
        img = (110 + 30 * torch.rand(3, 64, 64, generator=g)).to(torch.uint8)
        for (x1, y1, x2, y2), lab in zip(bxs.int().tolist(), lbs.tolist()):
            img[:, y1:y2, x1:x2] = torch.tensor(colours[lab], dtype=torch.uint8)[:, None, None]
        images.append(img)
    return images, [{"boxes": b, "labels": lab} for b, lab in zip(boxes, labels)]


def test_overfits_two_images():
    """R-18-FPN from scratch (BN, nothing frozen) learns two images in 90 steps (~20 s)."""
    torch.manual_seed(0)
    cfg = load_config(None, [
        "model.backbone.name=resnet18", "model.backbone.weights=null", "model.backbone.norm=BN",
        "model.backbone.freeze_at=0", "model.fpn.out_channels=64", "model.roi_heads.fc_dim=256",
        "model.rpn.post_nms_topk_train=200", "model.roi_heads.batch_size_per_image=64",
    ])
    model = build_model(cfg, num_classes=2).train()
    images, targets = _shapes_batch()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = []
    for it in range(90):
        for group in optimizer.param_groups:  # warm up 10 steps, 10x lower after 60
            group["lr"] = 1e-3 * min(1.0, (it + 1) / 10) * (0.1 if it >= 60 else 1.0)
        losses = model(images, targets)
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append(total.item())
    assert history[0] > 2.0
    assert sum(history[-5:]) / 5 < 0.15, history[-5:]  # from ~2.5 to near 0
    model.eval()  # BN running statistics of the same two images: what training normalised with
    with torch.no_grad():
        dets = model(images)
    for det, tgt in zip(dets, targets):
        confident = det["scores"] > 0.5
        for box, label in zip(tgt["boxes"], tgt["labels"]):
            same = confident & (det["labels"] == label)
            assert same.any(), f"class {int(label)} not found: {det}"
            assert float(box_iou(box[None], det["boxes"][same]).max()) > 0.7


def _two_images():
    g = torch.Generator().manual_seed(3)
    return [torch.randint(0, 256, (3, 96, 128), generator=g, dtype=torch.uint8),
            torch.randint(0, 256, (3, 112, 80), generator=g, dtype=torch.uint8)]


def _assert_empty(det):
    assert det["boxes"].shape == (0, 4) and det["scores"].shape == (0,)
    assert det["labels"].shape == (0,) and det["labels"].dtype == torch.int64


def test_no_proposal_for_one_image():
    torch.manual_seed(0)
    model = build_model(_config("R-18-FPN"), num_classes=3).eval()
    images = _two_images()
    with torch.no_grad():
        full = model(images)
    # the RPN keeps nothing for image 0
    hook = model.rpn.register_forward_hook(
        lambda module, args, out: ([out[0][0][:0], *out[0][1:]], out[1]))
    with torch.no_grad():
        one = model(images)
    _assert_empty(one[0])
    assert len(full[1]["boxes"]) > 0
    for key in ("boxes", "scores", "labels"):
        assert torch.equal(one[1][key], full[1][key]), key
    losses = model.train()(images, _targets())
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_cls"] > 0  # image 0's ground truth is still a RoI
    sum(losses.values()).backward()
    hook.remove()


@pytest.mark.parametrize("name", ["R-18-FPN", "R-50-C4"], ids=["R-18-FPN", "R-18-C4"])
def test_no_proposal_in_the_whole_batch(name):
    torch.manual_seed(0)  # (C4 on ResNet-18: the res5 box head on zero RoIs, cheaply)
    model = build_model(_config(name, ["model.backbone.name=resnet18"]), num_classes=3)
    model.rpn.score_thresh = 2.0  # sigmoid(logit) <= 1: the RPN keeps no proposal
    images = _two_images()
    with torch.no_grad():
        for det in model.eval()(images):
            _assert_empty(det)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    model.train()
    losses = model(images, [empty, empty])  # no proposal and no box: no RoI at all
    assert losses["loss_cls"].item() == 0.0 and losses["loss_box"].item() == 0.0
    assert losses["loss_rpn_cls"] > 0
    sum(losses.values()).backward()
    losses = model(images, _targets())  # only the ground truth boxes are RoIs
    assert all(torch.isfinite(v) for v in losses.values()) and losses["loss_cls"] > 0
    sum(losses.values()).backward()


def _unfolded_copy(model: nn.Module) -> nn.Module:
    """``model`` with each FrozenBatchNorm2d replaced by an eval-mode BatchNorm2d holding the same
    statistics: convolution, then normalisation as a second op (nothing folded)."""
    unfolded = copy.deepcopy(model)
    for module in list(unfolded.modules()):
        for name, child in module.named_children():
            if isinstance(child, FrozenBatchNorm2d):
                bn = nn.BatchNorm2d(child.weight.numel(), eps=child.eps).eval()
                bn.load_state_dict(child.state_dict(), strict=False)
                setattr(module, name, bn.to(child.weight.dtype))
    return unfolded


def test_frozen_bn_folding_keeps_detections_and_the_state_dict():
    torch.manual_seed(0)
    model = build_model(_config("R-18-FPN"), num_classes=3).eval()
    images = _two_images()
    make_like_trained(model, images)  # FrozenBN statistics away from the identity
    before = {k: v.clone() for k, v in model.state_dict().items()}
    unfolded = _unfolded_copy(model)
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in unfolded.modules())
    with torch.no_grad():  # float32 maps: the same up to rounding
        batch = model.preprocess(images)[0]
        folded_maps, maps = model.backbone(batch), unfolded.backbone(batch)
    for key, value in maps.items():
        assert (folded_maps[key] - value).abs().max() < 1e-5 * value.abs().max(), key
    model.double(), unfolded.double()  # float64: the same detections
    with torch.no_grad():
        got, expected = model(images), unfolded(images)
    assert sum(len(d["labels"]) for d in expected) > 10
    for a, b in zip(got, expected):
        assert torch.equal(a["labels"], b["labels"])
        torch.testing.assert_close(a["boxes"], b["boxes"], rtol=0, atol=1e-6)
        torch.testing.assert_close(a["scores"], b["scores"], rtol=0, atol=1e-9)
    # checkpoints stay in the unfolded layout: nothing was rewritten, and a saved state loads
    state = model.float().state_dict()
    assert list(state) == list(before)
    assert all(torch.equal(state[k], v) for k, v in before.items())
    buffer = io.BytesIO()
    torch.save(state, buffer)
    fresh = build_model(_config("R-18-FPN"), num_classes=3)
    fresh.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in before.items())


def test_channels_last_parameters_get_gradients_in_their_layout():
    """4-D weights are channels-last like the maps, and every gradient has its parameter's
    strides (what DDP's gradient buckets expect; a mismatch makes DDP warn and copy)."""
    torch.manual_seed(0)
    model = build_model(_config("R-18-FPN"), num_classes=3).train()
    weights = [p for p in model.parameters() if p.dim() == 4]
    assert weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
    losses = model(_two_images(), _targets())
    sum(losses.values()).backward()
    checked = 0
    for name, p in model.named_parameters():
        if p.grad is not None:
            assert p.grad.stride() == p.stride(), name
            checked += p.dim() == 4 and p.shape[-1] > 1
    assert checked > 10  # the 3x3 convolutions of res3..res5, FPN and RPN
