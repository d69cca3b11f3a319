"""Our Faster R-CNN with weights converted from torchvision's gives torchvision's numbers.

torchvision's ``fasterrcnn_resnet50_fpn`` layout (ResNet-50 with FrozenBN, FPN, 91 classes) with
random, non-trivial weights goes through ``detection.convert`` (``tools/convert_torchvision.py``
is its command line); on the same images
(sizes for which torchvision's internal resize is the identity) the RPN proposals and the final
detections must agree. Both models run in float64: our default channels-last convolutions sum in
another order than torchvision's, which in float32 moves boxes of this deep random network by up
to ~2e-3 px; in float64 only the algorithms are compared.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models.detection import FasterRCNN as TVFasterRCNN
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops import FrozenBatchNorm2d

from detection.build import build_model
from detection.config import config_from_dict, load_config
from detection.convert import convert_checkpoint, torchvision_twin

ROOT = Path(__file__).resolve().parents[2]
TV_CONFIG = ROOT / "configs" / "coco" / "faster_rcnn_R_50_FPN_torchvision.yaml"
SIZES = [(256, 320), (320, 256)]  # (h, w): min 256 / max 320 make torchvision's resize a no-op


pytestmark = pytest.mark.usefixtures("one_thread")


@torch.no_grad()
def _randomise(model: TVFasterRCNN, images: list[torch.Tensor]) -> None:
    """He-scaled weights, random biases and FrozenBN statistics; RPN logits of a few units (no
    sigmoid saturation); a classifier whose logits vary by ~1 around 0 over the RoIs of
    ``images``, so that detections of several classes have unsaturated scores."""
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
    features = model.backbone(image_list.tensors)
    proposals, _ = model.rpn(image_list, features)
    pooled = model.roi_heads.box_roi_pool(features, proposals, image_list.image_sizes)
    x = model.roi_heads.box_head(pooled)  # (R, 1024)
    cls_score = model.roi_heads.box_predictor.cls_score
    cls_score.weight.normal_(0.0, 1.0 / (float(x.std(0).mean()) * x.shape[1] ** 0.5))
    cls_score.bias.copy_(-(cls_score.weight @ x.mean(0)))


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


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    backbone = resnet_fpn_backbone(
        backbone_name="resnet50", weights=None, norm_layer=FrozenBatchNorm2d, trainable_layers=3
    )
    tv = TVFasterRCNN(backbone, num_classes=91, min_size=256, max_size=320)
    tv.eval()
    _randomise(tv, [img.float() / 255 for img in _images()])
    tv.double()
    checkpoint = convert_checkpoint(tv.state_dict(), load_config(TV_CONFIG))
    ours = build_model(config_from_dict(checkpoint["config"]))
    ours.load_state_dict(checkpoint["model"])
    ours.double().eval()
    assert ours.channels_last
    return tv, ours, checkpoint


def test_checkpoint_format(models, tmp_path):
    _, _, checkpoint = models
    path = tmp_path / "converted.pth"
    torch.save(checkpoint, path)
    loaded = torch.load(path, weights_only=True)
    assert set(loaded) == {"model", "config", "classes", "iteration"}
    assert loaded["iteration"] == 0
    assert loaded["config"]["model"]["num_classes"] == 90
    assert loaded["config"]["model"]["backbone"]["weights"] is None
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
