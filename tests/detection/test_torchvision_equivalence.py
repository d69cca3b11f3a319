"""Our Faster R-CNN with weights converted from torchvision's gives torchvision's numbers.

torchvision's ``fasterrcnn_resnet50_fpn`` layout (ResNet-50 with FrozenBN at eps 0, as torchvision
runs its published COCO weights, FPN, 91 classes) with random, non-trivial weights goes through
``detection.convert`` (``tools/convert_torchvision.py`` is its command line); on the same images
(sizes for which torchvision's internal resize is the identity) the RPN proposals and the final
detections must agree.

- In float64 only the algorithms are compared (equal proposals, labels, boxes, scores), on mild
  random weights: our default channels-last convolutions sum in another order than
  torchvision's, which in float32 moves boxes of a deep random network by up to ~2e-3 px.
- In float32, as both run in practice, on weights made like a trained model's: FrozenBN running
  variances over four decades (1e-3 .. 10, median ~0.07), where the norm's eps matters. Near-tied
  scores can flip an NMS decision, so detections are matched one to one (same label, IoU > 0.99,
  score within 1e-3): torchvision against itself in channels-last matches 100 of 100 here (99
  with 1000 proposals); ours with the converted config's ``model.backbone.norm_eps`` 0 as many,
  with PyTorch's default 1e-5 none (not even 2 of the boxes with their labels).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models.detection import FasterRCNN as TVFasterRCNN
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops import FrozenBatchNorm2d, box_iou

from detection.build import build_model
from detection.config import config_from_dict, load_config
from detection.convert import convert_checkpoint, torchvision_twin

ROOT = Path(__file__).resolve().parents[2]
TV_CONFIG = ROOT / "configs" / "coco" / "faster_rcnn_R_50_FPN_torchvision.yaml"
SIZES = [(256, 320), (320, 256)]  # (h, w): min 256 / max 320 make torchvision's resize a no-op


pytestmark = pytest.mark.usefixtures("one_thread")


def _torchvision_model(proposals: int = 1000) -> TVFasterRCNN:
    """torchvision's R-50-FPN layout with FrozenBN at eps 0 (its ``overwrite_eps(model, 0.0)``
    for the published COCO weights), 91 classes, an identity resize for ``SIZES``, ``proposals``
    RoIs per image at test time."""
    backbone = resnet_fpn_backbone(
        backbone_name="resnet50", weights=None, norm_layer=FrozenBatchNorm2d, trainable_layers=3
    )
    model = TVFasterRCNN(backbone, num_classes=91, min_size=256, max_size=320,
                         rpn_post_nms_top_n_test=proposals).eval()
    for module in model.modules():
        if isinstance(module, FrozenBatchNorm2d):
            module.eps = 0.0
    return model


def _std_scaled(layer: nn.Module, x: torch.Tensor, std: float) -> None:
    """Random weights for ``layer`` whose outputs on inputs like ``x`` vary by about ``std``."""
    layer.weight.normal_(0.0, std / (float(x.std()) * layer.weight[0].numel() ** 0.5))


def _box_features(model: TVFasterRCNN, image_list, features: dict) -> torch.Tensor:
    """The box head's output (R, 1024) for the RPN's proposals."""
    proposals, _ = model.rpn(image_list, features)
    pooled = model.roi_heads.box_roi_pool(features, proposals, image_list.image_sizes)
    return model.roi_heads.box_head(pooled)


def _calibrate_classifier(model: TVFasterRCNN, x: torch.Tensor) -> None:
    """Class logits varying by ~1 around 0 over the RoIs' box features ``x`` (R, D): detections
    of several classes with unsaturated scores."""
    cls_score = model.roi_heads.box_predictor.cls_score
    cls_score.weight.normal_(0.0, 1.0 / (float(x.std(0).mean()) * x.shape[1] ** 0.5))
    cls_score.bias.copy_(-(cls_score.weight @ x.mean(0)))


@torch.no_grad()
def _randomise(model: TVFasterRCNN, images: list[torch.Tensor]) -> None:
    """He-scaled weights, random biases and FrozenBN statistics (variances 0.5 .. 2); RPN logits
    of a few units (no sigmoid saturation); a calibrated classifier."""
    for module in model.modules():
        if isinstance(module, FrozenBatchNorm2d):
            module.weight.uniform_(0.5, 1.0)
            module.bias.normal_(0.0, 0.1)
            module.running_mean.normal_(0.0, 0.1)
            module.running_var.uniform_(0.5, 2.0)
        elif isinstance(module, (nn.Conv2d, nn.Linear)):
            fan_in = module.weight[0].numel()
            module.weight.normal_(0.0, (2.0 / fan_in) ** 0.5)
            if module.bias is not None:
                module.bias.normal_(0.0, 0.1)
    for layer, scale in ((model.rpn.head.cls_logits, 0.5), (model.rpn.head.bbox_pred, 0.2),
                         (model.roi_heads.box_predictor.bbox_pred, 0.5)):
        layer.weight.normal_(0.0, scale / layer.weight.shape[1] ** 0.5)
    image_list, _ = model.transform(images)
    _calibrate_classifier(model, _box_features(model, image_list,
                                               model.backbone(image_list.tensors)))


@torch.no_grad()
def _like_trained(model: TVFasterRCNN, images: list[torch.Tensor]) -> None:
    """Weights and FrozenBN statistics like a trained model's.

    He-scaled weights, the backbone's scaled per output channel by ``10 ** U(-1, 0)``; each
    FrozenBN's running mean and variance are those of the maps it sees on ``images`` (the
    variance times ``U(0.5, 2)``), weight ``U(0.5, 1)``, bias ``N(0, 0.1)``: the variances spread
    over four decades, as a trained network's do. RPN logits of a few units and small deltas
    (as a trained RPN's), then a calibrated classifier."""
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.weight.normal_(0.0, (2.0 / module.weight[0].numel()) ** 0.5)
            if name.startswith("backbone.body."):  # (C_out, C_in, k, k) scaled per C_out
                module.weight.mul_(10 ** -torch.rand(module.weight.shape[0], 1, 1, 1))
            if module.bias is not None:
                module.bias.normal_(0.0, 0.1)

    def calibrate(norm: FrozenBatchNorm2d, args: tuple) -> None:
        x = args[0]  # (N, C, H, W)
        norm.running_mean.copy_(x.mean((0, 2, 3)))
        norm.running_var.copy_(x.var((0, 2, 3)) * torch.empty(x.shape[1]).uniform_(0.5, 2.0))
        norm.weight.uniform_(0.5, 1.0)
        norm.bias.normal_(0.0, 0.1)

    image_list, _ = model.transform(images)
    hooks = [m.register_forward_pre_hook(calibrate) for m in model.modules()
             if isinstance(m, FrozenBatchNorm2d)]
    features = model.backbone(image_list.tensors)  # each norm calibrated before it runs
    for hook in hooks:
        hook.remove()
    # the RPN's hidden maps, all levels: (N, C, sum Hi*Wi)
    t = torch.cat([model.rpn.head.conv(f).flatten(2) for f in features.values()], dim=2)
    _std_scaled(model.rpn.head.cls_logits, t, 1.5)
    _std_scaled(model.rpn.head.bbox_pred, t, 0.2)
    x = _box_features(model, image_list, features)
    _std_scaled(model.roi_heads.box_predictor.bbox_pred, x, 0.5)
    _calibrate_classifier(model, x)


def _images() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    images = []
    for h, w in SIZES:
        y = torch.linspace(0, 6.28, h)[:, None]
        x = torch.linspace(0, 6.28, w)[None, :]
        base = 127 + 60 * torch.sin(3 * x + 2 * y)[None] + 40 * torch.rand(3, h, w, generator=g)
        img = base.clamp(0, 255).to(torch.uint8)
        red = torch.tensor([250, 20, 20], dtype=torch.uint8)[:, None, None]
        img[:, h // 4: h // 2, w // 3: w // 2] = red  # a red rectangle
        images.append(img)
    return images


def _capture(module: nn.Module, store: dict) -> None:
    module.register_forward_hook(lambda mod, args, out: store.setdefault("out", out))


def _ours(checkpoint: dict) -> nn.Module:
    model = build_model(config_from_dict(checkpoint["config"]))
    model.load_state_dict(checkpoint["model"])
    assert model.channels_last
    return model.eval()


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    tv = _torchvision_model()
    _randomise(tv, [img.float() / 255 for img in _images()])
    tv.double()
    checkpoint = convert_checkpoint(tv.state_dict(), load_config(TV_CONFIG))
    return tv, _ours(checkpoint).double(), checkpoint


def test_checkpoint_format(models, tmp_path):
    _, _, checkpoint = models
    path = tmp_path / "converted.pth"
    torch.save(checkpoint, path)
    loaded = torch.load(path, weights_only=True)
    assert set(loaded) == {"model", "config", "classes", "iteration"}
    assert loaded["iteration"] == 0
    assert loaded["config"]["model"]["num_classes"] == 90
    assert loaded["config"]["model"]["backbone"]["weights"] is None
    assert loaded["config"]["model"]["backbone"]["norm_eps"] == 0.0
    assert len(loaded["classes"]) == 90
    assert loaded["classes"][0] == {"id": 1, "name": "person"}
    assert loaded["classes"][11] == {"id": 12, "name": "N/A"}
    assert loaded["classes"][89] == {"id": 90, "name": "toothbrush"}
    assert loaded["config"]["model"]["roi_heads"]["box_head"] == "fpn_2fc"


def test_proposals_and_detections_equal_torchvision(models):
    tv, ours, _ = models
    images = _images()
    tv_rpn, our_rpn = {}, {}
    _capture(tv.rpn, tv_rpn)
    _capture(ours.rpn, our_rpn)
    with torch.no_grad():
        tv_dets = tv([img.double() / 255 for img in images])
        our_dets = ours(images, original_sizes=SIZES)

    for tv_props, our_props in zip(tv_rpn["out"][0], our_rpn["out"][0]):
        assert len(our_props) == len(tv_props) == 1000
        torch.testing.assert_close(our_props, tv_props, atol=1e-3, rtol=0)

    total = 0
    for tv_det, our_det in zip(tv_dets, our_dets):
        assert our_det["labels"].tolist() == tv_det["labels"].tolist()
        torch.testing.assert_close(our_det["boxes"], tv_det["boxes"], atol=1e-3, rtol=0)
        torch.testing.assert_close(our_det["scores"], tv_det["scores"], atol=1e-4, rtol=0)
        total += len(our_det["labels"])
    assert total >= 20  # the weights make non-trivial detections
    assert len({int(v) for d in our_dets for v in d["labels"]}) >= 5


def test_torchvision_twin_of_our_model_is_torchvision(models):
    """The twin built from our model's own modules (the benchmark's reference) has
    torchvision's weights and hyperparameters back, and gives its detections."""
    tv, ours, _ = models
    twin = torchvision_twin(ours, min_size=256, max_size=320).eval()
    assert twin.state_dict().keys() == tv.state_dict().keys()
    for key, value in tv.state_dict().items():
        assert torch.equal(twin.state_dict()[key], value), key
    for attr in ("pre_nms_top_n", "post_nms_top_n"):
        assert getattr(twin.rpn, f"_{attr}") == getattr(tv.rpn, f"_{attr}")
    assert (twin.roi_heads.score_thresh, twin.roi_heads.nms_thresh) == (
        tv.roi_heads.score_thresh, tv.roi_heads.nms_thresh)
    frozen = [n for n, p in twin.named_parameters() if not p.requires_grad]
    assert frozen == [n for n, p in tv.named_parameters() if not p.requires_grad]
    images = [img.double() / 255 for img in _images()]
    with torch.no_grad():
        for a, b in zip(twin(images), tv(images)):
            assert a["labels"].tolist() == b["labels"].tolist()
            torch.testing.assert_close(a["boxes"], b["boxes"], atol=1e-4, rtol=0)  # mean/255


def _matched_pairs(ours: dict, reference: dict) -> list[tuple[int, int]]:
    """Detections of ``ours`` matched one to one to ``reference``'s: same label, IoU > 0.99,
    score within 1e-3 (greedy, in ``ours``' score order): ``(ours, reference)`` index pairs."""
    same = ((box_iou(ours["boxes"], reference["boxes"]) > 0.99)
            & (ours["labels"][:, None] == reference["labels"][None, :])
            & ((ours["scores"][:, None] - reference["scores"][None, :]).abs() <= 1e-3))
    taken: set[int] = set()
    pairs = []
    for i, row in enumerate(same):
        free = [j for j in torch.nonzero(row).flatten().tolist() if j not in taken]
        taken.update(free[:1])
        pairs.extend((i, j) for j in free[:1])
    return pairs


def _matched(ours: dict, reference: dict) -> int:
    return len(_matched_pairs(ours, reference))


def test_float32_detections_match_torchvision_with_eps_0():
    """~100 detections of many classes agree with torchvision's in float32 with the converted
    config's FrozenBN eps 0; with PyTorch's default eps 1e-5 they do not. 300 proposals (both
    models) keep the 2-FC box head's time down."""
    torch.manual_seed(1)
    tv = _torchvision_model(proposals=300)
    image = _images()[0]
    _like_trained(tv, [image.float() / 255])
    cfg = load_config(TV_CONFIG, ["model.rpn.post_nms_topk_test=300"])
    ours = _ours(convert_checkpoint(tv.state_dict(), cfg))
    norms = [m for m in ours.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert {m.eps for m in norms} == {0.0}  # from the converted config
    with torch.no_grad():
        (expected,) = tv([image.float() / 255])
        (got,) = ours([image])
        for m in norms:
            m.eps = 1e-5  # PyTorch's default
        (eps_1e5,) = ours([image])
    assert len(expected["labels"]) == 100 and len(set(expected["labels"].tolist())) >= 10
    assert float(expected["scores"].max()) < 0.9  # calibrated, not saturated
    assert abs(len(got["labels"]) - len(expected["labels"])) <= 2
    assert _matched(got, expected) >= 90
    assert _matched(eps_1e5, expected) < 50  # measured: 0 of 100


# ------------------------------------------------------------------------------ Mask R-CNN
MASK_DETECTIONS = 30  # the 4-conv 256-channel mask head on 100 RoIs would dominate the test


def _torchvision_mask_model() -> nn.Module:
    """torchvision's maskrcnn_resnet50_fpn layout (FrozenBN at eps 0, 91 classes), an identity
    resize for ``SIZES``, 300 RoIs and ``MASK_DETECTIONS`` detections per image at test time."""
    from torchvision.models.detection import MaskRCNN

    backbone = resnet_fpn_backbone(
        backbone_name="resnet50", weights=None, norm_layer=FrozenBatchNorm2d, trainable_layers=3
    )
    model = MaskRCNN(backbone, num_classes=91, min_size=256, max_size=320,
                     rpn_post_nms_top_n_test=300,
                     box_detections_per_img=MASK_DETECTIONS).eval()
    for module in model.modules():
        if isinstance(module, FrozenBatchNorm2d):
            module.eps = 0.0
    return model


@torch.no_grad()
def _calibrate_mask_predictor(model: nn.Module, image: torch.Tensor) -> None:
    """Mask logits varying by ~4 around 0 over the detections' upsampled mask features: masks
    with shape and few cells near the 0.5 threshold, neither all on nor all off."""
    image_list, _ = model.transform([image])
    features = model.backbone(image_list.tensors)
    proposals, _ = model.rpn(image_list, features)
    heads = model.roi_heads
    mask_predictor, heads.mask_predictor = heads.mask_predictor, None  # boxes only
    (detections,), _ = heads(features, proposals, image_list.image_sizes)
    heads.mask_predictor = mask_predictor
    pooled = heads.mask_roi_pool(features, [detections["boxes"]], image_list.image_sizes)
    x = mask_predictor.relu(mask_predictor.conv5_mask(heads.mask_head(pooled)))  # (D, C, M, M)
    x = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])  # (D, C, M, M) -> (D * M * M, C)
    logits = mask_predictor.mask_fcn_logits
    _std_scaled(logits, x, 4.0)
    logits.bias.copy_(-(logits.weight[:, :, 0, 0] @ x.mean(0)))


def test_float32_masks_match_torchvision_maskrcnn():
    """A converted maskrcnn_resnet50_fpn (weights like a trained model's, calibrated scores and
    masks) gives torchvision's detections (>= 90 % matched as above) and masks, in float32:

    - at RoI resolution (28x28, thresholded at 0.5), mask IoU > 0.99 on every matched detection;
    - pasted into the image, the same, except where a box coordinate, enlarged by 30/28 and
      truncated to a pixel (torchvision's paste rule), falls on either side of an integer for the
      two models (boxes agree to ~1e-3 px): that detection's mask then moves by one pixel (1 of
      100 detections with other weights; torchvision against itself in channels-last alike).
    Measured: 30 of 30 matched, RoI mask IoU >= 0.996 (probabilities within 2e-3), pasted
    >= 0.998."""
    from detection.masks import paste_masks

    torch.manual_seed(2)
    tv = _torchvision_mask_model()
    image = _images()[0]
    _like_trained(tv, [image.float() / 255])
    _calibrate_mask_predictor(tv, image.float() / 255)
    cfg = load_config(ROOT / "configs" / "coco" / "mask_rcnn_R_50_FPN_torchvision.yaml",
                      ["model.rpn.post_nms_topk_test=300",
                       f"model.roi_heads.detections_per_img={MASK_DETECTIONS}"])
    ours = _ours(convert_checkpoint(tv.state_dict(), cfg))
    roi_masks = []  # torchvision's masks before its paste (which replaces them in place)
    tv.roi_heads.register_forward_hook(
        lambda module, args, out: roi_masks.append(out[0][0]["masks"].clone()))
    with torch.no_grad():
        (expected,) = tv([image.float() / 255])
        (got,) = ours([image])
    tv_roi_masks = roi_masks[0]  # (D, 1, 28, 28) probabilities
    assert len(set(expected["labels"].tolist())) >= 10
    assert got["masks"].shape == (len(got["labels"]), 1, 28, 28)
    pairs = _matched_pairs(got, expected)
    assert len(pairs) >= 0.9 * len(expected["labels"]) == 0.9 * MASK_DETECTIONS
    i, j = (torch.tensor(p) for p in zip(*pairs))
    tv_masks = expected["masks"][:, 0] > 0.5  # torchvision's paste: (D, 1, H, W) probabilities
    area = tv_masks.flatten(1).sum(1).float() / tv_masks[0].numel()
    assert 0.002 < float(area.median()) < 0.2  # masks with shape, not all on or off
    assert float(_mask_ious(got["masks"][i] > 0.5, tv_roi_masks[j] > 0.5).min()) > 0.99
    pasted = _mask_ious(paste_masks(got["masks"], got["boxes"], SIZES[0])[i], tv_masks[j])
    scale = 30 / 28

    def truncated(boxes: torch.Tensor) -> torch.Tensor:  # torchvision's enlarged integer box
        centre, half = (boxes[:, :2] + boxes[:, 2:]) / 2, (boxes[:, 2:] - boxes[:, :2]) / 2
        return torch.cat([centre - half * scale, centre + half * scale], 1).to(torch.int64)

    same_pixels = (truncated(got["boxes"][i]) == truncated(expected["boxes"][j])).all(1)
    assert int((~same_pixels).sum()) <= 2
    assert float(pasted[same_pixels].min()) > 0.99


def _mask_ious(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of bool masks (n, ...) row by row."""
    a, b = a.flatten(1), b.flatten(1)
    return (a & b).sum(1) / (a | b).sum(1)
